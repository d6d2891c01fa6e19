"""Loading a policy folder: a causal LM, or a vision-language model (Qwen2.5-VL) when the folder holds one."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Iterator

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


#: config.json keys that do not change what the weights compute: where the checkpoint came from, and whether
#: generation keeps a KV cache (off in a checkpoint saved from a run with gradient checkpointing)
NOT_LAYOUT_KEYS = ("_name_or_path", "transformers_version", "use_cache")


def weight_layout(model_path: str | Path) -> dict[str, Any] | None:
    """What an engine's in-place reload must match for `model_path`'s weights to replace every one it holds: the
    config (less NOT_LAYOUT_KEYS) and each safetensors tensor's name, shape and dtype, read from the file headers.
    None when the folder has no config.json or no safetensors files (it can only be loaded afresh)."""
    folder = Path(model_path)
    files = sorted(folder.glob("*.safetensors"))
    if not files or not (folder / "config.json").is_file():
        return None
    from safetensors import safe_open

    config = {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if k not in NOT_LAYOUT_KEYS}
    tensors = {}
    for f in files:
        with safe_open(str(f), "pt") as st:
            for name in st.keys():
                piece = st.get_slice(name)
                tensors[name] = (tuple(piece.get_shape()), piece.get_dtype())
    if config.get("tie_word_embeddings"):   # the output embedding is the input one: a checkpoint may hold a copy
        tensors.pop("lm_head.weight", None)
    return {"config": config, "tensors": tensors}


def checkpoint_tensors(model_path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every safetensors file in the folder, one tensor in memory at a time."""
    from safetensors import safe_open

    for f in sorted(Path(model_path).glob("*.safetensors")):
        with safe_open(str(f), "pt", device="cpu") as st:
            for name in st.keys():
                yield name, st.get_tensor(name)
