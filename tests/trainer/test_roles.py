"""The role map: declared once; CPU accounting and resource pools derived from it (no Ray started here)."""
from __future__ import annotations

import pytest

from rlframe.cluster.roles import Resources, RoleSpec, Roles, pool_bundles
from rlframe.trainer.roles import ROLES


def test_each_role_is_declared_once_with_its_config_section():
    from rlframe.config.schema import RLConfig

    cfg = RLConfig()
    cfg.rollout.num_workers, cfg.reward.num_workers, cfg.learner.world_size, cfg.critic.world_size = 3, 2, 4, 2
    got = {name: spec.resources(cfg).count for name, spec in ROLES.items()}
    assert got == {"rollout": 3, "reward": 2, "learner": 4, "critic": 2}
    assert {spec.name for spec in ROLES.values()} == set(ROLES)
    assert ROLES["reward"].options(cfg) == {"max_restarts": 3, "max_task_retries": 3}


def test_roles_in_one_pool_share_its_bundles():
    learner = Resources(2, num_cpus=1.0, num_gpus=0.5)
    rollout = Resources(1, num_cpus=0.5, num_gpus=0.5, custom={"node_a": 1.0})
    assert pool_bundles([learner, rollout]) == [{"CPU": 1.5, "GPU": 1.0, "node_a": 1.0}, {"CPU": 1.0, "GPU": 0.5}]
    assert pool_bundles([Resources(2, num_cpus=0)]) == [{"CPU": 0.01}, {"CPU": 0.01}]   # Ray needs a resource


def test_a_new_role_is_one_entry_and_is_counted():
    from rlframe.config.schema import RLConfig

    critic = RoleSpec("critic", object, resources=lambda c: Resources(2, num_cpus=1.5), pool="learner")
    roles = Roles({**ROLES, "critic": critic}, RLConfig())
    assert roles.required()["CPU"] == Roles(ROLES, RLConfig()).required()["CPU"] + 3.0
    assert [s.name for s in roles.needed()] == ["rollout", "reward", "learner", "critic"]
    assert critic.pool_name() == "learner" and ROLES["rollout"].pool_name(RLConfig()) == "rollout"


def test_the_critic_is_started_only_for_ppo_with_an_rl_stage():
    from rlframe.config import load_config

    assert "critic" not in [s.name for s in Roles(ROLES, load_config([])).needed()]
    assert "critic" not in [s.name for s in Roles(ROLES, load_config(["algorithm=dapo"])).needed()]
    assert "critic" not in [s.name for s in Roles(ROLES, load_config(["algorithm=ppo", "trainer.stages=[sft]"])).needed()]
    cfg = load_config(["algorithm=ppo", "critic.num_cpus_per_worker=1.5"])
    roles = Roles(ROLES, cfg)
    assert [s.name for s in roles.needed()][-1] == "critic" and ROLES["critic"].pool_name(cfg) == "critic"
    assert roles.required()["CPU"] == Roles(ROLES, load_config([])).required()["CPU"] + 1.5


@pytest.mark.parametrize("overrides, expected", [
    ([], True),                                                       # SFT then GRPO
    (["trainer.stages=[sft]"], True),                                 # `rlframe sft` evaluates during SFT
    (["trainer.stages=[sft]", "trainer.sft.eval_every=0", "trainer.sft.stop_threshold=null"], False),
    (["trainer.stages=[grpo]"], True),
])
def test_generators_are_counted_whenever_they_are_started(overrides, expected):
    """The CPUs Ray is started with must cover every role the run starts (a 2-core `rlframe sft` with
    SFT evaluation once could not place its learners)."""
    from rlframe.config import load_config
    from rlframe.cluster.roles import Roles
    from rlframe.trainer.roles import ROLES, needs_generators

    cfg = load_config(overrides)
    assert needs_generators(cfg) is expected
    # the CPUs asked of a local Ray cover every role the run starts
    learners = cfg.learner.world_size * cfg.learner.num_cpus_per_worker
    others = cfg.rollout.num_workers * cfg.rollout.num_cpus_per_worker + cfg.reward.num_workers * cfg.reward.num_cpus_per_worker
    assert Roles(ROLES, cfg).required()["CPU"] == learners + (others if expected else 0)
