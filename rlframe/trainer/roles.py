"""rlframe's role map: every role declared once. Placement, CPU accounting, start-up and shutdown all walk it
(cluster/roles.py); adding a role (a critic, a second generator pool) is one entry here."""
from __future__ import annotations

from typing import Any

from rlframe.cluster.roles import RoleSpec, worker_resources
from rlframe.learner.critic import CriticWorker
from rlframe.learner.learner import LearnerWorker
from rlframe.reward.worker import RewardWorker
from rlframe.rollout.generator import RolloutWorker


def needs_generators(cfg: Any) -> bool:
    """Whether a run starts generators and reward workers: for GRPO, or to evaluate during SFT."""
    t = cfg.trainer
    return "grpo" in t.stages or ("sft" in t.stages and bool(t.sft.eval_every))


def needs_critic(cfg: Any) -> bool:
    """PPO's critic (algorithm.name=gae), only for a run with an RL stage."""
    return "grpo" in cfg.trainer.stages and cfg.algorithm.name == "gae"


def pool_of(role: str, colocated: bool = False) -> Any:
    """The role's `pool` key; with cluster.colocate=true the colocated roles share the pool "colocate"."""
    return lambda c: "colocate" if colocated and c.cluster.colocate else getattr(c, role).pool


ROLES: dict[str, RoleSpec] = {
    "rollout": RoleSpec(
        "rollout", RolloutWorker, needed=needs_generators,
        resources=lambda c: worker_resources(c.rollout, c.rollout.num_workers), pool=pool_of("rollout", True),
        # restarted by Ray; the driver re-syncs its weights and generates its share again (Driver.rollout)
        options=lambda c: {"max_restarts": c.rollout.max_restarts, "max_task_retries": 0}),
    "reward": RoleSpec(
        "reward", RewardWorker, needed=needs_generators,
        resources=lambda c: worker_resources(c.reward, c.reward.num_workers), pool=pool_of("reward"),
        # a reward worker that dies is restarted and its batch retried (reward/pool.py counts restarts)
        options=lambda c: {"max_restarts": c.reward.max_restarts, "max_task_retries": c.reward.max_restarts}),
    "learner": RoleSpec(
        "learner", LearnerWorker,
        resources=lambda c: worker_resources(c.learner, c.learner.world_size), pool=pool_of("learner", True)),
    "critic": RoleSpec(
        "critic", CriticWorker, needed=needs_critic,
        resources=lambda c: worker_resources(c.critic, c.critic.world_size), pool=pool_of("critic")),
}
