"""Fast tests of rlframe/learner/advantages.py (pure)."""
from __future__ import annotations

import math

import pytest
import torch

from rlframe.learner.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, dr_grpo, grpo, rloo

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])


def test_grpo_exact_values_and_zero_variance_group():
    adv = grpo(REWARDS, 4, eps=1e-4)
    # group 1: mean 0.5, unbiased std = sqrt(4 * 0.25 / 3) = sqrt(1/3) = 0.5773502692
    std = math.sqrt(1 / 3)
    a = 0.5 / (std + 1e-4)                      # 0.5 / 0.5774502692 = 0.8658754298
    assert a == pytest.approx(0.8658754298, abs=1e-9)
    expected = [a, -a, -a, a, 0.0, 0.0, 0.0, 0.0]
    assert adv.shape == (8,)
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)
    # zero-variance group: exactly 0, not NaN
    assert torch.equal(adv[4:], torch.zeros(4))


def test_grpo_eps_is_used():
    adv = grpo(torch.tensor([0.0, 2.0]), 2, eps=1.0)
    # mean 1, unbiased std sqrt(2) -> (±1)/(sqrt 2 + 1) = ±0.41421356
    assert adv.tolist() == pytest.approx([-1 / (math.sqrt(2) + 1), 1 / (math.sqrt(2) + 1)], abs=1e-6)


def test_dr_grpo_centred_only():
    adv = dr_grpo(REWARDS, 4)
    assert adv.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0], abs=1e-7)
    adv = dr_grpo(torch.tensor([3.0, 0.0, 0.0, 1.0]), 4)   # mean 1
    assert adv.tolist() == pytest.approx([2.0, -1.0, -1.0, 0.0], abs=1e-7)


def test_rloo_leave_one_out():
    adv = rloo(REWARDS, 4)
    # r_i - (sum - r_i)/3 with sum 2: 1 - 1/3 = 2/3;  0 - 2/3 = -2/3; second group 2 - 6/3 = 0
    assert adv.tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 0.0, 0.0, 0.0], abs=1e-6)
    adv = rloo(torch.tensor([3.0, 0.0, 0.0, 1.0]), 4)      # sum 4
    # 3 - 1/3 = 8/3; 0 - 4/3; 0 - 4/3; 1 - 3/3 = 0
    assert adv.tolist() == pytest.approx([8 / 3, -4 / 3, -4 / 3, 0.0], abs=1e-6)


@pytest.mark.parametrize("fn", [grpo, dr_grpo, rloo])
def test_wrong_length_raises_naming_group_size(fn):
    with pytest.raises(ValueError, match="group_size=4"):
        fn(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="group_size"):
        fn(torch.zeros(2, 4), 4)          # not flat


def test_compute_advantages_dispatches_by_name():
    assert set(ADVANTAGE_ESTIMATORS) == {"grpo", "dr_grpo", "rloo"}
    for name, fn in (("grpo", grpo), ("dr_grpo", dr_grpo), ("rloo", rloo)):
        assert torch.equal(compute_advantages(name, REWARDS, 4, 1e-4), fn(REWARDS, 4, 1e-4))
    # the three differ on this input, so dispatch is observable
    a = compute_advantages("grpo", REWARDS, 4, 1e-4)[0].item()
    b = compute_advantages("dr_grpo", REWARDS, 4, 1e-4)[0].item()
    c = compute_advantages("rloo", REWARDS, 4, 1e-4)[0].item()
    assert (round(a, 4), b, round(c, 4)) == (0.8659, 0.5, 0.6667)
    with pytest.raises(KeyError):
        compute_advantages("ppo", REWARDS, 4, 1e-4)
