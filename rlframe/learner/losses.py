"""Losses of the learners (pure torch; no DeepSpeed, no Ray).

A policy loss is a function in POLICY_LOSSES: ``fn(logp, old_logp, advantages, mask, *, eps_low, eps_high,
dual_clip_c) -> (per-token loss [B, T], metrics)``; `policy_loss` adds the mismatch weights and the KL term
and aggregates. `algorithm.policy_loss=NAME` picks one; a plugin adds its own with ``@POLICY_LOSSES.register``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from rlframe.registry import Registry


def _k1(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return logp - ref


def _k2(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logp - ref) ** 2


def _k3(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # unbiased, always >= 0 (Schulman's k3); clamp keeps exp finite on outliers
    d = (ref - logp).clamp(-20.0, 20.0)
    return torch.exp(d) - d - 1.0


def _k3_clamped(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # "low-variance KL": k3 capped at 10, so one token far from the reference cannot dominate the step
    return _k3(logp, ref).clamp(max=10.0)


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": _k1, "k2": _k2, "k3": _k3, "k3_clamped": _k3_clamped}


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def seq_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean over its masked tokens ([B]; 0 for a sequence without tokens)."""
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def _token_mean(x: torch.Tensor, mask: torch.Tensor, norm_len: int | None = None) -> torch.Tensor:
    return masked_mean(x, mask)


def _seq_mean_token_mean(x: torch.Tensor, mask: torch.Tensor, norm_len: int | None = None) -> torch.Tensor:
    return seq_mean(x, mask).mean()


def _seq_mean_token_sum(x: torch.Tensor, mask: torch.Tensor, norm_len: int | None = None) -> torch.Tensor:
    # Dr.GRPO: a constant normaliser (the generation budget) instead of each sequence's length;
    # norm_len must not depend on the micro-batch (pass rollout.max_new_tokens)
    return (x * mask).sum() / (mask.shape[0] * (norm_len or mask.shape[-1]))


LOSS_AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "token_mean": _token_mean,
    "seq_mean_token_mean": _seq_mean_token_mean,
    "seq_mean_token_sum": _seq_mean_token_sum,
}


def agg_units(agg: str, mask: torch.Tensor) -> float:
    """What LOSS_AGGREGATIONS[agg] divides by in a micro-batch: its masked tokens (token_mean) or its sequences.

    Every aggregation is (a sum over the micro-batch) / units, so scaling a micro-batch's loss by
    units / (the units of the whole update, over every micro-batch and rank) gives the update's own mean."""
    return float(mask.sum()) if agg == "token_mean" else float(mask.shape[0])

PolicyLoss = Callable[..., tuple[torch.Tensor, dict[str, float]]]
POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss")


def clipped_surrogate(ratio: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, eps_low: float, eps_high: float,
                      dual_clip_c: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """max(-A r, -A clip(r, 1-eps_low, 1+eps_high)) per token, and for A < 0 at most c|A| (dual clip), so
    that a huge ratio on a bad token cannot blow the step up. Clipped tokens get no gradient. `adv`: [B] (one
    per sequence) or [B, T] (per token: GAE)."""
    adv = adv.unsqueeze(-1) if adv.ndim == 1 else adv
    unclipped = -adv * ratio
    loss = torch.maximum(unclipped, -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high))
    low = (ratio < 1.0 - eps_low) & (adv < 0)
    high = (ratio > 1.0 + eps_high) & (adv > 0)
    m = {"clip_frac_low": masked_mean(low.to(mask.dtype), mask).item(),
         "clip_frac_high": masked_mean(high.to(mask.dtype), mask).item(),
         "ratio_mean": masked_mean(ratio.detach(), mask).item()}
    if dual_clip_c is not None:
        bound = -dual_clip_c * adv
        dual = (adv < 0) & (loss > bound)
        loss = torch.where(dual, bound.expand_as(loss), loss)
        m["dual_clip_frac"] = masked_mean(dual.to(mask.dtype), mask).item()
    m["clip_frac"] = m["clip_frac_low"] + m["clip_frac_high"]
    return loss, m


