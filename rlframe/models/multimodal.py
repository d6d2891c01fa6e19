"""Images through the roles: prompt ids that carry their images' pixel inputs, placeholder expansion,
row-sliceable image tensors for the learner, and the extra forward/generate arguments of Qwen2.5-VL.

A multimodal prompt is a :class:`Prompt`: a plain list of token ids (so every text-only code path keeps
working) with an ``images`` attribute, ``{"pixel_values": [P, D] float array, "image_grid_thw": [K, 3]}``
for its K images in prompt order (``pixel_values`` may also be a list of per-image arrays: prompts then
share the arrays of images they have in common, e.g. a user's references, in memory and in one pickle). The ``<|image_pad|>`` run of image k holds
``prod(image_grid_thw[k]) / merge_size**2`` tokens (the vision tower merges ``merge_size x merge_size``
patches into one token).

Learner batches keep images per row so that any row slice (data-parallel shards, micro-batches) stays
valid: ``pixel_values`` is ``[B, P_max, D]`` and ``image_grid_thw`` ``[B, K_max, 3]``, zero-padded (a row
of zeros in the grid is no image); :func:`vision_kwargs` packs a slice back into the model's flat form
(concatenated in row order). Pure torch/numpy/PIL: no Ray, DeepSpeed or torchvision.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

VISION_START = "<|vision_start|>"
IMAGE_PAD = "<|image_pad|>"
VISION_END = "<|vision_end|>"
VISION_TOKENS = (VISION_START, IMAGE_PAD, VISION_END)
IMAGE_KEYS = ("pixel_values", "image_grid_thw")


class Prompt(list):
    """Prompt token ids with the pixel inputs of the prompt's images (``images``; None = text only)."""

    def __init__(self, ids: Sequence[int] = (), images: dict[str, Any] | None = None) -> None:
        super().__init__(ids)
        self.images = images

    def __reduce__(self):  # pickles (Ray) as ids + images
        return (Prompt, (list(self), self.images))


def prompt_images(prompt: Any) -> dict[str, Any] | None:
    return getattr(prompt, "images", None)


def pixels(images: dict[str, Any]) -> torch.Tensor:
    """The [P, D] pixel rows of one prompt's images (concatenating per-image arrays if given so)."""
    pv = images["pixel_values"]
    if isinstance(pv, (list, tuple)):
        pv = np.concatenate([np.asarray(x) for x in pv]) if len(pv) else np.zeros((0, 0), np.float32)
    return torch.as_tensor(np.asarray(pv))


