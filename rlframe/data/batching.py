"""Padded learner tensors (TrainBatch) from (prompt ids, completion ids) pairs, and row slicing (pure torch)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

import torch

from rlframe.models.multimodal import collate_images
from rlframe.models.shared_prefix import pack_rows, prompt_lengths


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
    index: torch.Tensor | None = None             # [B], a micro-batch's rows in the rank's batch (token budgets
                                                  # regroup rows by length; results go back in row order)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, sl: slice | list[int]) -> TrainBatch:
        return replace(self, **{f.name: v[sl] for f, v in self._tensors()})

    def token_costs(self, unit: int = 1, packed: bool = False) -> list[float]:
        """Each row's tokens. `packed` (learner.packing, `unit` rows a group sharing a prompt): the prompt counts
        once per group, a share of it on each row, since the packed forward computes it once."""
        lengths = self.attention_mask.sum(1).float()
        if not packed or unit < 2:
            return lengths.tolist()
        prompt = torch.tensor(prompt_lengths(self.attention_mask, self.loss_mask), dtype=lengths.dtype)
        return (lengths - prompt * (unit - 1) / unit).tolist()

    def balanced_split(self, parts: int, unit: int = 1, packed: bool = False) -> list[list[int]]:
        """Row indices per data-parallel rank, even in rows and as even as possible in tokens (balanced_split,
        `token_costs`)."""
        return balanced_split(self.token_costs(unit, packed), parts, unit)

    def micro_batches(self, size: int, device: torch.device | str = "cpu") -> list[TrainBatch]:
        """Row chunks of `size`, each trimmed to its own longest sequence and moved to `device`."""
        return [self.rows(slice(s, s + size)).trimmed(device) for s in range(0, len(self), size)]

    def loss_start(self) -> int:
        """The first column of the [B, L-1] tensors that any row's loss reads (0 when none does): the columns before
        it are prompt on every row, so no loss or log-prob needs their logits."""
        cols = self.loss_mask.any(0).nonzero()
        return int(cols[0]) if len(cols) else 0

    def trimmed(self, device: torch.device | str = "cpu") -> TrainBatch:
        """The rows cut to their own longest sequence, on `device`."""
        full, width = self.input_ids.shape[1], int(self.attention_mask.sum(1).max())
        parts = {}
        for f, v in self._tensors():
            if v.ndim == 2:
                v = v[:, :width] if v.shape[1] == full else v[:, : width - 1]
            parts[f.name] = v.to(device)
        return replace(self, **parts)

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
    per group, learner.packing) when the units divide evenly over the parts, so that every part still gets
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


def token_micro_batches(units: Sequence[Sequence[int]], widths: Sequence[int], budget: int, packed: bool,
                        count: int | None = None) -> list[list[int]]:
    """Rows (by index) in micro-batches by a token budget instead of a row count (veRL's dynamic batch size).

    `units` are rows that stay together (a GRPO group under the shared-prefix forward, else single rows) and
    `widths` their tokens. A micro-batch's tokens are what its forward computes: when `packed`, its groups'
    packed rows (`pack_rows`) x the widest group, else rows x its widest row. The widest units go first, each filled
    while it stays within `budget` (a unit wider than the budget alone), so that units of a similar width share
    a micro-batch and padding stays small. `count` (from `agree`, at least the number the budget needs) splits the
    costliest micro-batches in two until there are that many: every rank then runs as many forward and backward
    calls, which ZeRO's collectives need."""
    def cost(chunk: list[int]) -> int:
        sizes = [widths[u] for u in chunk]
        return (len(pack_rows(sizes)) if packed else sum(len(units[u]) for u in chunk)) * max(sizes)

    if count is not None and count > len(units):
        raise ValueError(f"{count} micro-batches asked of {len(units)} units")
    chunks: list[list[int]] = []
    for u in sorted(range(len(units)), key=lambda u: -widths[u]):
        if chunks and cost(chunks[-1] + [u]) <= budget:
            chunks[-1].append(u)
        else:
            chunks.append([u])
    while count is not None and len(chunks) < count:
        k = max((k for k in range(len(chunks)) if len(chunks[k]) > 1), key=lambda k: cost(chunks[k]))
        half = len(chunks[k]) // 2
        chunks[k: k + 1] = [chunks[k][:half], chunks[k][half:]]
    return [[r for u in chunk for r in units[u]] for chunk in chunks]


def split_even(n: int, parts: int) -> list[slice]:
    """Contiguous, near-equal slices of range(n) (for data-parallel ranks and workers)."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(slice(start, start + size))
        start += size
    return out
