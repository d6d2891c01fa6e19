"""Reward functions by name.

A registered entry is a factory: `factory(**kwargs)` returns a batch function
`fn(samples: list[dict]) -> list[float] | dict[str, list[float]]`, built once per reward worker
(so a class can load a model in its constructor). Each sample dict holds the completion text
under "completion" and every field of its data record. A dict result must hold the entry's own
name (the component that is weighted into the total); its other keys are logged alongside.
"""
from __future__ import annotations

from typing import Any, Callable

BatchFn = Callable[[list[dict[str, Any]]], "list[float] | dict[str, list[float]]"]
Factory = Callable[..., BatchFn]

REWARD_FNS: dict[str, Factory] = {}


def register_reward(name: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        if name in REWARD_FNS:
            raise ValueError(f"reward {name!r} is already registered")
        REWARD_FNS[name] = factory
        return factory
    return deco


def load_builtin_rewards() -> dict[str, Factory]:
    import rlframe.tasks.registry  # noqa: F401  (tasks register their rewards on import)

    return REWARD_FNS
