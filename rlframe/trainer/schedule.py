"""Learning-rate schedules (pure)."""
from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def lr_at(step: int, total: int, base: float, warmup: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Linear warm-up, then constant or cosine decay to min_ratio * base (step counts from 0)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected one of {SCHEDULES}")
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return base
    frac = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
