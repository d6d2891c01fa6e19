"""Per-step bookkeeping of the driver: phase timers, reward statistics, progress bars (pure)."""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Any, Iterator

from rlframe.data.rollout_batch import RolloutBatch
from rlframe.reward.scoring import Scores, known


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t0)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def metrics(self) -> dict[str, float]:
        return {f"timing/{k}": round(v, 4) for k, v in self.seconds.items()}


def mean(values: list[float]) -> float:
    """(NaN, a reward's "not scored", is left out.)"""
    values = known(values)
    return float(sum(values) / len(values)) if values else 0.0


def merge_ranks(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """Learner metrics of every rank: values averaged, `timing/*` the slowest rank's (rounded as the driver's own)."""
    out = {}
    for k in per_rank[0]:
        values = [d[k] for d in per_rank]
        out[k] = round(max(values), 4) if k.startswith("timing/") else mean(values)
    return out


def reward_metrics(batch: RolloutBatch, scores: Scores) -> dict[str, float]:
    """Each component's raw mean and std, the weighted total, failures per function, pool health."""
    out = {}
    for k, v in batch.components.items():
        scored = known(v)
        out[f"reward/{k}"] = mean(scored)
        out[f"reward/{k}_std"] = statistics.pstdev(scored) if len(scored) > 1 else 0.0
        if len(scored) < len(v):   # TRL-style None
            out[f"reward/skipped/{k}"] = len(v) - len(scored)
    total = batch.rewards
    out["reward/total"] = mean(total)
    for name, n in scores.failures.items():
        out[f"reward/failures/{name}"] = n
    out["reward/worker_restarts"] = scores.restarts
    if batch.masked:   # reward.on_error=mask, or samples no function scored
        out["reward/masked_samples"] = len(batch.masked)
        out["reward/masked_groups"] = len(batch.masked_groups())
    out["timing/reward_compute"] = round(scores.seconds, 4)
    g = batch.group_size
    groups = [total[i: i + g] for i in range(0, len(total), g)]
    out["reward/total_std"] = statistics.pstdev(total) if len(total) > 1 else 0.0
    out["reward/zero_variance_groups"] = mean([float(max(x) == min(x)) for x in groups])
    comps = batch.done()
    out["response_length"] = mean([len(c.token_ids) for c in comps])
    out["truncated_frac"] = mean([float(c.finish_reason == "length") for c in comps])
    return out


def progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True)
