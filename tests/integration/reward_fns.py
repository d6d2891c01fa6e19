"""Reward functions that misbehave on purpose, for the reward-pool tests (loaded by `path`)."""
from __future__ import annotations

import os
from pathlib import Path


def die_once(samples, marker):
    """Kill the worker process on the first call ever (the marker file remembers), then score lengths."""
    m = Path(marker)
    if not m.exists():
        m.write_text(str(os.getpid()))
        os._exit(1)
    return [float(len(s["completion"])) for s in samples]


def always_die(samples):
    os._exit(1)


def which_pid(samples):
    return {"which_pid": [1.0] * len(samples), "which_pid/pid": [float(os.getpid())] * len(samples)}


def fails_on_c(samples):
    for s in samples:
        if "c" in s["completion"]:
            raise ValueError(f"cannot score {s['completion']!r}")
    return [1.0] * len(samples)


class FailsFromSecondCall:
    """Works once, then raises: a judge service that goes away mid-run."""

    def __init__(self):
        self.calls = 0

    def __call__(self, samples):
        self.calls += 1
        if self.calls >= 2:
            raise ConnectionError("judge service unavailable")
        return [0.0] * len(samples)



def half_the_prompts(samples):
    """0 for prompts of even length (a group that agrees: DAPO drops it), else the completion's share of distinct
    tokens (varies within a group from the first step, even for a random policy: a critic has returns to fit)."""
    return [0.0 if len(s["prompt"]) % 2 == 0 else len(set(s["completion_ids"])) / max(len(s["completion_ids"]), 1)
            for s in samples]
