"""Combine reward components into the weighted total and check what functions return (pure)."""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

from rlframe.config.schema import RewardFnConfig
from rlframe.reward.registry import BatchFn


def run_reward_fns(fns: Sequence[tuple[RewardFnConfig, BatchFn]], samples: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Every component per sample, plus "total" = sum of weight * component."""
    n = len(samples)
    out: dict[str, list[float]] = {}
    total = [0.0] * n
    for spec, fn in fns:
        result = fn(samples)
        parts = result if isinstance(result, dict) else {spec.name: result}
        if spec.name not in parts:
            raise ValueError(f"reward {spec.name!r} returned keys {sorted(parts)}, which lack its own name")
        for key, values in parts.items():
            values = list(values)
            if len(values) != n:
                raise ValueError(f"reward {spec.name!r} returned {len(values)} values for {key!r}, expected {n}")
            for i, v in enumerate(values):
                if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                    raise ValueError(f"reward {spec.name!r} returned {v!r} for {key!r} on sample "
                                     f"{samples[i].get('id', i)!r}: expected a finite number")
            out[key] = [float(v) for v in values]
        total = [t + spec.weight * v for t, v in zip(total, out[spec.name])]
    out["total"] = total
    return out
