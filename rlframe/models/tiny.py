"""Tiny policies built from config (random weights, no download): a Qwen2, or a Qwen2.5-VL.

The text part mirrors the tiny Qwen2 (``model.hidden_size`` etc.); the vision tower is ``model.vision.*``
(depth, hidden size, heads, patch 14, spatial merge 2). The vision special tokens come from the task's
tokenizer (``<|vision_start|>``, ``<|image_pad|>``, ``<|vision_end|>``) and their ids are written into
the model config, so that the model finds its image positions.
"""
from __future__ import annotations

from pathlib import Path

import torch

from rlframe.config.schema import ModelConfig
from rlframe.models.loading import DTYPES


def build_tiny_model(cfg: ModelConfig, vocab_size: int, bos_id: int | None, eos_id: int, pad_id: int,
                     out_dir: str | Path, seed: int = 0, vision_token_ids: dict[str, int] | None = None) -> Path:
    """Write a randomly initialised model in Hugging Face format (loadable by vLLM).

    ``model.arch=qwen2_5_vl`` builds a tiny Qwen2.5-VL instead; it needs the ids of the
    tokenizer's vision tokens (``vision_token_ids``: vision_start, image_pad, vision_end).
    """
    if cfg.arch == "qwen2_5_vl":
        if vision_token_ids is None:
            raise ValueError("model.arch=qwen2_5_vl needs a task whose tokenizer has the vision tokens "
                             "(a task registered with vision=True)")
        return build_tiny_vl_model(cfg, vocab_size, bos_id, eos_id, pad_id, out_dir, vision_token_ids, seed=seed)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    qcfg = Qwen2Config(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim or cfg.hidden_size // cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id, dtype=cfg.dtype,
        use_sliding_window=False,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(qcfg).to(getattr(torch, cfg.dtype))
    model.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_vl_model(cfg: ModelConfig, vocab_size: int, bos_id: int | None, eos_id: int, pad_id: int,
                        out_dir: str | Path, vision_token_ids: dict[str, int], seed: int = 0) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    v = cfg.vision
    head_dim = cfg.head_dim or cfg.hidden_size // cfg.num_heads
    # M-RoPE splits each head's rotary half (head_dim / 2) into temporal, height, width sections
    half = head_dim // 2
    hw = half // 4
    mrope = [half - 2 * hw, hw, hw]
    text = dict(vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_position_embeddings,
                rope_parameters={"rope_type": "default", "mrope_section": mrope, "rope_theta": 1e6},
                bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id,
                tie_word_embeddings=cfg.tie_word_embeddings, use_sliding_window=False)
    if cfg.head_dim:
        text["head_dim"] = cfg.head_dim
    vision = dict(depth=v.depth, hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
                  num_heads=v.num_heads, patch_size=v.patch_size, spatial_merge_size=v.spatial_merge_size,
                  temporal_patch_size=2, out_hidden_size=cfg.hidden_size,
                  # one window = the whole (tiny) image; the last block attends over all patches anyway
                  window_size=v.patch_size * v.spatial_merge_size * 4, fullatt_block_indexes=[v.depth - 1])
    image_id = vision_token_ids["image_pad"]
    qcfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=image_id,
                            video_token_id=image_id, vision_start_token_id=vision_token_ids["vision_start"],
                            vision_end_token_id=vision_token_ids["vision_end"],
                            tie_word_embeddings=cfg.tie_word_embeddings, dtype=cfg.dtype)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(qcfg).to(DTYPES[cfg.dtype])
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    return out
