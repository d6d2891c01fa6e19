"""Policy models: a tiny Qwen2 (or Qwen2.5-VL) built from config (random weights, no download) or an HF folder."""
from __future__ import annotations

from pathlib import Path

import torch

from rlframe.config.schema import ModelConfig


def build_tiny_model(cfg: ModelConfig, vocab_size: int, bos_id: int | None, eos_id: int, pad_id: int,
                     out_dir: str | Path, seed: int = 0, vision_token_ids: dict[str, int] | None = None) -> Path:
    """Write a randomly initialised model in Hugging Face format (loadable by vLLM).

    ``model.arch=qwen2_5_vl`` builds a tiny Qwen2.5-VL instead (models_vl.py); it needs the ids of the
    tokenizer's vision tokens (``vision_token_ids``: vision_start, image_pad, vision_end).
    """
    if cfg.arch == "qwen2_5_vl":
        from rlframe.models_vl import build_tiny_vl_model

        if vision_token_ids is None:
            raise ValueError("model.arch=qwen2_5_vl needs a task whose tokenizer has the vision tokens "
                             "(e.g. data.task=preference_images)")
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


def model_source(cfg: ModelConfig) -> str | None:
    """The folder to load from, if the config names one (init_from wins over path)."""
    return cfg.init_from or cfg.path