@POLICY_LOSSES.register("ppo")
def ppo(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
        eps_low: float, eps_high: float, dual_clip_c: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clip on the token ratio pi/pi_old, with clip-higher (eps_high > eps_low) and optional dual clip."""
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    return clipped_surrogate(ratio, advantages, mask, eps_low, eps_high, dual_clip_c)


@POLICY_LOSSES.register("gspo")
def gspo(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
         eps_low: float, eps_high: float, dual_clip_c: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO: one ratio per sequence, the geometric mean of its token ratios, clipped as a whole. Every token
    carries the sequence's ratio as value and ratio * d logp_t as gradient, so with seq_mean_token_mean this
    is exactly the gradient of the sequence-level objective."""
    log_seq = seq_mean((logp - old_logp).clamp(-20.0, 20.0), mask).detach().unsqueeze(-1)
    ratio = torch.exp(log_seq + logp - logp.detach())
    return clipped_surrogate(ratio, advantages, mask, eps_low, eps_high, dual_clip_c)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    agg: str = "token_mean",
    norm_len: int | None = None,
    *,
    loss_fn: str = "ppo",
    dual_clip_c: float | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """A registered policy loss, times the mismatch `weights` (TIS/MIS), plus kl_coef * KL to the reference.

    logp/old_logp/ref_logp/mask/weights: [B, T] over completion tokens (mask is 0 after EOS and on
    padding); advantages: [B] (one per sequence, broadcast over its tokens).
    """
    mask = mask.to(logp.dtype)
    per_token, metrics = POLICY_LOSSES.get(loss_fn)(logp, old_logp, advantages.to(logp.dtype), mask,
                                                    eps_low=eps_low, eps_high=eps_high, dual_clip_c=dual_clip_c)
    if weights is not None:
        per_token = per_token * weights.detach()
    # KL(pi_old || pi) from samples of pi_old, k3 form: how far this update moved the policy
    metrics["approx_kl"] = masked_mean(_k3(old_logp, logp.detach()), mask).item()
    kl_value = 0.0
    if ref_logp is not None:
        kl = KL_ESTIMATORS[kl_estimator](logp, ref_logp)
        kl_value = masked_mean(kl, mask).item()
        if kl_coef:
            per_token = per_token + kl_coef * kl
    loss = LOSS_AGGREGATIONS[agg](per_token, mask, norm_len)
    metrics["kl"] = kl_value
    metrics["loss"] = loss.item()
    return loss, metrics


def mismatch_weights(old_logp: torch.Tensor, behaviour_logp: torch.Tensor, mask: torch.Tensor, mode: str,
                     tis_cap: float = 2.0, mis_low: float = 0.5, mis_high: float = 2.0,
                     ) -> tuple[torch.Tensor | None, dict[str, float]]:
    """Importance weights between the generator (behaviour) and the learner's old policy, and how far apart
    they are. tis: min(pi_old / pi_behaviour, cap) per token; mis: 1 for a sequence whose ratio (geometric mean
    of its token ratios) lies in [mis_low, mis_high], 0 otherwise; none: no weights, only the metrics."""
    mask = mask.to(old_logp.dtype)
    d = torch.where(mask > 0, old_logp - behaviour_logp, torch.zeros_like(old_logp)).clamp(-20.0, 20.0)
    m = {"logprob_abs_diff": masked_mean(d.abs(), mask).item(),
         # KL(behaviour || old) from the behaviour's own samples (k3)
         "mismatch/kl": masked_mean(torch.exp(d) - d - 1.0, mask).item()}
    weights = None
    if mode == "tis":
        ratio = torch.exp(d)
        weights = ratio.clamp(max=tis_cap)
        m["mismatch/truncated_frac"] = masked_mean((ratio > tis_cap).to(mask.dtype), mask).item()
    elif mode == "mis":
        ratio = torch.exp(seq_mean(d, mask))
        keep = (ratio >= mis_low) & (ratio <= mis_high)
        weights = keep.to(mask.dtype).unsqueeze(-1).expand_as(mask)
        has = (mask.sum(-1) > 0).to(mask.dtype)
        m["mismatch/truncated_frac"] = float(((1 - keep.to(mask.dtype)) * has).sum() / has.sum().clamp(min=1))
    elif mode != "none":
        raise ValueError(f"mismatch mode {mode!r}: expected tis, mis or none")
    return weights, m


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The critic's loss, 0.5 (V - R)^2 per token (token mean). With `clip`, also the loss of V kept within
    old_V +- clip and the larger of the two taken (PPO's value clipping: a step cannot move V far from the
    values the advantages were computed with); `clip_frac` is the share of tokens where the clipped one won."""
    mask = mask.to(values.dtype)
    loss = 0.5 * (values - returns) ** 2
    frac = 0.0
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss_c = 0.5 * (clipped - returns) ** 2
        frac = masked_mean((loss_c > loss).to(mask.dtype), mask).item()
        loss = torch.maximum(loss, loss_c)
    out = masked_mean(loss, mask)
    return out, {"loss": out.item(), "value_mean": masked_mean(values.detach(), mask).item(), "clip_frac": frac}


def sft_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on masked (assistant) tokens only, averaged over those tokens."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return masked_mean(ce.view_as(targets), mask.to(ce.dtype))
