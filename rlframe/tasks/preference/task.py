"""The synthetic preference task as an rlframe task: data, tokenizer, and its registered rewards."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rlframe.config.schema import DataConfig
from rlframe.data.chat import chat_messages
from rlframe.reward.registry import register_reward
from rlframe.tasks.preference.rewards import (
    EVAL_METRICS, accuracy_reward, format_reward, make_embedder, profile_similarity, score_consistency_reward)
from rlframe.tasks.preference.synth_dataset import (
    SynthConfig, balanced_eval, eval_samples_per_user, generate_splits, seen_users)
from rlframe.tasks.preference.synthetic import generate_samples
from rlframe.tasks.preference.tokenizer import build_tokenizer
from rlframe.tasks.registry import TaskData, register_task


@register_task("preference_synthetic")
def build_synthetic(cfg: DataConfig, cache_dir: Path) -> TaskData:
    """Train and eval samples from disjoint seeds (fresh users), and a tokenizer trained on them."""
    train = generate_samples(cfg.num_train, seed=cfg.seed, num_history=cfg.num_history)
    evals = generate_samples(cfg.num_eval, seed=cfg.seed + 1_000_003, num_history=cfg.num_history)
    return TaskData(train=with_messages(train, cfg), eval=with_messages(evals, cfg), tokenizer=build_tokenizer(train),
                    eval_metrics=EVAL_METRICS)


def with_messages(samples: list[dict[str, Any]], cfg: DataConfig) -> list[dict[str, Any]]:
    """The chat messages of each sample (a checkpoint's chat template renders them; TRL rewards see them)."""
    for s in samples:
        s["messages"] = chat_messages(s["question"], system=cfg.system_prompt)
    return samples


#: training samples per seen user of preference_synthetic_splits: many users, so the skill must generalize
SAMPLES_PER_USER = 4


@register_task("preference_synthetic_splits")
def build_synthetic_splits(cfg: DataConfig, cache_dir: Path) -> TaskData:
    """The paper's benchmark layout, text-rendered: seen and unseen users with single (SP) or multiple (MP)
    liked terms per dimension (``synth_dataset.py``, the same users as the image task), rendered like
    ``preference_synthetic``. Eval samples carry their subset in ``split`` (SP_ID, SP_OD, MP_ID, MP_OD),
    ``data.num_eval`` split evenly over the four."""
    sc = SynthConfig(num_users=8, samples_per_user=SAMPLES_PER_USER, num_history=cfg.num_history, seed=cfg.seed)
    while seen_users(sc) * SAMPLES_PER_USER < cfg.num_train:
        sc.num_users = math.ceil(sc.num_users * cfg.num_train / max(1, seen_users(sc) * SAMPLES_PER_USER)) + 1
    sc.eval_samples_per_user = eval_samples_per_user(sc, cfg.num_eval)
    splits = generate_splits(sc)
    evals = balanced_eval(splits, cfg.num_eval)
    train = splits["train"][: cfg.num_train]
    return TaskData(train=with_messages(train, cfg), eval=with_messages(evals, cfg), tokenizer=build_tokenizer(train),
                    eval_metrics=EVAL_METRICS)


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
    """Sentence-embedding similarity of the predicted profiles (the model loads once per worker).

    ``r_predict = w_text * s_text + w_img * s_img`` (PreferThinker's prediction reward): ``s_text`` is the sentence-embedding term;
    ``s_img`` is an extension point, a batch reward given by ``image_similarity`` ("pkg.module:fn" or
    "file.py:fn", e.g. text-to-image rendering + DreamSim on a GPU reward worker). The paper does not
    publish w_text / w_img; the default is the text term alone."""

    def __init__(self, shape: str = "per_dimension", c0: float | None = None, w_text: float = 1.0,
                 w_img: float = 0.0, image_similarity: str | None = None) -> None:
        self.shape = shape
        self.c0 = c0
        self.w_text, self.w_img = float(w_text), float(w_img)
        self.image = None
        if self.w_img:
            if not image_similarity:
                raise ValueError("profile_similarity: w_img > 0 needs kwargs.image_similarity, a batch reward "
                                 "(\"pkg.module:fn\" or \"file.py:fn\") returning s_img in [0, 1] per sample")
            from rlframe.config.schema import RewardFnConfig
            from rlframe.reward.plugins import PluginReward

            where, _, fn = image_similarity.rpartition(":")
            spec = (RewardFnConfig(name="profile_image", path=where, function=fn) if where.endswith(".py")
                    else RewardFnConfig(name="profile_image", _target_=image_similarity))
            self.image = PluginReward(spec)
        self.embed = make_embedder()

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, list[float]]:
        kw = {} if self.c0 is None else {"c0": self.c0}
        out = profile_similarity(_texts(samples), [s["prefer_attributes"] for s in samples],
                                 [s["non_prefer_attributes"] for s in samples], self.embed, shape=self.shape, **kw)
        if self.w_text == 1.0 and self.image is None:
            return out
        text = out["profile_similarity"]
        image = self.image(samples)["profile_image"] if self.image is not None else [0.0] * len(samples)
        out["profile_similarity/text"], out["profile_similarity/image"] = text, image
        out["profile_similarity"] = [self.w_text * t + self.w_img * i for t, i in zip(text, image)]
        return out


register_reward("profile_similarity")(ProfileSimilarity)
