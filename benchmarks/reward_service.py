"""Reward service soak: many concurrent clients against `rlframe serve-reward` on this machine (loopback only).

The service (the real server, in this process, on 127.0.0.1 with a token) scores with the task's format and
accuracy rewards, wrapped so that every sample id it scores is counted. Clients run with concurrency 1 and
with `--clients` at once, interleaved per repeat, each client sending requests of `--batch` samples with
unique ids for `--seconds`. Alongside the good traffic, a hostile client keeps sending garbage (random bytes,
lying lengths, oversized bodies, slow requests). Read: requests/s and samples/s, latency percentiles, the
ratio of concurrent to single-client throughput, and the check that nothing was lost or double-scored
(every id answered 200 exactly once, scored exactly once).

    rlframe bench reward_service [--clients 16] [--seconds 10] [--batch 8] [--repeats 3] [--quick]
"""
from __future__ import annotations

import collections
import json
import os
import socket
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, emit, new_figure, ratio, save_plot, summarize  # noqa: E402

TOKEN = "soak-token-1234"


def parse(argv: list[str] | None = None):
    p = base_parser(__doc__)
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long each load level runs (default 10)")
    p.add_argument("--batch", type=int, default=8, help="samples per request (default 8)")
    p.add_argument("--workers", type=int, default=8, help="the server's --workers (default 8)")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.repeats = 4, 2.0, 1
    return args


class Counted:
    """The service's RewardSet, counting every sample id it scores."""

    def __init__(self, inner) -> None:
        self.inner, self.specs = inner, inner.specs
        self.ids: collections.Counter = collections.Counter()
        self.lock = threading.Lock()

    def score(self, samples):
        with self.lock:
            self.ids.update(s.get("id") for s in samples)
        return self.inner.score(samples)


def client(url: str, name: str, batch: int, until: float, out: dict) -> None:
    completion = "<answer>Image A</answer>"
    n = 0
    while time.perf_counter() < until:
        ids = [f"{name}-{n}-{i}" for i in range(batch)]
        n += 1
        body = json.dumps({"samples": [{"id": i, "completion": completion, "answer": "Image A"} for i in ids]})
        req = urllib.request.Request(url, data=body.encode(), headers={"Authorization": f"Bearer {TOKEN}"})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                reply = json.loads(resp.read())
                code = resp.status
        except urllib.error.HTTPError as err:
            code, reply = err.code, {}
        except OSError:
            code, reply = 0, {}
        out["latency"].append(time.perf_counter() - t0)
        if code == 200 and len(reply.get("total", [])) == batch:
            out["ok"].extend(ids)
        else:
            out["failed"].append(code)


def hostile(port: int, until: float, out: dict) -> None:
    """Garbage traffic: each kind must get its 4xx/5xx answer; counted by status code."""
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()   # an authenticated but broken client, mostly
    kinds = [b"\xff\xfe garbage\r\n\r\n", b"POST /score HTTP/1.1\r\n" + auth + b"Content-Length: 99999999999\r\n\r\nx",
             b"POST /score HTTP/1.1\r\n" + auth + b"Content-Length: 7\r\n\r\n[[[[[[[",
             b"POST /score HTTP/1.1\r\n" + auth + b"Content-Length: 50\r\n\r\n{\"samples\"",
             b"GET /nope HTTP/1.1\r\n" + auth + b"\r\n", b"POST /score HTTP/1.1\r\n" + auth + b"\r\n{}",
             b"POST /score HTTP/1.1\r\nAuthorization: Bearer wrong\r\nContent-Length: 2\r\n\r\n{}"]
    i = 0
    while time.perf_counter() < until:
        data = kinds[i % len(kinds)]
        i += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(data)
                if i % len(kinds) != 4:   # the lying length: the server must time the body out itself
                    s.shutdown(socket.SHUT_WR)
                reply = s.recv(64)
            code = int(reply.split()[1]) if len(reply.split()) > 1 else 0
        except (OSError, ValueError):
            code = 0
        out[code] = out.get(code, 0) + 1


