"""Loading a policy folder: a causal LM, or a vision-language model (Qwen2.5-VL) when the folder holds one."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_source(cfg: Any) -> str | None:
    """The folder a ModelConfig names, if any (init_from wins over path)."""
    return cfg.init_from or cfg.path

def is_vision_language(model_path: str | Path) -> bool:
    """True when the folder's config.json describes a vision-language model (it has a vision_config)."""
    path = Path(model_path) / "config.json"
    if not path.is_file():
        return False
    try:
        return "vision_config" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def takes_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward computes logits for chosen positions only (`logits_to_keep`, transformers'
    causal LMs and VLMs); a DeepSpeed engine or a PEFT wrapper is looked through."""
    model = getattr(model, "module", model)
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes(type(model), "logits_to_keep")


@functools.cache
def _forward_takes(cls: type, name: str) -> bool:   # once per model class: the learners ask per micro-batch
    import inspect

    return name in inspect.signature(cls.forward).parameters


def load_policy(model_path: str, dtype: Any = torch.float32) -> Any:
    """A causal LM, or an image-text-to-text model (Qwen2.5-VL) when the folder holds one."""
    if isinstance(dtype, str):
        dtype = DTYPES[dtype]
    if is_vision_language(model_path):
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
