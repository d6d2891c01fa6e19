"""examples/custom_algorithm: an advantage estimator and a policy loss added by name from a user's file, and the
algorithm keys' validation."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlframe.config import load_config
from rlframe.config.schema import AlgorithmConfig
from rlframe.errors import ConfigError
from rlframe.learner.advantages import ADVANTAGE_ESTIMATORS, compute_advantages
from rlframe.learner.losses import POLICY_LOSSES, policy_loss
from rlframe.registry import import_plugin

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_algorithm" / "my_algorithm.py"
ALGOS = Path(__file__).resolve().parents[2] / "conf" / "algorithm"


def test_the_example_registers_by_name_and_its_estimator_gives_hand_values():
    module = import_plugin(str(EXAMPLE))
    assert import_plugin(str(EXAMPLE)) is module                 # imported once per process
    assert "group_rank" in ADVANTAGE_ESTIMATORS and "cispo" in POLICY_LOSSES
    # group [3, 1, 2, 2]: ranks 3, 0, 1.5, 1.5 -> centred by 1.5 and scaled by 1.5: 1, -1, 0, 0
    adv = compute_advantages("group_rank", torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 5.0, 5.0, 5.0]), 4, 1e-4)
    assert adv.tolist() == [1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # CISPO keeps a gradient on a token that PPO's clip silences (A > 0, ratio 1.5 > 1.28), scaled by the cap
    old = torch.zeros(1, 1, dtype=torch.float64)
    for name, grad in (("ppo", 0.0), ("cispo", -1.28)):
        logp = torch.log(torch.tensor([[1.5]], dtype=torch.float64)).requires_grad_(True)
        loss, m = policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 1), loss_fn=name)
        loss.backward()
        assert logp.grad.item() == pytest.approx(grad) and m["clip_frac"] == 1.0


def test_the_config_line_of_the_example_validates_and_without_the_plugin_names_the_key():
    cfg = load_config([f"algorithm.plugins=[{EXAMPLE}]", "algorithm.name=group_rank", "algorithm.policy_loss=cispo"])
    assert cfg.algorithm.name == "group_rank" and cfg.algorithm.plugins == [str(EXAMPLE)]
    with pytest.raises(ConfigError, match=r"algorithm.policy_loss='nope': expected one of .*'gspo', 'ppo'"):
        load_config(["algorithm.policy_loss=nope"])
    with pytest.raises(ConfigError, match=r"algorithm.plugins\[0\]='/no/such.py': cannot import"):
        load_config(["algorithm.plugins=[/no/such.py]"])


@pytest.mark.parametrize("override,message", [
    ("algorithm.updates_per_batch=3", "algorithm.updates_per_batch=3: must divide the rows each learner rank gets"),
    ("algorithm.updates_per_batch=0", "algorithm.updates_per_batch=0: must be >= 1"),
    ("algorithm.epochs=0", "algorithm.epochs=0: must be >= 1"),
    ("algorithm.dual_clip_c=1.0", "algorithm.dual_clip_c=1.0: must be > 1"),
    ("algorithm.kl_in=both", "algorithm.kl_in='both': expected one of 'loss', 'reward'"),
    ("algorithm.kl_estimator=k4", "algorithm.kl_estimator='k4': expected one of 'k1', 'k2', 'k3', 'k3_clamped'"),
    ("algorithm.mismatch.mode=is", "algorithm.mismatch.mode='is': expected one of 'tis', 'mis', 'none'"),
    ("algorithm.mismatch.tis_cap=0.5", "algorithm.mismatch.tis_cap=0.5: must be >= 1.0"),
    ("algorithm.mismatch.mis_low=1.5", "algorithm.mismatch.mis_low=1.5: must be in [0.0, 1.0]"),
])
def test_algorithm_keys_are_validated(override, message):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert message in str(err.value)


def test_every_algorithm_file_loads_and_tis_is_on_by_default():
    names = sorted(p.stem for p in ALGOS.glob("*.yaml"))
    assert {"grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gspo"} <= set(names)
    for name in names:
        a = load_config([f"algorithm={name}"]).algorithm
        assert a.mismatch.mode == "tis" and a.updates_per_batch >= 1
    assert AlgorithmConfig().mismatch.mode == "tis"
    gspo = load_config(["algorithm=gspo"]).algorithm
    assert (gspo.policy_loss, gspo.updates_per_batch, gspo.kl_coef) == ("gspo", 4, 0.0)
    rpp = load_config(["algorithm=reinforce_pp"]).algorithm
    assert (rpp.name, rpp.kl_in) == ("reinforce_pp", "reward")
