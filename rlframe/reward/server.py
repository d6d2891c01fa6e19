"""`rlframe serve-reward`: the configured reward functions as an HTTP service.

POST /score  {"samples": [{"id", "prompt", "completion", ...record fields}, ...]}
          -> {"components": {name: [...]}, "total": [...], "failures": {...}, "errors": [...]}
GET  /health -> {"status": "ok", "rewards": [...]}

Network clients are not trusted. Bound to 127.0.0.1 unless --host says otherwise, and a non-loopback
address needs a token (or --insecure); with a token (--token or RLFRAME_REWARD_TOKEN) every request must
carry `Authorization: Bearer <token>`. A body is refused by its Content-Length before it is read (411 without
one, 413 over the limit); each connection has a read timeout and a deadline for its whole request (408);
connections are served by a bounded pool of threads and refused with 503 when it and its queue are full.
Requests are scored one at a time (reward models are rarely thread-safe); /health answers meanwhile.
"""
from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

log = logging.getLogger("rlframe")
_BUSY_BODY = b'{"error": "server busy: every worker and queue slot is taken; retry"}'
BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class BoundedHTTPServer(HTTPServer):
    """An HTTPServer whose connections run on `workers` threads with at most `queue` more waiting; beyond
    that a connection gets 503 at once (ThreadingHTTPServer starts a thread per connection, without bound)."""

    def __init__(self, address: tuple[str, int], handler: Any, workers: int = 8, queue: int = 32) -> None:
        super().__init__(address, handler)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reward-http")
        self.slots = threading.BoundedSemaphore(workers + queue)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self.pool.submit(self._serve, request, client_address)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - one client's broken connection must not reach stderr as a traceback
            log.debug("connection from %s failed", client_address, exc_info=True)
        finally:
            self.shutdown_request(request)
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def make_server(rewards: Any, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                normalize: str = "none", max_samples: int = 65536, max_body_bytes: int = 64 << 20,
                read_timeout_s: float = 10.0, request_timeout_s: float = 30.0, workers: int = 8,
                queue: int = 32) -> BoundedHTTPServer:
    """A server scoring with `rewards` (a RewardSet); port 0 picks a free port (`server.server_address`)."""
    from rlframe.errors import RewardError
    from rlframe.reward.scoring import combine, json_safe

    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        timeout = read_timeout_s        # per read on the socket (StreamRequestHandler applies it)

        def setup(self) -> None:
            super().setup()
            self.expired = self.answered = False
            # the whole request (line, headers, body) must arrive within request_timeout_s: a client that
            # sends one byte per read timeout cannot hold a worker for longer
            self.deadline = threading.Timer(request_timeout_s, self._expire)
            self.deadline.daemon = True
            self.deadline.start()

        def finish(self) -> None:
            self.deadline.cancel()
            super().finish()

        def _expire(self) -> None:
            self.expired = True
            try:
                self.connection.shutdown(socket.SHUT_RD)   # wakes the blocked read; the handler answers 408
            except OSError:
                pass

        def handle_one_request(self) -> None:
            super().handle_one_request()
            if not self.answered:
                # the request line or headers never arrived in time (the base class would just hang up)
                self._send(408, {"error": f"the request did not arrive within {request_timeout_s} s "
                                          f"(or {read_timeout_s} s between reads)"})
                self.close_connection = True

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            if self.expired:   # a request cut by the deadline is a timeout, whatever the parser made of it
                code, message = 408, f"the request did not arrive within {request_timeout_s} s"
            self._send(code, {"error": message or explain or self.responses.get(code, ("",))[0]})
            self.close_connection = True

        def _send(self, code: int, payload: dict) -> None:
            self.answered = True
            self.request_version = "HTTP/1.0"   # a request cut short is "HTTP/0.9" to the base class: no headers
            data = json.dumps(payload).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:   # the client went away; nothing left to tell it
                self.close_connection = True

        def _authorized(self) -> bool:
            if not token:
                return True
            got = self.headers.get("Authorization", "")
            if hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                return True
            self._send(401, {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"})
            return False

        def do_GET(self) -> None:  # noqa: N802
            self.deadline.cancel()
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok", "rewards": [s.name for s in rewards.specs]})
            else:
                self._send(404, {"error": f"no route {self.path[:100]}; use POST /score or GET /health"})

        def _body(self) -> bytes | None:
            """The request body, read only once its announced length is known and within the limit."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._send(411, {"error": "send the body with a Content-Length (chunked bodies are not read)"})
                return None
            raw = self.headers.get("Content-Length")
            if raw is None:
                self._send(411, {"error": "a Content-Length header is required"})
                return None
            try:
                length = int(raw)
                if length < 0:
                    raise ValueError
            except ValueError:
                self._send(400, {"error": f"Content-Length {raw[:40]!r} is not a non-negative integer"})
                return None
            if length > max_body_bytes:
                self._send(413, {"error": f"body of {length} bytes; at most {max_body_bytes}"})
                return None
            try:
                body = self.rfile.read(length)
            except OSError:
                body = b""
            if len(body) < length:
                self._send(408, {"error": f"the body ended or stalled after {len(body)} of {length} bytes"})
                return None
            return body

        def do_POST(self) -> None:  # noqa: N802
            body = self._body() if self._authorized() else None
            self.deadline.cancel()
            if body is None:
                return
            if self.path.rstrip("/") != "/score":
                self._send(404, {"error": f"no route {self.path[:100]}; use POST /score"})
                return
            try:
                samples = json.loads(body)["samples"]
                if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
                    raise ValueError("'samples' must be a list of objects")
                if len(samples) > max_samples:
                    raise ValueError(f"{len(samples)} samples in one request; at most {max_samples}")
            except (ValueError, KeyError, TypeError, RecursionError) as err:
                self._send(400, {"error": f"bad request body: {type(err).__name__}: {str(err)[:200]}; "
                                          f"expected {{\"samples\": [{{...}}, ...]}}"})
                return
            t0 = time.perf_counter()
            try:
                with lock:
                    scores = rewards.score(samples)
                out = {"components": json_safe(scores.components), "failures": scores.failures, "errors": scores.errors,
                       "total": combine(scores.components, rewards.specs, normalize)}
            except RewardError as err:
                self._send(422, {"error": str(err)})
                return
            except Exception as err:  # noqa: BLE001
                self._send(500, {"error": f"{type(err).__name__}: {str(err)[:500]}"})
                return
            log.info("scored %d samples in %.3f s", len(samples), time.perf_counter() - t0)
            self._send(200, out)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), fmt % args)

    return BoundedHTTPServer((host, port), Handler, workers=workers, queue=queue)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


HELP = "serve the configured reward functions over HTTP"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (p.description or "") + (
        "\n\nServes the reward functions of the composed config (reward group, reward.fns) at POST /score."
        "\nexample:  rlframe serve-reward --port 8765 reward=preference")
    p.add_argument("overrides", nargs="*", help="Hydra overrides choosing the reward functions")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--token", default=None, help="require this bearer token (prefer $RLFRAME_REWARD_TOKEN: a "
                                                 "command-line argument is visible to every user in `ps`)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without a token (anyone who reaches the port can score)")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body (default 64 MB)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds a client has to send its whole request (default 30; 10 between reads)")
    p.add_argument("--workers", type=int, default=8, help="connections served at once (default 8; 32 more wait)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")


def run(args: argparse.Namespace) -> int:
    import sys

    from rlframe.config import ConfigError, load_config
    from rlframe.errors import RewardError
    from rlframe.reward.scoring import RewardSet

    try:
        cfg = load_config(list(args.overrides))
        rewards = RewardSet(cfg.reward.fns, cfg.reward.on_error, cfg.reward.fallback_value)
    except (ConfigError, RewardError) as err:
        from rlframe.config.secrets import scrub

        print(f"rlframe serve-reward: {scrub(str(err))}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("RLFRAME_REWARD_TOKEN")
    if not token and not is_loopback(args.host):
        if not args.insecure:
            print(f"rlframe serve-reward: --host {args.host} is reachable from other machines and no token is set; "
                  f"set RLFRAME_REWARD_TOKEN (or --token), or pass --insecure to serve anyone who reaches the "
                  f"port", file=sys.stderr)
            return 2
        log.warning("WARNING: serving on %s WITHOUT a token (--insecure): anyone who reaches port %d can call "
                    "your reward functions", args.host, args.port)
    server = make_server(rewards, args.host, args.port, token, cfg.reward.normalize,
                         max_body_bytes=int(args.max_body_mb * 2**20), read_timeout_s=min(10.0, args.timeout),
                         request_timeout_s=args.timeout, workers=args.workers)
    host, port = server.server_address[:2]
    print(f"serving rewards {[s.name for s in rewards.specs]} at http://{host}:{port}/score"
          f"{' (bearer token required)' if token else ''}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
