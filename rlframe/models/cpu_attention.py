"""Attention for compiled bf16 training on CPU (pure torch): SDPA's flash forward, a backward of matrix multiplies.

torch's CPU flash-attention backward is about five times its forward and does not get faster when the mask
leaves most of the scores out (measured: 8 packed rows of 338 tokens, 6 heads of 64, 8 layers, bf16, one thread,
0.27 s backward against 0.05 s forward). Recomputing the probabilities from the forward's log-sum-exp and taking
the gradients as four bf16 matrix multiplies lets inductor fuse the element-wise work around them: compiled
forward plus backward 0.24 s against 0.36 s. It holds one layer's [B, H, L, S] scores at a time during the
backward (in float32), so above `MAX_SCORES` elements, in float32 (where the multiplies are not faster), without
gradients or off the CPU, the attention is transformers' own SDPA. The learners switch to it only when compiled:
eager, each element-wise op is a pass over the scores (0.78 s).
"""
from __future__ import annotations

from typing import Any

import torch

NAME = "rlframe_cpu_sdpa"
MAX_SCORES = 2 ** 26   # [B, H, L, S] elements held by the backward (three float32 copies: 768 MiB)


class FlashForwardMatmulBackward(torch.autograd.Function):
    """softmax(q k^T * scale + mask) v, with `mask` additive ([B or 1, H or 1, L, S], q's dtype)."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                scale: float) -> torch.Tensor:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=mask,
                                                                              scale=scale)
        ctx.save_for_backward(q, k, v, mask, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, mask, out, lse = ctx.saved_tensors
        scale = ctx.scale
        probs = torch.exp(torch.matmul(q, k.transpose(-1, -2)).float() * scale + mask - lse.unsqueeze(-1))
        dv = torch.matmul(probs.to(q.dtype).transpose(-1, -2), grad)
        dprobs = torch.matmul(grad, v.transpose(-1, -2)).float()
        rowdot = (grad.float() * out.float()).sum(-1, keepdim=True)
        dscores = (probs * (dprobs - rowdot)).to(q.dtype)
        return torch.matmul(dscores, k) * scale, torch.matmul(dscores.transpose(-1, -2), q) * scale, dv, None, None


def additive_mask(mask: torch.Tensor | None, causal: bool, q_len: int, k_len: int, like: torch.Tensor) -> torch.Tensor:
    """transformers' attention mask (None, bool: True attends, or already additive) as an additive one, never -inf
    (a query that sees no key would make the backward's exp(score - log-sum-exp) NaN)."""
    low = torch.finfo(like.dtype).min
    if mask is None:
        if not causal:
            return like.new_zeros(1, 1, q_len, k_len)
        keep = torch.arange(q_len, device=like.device)[:, None] >= torch.arange(k_len, device=like.device)[None, :]
        mask = keep.view(1, 1, q_len, k_len)
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(~mask, low)
    return mask.to(like.dtype).clamp(min=low)


def cpu_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature ([B, H, L, D] in, [B, L, H, D] out)."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    b, h, q_len, d = query.shape
    k_len = key.shape[2]
    if (not torch.is_grad_enabled() or query.device.type != "cpu" or dropout > 0 or kwargs.get("position_bias") is not None
            or query.dtype not in (torch.bfloat16, torch.float16) or b * h * q_len * k_len > MAX_SCORES):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    causal = q_len > 1 and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
    mask = additive_mask(attention_mask, causal, q_len, k_len, query)
    out = FlashForwardMatmulBackward.apply(query, key, value, mask, d ** -0.5 if scaling is None else scaling)
    return out.transpose(1, 2).contiguous(), None


def use_cpu_sdpa(model: Any) -> bool:
    """Switch a transformers model (and its sub-models) to `cpu_sdpa_attention`. False, unchanged, for a model
    whose attention is not the functional kind transformers can switch."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, cpu_sdpa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)   # the masks transformers builds for SDPA
    if not getattr(model, "_can_set_attn_implementation", lambda: False)():
        return False
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME
