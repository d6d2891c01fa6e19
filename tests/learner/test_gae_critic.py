"""Fast tests of PPO's critic math (pure): token rewards, GAE against hand computations, whitening, explained
variance, the clipped value loss, and token-level advantages in the policy loss."""
from __future__ import annotations

import pytest
import torch

from rlframe.learner.advantages import (compute_advantages, explained_variance, gae, masked_whiten,
                                        token_rewards)
from rlframe.learner.losses import policy_loss, value_loss

# position t of a row scores token t+1; 1 = a completion token
MASK = torch.tensor([[0.0, 1.0, 1.0, 1.0],    # a 3-token completion after a 1-token prompt
                     [1.0, 0.0, 1.0, 0.0],    # a masked token in the middle, padding at the end
                     [0.0, 0.0, 0.0, 1.0],    # a one-token completion
                     [0.0, 0.0, 0.0, 0.0]])   # no completion tokens (an all-masked row)
VALUES = torch.tensor([[9.0, 0.5, 0.4, 0.2],
                       [0.5, 7.0, 0.4, 3.0],
                       [1.0, 2.0, 3.0, 0.3],
                       [1.0, 1.0, 1.0, 1.0]])


def test_token_rewards_put_the_reward_on_the_last_token_and_the_kl_on_every_token():
    r = token_rewards(torch.tensor([1.0, 1.0, 2.0, 5.0]), MASK)
    assert r.tolist() == [[0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 2], [0, 0, 0, 0]]
    kl = torch.full_like(MASK, 0.5)
    r = token_rewards(torch.tensor([1.0, 1.0, 2.0, 5.0]), MASK, kl, kl_coef=0.1)
    assert r[0].tolist() == pytest.approx([0.0, -0.05, -0.05, 0.95])
    assert r[1].tolist() == pytest.approx([-0.05, 0.0, 0.95, 0.0]) and r[3].tolist() == [0, 0, 0, 0]


def test_gae_matches_the_hand_computation():
    gamma, lam = 0.9, 0.8
    rewards = token_rewards(torch.tensor([1.0, 1.0, 1.0, 1.0]), MASK)
    adv, ret = gae(rewards, VALUES, MASK, gamma, lam)
    # row 0, tokens V = 0.5, 0.4, 0.2, r = 0, 0, 1 (V after the last token = 0):
    #   d2 = 1 - 0.2 = 0.8                  A2 = 0.8
    #   d1 = 0.9 * 0.2 - 0.4 = -0.22        A1 = -0.22 + 0.72 * 0.8 = 0.356
    #   d0 = 0.9 * 0.4 - 0.5 = -0.14        A0 = -0.14 + 0.72 * 0.356 = 0.11632
    assert adv[0].tolist() == pytest.approx([0.0, 0.11632, 0.356, 0.8])
    assert ret[0].tolist() == pytest.approx([0.0, 0.61632, 0.756, 1.0])
    # row 1: the masked position is skipped (not a step): V = 0.5, 0.4, r = 0, 1
    #   A1 = 1 - 0.4 = 0.6, A0 = 0.9 * 0.4 - 0.5 + 0.72 * 0.6 = 0.292
    assert adv[1].tolist() == pytest.approx([0.292, 0.0, 0.6, 0.0])
    assert ret[1].tolist() == pytest.approx([0.792, 0.0, 1.0, 0.0])
    # one-token completion: A = r - V = 0.7, return = r; an all-masked row: nothing
    assert adv[2].tolist() == pytest.approx([0, 0, 0, 0.7]) and ret[2].tolist() == pytest.approx([0, 0, 0, 1.0])
    assert adv[3].tolist() == [0, 0, 0, 0] and ret[3].tolist() == [0, 0, 0, 0]


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.1, 0.2, 0.3]])
    values = torch.tensor([[0.5, 0.25, 0.0]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), 1.0, 1.0)
    assert ret[0].tolist() == pytest.approx([0.6, 0.5, 0.3])      # the Monte Carlo returns
    assert adv[0].tolist() == pytest.approx([0.1, 0.25, 0.3])
    # lambda 0: one-step TD errors
    adv0, _ = gae(rewards, values, torch.ones(1, 3), 1.0, 0.0)
    assert adv0[0].tolist() == pytest.approx([0.1 + 0.25 - 0.5, 0.2 + 0.0 - 0.25, 0.3])


