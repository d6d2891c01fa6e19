"""Shared-prefix forward (pure torch): each group's prompt is computed once for all of its completions.

GRPO-style batches repeat every prompt G times. Here the rows of a micro-batch that share a prompt become one
packed row, ``prompt, completion_1, ..., completion_G``, with a 4-D attention mask in which the prompt is
causal, each completion sees the prompt and its own earlier tokens (never another completion), and position
ids that restart after the prompt for every completion. The logits are then gathered back to the padded
layout ``[B, L-1, V]`` the losses expect, so the loss code does not change; the prompt's keys and values, and
their gradient, serve all G completions. Padding disappears too, except between packed rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedPrefix:
    input_ids: torch.Tensor      # [R, T]: one row per distinct prompt of the micro-batch
    position_ids: torch.Tensor   # [R, T]
    allowed: torch.Tensor        # [R, T, T] bool: query t may attend key s
    row: torch.Tensor            # [B, L-1]: packed row of the logit that scores input_ids[b, t+1]
    col: torch.Tensor            # [B, L-1]: its column (0 where the position is padding: never in the loss)

    def attention_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """[R, 1, T, T] additive mask (0 or the dtype's minimum): eager and SDPA attention both take it."""
        mask = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
        return mask.masked_fill_(~self.allowed, torch.finfo(dtype).min).unsqueeze(1)

    def model_inputs(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The keyword arguments of the packed forward (a causal LM or the critic's value model)."""
        return {"input_ids": self.input_ids, "position_ids": self.position_ids,
                "attention_mask": self.attention_mask(dtype)}

    def gather(self, logits: torch.Tensor) -> torch.Tensor:
        """Packed logits [R, T, V] -> the padded layout [B, L-1, V] (differentiable)."""
        return logits[self.row, self.col]


def pack_shared_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       loss_mask: torch.Tensor) -> PackedPrefix | None:
    """The packed layout of a right-padded micro-batch, or None when no two rows share a prompt (nothing to save).

    A row's prompt ends where its loss mask starts (a row without completion tokens is all prompt)."""
    lengths = attention_mask.sum(1).tolist()
    starts = [int(m.nonzero()[0]) + 1 if m.any() else n for m, n in zip(loss_mask, lengths)]
    groups: dict[tuple[int, ...], list[int]] = {}
    for b, p in enumerate(starts):
        groups.setdefault(tuple(input_ids[b, :p].tolist()), []).append(b)
    if len(groups) == len(lengths):
        return None
    width = max(len(k) + sum(lengths[b] - starts[b] for b in rows) for k, rows in groups.items())
    r_count, (b_count, l_count) = len(groups), input_ids.shape
    ids = torch.zeros(r_count, width, dtype=input_ids.dtype)
    pos = torch.zeros(r_count, width, dtype=torch.long)
    seg = torch.full((r_count, width), -1, dtype=torch.long)    # -1 padding, 0 the prompt, i+1 completion i
    row = torch.zeros(b_count, l_count - 1, dtype=torch.long)
    col = torch.zeros(b_count, l_count - 1, dtype=torch.long)
    for r, (prompt, rows) in enumerate(groups.items()):
        p = len(prompt)
        ids[r, :p] = torch.tensor(prompt, dtype=input_ids.dtype)
        pos[r, :p] = torch.arange(p)
        seg[r, :p] = 0
        at = p
        for i, b in enumerate(rows):
            c = lengths[b] - p
            ids[r, at: at + c] = input_ids[b, p: lengths[b]]
            pos[r, at: at + c] = torch.arange(p, p + c)
            seg[r, at: at + c] = i + 1
            row[b] = r
            n = min(p, l_count - 1)                                   # prompt positions (p-1 scores the first token)
            col[b, :n] = torch.arange(n)
            if c > 1:                                                 # completion token j scores token j+1
                col[b, p: lengths[b] - 1] = torch.arange(at, at + c - 1)
            at += c
    q, k = seg.unsqueeze(2), seg.unsqueeze(1)
    causal = pos.unsqueeze(2) >= pos.unsqueeze(1)
    allowed = causal & (k >= 0) & ((q == k) | ((k == 0) & (q > 0)))
    allowed |= torch.eye(width, dtype=torch.bool).unsqueeze(0)      # padding attends to itself (no empty rows)
    dev = input_ids.device
    return PackedPrefix(ids.to(dev), pos.to(dev), allowed.to(dev), row.to(dev), col.to(dev))
