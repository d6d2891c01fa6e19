"""LoRA on the learners (`learner.lora`): peft adapters on the policy's linear layers, and what the generators and
the saved policy see of them: every wrapped weight merged, `W + scaling * B @ A`, under the base model's own
Hugging Face name. Plain functions of the peft model (no Ray, no DeepSpeed): under ZeRO-3 the learner gathers
the parameters before `SyncSource.full()` or a save.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch

from rlframe.config.schema import LoraConfig
from rlframe.weight_sync.buckets import SyncSource

ADAPTER = "default"
PREFIX = "base_model.model."


def linear_names(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def wrap(model: torch.nn.Module, cfg: LoraConfig) -> Any:
    """`model` with LoRA adapters on `cfg.target_modules` (only they train), initialised alike on every rank."""
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    names = linear_names(model)
    missing = [t for t in cfg.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        short = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise ValueError(f"learner.lora.target_modules: {missing} match no linear layer of the model; "
                         f"its linear layers are named {short}")
    peft_cfg = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    if getattr(model, "is_gradient_checkpointing", False):
        model.enable_input_require_grads()   # frozen embeddings: reentrant checkpoints need an input with grad
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)   # lora_A's random init: the same on every rank whatever each rank drew before
        return get_peft_model(model, peft_cfg)


def hf_name(name: str) -> str:
    """peft's parameter name -> the base model's (`base_model.model.` prefix and `.base_layer` infix dropped)."""
    return (name[len(PREFIX):] if name.startswith(PREFIX) else name).replace(".base_layer.", ".")


def merge_weight(tensors: Sequence[torch.Tensor], scaling: float) -> torch.Tensor:
    """W + scaling * B @ A in fp32, cast to W's dtype (as peft's merge of its fp32 adapter into a bf16 weight)."""
    w, a, b = tensors
    return (w.float() + (b.float() @ a.float()) * scaling).to(w.dtype)


def merged_sources(model: torch.nn.Module) -> list[SyncSource]:
    """Every tensor of the merged policy by its Hugging Face name (tied aliases included), in parameter order."""
    from peft.tuners.lora import LoraLayer

    lora: dict[int, tuple] = {}   # id(base weight) -> (lora_A weight, lora_B weight, scaling)
    for m in model.modules():
        if isinstance(m, LoraLayer) and ADAPTER in m.lora_A:
            lora[id(m.get_base_layer().weight)] = (m.lora_A[ADAPTER].weight, m.lora_B[ADAPTER].weight,
                                                   m.scaling[ADAPTER])
    adapter = {id(p) for a, b, _ in lora.values() for p in (a, b)}
    out = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in lora:
            a, b, scaling = lora[id(p)]
            out.append(SyncSource(hf_name(name), (p, a, b), partial(merge_weight, scaling=scaling)))
        elif id(p) not in adapter:
            out.append(SyncSource(hf_name(name), (p,)))
    return out


def save_merged_and_adapter(model: Any, path: str) -> None:
    """The merged policy in Hugging Face format at `path`, peft's adapter in `path/adapter` (parameters gathered)."""
    merged = {s.name: s.full().to("cpu", copy=True) for s in merged_sources(model)}
    model.get_base_model().save_pretrained(path, state_dict=merged, safe_serialization=True)
    adapter = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if "lora_" in k}
    model.save_pretrained(str(Path(path) / "adapter"), state_dict=adapter, safe_serialization=True)


class AdapterOff:
    """The reference policy as the policy's own model with its adapter switched off: the frozen base weights,
    without a second copy of them."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __call__(self, **kwargs: Any) -> Any:
        self.engine.eval()
        with self.engine.module.disable_adapter():
            return self.engine(**kwargs)
