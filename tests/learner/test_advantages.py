"""Fast tests of rlframe/learner/advantages.py (pure)."""
from __future__ import annotations

import math

import pytest
import torch

from rlframe.learner.advantages import (ADVANTAGE_ESTIMATORS, compute_advantages, dr_grpo, grpo, reinforce_pp,
                                       reinforce_pp_baseline, rloo)

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


def test_reinforce_pp_whitens_the_raw_reward_over_the_batch():
    # REWARDS: mean 10/8 = 1.25; deviations -.25, -1.25, -1.25, -.25, .75 x4; sum of squares
    # 2*.0625 + 2*1.5625 + 4*.5625 = 5.5 -> unbiased std sqrt(5.5/7) = 0.8864052604
    std = math.sqrt(5.5 / 7)
    assert std == pytest.approx(0.8864052604, abs=1e-9)
    adv = reinforce_pp(REWARDS, 4, eps=0.0)
    assert adv.tolist() == pytest.approx([d / std for d in (-0.25, -1.25, -1.25, -0.25, .75, .75, .75, .75)], abs=1e-6)
    # no group baseline: the all-2 group keeps a positive advantage (GRPO gives it exactly 0)
    assert (adv[4:] > 0).all() and (grpo(REWARDS, 4)[4:] == 0).all()
    assert torch.equal(reinforce_pp(torch.ones(4), 2), torch.zeros(4))   # identical rewards: 0, not NaN


def test_reinforce_pp_baseline_group_centred_then_batch_std():
    # group-centred: [.5, -.5, -.5, .5, 0, 0, 0, 0] (mean 0); unbiased std sqrt(4 * .25 / 7) = 0.3779644730
    std = math.sqrt(1 / 7)
    adv = reinforce_pp_baseline(REWARDS, 4, eps=0.0)
    assert adv.tolist() == pytest.approx([.5 / std, -.5 / std, -.5 / std, .5 / std, 0, 0, 0, 0], abs=1e-6)
    assert .5 / std == pytest.approx(1.3228756555, abs=1e-9)
    # one batch std for every group: a group with 10x the spread gets 10x the advantages (GRPO equalises them)
    two = reinforce_pp_baseline(torch.tensor([0.0, 1.0, 0.0, 10.0]), 2)
    assert two[3].item() == pytest.approx(10 * two[1].item(), rel=1e-6)
    g = grpo(torch.tensor([0.0, 1.0, 0.0, 10.0]), 2)
    assert g[3].item() == pytest.approx(g[1].item(), rel=1e-3)


@pytest.mark.parametrize("fn", [grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline])
def test_wrong_length_raises_naming_group_size(fn):
    with pytest.raises(ValueError, match="group_size=4"):
        fn(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="group_size"):
        fn(torch.zeros(2, 4), 4)          # not flat


def test_compute_advantages_dispatches_by_name():
    assert {"grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"} <= set(ADVANTAGE_ESTIMATORS)
    for name, fn in (("grpo", grpo), ("dr_grpo", dr_grpo), ("rloo", rloo), ("reinforce_pp", reinforce_pp),
                     ("reinforce_pp_baseline", reinforce_pp_baseline)):
        assert torch.equal(compute_advantages(name, REWARDS, 4, 1e-4), fn(REWARDS, 4, 1e-4))
    # the three differ on this input, so dispatch is observable
    a = compute_advantages("grpo", REWARDS, 4, 1e-4)[0].item()
    b = compute_advantages("dr_grpo", REWARDS, 4, 1e-4)[0].item()
    c = compute_advantages("rloo", REWARDS, 4, 1e-4)[0].item()
    assert (round(a, 4), b, round(c, 4)) == (0.8659, 0.5, 0.6667)
    with pytest.raises(KeyError):
        compute_advantages("ppo", REWARDS, 4, 1e-4)
