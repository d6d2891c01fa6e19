"""Client of a reward service (`rlframe serve-reward`): a batch reward over HTTP, with retries."""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from rlframe.config.schema import RewardFnConfig
from rlframe.errors import RewardError, RewardTimeout

TOKEN_ENV = "RLFRAME_REWARD_TOKEN"


class RemoteReward:
    """POST the batch to `<url>/score`; the service's component named like this reward is the one weighted
    (its weighted total if it has none); the service's other components are logged as `<name>/<component>`.
    Connection errors and 5xx answers are retried `retries` times with exponential backoff; 4xx are not."""

    def __init__(self, spec: RewardFnConfig) -> None:
        self.name = spec.name
        self.url = spec.url.rstrip("/") + ("" if spec.url.rstrip("/").endswith("/score") else "/score")
        self.token = spec.token or os.environ.get(TOKEN_ENV)
        self.timeout = spec.timeout_s if spec.timeout_s > 0 else 60.0
        self.retries, self.backoff = spec.retries, spec.backoff_s

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, list[float]]:
        body = json.dumps({"samples": samples}, default=str).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    answer = json.loads(resp.read())
                break
            except urllib.error.HTTPError as err:
                detail = _error_text(err)
                if err.code < 500:
                    raise RewardError(f"reward {self.name!r}: {self.url} answered {err.code}: {detail}") from None
                last = RewardError(f"reward {self.name!r}: {self.url} answered {err.code}: {detail}")
            except TimeoutError:
                last = RewardTimeout(f"reward {self.name!r}: {self.url} did not answer within {self.timeout:g} s")
            except (urllib.error.URLError, ConnectionError, OSError) as err:
                last = RewardError(f"reward {self.name!r}: cannot reach {self.url}: {getattr(err, 'reason', err)}")
        else:
            raise RewardError(f"{last} (after {self.retries + 1} attempts)")
        comps: dict[str, list[float]] = answer["components"]
        main = comps[self.name] if self.name in comps else answer["total"]
        out = {self.name: main}
        out.update({f"{self.name}/{k}": v for k, v in comps.items() if k != self.name})
        return out


def _error_text(err: urllib.error.HTTPError) -> str:
    try:
        return json.loads(err.read()).get("error", err.reason)
    except Exception:  # noqa: BLE001
        return str(err.reason)


def check_service(spec: RewardFnConfig, timeout: float = 10.0) -> list[str]:
    """GET <url>/health before a run starts; returns the service's reward names or raises RewardError."""
    base = spec.url.rstrip("/").removesuffix("/score")
    token = spec.token or os.environ.get(TOKEN_ENV)
    req = urllib.request.Request(base + "/health", headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return list(json.loads(resp.read()).get("rewards", []))
    except urllib.error.HTTPError as err:
        raise RewardError(f"reward {spec.name!r}: {base}/health answered {err.code}: {_error_text(err)}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise RewardError(f"reward {spec.name!r}: cannot reach the reward service at {base} "
                          f"({getattr(err, 'reason', err)}); is `rlframe serve-reward` running there?") from None
