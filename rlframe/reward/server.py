"""`rlframe serve-reward`: the configured reward functions as an HTTP service.

POST /score  {"samples": [{"id", "prompt", "completion", ...record fields}, ...]}
          -> {"components": {name: [...]}, "total": [...], "failures": {...}, "errors": [...]}
GET  /health -> {"status": "ok", "rewards": [...]}
Bound to 127.0.0.1 unless --host says otherwise; with a token (--token or RLFRAME_REWARD_TOKEN) every
request must carry `Authorization: Bearer <token>`. Requests are scored one at a time (reward models are
rarely thread-safe); /health answers meanwhile.
"""
from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("rlframe")


def make_server(rewards: Any, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                normalize: str = "none", max_samples: int = 65536) -> ThreadingHTTPServer:
    """A server scoring with `rewards` (a RewardSet); port 0 picks a free port (`server.server_address`)."""
    from rlframe.errors import RewardError
    from rlframe.reward.scoring import combine

    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if not token:
                return True
            got = self.headers.get("Authorization", "")
            if hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                return True
            self._send(401, {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"})
            return False

        def do_GET(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok", "rewards": [s.name for s in rewards.specs]})
            else:
                self._send(404, {"error": f"no route {self.path}; use POST /score or GET /health"})

        def do_POST(self) -> None:  # noqa: N802
            if not self._authorized():
                return
            if self.path.rstrip("/") != "/score":
                self._send(404, {"error": f"no route {self.path}; use POST /score"})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                samples = body["samples"]
                if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
                    raise ValueError("'samples' must be a list of objects")
                if len(samples) > max_samples:
                    raise ValueError(f"{len(samples)} samples in one request; at most {max_samples}")
            except (ValueError, KeyError, TypeError) as err:
                self._send(400, {"error": f"bad request body: {err}; expected {{\"samples\": [{{...}}, ...]}}"})
                return
            t0 = time.perf_counter()
            try:
                with lock:
                    scores = rewards.score(samples)
                out = {"components": scores.components, "failures": scores.failures, "errors": scores.errors,
                       "total": combine(scores.components, rewards.specs, normalize)}
            except RewardError as err:
                self._send(422, {"error": str(err)})
                return
            except Exception as err:  # noqa: BLE001
                self._send(500, {"error": f"{type(err).__name__}: {err}"})
                return
            log.info("scored %d samples in %.3f s", len(samples), time.perf_counter() - t0)
            self._send(200, out)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), fmt % args)

    return ThreadingHTTPServer((host, port), Handler)


HELP = "serve the configured reward functions over HTTP"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (p.description or "") + (
        "\n\nServes the reward functions of the composed config (reward group, reward.fns) at POST /score."
        "\nexample:  rlframe serve-reward --port 8765 reward=preference")
    p.add_argument("overrides", nargs="*", help="Hydra overrides choosing the reward functions")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--token", default=None, help="require this bearer token (default: $RLFRAME_REWARD_TOKEN)")
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
        print(f"rlframe serve-reward: {err}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("RLFRAME_REWARD_TOKEN")
    server = make_server(rewards, args.host, args.port, token, cfg.reward.normalize)
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
