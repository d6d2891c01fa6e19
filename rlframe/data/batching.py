"""Turn (prompt ids, completion ids) pairs into padded learner tensors (pure)."""
from __future__ import annotations

from typing import Sequence

import torch


def truncate_after_eos(ids: Sequence[int], eos_id: int | None) -> list[int]:
    """Keep tokens up to and including the first EOS: nothing after it is trained on."""
    ids = list(ids)
    if eos_id is not None and eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    return ids


def collate(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
            eos_id: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded [B, L] inputs and a [B, L-1] mask over the completion's target positions.

    Position t of the mask/log-prob tensors scores token t+1 of input_ids (the usual shift).
    Prompts that carry images (data/multimodal.Prompt) add row-padded ``pixel_values`` [B, P, D] and
    ``image_grid_thw`` [B, K, 3], so that any row slice of the batch keeps its images.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("collate: every prompt needs at least one token (the first target is scored from it)")
    comps = [truncate_after_eos(c, eos_id) for c in completions]
    seqs = [list(p) + c for p, c in zip(prompts, comps)]
    length = max(len(s) for s in seqs)
    b = len(seqs)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    loss_mask = torch.zeros((b, max(length - 1, 1)), dtype=torch.float32)
    for i, (p, c, s) in enumerate(zip(prompts, comps, seqs)):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention[i, : len(s)] = 1
        if c:
            loss_mask[i, len(p) - 1: len(p) - 1 + len(c)] = 1.0
    batch = {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask}
    if any(getattr(p, "images", None) is not None for p in prompts):
        from rlframe.data.multimodal import collate_images

        batch.update(collate_images([getattr(p, "images", None) for p in prompts]))
    return batch


def split_even(n: int, parts: int) -> list[slice]:
    """Contiguous, near-equal slices of range(n) (for data-parallel ranks and workers)."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(slice(start, start + size))
        start += size
    return out
