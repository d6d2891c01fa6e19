"""Policy losses, dual clip, GSPO, the mismatch weights (TIS/MIS) and the clamped k3, against hand values."""
from __future__ import annotations

import math

import pytest
import torch

from rlframe.learner.losses import KL_ESTIMATORS, POLICY_LOSSES, mismatch_weights, policy_loss


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def test_both_clip_bounds_split_into_low_and_high():
    # 4 tokens: ratios 0.5 (A<0: clipped low), 1.5 (A>0: clipped high), 0.5 with A>0 and 1.5 with A<0 (not clipped:
    # the unclipped side is the pessimistic one there)
    old = _t([[0.0, 0.0], [0.0, 0.0]])
    logp = _t([[math.log(0.5), math.log(1.5)], [math.log(0.5), math.log(1.5)]]).requires_grad_(True)
    adv = _t([-1.0, 1.0])
    loss, m = policy_loss(logp, old, adv, torch.ones(2, 2), eps_low=0.2, eps_high=0.28)
    # per token: row 0 (A=-1): max(0.5, 0.8) = 0.8, max(1.5, 1.28) = 1.5; row 1 (A=1): max(-0.5, -0.8) = -0.5,
    # max(-1.5, -1.28) = -1.28 -> mean (0.8 + 1.5 - 0.5 - 1.28) / 4 = 0.13
    assert loss.item() == pytest.approx(0.13, abs=1e-9)
    assert m["clip_frac_low"] == 0.25 and m["clip_frac_high"] == 0.25 and m["clip_frac"] == 0.5
    loss.backward()
    # the clipped tokens get no gradient, the others d/dlogp (-A r) / 4
    assert logp.grad.flatten().tolist() == pytest.approx([0.0, 1.5 / 4, -0.5 / 4, 0.0], abs=1e-12)


def test_dual_clip_bounds_the_loss_of_negative_advantages():
    old = _t([[0.0, 0.0, 0.0]])
    logp = _t([[math.log(10.0), math.log(2.0), math.log(10.0)]]).requires_grad_(True)
    adv = _t([-2.0])
    plain, m0 = policy_loss(logp, old, adv, torch.ones(1, 3))
    # without dual clip the per-token loss is |A| r: 20, 4, 20 (unbounded in r)
    assert plain.item() == pytest.approx((20 + 4 + 20) / 3) and "dual_clip_frac" not in m0
    loss, m = policy_loss(logp, old, adv, torch.ones(1, 3), dual_clip_c=3.0)
    # with c = 3: min(|A| r, 3 |A|) = 6, 4, 6; the capped tokens carry no gradient
    assert loss.item() == pytest.approx((6 + 4 + 6) / 3)
    assert m["dual_clip_frac"] == pytest.approx(2 / 3)
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([0.0, 2.0 * 2.0 / 3, 0.0], abs=1e-12)
    # positive advantages are untouched by the dual clip
    pos, _ = policy_loss(logp.detach(), old, _t([2.0]), torch.ones(1, 3), dual_clip_c=3.0)
    ref, _ = policy_loss(logp.detach(), old, _t([2.0]), torch.ones(1, 3))
    assert pos.item() == ref.item() == pytest.approx(-2.0 * 1.28)


