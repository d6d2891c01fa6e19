"""Advantage estimators, one value per sequence (pure; rewards are already gathered over the whole batch)."""
from __future__ import annotations

from typing import Callable

import torch

from rlframe.registry import Registry

Estimator = Callable[[torch.Tensor, int, float], torch.Tensor]


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"expected a flat reward vector with a multiple of group_size={group_size} "
                         f"entries, got shape {tuple(rewards.shape)}")
    return rewards.float().view(-1, group_size)


def grpo(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean_group) / (std_group + eps); samples of one prompt are contiguous."""
    g = _groups(rewards, group_size)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + eps)).view(-1)


def dr_grpo(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """Dr.GRPO: mean-centred only; std normalisation biases toward easy/hard groups."""
    g = _groups(rewards, group_size)
    return (g - g.mean(1, keepdim=True)).view(-1)


def rloo(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """Leave-one-out baseline: r_i - mean_{j != i} r_j."""
    g = _groups(rewards, group_size)
    others = (g.sum(1, keepdim=True) - g) / (group_size - 1)
    return (g - others).view(-1)


def reinforce_pp(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """REINFORCE++ (outcome reward, gamma 1): the reward whitened over the whole batch, no group baseline;
    with algorithm.kl_in=reward the KL penalty is already in `rewards`."""
    r = _groups(rewards, group_size).view(-1)
    return (r - r.mean()) / (r.std() + eps)


def reinforce_pp_baseline(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """REINFORCE++-baseline: subtract the group mean, then whiten over the batch (batch std, not per group,
    so groups with small reward spread are not blown up as in GRPO)."""
    c = dr_grpo(rewards, group_size)
    return (c - c.mean()) / (c.std() + eps)


# `algorithm.name` picks one; a plugin adds its own with ADVANTAGE_ESTIMATORS.register("name", fn)
ADVANTAGE_ESTIMATORS: Registry[Estimator] = Registry("advantage estimator")
for _name, _fn in {"grpo": grpo, "dr_grpo": dr_grpo, "rloo": rloo, "reinforce_pp": reinforce_pp,
                   "reinforce_pp_baseline": reinforce_pp_baseline}.items():
    ADVANTAGE_ESTIMATORS.register(_name, _fn)


def compute_advantages(name: str, rewards: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    return ADVANTAGE_ESTIMATORS.get(name)(rewards, group_size, eps)
