"""Property-based tests of `rlframe serve-reward` over real sockets: malformed and oversized requests, wrong
methods and paths, lying lengths and slow clients each get a 4xx/5xx answer within the deadline, and the
server keeps serving."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlframe.config.schema import RewardFnConfig
from rlframe.reward.scoring import RewardSet
from rlframe.reward.server import make_server

TOKEN = "fuzz-token"
READ_S, DEADLINE_S = 0.5, 1.0
GOOD = json.dumps({"samples": [{"id": "a", "completion": "<answer>Image A</answer>"}]}).encode()


def start(**kw):
    server = make_server(RewardSet([RewardFnConfig(name="format")]), port=0, token=TOKEN, max_body_bytes=4096,
                         read_timeout_s=READ_S, request_timeout_s=DEADLINE_S, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server():
    s = start(workers=4, queue=4)
    yield s
    s.shutdown()
    s.server_close()


def exchange(port: int, data: bytes, close_write: bool = True, limit: float = 5.0) -> tuple[int, float]:
    """Send raw bytes; the status code of the answer (0: none) and the seconds it took."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        try:
            sock.sendall(data)
            if close_write:
                sock.shutdown(socket.SHUT_WR)
        except OSError:   # the server may answer (413, 411) and close before it has read everything
            pass
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError:
            pass
    line = reply.split(b"\r\n", 1)[0].split()
    code = int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0
    return code, time.perf_counter() - t0


def request(method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes:
    head = b"".join(k + b": " + v + b"\r\n" for k, v in headers.items())
    return method + b" " + path + b" HTTP/1.1\r\n" + head + b"\r\n" + body


def healthy(port: int) -> bool:
    code, _ = exchange(port, request(b"GET", b"/health", {b"Authorization": b"Bearer " + TOKEN.encode()}, b""))
    return code == 200


bodies = st.one_of(st.just(GOOD), st.binary(max_size=300), st.text(max_size=200).map(str.encode),
                   st.recursive(st.none() | st.integers() | st.text(max_size=10),
                                lambda x: st.lists(x, max_size=3) | st.dictionaries(st.text(max_size=5), x, max_size=3),
                                max_leaves=10).map(lambda v: json.dumps({"samples": v}).encode()),
                   st.just(b"[" * 3000), st.just(b"x" * 5000))
lengths = st.sampled_from(["exact", "absent", "short", "long", "negative", "junk", "huge"])


@settings(max_examples=max(100, settings.default.max_examples // 5))   # some examples wait for a timeout
@given(method=st.sampled_from([b"POST", b"GET", b"PUT", b"DELETE", b"HEAD", b"PATCH", b"BREW", b"\xff\x00"]),
       path=st.sampled_from([b"/score", b"/score/", b"/health", b"/", b"/x" * 100, b"\xff", b"*"]),
       auth=st.sampled_from([b"good", b"wrong", b"none"]), body=bodies, length=lengths,
       close_write=st.booleans())
def test_every_request_is_answered_in_time_and_the_server_survives(server, method, path, auth, body, length,
                                                                     close_write):
    port = server.server_address[1]
    headers = {b"Authorization": {b"good": b"Bearer " + TOKEN.encode(), b"wrong": b"Bearer nope",
                                  b"none": b""}[auth]}
    n = len(body)
    value = {"exact": str(n), "short": str(max(0, n - 3)), "long": str(n + 50), "negative": "-1", "junk": "12ab",
             "huge": str(10**12), "absent": None}[length]
    if value is not None:
        headers[b"Content-Length"] = value.encode()
    code, seconds = exchange(port, request(method, path, headers, body), close_write=close_write)
    assert seconds < DEADLINE_S + 2.0, (code, seconds)
    assert code in (200,) or 400 <= code < 600, code
    if code == 200:   # only a well-formed, authorised scoring or health request succeeds
        assert auth == b"good" and method in (b"POST", b"GET")
    assert healthy(port)


def test_a_slow_client_is_cut_at_the_deadline(server):
    port = server.server_address[1]
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        data = request(b"POST", b"/score", {b"Content-Length": str(len(GOOD)).encode()}, GOOD)
        reply = b""
        try:
            for byte in data:   # one byte every 0.3 s: each read is within READ_S, the whole is not
                sock.sendall(bytes([byte]))
                time.sleep(0.3)
        except OSError:
            pass
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError:
            pass
    assert reply.startswith(b"HTTP/1.0 408"), reply[:60]
    assert time.perf_counter() - t0 < DEADLINE_S + 1.5
    assert healthy(port)


def test_a_full_pool_answers_503_at_once_and_recovers():
    server = start(workers=1, queue=0)
    port = server.server_address[1]
    try:
        hog = socket.create_connection(("127.0.0.1", port))   # holds the only worker until its deadline
        hog.sendall(b"POST /score HTTP/1.1\r\n")
        time.sleep(0.1)
        code, seconds = exchange(port, request(b"GET", b"/health", {}, b""))
        assert code == 503 and seconds < 0.5
        hog.close()
        time.sleep(DEADLINE_S + 0.2)
        assert healthy(port)
    finally:
        server.shutdown()
        server.server_close()


def test_oversized_bodies_are_refused_before_they_are_read(server):
    port = server.server_address[1]
    t0 = time.perf_counter()   # 10 GB announced, 10 bytes sent: the answer must not wait for the rest
    code, _ = exchange(port, request(b"POST", b"/score", {b"Authorization": b"Bearer " + TOKEN.encode(),
                                                         b"Content-Length": b"10000000000"}, b"0123456789"),
                       close_write=False)
    assert code == 413 and time.perf_counter() - t0 < READ_S
