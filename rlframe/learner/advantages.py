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


# ---------------------------------------------------------------- PPO with a critic (algorithm.name=gae)
# Token-level tensors [B, T] aligned with TrainBatch.loss_mask (position t scores token t+1; the value at t is
# V of the prefix before that token). GAE is not a registered Estimator: it needs the critic's values.

def token_rewards(rewards: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None,
                  kl_coef: float = 0.0) -> torch.Tensor:
    """Per-token rewards: -kl_coef * KL_t on every completion token (KL in the reward) and the sequence's
    reward on its last one; a row without completion tokens gets nothing."""
    mask = mask.float()
    out = -kl_coef * kl.float() * mask if kl is not None and kl_coef else torch.zeros_like(mask)
    has = mask.sum(-1) > 0
    last = mask.shape[-1] - 1 - mask.flip(-1).argmax(-1)   # the last 1 of each row
    rows = torch.arange(mask.shape[0])[has]
    out[rows, last[has]] += rewards.float()[has]
    return out


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's masked tokens (a masked token is skipped, not a step;
    after the last one V = 0): delta_t = r_t + gamma V_next - V_t, A_t = delta_t + gamma lam A_next.
    Returns (advantages, returns = A + V), both 0 off the mask."""
    mask, values, rewards = mask.float(), values.float(), rewards.float()
    adv = torch.zeros_like(values)
    next_v = torch.zeros(values.shape[0])
    next_a = torch.zeros(values.shape[0])
    for t in reversed(range(values.shape[1])):
        on = mask[:, t] > 0
        a = rewards[:, t] + gamma * next_v - values[:, t] + gamma * lam * next_a
        adv[:, t] = torch.where(on, a, torch.zeros_like(a))
        next_v = torch.where(on, values[:, t], next_v)
        next_a = torch.where(on, a, next_a)
    return adv, (adv + values) * mask


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) over the masked entries of the whole batch; 0 off the mask."""
    mask = mask.float()
    n = mask.sum().clamp(min=1.0)
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    return (x - mean) / (var.sqrt() + eps) * mask


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over the masked tokens: 1 = perfect critic, <= 0 = no better
    than a constant (0 when the returns do not vary)."""
    m = mask.float() > 0
    r, v = returns[m].float(), values[m].float()
    var = r.var(unbiased=False) if r.numel() else torch.tensor(0.0)
    return float(1.0 - (r - v).var(unbiased=False) / var) if var > 0 else 0.0


@ADVANTAGE_ESTIMATORS.register("gae")
def _gae_needs_a_critic(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """`algorithm.name=gae` is a valid name, but per token and from the critic's values (trainer/ppo.py)."""
    raise ValueError("algorithm.name=gae: advantages come from the critic's values (token_rewards, gae), not "
                     "from sequence rewards alone")
