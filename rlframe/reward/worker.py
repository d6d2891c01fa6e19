"""Reward worker actor: builds its reward functions (and their models) once, scores whole batches."""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

from rlframe.cluster.storage import localize
from rlframe.config.schema import RewardFnConfig
from rlframe.reward.scoring import RewardSet, Scores


class RewardWorker:
    def __init__(self, fns: Sequence[RewardFnConfig], torch_threads: int = 1, on_error: str = "raise",
                 fallback_value: float = 0.0) -> None:
        import torch

        torch.set_num_threads(torch_threads)
        for fn in fns:   # no shared filesystem is assumed: a reward file must be at the same path on this node
            localize(fn.path, f"reward.fns[{fn.name}].path")
        self.rewards = RewardSet(fns, on_error, fallback_value)
        self.pid = os.getpid()

    def ready(self) -> int:
        return self.pid

    def score(self, samples: list[dict[str, Any]]) -> Scores:
        t0 = time.perf_counter()
        out = self.rewards.score(samples)
        out.seconds = time.perf_counter() - t0
        out.pid = self.pid
        return out
