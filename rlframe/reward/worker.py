"""Reward worker actor: builds its reward functions (and their models) once, scores whole batches."""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

import torch

from rlframe.config.schema import RewardFnConfig
from rlframe.reward.registry import load_builtin_rewards
from rlframe.reward.scoring import run_reward_fns


class RewardWorker:
    def __init__(self, fns: Sequence[RewardFnConfig], torch_threads: int = 1) -> None:
        torch.set_num_threads(torch_threads)
        registry = load_builtin_rewards()
        self.fns = [(spec, registry[spec.name](**dict(spec.kwargs))) for spec in fns]
        self.pid = os.getpid()

    def ready(self) -> int:
        return self.pid

    def score(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        t0 = time.perf_counter()
        out: dict[str, Any] = run_reward_fns(self.fns, samples)
        out["_seconds"] = time.perf_counter() - t0
        return out