def test_whitening_and_explained_variance():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    w = masked_whiten(x, m)
    assert w[m > 0].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert w[m > 0].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5) and w[:, 2].tolist() == [0, 0]
    ret = torch.tensor([[1.0, 2.0, 9.0]])
    m = torch.tensor([[1.0, 1.0, 0.0]])
    assert explained_variance(ret, ret, m) == pytest.approx(1.0)
    # V = 0: Var(r - 0) = Var(r) -> 0; V = r - 0.5 (off by a constant) -> 1; V = 1.5 on both -> 0
    assert explained_variance(torch.zeros(1, 3), ret, m) == pytest.approx(0.0, abs=1e-6)
    assert explained_variance(ret - 0.5, ret, m) == pytest.approx(1.0)
    # V = (1, 1): Var(r - V) = Var((0, 1)) = 0.25 = Var(r) -> 0; V = (1, 1.5): Var((0, 0.5)) = 1/16 -> 0.75
    assert explained_variance(torch.tensor([[1.0, 1.5, 0.0]]), ret, m) == pytest.approx(0.75)
    # a constant critic explains nothing: Var(r - c) = Var(r)
    assert explained_variance(torch.full((1, 3), 5.0), ret, m) == pytest.approx(0.0, abs=1e-6)
    assert explained_variance(torch.zeros(1, 3), torch.ones(1, 3), m) == 0.0   # returns that do not vary
    with pytest.raises(ValueError, match="critic"):
        compute_advantages("gae", torch.zeros(4), 2, 1e-4)


def test_value_clipping_keeps_the_larger_loss_and_stops_the_gradient_of_clipped_tokens():
    values = torch.tensor([[1.0, 0.0]], requires_grad=True)
    old, ret, mask = torch.zeros(1, 2), torch.tensor([[2.0, 1.0]]), torch.ones(1, 2)
    loss, m = value_loss(values, old, ret, mask, clip=0.5)
    # token 0: unclipped 0.5 (1-2)^2 = 0.5, clipped V = 0.5: 0.5 (0.5-2)^2 = 1.125 -> 1.125; token 1: 0.5 both
    assert loss.item() == pytest.approx((1.125 + 0.5) / 2) and m["clip_frac"] == 0.5
    assert m["value_mean"] == pytest.approx(0.5)
    loss.backward()
    assert values.grad[0].tolist() == pytest.approx([0.0, -0.5])   # the clipped token gets no gradient
    plain, m = value_loss(values.detach(), old, ret, mask)
    assert plain.item() == pytest.approx(0.5) and m["clip_frac"] == 0.0
    # masked tokens do not count
    masked, _ = value_loss(values.detach(), old, ret, torch.tensor([[0.0, 1.0]]), clip=0.5)
    assert masked.item() == pytest.approx(0.5)


def test_policy_loss_takes_token_level_advantages():
    logp = torch.tensor([[-1.0, -0.5, -2.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    adv = torch.tensor([[1.0, -2.0, 5.0]])
    loss, _ = policy_loss(logp, logp.detach(), adv, mask)
    loss.backward()
    # ratio 1: the loss is -mean(A) over the masked tokens, the gradient -A / n per token
    assert loss.item() == pytest.approx(0.5)
    assert logp.grad[0].tolist() == pytest.approx([-0.5, 1.0, 0.0])


def test_rollout_dumps_show_a_token_level_advantage_as_the_first_completion_tokens():
    from rlframe.data.rollout_batch import Completion, RolloutBatch

    batch = RolloutBatch([{"id": 0}], [[1, 2]], 2)
    batch.add([Completion(0, [5, 6], [-1.0, -1.0], sample_index=i) for i in range(2)])
    batch.rewards = [1.0, 0.0]
    batch.advantages = torch.tensor([[0.0, 0.7, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert [r["advantage"] for r in batch.dump_rows(2)] == [pytest.approx(0.7), 0.0]
