"""Padded learner tensors (TrainBatch) from (prompt ids, completion ids) pairs, and row slicing (pure torch)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import torch

from rlframe.models.multimodal import collate_images


@dataclass
class TrainBatch:
    """Right-padded learner tensors; position t of the [B, L-1] tensors scores token t+1 of input_ids."""
    input_ids: torch.Tensor                       # [B, L]
    attention_mask: torch.Tensor                  # [B, L]
    loss_mask: torch.Tensor                       # [B, L-1], 1 on the completion's target positions
    advantages: torch.Tensor | None = None        # [B]
    sample_logp: torch.Tensor | None = None       # [B, L-1], the generator's log-probs at the mask
    pixel_values: torch.Tensor | None = None      # [B, P_max, D], row-padded (models/multimodal.py)
    image_grid_thw: torch.Tensor | None = None    # [B, K_max, 3]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, sl: slice | list[int]) -> TrainBatch:
        return replace(self, **{f.name: v[sl] for f, v in self._tensors()})

    def balanced_split(self, parts: int, unit: int = 1) -> list[list[int]]:
        """Row indices per data-parallel rank, even in rows and as even as possible in tokens (balanced_split)."""
        return balanced_split(self.attention_mask.sum(1).tolist(), parts, unit)

    def micro_batches(self, size: int, device: torch.device | str = "cpu") -> list[TrainBatch]:
        """Row chunks of `size`, each trimmed to its own longest sequence and moved to `device`."""
        full = self.input_ids.shape[1]
        out = []
        for s in range(0, len(self), size):
            width = int(self.attention_mask[s: s + size].sum(1).max())
            parts = {}
            for f, v in self._tensors():
                v = v[s: s + size]
                if v.ndim == 2:
                    v = v[:, :width] if v.shape[1] == full else v[:, : width - 1]
                parts[f.name] = v.to(device)
            out.append(replace(self, **parts))
        return out

    def _tensors(self) -> list[tuple[Any, torch.Tensor]]:
        return [(f, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]


def truncate_after_eos(ids: Sequence[int], eos_id: int | Sequence[int] | None) -> list[int]:
    """Keep tokens up to and including the first EOS (any of them, if several): nothing after it is trained on."""
    ids = list(ids)
    stops = {eos_id} if isinstance(eos_id, int) else set(eos_id or ())
    for k, t in enumerate(ids):
        if t in stops:
            return ids[: k + 1]
    return ids


def collate(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int,
            eos_id: int | Sequence[int] | None = None) -> TrainBatch:
    """Right-padded [B, L] inputs and a [B, L-1] mask over the completion's target positions.

    Position t of the mask/log-prob tensors scores token t+1 of input_ids (the usual shift).
    Prompts that carry images (models/multimodal.Prompt) add row-padded ``pixel_values`` [B, P, D] and
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
    images = collate_images([getattr(p, "images", None) for p in prompts])
    return TrainBatch(input_ids, attention, loss_mask, **images)


def balanced_split(costs: Sequence[float], parts: int, unit: int = 1) -> list[list[int]]:
    """Indices of `costs` per part: as many rows per part as split_even gives, spread so that the parts' summed
    costs (tokens) are as even as a greedy pass makes them, since the slowest rank sets the pace of a step.

    Rows move in whole units of `unit` consecutive rows (a GRPO group, whose shared prompt is then computed once
    per group, learner.shared_prefix) when the units divide evenly over the parts, so that every part still gets
    the same number of rows (and DeepSpeed micro-batches). The largest unit goes first to the part with the least
    cost that still has room; each part keeps its rows in their original order."""
    if len(costs) % unit or (len(costs) // unit) % parts:
        unit = 1
    units = [list(range(i, i + unit)) for i in range(0, len(costs), unit)]
    room = [sl.stop - sl.start for sl in split_even(len(units), parts)]
    load, out = [0.0] * parts, [[] for _ in range(parts)]
    for u in sorted(units, key=lambda u: -sum(costs[i] for i in u)):
        k = min((k for k in range(parts) if room[k]), key=lambda k: load[k])
        out[k] += u
        load[k] += sum(costs[i] for i in u)
        room[k] -= 1
    return [sorted(rows) for rows in out]


def split_even(n: int, parts: int) -> list[slice]:
    """Contiguous, near-equal slices of range(n) (for data-parallel ranks and workers)."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(slice(start, start + size))
        start += size
    return out
