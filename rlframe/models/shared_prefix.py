"""Shared-prefix forward (pure torch): each group's prompt is computed once for all of its completions.

GRPO-style batches repeat every prompt G times. Here the rows of a micro-batch that share a prompt become one
packed row, ``prompt, completion_1, ..., completion_G``, with a 4-D attention mask in which the prompt is
causal, each completion sees the prompt and its own earlier tokens (never another completion), and position
ids that restart after the prompt for every completion. The logits are then gathered back to the padded
layout ``[B, L-1, V]`` the losses expect, so the loss code does not change; the prompt's keys and values, and
their gradient, serve all G completions. Groups shorter than the widest share a row (attention stays within a
group), so padding only fills what is left at the end of a row. Rows that share no prompt (SFT, G=1) are groups of
one: packed the same way, several to a row, they are the padding-free layout (position ids restart per sequence,
the mask block-diagonal). A VLM's rows (Qwen2.5-VL) keep the rotary positions the model gives the padded rows, and
each group's images enter the forward once (`pack_micro_batch`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class PackedPrefix:
    input_ids: torch.Tensor      # [R, T]: the micro-batch's groups (a prompt and its completions), packed into rows
    position_ids: torch.Tensor   # [R, T], or the model's own [3, R, T] (Qwen2.5-VL's t/h/w rotary positions)
    allowed: torch.Tensor        # [R, T, T] bool: query t may attend key s
    row: torch.Tensor            # [B, L-1]: packed row of the logit that scores input_ids[b, t+1]
    col: torch.Tensor            # [B, L-1]: its column (0 where the position is padding: never in the loss)
    sources: list[int] = field(default_factory=list)   # each group's first row, in packed order (its images)
    extra: dict[str, Any] = field(default_factory=dict)   # more forward arguments (a VLM's images, once per group)

    def attention_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """[R, 1, T, T] additive mask (0 or the dtype's minimum): eager and SDPA attention both take it."""
        mask = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
        return mask.masked_fill_(~self.allowed, torch.finfo(dtype).min).unsqueeze(1)

    def model_inputs(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The keyword arguments of the packed forward (a causal LM, a VLM or the critic's value model)."""
        return {"input_ids": self.input_ids, "position_ids": self.position_ids,
                "attention_mask": self.attention_mask(dtype), **self.extra}

    def kept(self, start: int = 0) -> torch.Tensor:
        """The packed positions (sorted, over all rows) that the padded layout's columns `start`.. read: the model's
        `logits_to_keep`, so that its LM head skips every other position of the prompts."""
        return torch.unique(self.col[:, start:])

    def gather(self, logits: torch.Tensor, start: int = 0, kept: torch.Tensor | None = None) -> torch.Tensor:
        """Packed logits [R, T, V] -> the padded layout's columns `start`.. [B, L-1-start, V] (differentiable).
        With `kept` the logits are only those positions' ([R, len(kept), V], `logits_to_keep=kept`)."""
        row, col = self.row[:, start:], self.col[:, start:]
        if kept is not None:
            at = torch.zeros(self.input_ids.shape[1], dtype=torch.long, device=col.device)
            at[kept] = torch.arange(len(kept), device=col.device)
            col = at[col]
        return logits[row, col]


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


def prompt_lengths(attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> list[int]:
    """Each row's prompt tokens: a prompt ends where the row's loss mask starts (a row without completion tokens
    is all prompt)."""
    return [int(m.nonzero()[0]) + 1 if m.any() else int(n) for m, n in zip(loss_mask, attention_mask.sum(1))]


def prompt_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
                  images: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> tuple[list[tuple[tuple[int, ...], list[int]]], list[int], list[int]]:
    """The rows that share a prompt, as (prompt ids, rows) in first-seen order, each group's packed width (the
    prompt once and every completion) and each row's length (`prompt_lengths` says where a prompt ends). With
    `images` (row-padded pixel_values and image_grid_thw), rows share a prompt only if their images are equal too:
    the same ids may stand for other pictures."""
    lengths = attention_mask.sum(1).tolist()
    starts = prompt_lengths(attention_mask, loss_mask)

    def same(a: int, b: int) -> bool:
        return images is None or all(torch.equal(t[a], t[b]) for t in images)

    groups: dict[tuple[int, ...], list[list[int]]] = {}
    for b, p in enumerate(starts):
        bucket = groups.setdefault(tuple(input_ids[b, :p].tolist()), [])
        rows = next((rows for rows in bucket if same(rows[0], b)), None)
        if rows is None:
            bucket.append([b])
        else:
            rows.append(b)
    members = [(k, rows) for k, bucket in groups.items() for rows in bucket]
    return members, [len(k) + sum(lengths[b] - starts[b] for b in rows) for k, rows in members], lengths


def pack_shared_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
                       share_rows: bool = True, positions: torch.Tensor | None = None,
                       images: tuple[torch.Tensor, torch.Tensor] | None = None) -> PackedPrefix | None:
    """The packed layout of a right-padded micro-batch, or None when it would compute no fewer tokens than the
    padded rows (no prompt is shared and no two rows fit in one).

    Groups (a prompt and its completions, `prompt_groups`; a row whose prompt no other row has is a group of
    one) are packed into rows by `pack_rows`, attention staying inside a group (`share_rows=False`: one group per
    row, the layout before rows were shared; see benchmarks/packing.py). `positions` ([3, B, L]: a VLM's rotary
    positions of the padded rows) are carried over to the packed tokens instead of 0, 1, ... per sequence;
    `images` keep rows with other pictures apart (`prompt_groups`)."""
    members, widths, lengths = prompt_groups(input_ids, attention_mask, loss_mask, images)
    layout = pack_rows(widths) if share_rows else [[g] for g in range(len(widths))]
    width = max(widths)
    if len(layout) * width >= len(lengths) * max(lengths):
        return None
    r_count, (b_count, l_count) = len(layout), input_ids.shape
    ids = torch.zeros(r_count, width, dtype=input_ids.dtype)
    pos = torch.zeros(r_count, width, dtype=torch.long)
    grp = torch.full((r_count, width), -1, dtype=torch.long)    # the group of each position, -1 padding
    seg = torch.zeros((r_count, width), dtype=torch.long)       # 0 the prompt, i+1 completion i
    given = None if positions is None else positions.cpu()
    rope = None if given is None else torch.zeros(given.shape[0], r_count, width, dtype=torch.long)
    row = torch.zeros(b_count, l_count - 1, dtype=torch.long)
    col = torch.zeros(b_count, l_count - 1, dtype=torch.long)
    for r, packed in enumerate(layout):
        at = 0
        for g in packed:
            prompt, rows = members[g]
            p, first = len(prompt), at
            ids[r, at: at + p] = torch.tensor(prompt, dtype=input_ids.dtype)
            pos[r, at: at + p] = torch.arange(p)
            if rope is not None:
                rope[:, r, at: at + p] = given[:, rows[0], :p]
            grp[r, at: at + p] = g
            at += p
            for i, b in enumerate(rows):
                c = lengths[b] - p
                ids[r, at: at + c] = input_ids[b, p: lengths[b]]
                pos[r, at: at + c] = torch.arange(p, p + c)
                if rope is not None:
                    rope[:, r, at: at + c] = given[:, b, p: lengths[b]]
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
    sources = [members[g][1][0] for packed in layout for g in packed]
    return PackedPrefix(ids.to(dev), (pos if rope is None else rope).to(dev), allowed.to(dev), row.to(dev),
                        col.to(dev), sources)


def window_logits(module: Any, mb: Any, packed: PackedPrefix | None, dtype: torch.dtype, keeps: bool,
                  **padded_kwargs: Any) -> tuple[torch.Tensor, int]:
    """The logits of a micro-batch's (a TrainBatch's) columns `start`.. of its [B, L-1] layout, and `start`
    (`loss_start`: the columns before it are prompt on every row), from the `packed` layout or the padded rows
    (with `padded_kwargs`, a VLM's images). With `keeps` (the model takes `logits_to_keep`) the LM head runs only
    on the positions those columns read: the rest of the prompts costs no [tokens, vocabulary] logits, which with
    a 150k vocabulary dominate a long prompt's memory. Without it every position's logits are computed."""
    start = mb.loss_start()
    if packed is not None:
        kept = packed.kept(start) if keeps else None
        extra = {} if kept is None else {"logits_to_keep": kept}
        return packed.gather(module(**packed.model_inputs(dtype), **extra).logits, start, kept), start
    extra = {"logits_to_keep": mb.input_ids.shape[1] - start} if keeps else {}
    logits = module(input_ids=mb.input_ids, attention_mask=mb.attention_mask, **padded_kwargs, **extra).logits
    return (logits if keeps else logits[:, start:])[:, :-1], start


def rope_index(model: torch.nn.Module) -> Any:
    """A VLM's own rotary-position function (Qwen2.5-VL's `get_rope_index`), or None."""
    return getattr(getattr(model, "model", None), "get_rope_index", None)


def pack_micro_batch(model: torch.nn.Module, mb: Any) -> PackedPrefix | None:
    """The packed layout of a learner micro-batch (a TrainBatch) for `model`, or None for its padded rows. Rows
    with images (Qwen2.5-VL) keep the rotary positions the model gives the padded rows, and each group's images
    go through the vision tower once, not once per completion."""
    from rlframe.models.multimodal import batch_vision_kwargs, vision_kwargs

    vision = batch_vision_kwargs(model.config, mb)
    if not vision:
        return pack_shared_prefix(mb.input_ids, mb.attention_mask, mb.loss_mask)
    positions, _ = rope_index(model)(mb.input_ids, vision["mm_token_type_ids"], vision["image_grid_thw"],
                                     attention_mask=mb.attention_mask)
    packed = pack_shared_prefix(mb.input_ids, mb.attention_mask, mb.loss_mask, positions=positions,
                                images=(mb.pixel_values, mb.image_grid_thw))
    if packed is not None:
        src = torch.tensor(packed.sources, device=mb.pixel_values.device)
        packed.extra = vision_kwargs(model.config, packed.input_ids, mb.pixel_values[src], mb.image_grid_thw[src],
                                     padded=True)
    return packed

