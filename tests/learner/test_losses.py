"""Fast tests of rlframe/learner/losses.py (pure torch; no DeepSpeed, no Ray)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rlframe.learner.losses import (
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    policy_loss,
    sft_loss,
)
from rlframe.models.logprobs import token_logprobs

ABS = 1e-6


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def _close(a: torch.Tensor, b, atol: float = 1e-9) -> None:
    # (torch.testing.assert_close costs ~1 s of lazy imports on first use)
    b = torch.as_tensor(b, dtype=a.dtype)
    assert a.shape == b.shape
    assert a.flatten().tolist() == pytest.approx(b.flatten().tolist(), abs=atol, rel=0)


# ------------------------------------------------------------------------------------ token_logprobs
def test_token_logprobs_matches_manual_log_softmax_with_temperature():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]],
                           [[2.0, 2.0, 2.0], [-3.0, 0.5, 1.5]]])
    targets = torch.tensor([[2, 1], [0, 2]])
    got = token_logprobs(logits, targets, temperature=2.0)
    manual = torch.log_softmax(logits / 2.0, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert got.shape == (2, 2)
    _close(got, manual, atol=1e-6)
    # one entry by hand: logits/2 = [0.5, 1, 1.5], target 2 -> 1.5 - log(e^.5 + e^1 + e^1.5)
    hand = 1.5 - math.log(math.exp(0.5) + math.exp(1.0) + math.exp(1.5))
    assert got[0, 0].item() == pytest.approx(hand, abs=1e-6)
    # uniform logits: log(1/3) whatever the temperature
    assert got[1, 0].item() == pytest.approx(math.log(1 / 3), abs=1e-6)
    # temperature 2 differs from temperature 1 on non-uniform rows
    t1 = token_logprobs(logits, targets)
    assert t1[0, 0].item() == pytest.approx(3.0 - math.log(math.exp(1) + math.exp(2) + math.exp(3)), abs=1e-6)
    assert abs(t1[0, 0].item() - got[0, 0].item()) > 0.1


def test_token_logprobs_upcasts_to_float32():
    logits = torch.tensor([[[1.0, 2.0]]], dtype=torch.bfloat16)
    out = token_logprobs(logits, torch.tensor([[1]]))
    assert out.dtype == torch.float32
    # log sigmoid(1) = -log(1 + e^-1)
    assert out.item() == pytest.approx(-math.log1p(math.exp(-1.0)), abs=1e-6)


# ------------------------------------------------------------------------------------ KL estimators
def test_kl_estimators_hand_values():
    logp = _t([-1.0, -2.0, -0.5])
    ref = _t([-1.5, -1.0, -0.5])
    # d = ref - logp = [-0.5, 1.0, 0.0]
    k1 = KL_ESTIMATORS["k1"](logp, ref)            # logp - ref = -d
    k2 = KL_ESTIMATORS["k2"](logp, ref)            # 0.5 * d^2
    k3 = KL_ESTIMATORS["k3"](logp, ref)            # e^d - d - 1
    _close(k1, [0.5, -1.0, 0.0])
    _close(k2, [0.125, 0.5, 0.0])
    expected_k3 = [math.exp(-0.5) + 0.5 - 1.0,     # 0.1065306597
                   math.e - 1.0 - 1.0,             # 0.7182818285
                   0.0]
    _close(k3, expected_k3)
    assert expected_k3[0] == pytest.approx(0.10653065971263342, abs=1e-12)
    assert (k3 >= 0).all()


def test_k3_nonnegative_on_random_values():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(200, generator=g, dtype=torch.float64) * 3
    ref = torch.randn(200, generator=g, dtype=torch.float64) * 3
    assert (KL_ESTIMATORS["k3"](logp, ref) >= 0).all()


# ------------------------------------------------------------------------------------ policy_loss
def test_ratio_one_gives_minus_mean_advantage_over_masked_tokens():
    logp = _t([[-1.0, -2.0, -3.0], [-0.5, -0.7, -0.9]])
    adv = _t([2.0, -1.0])
    mask = _t([[1, 1, 0], [1, 0, 0]])
    loss, m = policy_loss(logp, logp.clone(), adv, mask)
    # masked tokens: 2, 2, -1 -> loss = -(2 + 2 - 1)/3 = -1
    assert loss.item() == pytest.approx(-1.0, abs=ABS)
    assert m["clip_frac"] == 0.0
    assert m["ratio_mean"] == pytest.approx(1.0, abs=ABS)
    assert m["kl"] == 0.0


def test_clip_high_positive_advantage():
    # ratio = e^{log 1.5} = 1.5 > 1 + eps_high = 1.28 -> per token -A * 1.28
    old = _t([[0.0, 0.0]]) - 1.0
    logp = old + math.log(1.5)
    adv = _t([2.0])
    loss, m = policy_loss(logp, old, adv, torch.ones(1, 2), eps_low=0.2, eps_high=0.28)
    assert loss.item() == pytest.approx(-2.0 * 1.28, abs=ABS)   # -2.56
    assert m["clip_frac"] == 1.0
    assert m["ratio_mean"] == pytest.approx(1.5, abs=ABS)


def test_clip_low_negative_advantage():
    # ratio 0.5 < 1 - eps_low = 0.8; with A = -1: unclipped = 0.5, clipped = 0.8 -> max = 0.8
    old = _t([[-1.0, -1.0, -1.0]])
    logp = old + math.log(0.5)
    adv = _t([-1.0])
    loss, m = policy_loss(logp, old, adv, torch.ones(1, 3), eps_low=0.2, eps_high=0.28)
    assert loss.item() == pytest.approx(0.8, abs=ABS)
    assert m["clip_frac"] == 1.0
    # the clipped side carries no gradient
    logp = logp.clone().requires_grad_(True)
    loss, _ = policy_loss(logp, old, adv, torch.ones(1, 3), eps_low=0.2, eps_high=0.28)
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros_like(logp))


def test_no_clip_inside_trust_region_and_gradient():
    # A = 1, ratio = 1.1 (inside [0.8, 1.28]) -> loss = -1.1, d loss / d logp_t = -ratio / n = -1.1 / 2
    old = _t([[-2.0, -2.0]])
    logp = (old + math.log(1.1)).requires_grad_(True)
    loss, m = policy_loss(logp, old, _t([1.0]), torch.ones(1, 2))
    assert loss.item() == pytest.approx(-1.1, abs=ABS)
    assert m["clip_frac"] == 0.0
    loss.backward()
    _close(logp.grad, [[-0.55, -0.55]])


def test_masked_tokens_do_not_change_loss_nor_gradient():
    old = _t([[-1.0, -1.0, -1.0, -1.0], [-2.0, -2.0, -2.0, -2.0]])
    mask = _t([[1, 1, 0, 0], [1, 1, 1, 0]])
    adv = _t([1.0, -0.5])
    base = old + _t([[0.1, -0.1, 0.0, 0.0], [0.05, 0.0, -0.05, 0.0]])
    wild = base.clone()
    wild[mask == 0] = _t([1000.0, -1000.0, 800.0])   # garbage after EOS / on padding (e^1000 = inf)
    ref = old - 0.3
    ref_wild = ref.clone()
    ref_wild[mask == 0] = 0.0                   # ref - logp = 1000 there: e^1000 = inf

    results = []
    for lp, rf in ((base, ref), (wild, ref_wild)):
        lp = lp.clone().requires_grad_(True)
        loss, m = policy_loss(lp, old, adv, mask, ref_logp=rf, kl_coef=0.1)
        loss.backward()
        results.append((loss.item(), m, lp.grad))
    (l0, m0, g0), (l1, m1, g1) = results
    assert l0 == pytest.approx(l1, abs=1e-12)
    assert m0["clip_frac"] == m1["clip_frac"]
    assert m0["kl"] == pytest.approx(m1["kl"], abs=1e-12)
    # gradient exactly 0 on masked positions (no NaN leaking from inf * 0), identical elsewhere
    assert torch.equal(g1[mask == 0], torch.zeros(3, dtype=torch.float64))
    assert torch.equal(g0[mask == 0], torch.zeros(3, dtype=torch.float64))
    _close(g0, g1, atol=1e-12)
    assert (g0[mask == 1] != 0).all()


def test_kl_coef_adds_coef_times_mean_k3():
    logp = _t([[-1.0, -2.0, -0.5]])
    ref = _t([[-1.5, -1.0, -7.0]])
    mask = _t([[1, 1, 0]])
    adv = _t([3.0])
    loss0, m0 = policy_loss(logp, logp.clone(), adv, mask, ref_logp=ref, kl_coef=0.0)
    loss1, m1 = policy_loss(logp, logp.clone(), adv, mask, ref_logp=ref, kl_coef=0.1)
    mean_k3 = ((math.exp(-0.5) + 0.5 - 1.0) + (math.e - 2.0)) / 2   # (0.10653 + 0.71828)/2 = 0.41241
    assert loss0.item() == pytest.approx(-3.0, abs=ABS)             # ratio 1 -> -mean(adv)
    assert m0["kl"] == pytest.approx(mean_k3, abs=ABS)              # kl reported even with coef 0
    assert loss1.item() == pytest.approx(-3.0 + 0.1 * mean_k3, abs=ABS)
    assert m1["kl"] == pytest.approx(mean_k3, abs=ABS)
    # k1 estimator: mean(logp - ref) = (0.5 - 1.0)/2 = -0.25
    loss2, m2 = policy_loss(logp, logp.clone(), adv, mask, ref_logp=ref, kl_coef=0.1, kl_estimator="k1")
    assert m2["kl"] == pytest.approx(-0.25, abs=ABS)
    assert loss2.item() == pytest.approx(-3.0 - 0.025, abs=ABS)


# ------------------------------------------------------------------------------------ aggregations
X = _t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = _t([[1, 1, 1], [1, 0, 0]])


def test_aggregations_on_2x3_example():
    # token_mean: (1+2+3+4)/4 = 2.5
    assert LOSS_AGGREGATIONS["token_mean"](X, M).item() == pytest.approx(2.5)
    # seq_mean_token_mean: (6/3 + 4/1)/2 = 3
    assert LOSS_AGGREGATIONS["seq_mean_token_mean"](X, M).item() == pytest.approx(3.0)
    # seq_mean_token_sum (Dr.GRPO): sum / (B * T) = 10 / 6
    assert LOSS_AGGREGATIONS["seq_mean_token_sum"](X, M).item() == pytest.approx(10 / 6)


@pytest.mark.parametrize("agg,expected", [("token_mean", 2.5), ("seq_mean_token_mean", 3.0),
                                          ("seq_mean_token_sum", 10 / 6)])
def test_policy_loss_uses_requested_aggregation(agg, expected):
    # ratio 1 and advantages chosen so that per-token loss = -adv; adv per row differs, so use
    # per-row values: row 0 adv -2 -> per-token 2, row 1 adv -4 -> 4.
    # token_mean: (2+2+2+4)/4 = 2.5; seq_mean_token_mean: (2 + 4)/2 = 3; seq_sum: 10/6
    logp = torch.zeros(2, 3, dtype=torch.float64)
    loss, _ = policy_loss(logp, logp.clone(), _t([-2.0, -4.0]), M, agg=agg)
    assert loss.item() == pytest.approx(expected, abs=ABS)


# ------------------------------------------------------------------------------------ sft_loss
def test_sft_loss_counts_only_masked_positions():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, generator=g)
    targets = torch.tensor([[1, 4, 0, 2], [3, 3, 1, 0]])
    mask = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.float32)
    got = sft_loss(logits, targets, mask)
    sel = mask.bool()
    expected = F.cross_entropy(logits[sel], targets[sel])
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    # changing logits on unmasked positions does not change the loss
    logits2 = logits.clone()
    logits2[~sel] = 100.0 * torch.randn(int((~sel).sum()), 5, generator=g)
    assert sft_loss(logits2, targets, mask).item() == pytest.approx(expected.item(), abs=1e-6)
    # hand value for one position: uniform logits over 5 classes -> log 5
    assert sft_loss(torch.zeros(1, 2, 5), torch.tensor([[3, 1]]), torch.tensor([[1.0, 0.0]])).item() \
        == pytest.approx(math.log(5), abs=1e-6)


def test_seq_mean_token_sum_uses_a_fixed_normaliser_when_given():
    # Dr.GRPO: sum / (B * norm_len) = 10 / (2 * 8), independent of the micro-batch's padded width
    assert LOSS_AGGREGATIONS["seq_mean_token_sum"](X, M, 8).item() == pytest.approx(10 / 16)
    wider_x = torch.cat([X, torch.zeros(2, 4)], dim=1)
    wider_m = torch.cat([M, torch.zeros(2, 4)], dim=1)
    assert LOSS_AGGREGATIONS["seq_mean_token_sum"](wider_x, wider_m, 8).item() == pytest.approx(10 / 16)
