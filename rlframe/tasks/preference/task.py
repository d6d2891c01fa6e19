"""The synthetic preference task as an rlframe task: data, tokenizer, and its registered rewards."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rlframe.config.schema import DataConfig
from rlframe.reward.registry import register_reward
from rlframe.tasks.preference.rewards import (
    accuracy_reward, format_reward, make_embedder, profile_similarity, score_consistency_reward)
from rlframe.tasks.preference.synthetic import generate_samples
from rlframe.tasks.preference.tokenizer import build_tokenizer
from rlframe.tasks.registry import TaskData, register_task


@register_task("preference_synthetic")
def build_synthetic(cfg: DataConfig, cache_dir: Path) -> TaskData:
    """Train and eval samples from disjoint seeds (fresh users), and a tokenizer trained on them."""
    train = generate_samples(cfg.num_train, seed=cfg.seed, num_history=cfg.num_history)
    evals = generate_samples(cfg.num_eval, seed=cfg.seed + 1_000_003, num_history=cfg.num_history)
    return TaskData(train=train, eval=evals, tokenizer=build_tokenizer(train))


def _texts(samples: list[dict[str, Any]]) -> list[str]:
    return [s["completion"] for s in samples]


@register_reward("format")
def _format(**_: Any):
    return lambda samples: format_reward(_texts(samples))


@register_reward("accuracy")
def _accuracy(**_: Any):
    return lambda samples: accuracy_reward(_texts(samples), [s["answer"] for s in samples])


@register_reward("score_consistency")
def _score_consistency(use_ground_truth: bool = True, **_: Any):
    return lambda samples: score_consistency_reward(
        _texts(samples), [s.get("scores") for s in samples] if use_ground_truth else None)


class ProfileSimilarity:
    """Sentence-embedding similarity of the predicted profiles (the model loads once per worker)."""

    def __init__(self, shape: str = "per_dimension", c0: float | None = None) -> None:
        self.shape = shape
        self.c0 = c0
        self.embed = make_embedder()

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, list[float]]:
        kw = {} if self.c0 is None else {"c0": self.c0}
        return profile_similarity(_texts(samples), [s["prefer_attributes"] for s in samples],
                                  [s["non_prefer_attributes"] for s in samples], self.embed, shape=self.shape, **kw)


register_reward("profile_similarity")(ProfileSimilarity)
