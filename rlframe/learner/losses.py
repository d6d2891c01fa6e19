"""Losses of the learners (pure torch; no DeepSpeed, no Ray)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def _k1(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return logp - ref


def _k2(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logp - ref) ** 2


def _k3(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # unbiased, always >= 0 (Schulman's k3); clamp keeps exp finite on outliers
    d = (ref - logp).clamp(-20.0, 20.0)
    return torch.exp(d) - d - 1.0


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3}


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def _token_mean(x: torch.Tensor, mask: torch.Tensor, norm_len: int | None = None) -> torch.Tensor:
    return masked_mean(x, mask)


def _seq_mean_token_mean(x: torch.Tensor, mask: torch.Tensor, norm_len: int | None = None) -> torch.Tensor:
    return ((x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def _seq_mean_token_sum(x: torch.Tensor, mask: torch.Tensor, norm_len: int | None = None) -> torch.Tensor:
    # Dr.GRPO: a constant normaliser (the generation budget) instead of each sequence's length;
    # norm_len must not depend on the micro-batch (pass rollout.max_new_tokens)
    return (x * mask).sum() / (mask.shape[0] * (norm_len or mask.shape[-1]))


LOSS_AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "token_mean": _token_mean,
    "seq_mean_token_mean": _seq_mean_token_mean,
    "seq_mean_token_sum": _seq_mean_token_sum,
}


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
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip surrogate with asymmetric clip (clip-higher) plus a KL-to-reference term.

    logp/old_logp/ref_logp/mask: [B, T] over completion tokens (mask is 0 after EOS and on
    padding); advantages: [B] (one per sequence, broadcast over its tokens).
    """
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype).unsqueeze(-1)
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)
    metrics = {
        "clip_frac": masked_mean((clipped > unclipped).to(logp.dtype), mask).item(),
        "ratio": masked_mean(ratio, mask).item(),
    }
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


def sft_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on masked (assistant) tokens only, averaged over those tokens."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return masked_mean(ce.view_as(targets), mask.to(ce.dtype))