def test_gspo_ratio_is_the_geometric_mean_of_the_token_ratios():
    old = _t([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    r = [[1.2, 0.9, 1.05, 99.0], [0.5, 1.0, 1.0, 1.0]]        # row 0's last token is masked (ignored)
    logp = torch.log(_t(r)).requires_grad_(True)
    mask = _t([[1, 1, 1, 0], [1, 1, 1, 1]])
    adv = _t([1.0, -1.0])
    per_token, m = POLICY_LOSSES.get("gspo")(logp, old, adv, mask, eps_low=10.0, eps_high=10.0)
    g0 = (1.2 * 0.9 * 1.05) ** (1 / 3)
    g1 = 0.5 ** (1 / 4)
    assert per_token.detach()[0, :3].tolist() == pytest.approx([-g0] * 3, abs=1e-12)
    assert per_token.detach()[1].tolist() == pytest.approx([g1] * 4, abs=1e-12)
    assert m["ratio_mean"] == pytest.approx((3 * g0 + 4 * g1) / 7, abs=1e-12)
    # with seq_mean_token_mean the gradient is exactly the one of the sequence objective -A_i * s_i
    loss, _ = policy_loss(logp, old, adv, mask, eps_low=10.0, eps_high=10.0, loss_fn="gspo", agg="seq_mean_token_mean")
    loss.backward()
    direct = torch.log(_t(r)).requires_grad_(True)
    s = torch.exp((direct * mask).sum(-1) / mask.sum(-1))
    (-(adv * s).mean()).backward()
    assert logp.grad.flatten().tolist() == pytest.approx(direct.grad.flatten().tolist(), abs=1e-12)
    # and it clips the sequence as a whole: a GSPO-sized range clips row 0 (ratio 1.047 > 1 + 4e-4)
    _, m = POLICY_LOSSES.get("gspo")(logp.detach(), old, adv, mask, eps_low=3e-4, eps_high=4e-4)
    assert m["clip_frac_high"] == pytest.approx(3 / 7) and m["clip_frac_low"] == pytest.approx(4 / 7)


def test_edge_cases_all_masked_sequence_and_one_token_completion():
    old = _t([[-1.0, -1.0], [-2.0, -3.0]])
    logp = (old + _t([[0.3, 5.0], [0.1, 0.0]])).requires_grad_(True)
    mask = _t([[0, 0], [1, 0]])           # row 0: nothing to train on; row 1: a one-token completion
    for name in ("ppo", "gspo"):
        for agg in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum"):
            loss, m = policy_loss(logp, old, _t([1.0, 1.0]), mask, loss_fn=name, agg=agg, dual_clip_c=3.0)
            assert torch.isfinite(loss), (name, agg)
            (g,) = torch.autograd.grad(loss, logp)
            assert g[0].tolist() == [0.0, 0.0] and g[1, 1].item() == 0.0 and g[1, 0].item() != 0.0
            assert m["ratio_mean"] == pytest.approx(math.exp(0.1))   # the one real token
    # identical rewards -> zero advantages -> zero loss, zero gradient (no NaN)
    loss, _ = policy_loss(logp, old, _t([0.0, 0.0]), mask)
    assert loss.item() == 0.0


def test_tis_caps_the_token_weights():
    old = _t([[0.0, 0.0, 0.0, 0.0]])
    behaviour = -torch.log(_t([[0.5, 1.0, 3.0, 100.0]]))      # old / behaviour = 0.5, 1, 3, 100 (last masked)
    mask = _t([[1, 1, 1, 0]])
    w, m = mismatch_weights(old, behaviour, mask, "tis", tis_cap=2.0)
    assert w[0, :3].tolist() == pytest.approx([0.5, 1.0, 2.0], abs=1e-12)
    assert m["mismatch/truncated_frac"] == pytest.approx(1 / 3)
    assert m["logprob_abs_diff"] == pytest.approx((math.log(2) + 0 + math.log(3)) / 3)
    kl = [math.exp(d) - d - 1 for d in (-math.log(2), 0.0, math.log(3))]
    assert m["mismatch/kl"] == pytest.approx(sum(kl) / 3)
    # the weight scales the token's policy loss (ratio 1, A = 1: per token -w)
    loss, _ = policy_loss(old, old, _t([1.0]), mask, weights=w)
    assert loss.item() == pytest.approx(-(0.5 + 1.0 + 2.0) / 3)
    none, m = mismatch_weights(old, behaviour, mask, "none")
    assert none is None and "mismatch/truncated_frac" not in m and m["mismatch/kl"] > 0


def test_mis_drops_sequences_whose_ratio_is_out_of_bounds():
    old = torch.zeros(3, 2, dtype=torch.float64)
    # sequence ratios (geometric means): row 0: sqrt(1.5 * 1.2) ~ 1.34 (kept); row 1: sqrt(4 * 2) ~ 2.83 (dropped);
    # row 2: one token, 0.25 (dropped)
    behaviour = -torch.log(_t([[1.5, 1.2], [4.0, 2.0], [0.25, 1.0]]))
    mask = _t([[1, 1], [1, 1], [1, 0]])
    w, m = mismatch_weights(old, behaviour, mask, "mis", mis_low=0.5, mis_high=2.0)
    assert w.tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    assert m["mismatch/truncated_frac"] == pytest.approx(2 / 3)


def test_k3_clamped_caps_outliers_and_agrees_elsewhere():
    logp = _t([-1.0, -1.0, -20.0])
    ref = _t([-1.2, -0.5, -1.0])
    k3, low_var = KL_ESTIMATORS["k3"](logp, ref), KL_ESTIMATORS["k3_clamped"](logp, ref)
    assert low_var[:2].tolist() == k3[:2].tolist()
    assert k3[2].item() > 1e7 and low_var[2].item() == 10.0
