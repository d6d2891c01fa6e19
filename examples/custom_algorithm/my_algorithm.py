"""A new advantage estimator and a new policy loss, added by name from a file outside rlframe.

    rlframe train algorithm.plugins=[examples/custom_algorithm/my_algorithm.py] \
        algorithm.name=group_rank algorithm.policy_loss=cispo

`algorithm.plugins` lists modules (pkg.module) or .py files; the driver imports them before it checks the
names (and computes advantages there), every learner before its update. Importing this file runs the two
`register` decorators below; nothing in rlframe is edited. (Multi-node: use a module installed on every node,
or an absolute path that exists on every node.)
"""
from __future__ import annotations

import torch

from rlframe.learner.advantages import ADVANTAGE_ESTIMATORS
from rlframe.learner.losses import POLICY_LOSSES, masked_mean


@ADVANTAGE_ESTIMATORS.register("group_rank")
def group_rank(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """Each sample's rank within its group, centred and scaled to [-1, 1] (ties share their mean rank):
    only the order of the rewards counts, so one outlier reward cannot dominate its group."""
    g = rewards.float().view(-1, group_size)
    below = (g.unsqueeze(2) > g.unsqueeze(1)).sum(2).float()
    ties = (g.unsqueeze(2) == g.unsqueeze(1)).sum(2).float() - 1.0
    half = (group_size - 1) / 2
    return ((below + ties / 2 - half) / half).view(-1)


@POLICY_LOSSES.register("cispo")
def cispo(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
          eps_low: float, eps_high: float, dual_clip_c: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """CISPO-style: clip the importance weight instead of the update. The weight sg(clip(ratio)) scales a plain
    policy-gradient term, so every token keeps a gradient, also the ones PPO's clip would silence."""
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    weight = ratio.detach().clamp(1.0 - eps_low, 1.0 + eps_high)
    per_token = -advantages.unsqueeze(-1) * weight * logp
    clipped = (weight != ratio.detach()).to(mask.dtype)
    return per_token, {"ratio_mean": masked_mean(ratio.detach(), mask).item(),
                       "clip_frac": masked_mean(clipped, mask).item()}