def load_level(port: int, clients: int, seconds: float, batch: int, counted: Counted) -> dict:
    url = f"http://127.0.0.1:{port}/score"
    results = [{"latency": [], "ok": [], "failed": []} for _ in range(clients)]
    garbage: dict = {}
    until = time.perf_counter() + seconds
    threads = [threading.Thread(target=client, args=(url, f"c{clients}-{k}-{time.time_ns()}", batch, until, r))
               for k, r in enumerate(results)]
    threads.append(threading.Thread(target=hostile, args=(port, until, garbage)))
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(x for r in results for x in r["latency"])
    ok = [i for r in results for i in r["ok"]]
    failed = [c for r in results for c in r["failed"]]
    scored = {i: counted.ids[i] for i in ok}
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99 if lat else [0.0] * 99
    return {"clients": clients, "requests": len(lat), "requests_per_s": len(lat) / wall,
            "samples_per_s": len(ok) / wall, "latency_ms": {"p50": 1e3 * q[49], "p95": 1e3 * q[94],
                                                            "p99": 1e3 * q[98], "max": 1e3 * max(lat, default=0)},
            "failed_requests": len(failed), "failed_codes": sorted(set(failed)),
            "lost_samples": sum(1 for c in scored.values() if c == 0),
            "double_scored": sum(1 for c in scored.values() if c > 1),
            "hostile_answers": {str(k): v for k, v in sorted(garbage.items())}, "load_avg_1m": round(load, 2)}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from rlframe.config.schema import RewardFnConfig
    from rlframe.reward.scoring import RewardSet
    from rlframe.reward.server import make_server

    counted = Counted(RewardSet([RewardFnConfig(name="format", weight=0.3), RewardFnConfig(name="accuracy")]))
    server = make_server(counted, port=0, token=TOKEN, workers=args.workers, read_timeout_s=2.0,
                         request_timeout_s=5.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    runs: dict[str, list[dict]] = {"single": [], "concurrent": []}
    try:
        load_level(port, 1, min(1.0, args.seconds), args.batch, counted)   # warm-up
        for r in range(args.repeats):   # interleaved: single, concurrent, single, concurrent, ...
            for key, n in (("single", 1), ("concurrent", args.clients)):
                res = load_level(port, n, args.seconds, args.batch, counted)
                runs[key].append(res)
                print(f"[reward_service] repeat {r + 1} {key}: {res['requests_per_s']:.0f} req/s, p99 "
                      f"{res['latency_ms']['p99']:.0f} ms, lost {res['lost_samples']}, double "
                      f"{res['double_scored']}, failed {res['failed_requests']}, hostile {res['hostile_answers']}",
                      file=sys.stderr, flush=True)
    finally:
        server.shutdown()
        server.server_close()
    rps = {k: summarize([x["requests_per_s"] for x in v]) for k, v in runs.items()}
    pairs = [c["requests_per_s"] / s["requests_per_s"] for s, c in zip(runs["single"], runs["concurrent"])]
    all_runs = runs["single"] + runs["concurrent"]
    intact = all(x["lost_samples"] == 0 and x["double_scored"] == 0 and x["failed_requests"] == 0 for x in all_runs)
    hostile_ok = all(all(k != "0" and 400 <= int(k) < 600 for k in x["hostile_answers"]) for x in all_runs)
    conc = runs["concurrent"]
    record = {
        "config": {"clients": args.clients, "seconds": args.seconds, "batch": args.batch, "workers": args.workers,
                   "repeats": args.repeats, "quick": args.quick, "rewards": "format + accuracy"},
        "requests_per_s": rps, "samples_per_s": {k: summarize([x["samples_per_s"] for x in v]) for k, v in runs.items()},
        "latency_ms_concurrent": {p: summarize([x["latency_ms"][p] for x in conc]) for p in ("p50", "p95", "p99", "max")},
        "concurrent_over_single": statistics.median(pairs), "pair_ratios": pairs, "runs": runs,
        "nothing_lost_or_double_scored": intact, "hostile_all_answered_4xx_5xx": hostile_ok,
        "headline": {"figures": f"{args.clients} clients: {rps['concurrent']['median']:.0f} req/s "
                                f"({args.batch} samples each), p99 "
                                f"{statistics.median(x['latency_ms']['p99'] for x in conc):.0f} ms; 1 client: "
                                f"{rps['single']['median']:.0f} req/s",
                     "ratios": {"concurrent / single throughput (median of pairs)": statistics.median(pairs),
                                "ratio of medians": ratio(rps["concurrent"], rps["single"])},
                     "target": "nothing lost or double-scored; every hostile request answered 4xx/5xx",
                     "target_met": bool(intact and hostile_ok)},
    }
    plot(runs, args)
    emit("reward_service", record, args)
    return 0 if intact and hostile_ok else 1


def plot(runs: dict, args) -> None:
    fig, axes = new_figure(2, 5, 3.8)
    names = list(runs)
    axes[0].bar(names, [statistics.median(x["requests_per_s"] for x in runs[k]) for k in names], color="#3366aa")
    axes[0].set_ylabel("requests / s (median)")
    for p in ("p50", "p95", "p99"):
        axes[1].plot(names, [statistics.median(x["latency_ms"][p] for x in runs[k]) for k in names], marker="o",
                     label=p)
    axes[1].set_ylabel("latency, ms (median over repeats)")
    axes[1].legend()
    fig.suptitle(f"reward service on loopback: 1 vs {args.clients} clients, {args.batch} samples/request")
    save_plot(fig, "reward_service", args)


if __name__ == "__main__":
    sys.exit(main())
