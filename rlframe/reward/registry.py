"""Reward functions by name.

A registered entry is a factory: `factory(**kwargs)` returns a batch function
`fn(samples: list[dict]) -> list[float] | dict[str, list[float]]`, built once per reward worker
(so a class can load a model in its constructor). Each sample dict holds the completion text
under "completion" and every field of its data record. A dict result must hold the entry's own
name (the component that is weighted into the total); its other keys are logged alongside.
Tasks register their rewards when they are imported (see rlframe/registry.py for how plugins load).
"""
from __future__ import annotations

from typing import Any, Callable

from rlframe.registry import Registry

BatchFn = Callable[[list[dict[str, Any]]], "list[float] | dict[str, list[float]]"]
Factory = Callable[..., BatchFn]

REWARDS: Registry[Factory] = Registry("reward")


def register_reward(name: str) -> Callable[[Factory], Factory]:
    return REWARDS.register(name)
