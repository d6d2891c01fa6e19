"""Tiny checkpoints laid out like Qwen's: Qwen2 / Qwen2.5-VL built from config (random weights) and saved with a
tokenizer that has Qwen's special tokens and a ChatML chat template, a generation_config with Qwen's two EOS
ids, and (VL) a preprocessor_config.json in Qwen's format. No download: the BPE is trained on the task's text."""
from __future__ import annotations

import json
from pathlib import Path

from rlframe.config.schema import ModelConfig
from rlframe.models.multimodal import VISION_TOKENS
from rlframe.models.tiny import build_tiny_model
from rlframe.tasks.preference.tokenizer import build_tokenizer

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

# ChatML, written for these tests: a default system turn when none is given, image parts as Qwen2.5-VL marks them
CHATML = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Qwen2.5-VL's preprocessor_config.json keys (the values of the paper: min 3136 = 56^2 pixels); max is kept
# small here so that images stay a few dozen tokens
PREPROCESSOR = {"min_pixels": 3136, "max_pixels": 112 * 112 * 2, "patch_size": 14, "temporal_patch_size": 2,
                "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711], "image_processor_type": "Qwen2VLImageProcessor",
                "processor_class": "Qwen2_5_VLProcessor"}


def qwen_tokenizer(samples: list[dict], vision: bool = False):
    """The task's BPE with Qwen's special tokens; EOS = <|im_end|>, pad = <|endoftext|>, a ChatML template."""
    from tokenizers import AddedToken

    tok = build_tokenizer(samples)
    extra = [IM_START, IM_END] + (list(VISION_TOKENS) if vision else [])
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in extra], special_tokens=True)
    tok.eos_token, tok.pad_token = IM_END, ENDOFTEXT
    tok.chat_template = CHATML
    return tok


def save_qwen_style(folder: Path, samples: list[dict], vl: bool = False) -> Path:
    """A Qwen-layout folder (model, tokenizer, chat template, generation config; VL: image processor)."""
    tok = qwen_tokenizer(samples, vision=vl)
    im_end, eot = tok.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    vision_ids = None
    if vl:
        vs, pad, ve = tok.convert_tokens_to_ids(list(VISION_TOKENS))
        vision_ids = {"vision_start": vs, "image_pad": pad, "vision_end": ve}
    cfg = ModelConfig(arch="qwen2_5_vl" if vl else "qwen2")
    build_tiny_model(cfg, len(tok), None, eot, eot, folder, seed=0, vision_token_ids=vision_ids)
    tok.save_pretrained(folder)
    # Qwen's instruct checkpoints end generation on either id
    (folder / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [im_end, eot], "pad_token_id": eot, "bos_token_id": eot}))
    if vl:
        (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return folder
