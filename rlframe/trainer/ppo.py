"""PPO's critic on the driver (algorithm.name=gae): its values before the advantages, GAE over the completion
tokens, and its update, which runs while the actor trains (two DeepSpeed groups, side by side)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from rlframe.data.batching import TrainBatch
from rlframe.learner.advantages import explained_variance, gae, masked_whiten, token_rewards
from rlframe.trainer.schedule import lr_at

if TYPE_CHECKING:
    from rlframe.trainer.driver import Driver


def start_critic(d: Driver, policy_path: str) -> None:
    """The critic group, initialised from the policy folder; one update = its rows per rank / updates_per_batch."""
    a, c = d.cfg.algorithm, d.cfg.critic
    rows = d.cfg.trainer.prompts_per_step * a.group_size
    d.start_learners(policy_path, None, rows // c.world_size // a.updates_per_batch, role="critic")


def request_values(d: Driver, train: TrainBatch) -> tuple[list[list[int]], list[Any]]:
    """Start the critic's value pass (it overlaps the learners' reference pass): each critic rank's rows, and
    the calls."""
    critic = d.roles["critic"]
    ranks = train.balanced_split(len(critic), d.cfg.algorithm.group_size, d.cfg.critic.packing)
    return ranks, critic.call_each("values", [(train.rows(rows), d.cfg.algorithm) for rows in ranks])


def advantages_and_update(d: Driver, train: TrainBatch, rewards: torch.Tensor, kl: torch.Tensor | None,
                          values_of: tuple[list[list[int]], list[Any]], step: int,
                          ) -> tuple[torch.Tensor, list[Any], dict[str, float]]:
    """Token-level advantages (GAE on rewards at the last token, minus kl_coef * KL per token when the KL is in
    the reward; whitened over the batch), and the critic's update toward the returns, started, not awaited."""
    a, c, critic = d.cfg.algorithm, d.cfg.critic, d.roles["critic"]
    deadline = d.train_deadline(len(train) / len(critic))
    ranks, value_refs = values_of
    order = torch.tensor([i for rows in ranks for i in rows])
    values = torch.cat(critic.wait(value_refs, "critic values", deadline, "train_s"))[torch.argsort(order)]
    mask = train.loss_mask
    adv, returns = gae(token_rewards(rewards, mask, kl, a.kl_coef if a.kl_in == "reward" else 0.0), values, mask,
                       a.gamma, a.lam)
    lr = lr_at(step - 1, d.cfg.trainer.max_steps, c.lr, c.warmup_steps, d.cfg.trainer.lr_schedule)
    update = critic.call_each("update", [(returns[rows], lr, a) for rows in ranks])
    metrics = {"critic/explained_var": explained_variance(values, returns, mask),
               "critic/returns_mean": float((returns * mask).sum() / mask.sum().clamp(min=1.0))}
    return masked_whiten(adv, mask, a.adv_eps), update, metrics
