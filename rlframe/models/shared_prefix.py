"""Shared-prefix forward (pure torch): each group's prompt is computed once for all of its completions.

GRPO-style batches repeat every prompt G times. Here the rows of a micro-batch that share a prompt become one
packed row, ``prompt, completion_1, ..., completion_G``, with a 4-D attention mask in which the prompt is
causal, each completion sees the prompt and its own earlier tokens (never another completion), and position
ids that restart after the prompt for every completion. The logits are then gathered back to the padded
layout ``[B, L-1, V]`` the losses expect, so the loss code does not change; the prompt's keys and values, and
their gradient, serve all G completions. Groups shorter than the widest share a row (attention stays within a
group), so padding only fills what is left at the end of a row. Rows that share no prompt (SFT, G=1) are groups of
one: packed the same way, several to a row, they are the padding-free layout (position ids restart per sequence,
the mask block-diagonal).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedPrefix:
    input_ids: torch.Tensor      # [R, T]: the micro-batch's groups (a prompt and its completions), packed into rows
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


def pack_rows(widths: list[int]) -> list[list[int]]:
    """Groups (by index) into rows no wider than the widest group, first-fit by decreasing width: shorter groups
    share a row instead of each being padded to the widest, and no row gets longer (attention costs its square)."""
    cap, rows, room = max(widths), [], []
    for g in sorted(range(len(widths)), key=lambda g: -widths[g]):
        r = next((r for r in range(len(rows)) if room[r] >= widths[g]), None)
        if r is None:
            rows.append([])
            room.append(cap)
            r = len(rows) - 1
        rows[r].append(g)
        room[r] -= widths[g]
    return rows


def prompt_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor
                  ) -> tuple[list[tuple[tuple[int, ...], list[int]]], list[int], list[int]]:
    """The rows that share a prompt, as (prompt ids, rows) in first-seen order, each group's packed width (the
    prompt once and every completion) and each row's length. A row's prompt ends where its loss mask starts (a
    row without completion tokens is all prompt)."""
    lengths = attention_mask.sum(1).tolist()
    starts = [int(m.nonzero()[0]) + 1 if m.any() else n for m, n in zip(loss_mask, lengths)]
    groups: dict[tuple[int, ...], list[int]] = {}
    for b, p in enumerate(starts):
        groups.setdefault(tuple(input_ids[b, :p].tolist()), []).append(b)
    members = list(groups.items())
    return members, [len(k) + sum(lengths[b] - starts[b] for b in rows) for k, rows in members], lengths


def pack_shared_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
                       share_rows: bool = True) -> PackedPrefix | None:
    """The packed layout of a right-padded micro-batch, or None when it would compute no fewer tokens than the
    padded rows (no prompt is shared and no two rows fit in one).

    Groups (a prompt and its completions, `prompt_groups`; a row whose prompt no other row has is a group of
    one) are packed into rows by `pack_rows`, attention staying inside a group (`share_rows=False`: one group per
    row, the layout before rows were shared; see benchmarks/packing.py)."""
    members, widths, lengths = prompt_groups(input_ids, attention_mask, loss_mask)
    layout = pack_rows(widths) if share_rows else [[g] for g in range(len(widths))]
    width = max(widths)
    if len(layout) * width >= len(lengths) * max(lengths):
        return None
    r_count, (b_count, l_count) = len(layout), input_ids.shape
    ids = torch.zeros(r_count, width, dtype=input_ids.dtype)
    pos = torch.zeros(r_count, width, dtype=torch.long)
    grp = torch.full((r_count, width), -1, dtype=torch.long)    # the group of each position, -1 padding
    seg = torch.zeros((r_count, width), dtype=torch.long)       # 0 the prompt, i+1 completion i
    row = torch.zeros(b_count, l_count - 1, dtype=torch.long)
    col = torch.zeros(b_count, l_count - 1, dtype=torch.long)
    for r, packed in enumerate(layout):
        at = 0
        for g in packed:
            prompt, rows = members[g]
            p, first = len(prompt), at
            ids[r, at: at + p] = torch.tensor(prompt, dtype=input_ids.dtype)
            pos[r, at: at + p] = torch.arange(p)
            grp[r, at: at + p] = g
            at += p
            for i, b in enumerate(rows):
                c = lengths[b] - p
                ids[r, at: at + c] = input_ids[b, p: lengths[b]]
                pos[r, at: at + c] = torch.arange(p, p + c)
                grp[r, at: at + c] = g
                seg[r, at: at + c] = i + 1
                row[b] = r
                n = min(p, l_count - 1)                               # prompt positions (p-1 scores the first token)
                col[b, :n] = torch.arange(first, first + n)
                if c > 1:                                             # completion token j scores token j+1
                    col[b, p: lengths[b] - 1] = torch.arange(at, at + c - 1)
                at += c
    causal = pos.unsqueeze(2) >= pos.unsqueeze(1)
    q, k = seg.unsqueeze(2), seg.unsqueeze(1)
    same = (grp.unsqueeze(2) == grp.unsqueeze(1)) & (grp.unsqueeze(1) >= 0)
    allowed = causal & same & ((q == k) | ((k == 0) & (q > 0)))
    allowed |= torch.eye(width, dtype=torch.bool).unsqueeze(0)      # padding attends to itself (no empty rows)
    dev = input_ids.device
    return PackedPrefix(ids.to(dev), pos.to(dev), allowed.to(dev), row.to(dev), col.to(dev))