# ------------------------------------------------------------------------------------- placeholders
def image_token_counts(image_grid_thw: Any, merge_size: int) -> list[int]:
    """Tokens per image after the vision tower's spatial merge: prod(t, h, w) / merge_size**2."""
    grid = np.asarray(image_grid_thw, dtype=np.int64).reshape(-1, 3)
    return [int(n) // merge_size**2 for n in grid.prod(axis=1)]


def expand_image_pads_text(text: str, image_grid_thw: Any, merge_size: int, pad: str = IMAGE_PAD) -> str:
    """Replace the k-th ``pad`` in ``text`` with as many pads as image k has tokens."""
    counts = image_token_counts(image_grid_thw, merge_size)
    parts = text.split(pad)
    if len(parts) - 1 != len(counts):
        raise ValueError(f"prompt has {len(parts) - 1} {pad} placeholders but {len(counts)} images")
    out = [parts[0]]
    for n, rest in zip(counts, parts[1:]):
        out.append(pad * n + rest)
    return "".join(out)


def expand_image_pads(ids: Sequence[int], image_grid_thw: Any, merge_size: int, pad_id: int) -> list[int]:
    """The same on token ids: each single ``pad_id`` becomes a run of the image's token count."""
    counts = image_token_counts(image_grid_thw, merge_size)
    found = sum(1 for t in ids if t == pad_id)
    if found != len(counts):
        raise ValueError(f"prompt has {found} image placeholders (id {pad_id}) but {len(counts)} images")
    out, k = [], 0
    for t in ids:
        if t == pad_id:
            out += [pad_id] * counts[k]
            k += 1
        else:
            out.append(t)
    return out


def check_prompt(ids: Sequence[int], images: dict[str, Any], merge_size: int, pad_id: int) -> None:
    """Fail early (before any actor starts) when the pad tokens do not match the images' token count."""
    want = sum(image_token_counts(images["image_grid_thw"], merge_size))
    got = sum(1 for t in ids if t == pad_id)
    if got != want:
        raise ValueError(f"prompt has {got} image tokens but its {len(images['image_grid_thw'])} images need {want}")


# ------------------------------------------------------------------------------------- batching
def collate_images(images: Sequence[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
    """Per-row image tensors: ``pixel_values`` [B, P_max, D] and ``image_grid_thw`` [B, K_max, 3], zero-padded.

    Empty when no row has images. A row without images gets an all-zero grid (no image).
    """
    if all(im is None for im in images):
        return {}
    pvs = [None if im is None else pixels(im) for im in images]
    grids = [None if im is None else torch.as_tensor(np.asarray(im["image_grid_thw"]), dtype=torch.long).reshape(-1, 3)
             for im in images]
    dim = next(p.shape[1] for p in pvs if p is not None)
    dtype = next(p.dtype for p in pvs if p is not None)
    p_max = max((p.shape[0] for p in pvs if p is not None), default=0)
    k_max = max((g.shape[0] for g in grids if g is not None), default=0)
    b = len(images)
    pixel_values = torch.zeros((b, p_max, dim), dtype=dtype)
    grid_thw = torch.zeros((b, k_max, 3), dtype=torch.long)
    for i, (p, g) in enumerate(zip(pvs, grids)):
        if p is None:
            continue
        if p.shape[0] != int(g.prod(-1).sum()):
            raise ValueError(f"row {i}: {p.shape[0]} pixel rows but image_grid_thw needs {int(g.prod(-1).sum())}")
        pixel_values[i, : p.shape[0]] = p
        grid_thw[i, : g.shape[0]] = g
    return {"pixel_values": pixel_values, "image_grid_thw": grid_thw}


def pack_images(images: Sequence[dict[str, Any] | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The model's flat form for a list of rows: pixel_values and image_grid_thw concatenated in row order."""
    rows = [im for im in images if im is not None and len(im["image_grid_thw"])]
    if not rows:
        return None
    pv = torch.cat([pixels(im) for im in rows])
    grid = torch.cat([torch.as_tensor(np.asarray(im["image_grid_thw"]), dtype=torch.long).reshape(-1, 3)
                      for im in rows])
    return pv, grid


def unpad_images(pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-padded [B, P_max, D] / [B, K_max, 3] back to the flat [sum P, D] / [sum K, 3] (row order)."""
    pvs, grids = [], []
    for pv, grid in zip(pixel_values, image_grid_thw):
        g = grid[grid[:, 0] > 0]
        pvs.append(pv[: int(g.prod(-1).sum())])
        grids.append(g)
    return torch.cat(pvs), torch.cat(grids)


def vision_kwargs(config: Any, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                  image_grid_thw: torch.Tensor | None = None, *, padded: bool = False) -> dict[str, Any]:
    """The extra keyword arguments of a Qwen2.5-VL forward or `generate` call ({} for text-only models or rows).

    ``mm_token_type_ids`` (1 on image tokens) lets the model compute its 3-D (t, h, w) rotary positions;
    ``padded=True`` takes the learner's row-padded tensors (see :func:`collate_images`).
    """
    image_token_id = getattr(config, "image_token_id", None)
    if image_token_id is None or pixel_values is None or image_grid_thw is None:
        return {}
    if padded:
        pixel_values, image_grid_thw = unpad_images(pixel_values, image_grid_thw)
    if image_grid_thw.numel() == 0:
        return {}
    device = input_ids.device
    # the model casts pixel_values to its vision tower's dtype itself
    return {"pixel_values": pixel_values.to(device),
            "image_grid_thw": image_grid_thw.to(device),
            "mm_token_type_ids": (input_ids == image_token_id).to(torch.int32)}


def batch_vision_kwargs(config: Any, mb: Any) -> dict[str, Any]:
    """`vision_kwargs` for a learner micro-batch (a TrainBatch; row-padded image tensors, if any)."""
    if mb.pixel_values is None:
        return {}
    return vision_kwargs(config, mb.input_ids, mb.pixel_values, mb.image_grid_thw, padded=True)


def rows_vision_kwargs(config: Any, input_ids: torch.Tensor, rows: Sequence[Any]) -> dict[str, Any]:
    """`vision_kwargs` for generation rows (prompts that may carry ``images``), in row order."""
    packed = pack_images([prompt_images(p) for p in rows])
    if packed is None:
        return {}
    return vision_kwargs(config, input_ids, *packed)


def vision_special_ids(config: Any) -> list[int] | None:
    """Token ids a VLM's completions must never contain (their positions would be taken for image slots);
    None for text-only models."""
    keys = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    ids = sorted({getattr(config, k) for k in keys if getattr(config, k, None) is not None})
    return ids or None
