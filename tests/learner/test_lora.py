"""LoRA on the learners (rlframe/learner/lora.py), in-process on a tiny Qwen2 (no Ray, no DeepSpeed): the merged
weights the generators receive equal peft's own merge_and_unload, only the adapter trains, the reference with
the adapter off is the base model, the saves load back, and learner.lora is validated."""
from __future__ import annotations

import pytest
import torch

from rlframe.config import ConfigError, load_config
from rlframe.config.schema import LoraConfig, ModelConfig
from rlframe.learner.lora import AdapterOff, hf_name, merged_sources, save_merged_and_adapter, wrap
from rlframe.models.tiny import build_tiny_model

IDS = torch.tensor([[5, 6, 7, 8, 9, 10]])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    cfg = ModelConfig(hidden_size=64, intermediate_size=128, num_heads=2, num_kv_heads=1)
    return str(build_tiny_model(cfg, 128, None, 2, 0, tmp_path_factory.mktemp("tiny_lora"), seed=0))


def load(path: str, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


def lora_model(path: str, dtype: torch.dtype = torch.float32, **kw):
    model = wrap(load(path, dtype), LoraConfig(rank=4, alpha=8.0, **kw))
    with torch.no_grad():   # lora_B starts at zero (a no-op adapter): give it values so that the merge shows
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(n)))
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merged_sources_equal_peft_merge_and_unload(tiny_dir, dtype):
    model = lora_model(tiny_dir, dtype)
    sources = merged_sources(model)
    ours = {s.name: s.full().clone() for s in sources}
    assert len(ours) == len(sources)                          # one source per name
    assert sum(len(s.params) == 3 for s in sources) == 2 * 7   # 2 layers x the 7 default projections
    expected = model.merge_and_unload().state_dict()          # tied lm_head.weight alias included
    assert list(ours) == list(load(tiny_dir).state_dict())    # the base model's names, in its order
    for name, tensor in expected.items():
        assert ours[name].dtype == dtype and torch.equal(ours[name], tensor), name
    assert not torch.equal(ours["model.layers.0.self_attn.q_proj.weight"],
                           load(tiny_dir, dtype).state_dict()["model.layers.0.self_attn.q_proj.weight"])


def test_only_the_adapter_trains(tiny_dir):
    model = wrap(load(tiny_dir), LoraConfig(rank=4, alpha=8.0, dropout=0.1, target_modules=["q_proj", "v_proj"]))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert {hf_name(n).split(".lora_")[0] for n in trainable} == \
        {f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")}
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == 2.0 and layer.lora_dropout["default"].p == 0.1
    # the same initial adapter on every rank, whatever each rank's RNG drew before
    torch.manual_seed(123)
    again = wrap(load(tiny_dir), LoraConfig(rank=4, alpha=8.0, target_modules=["q_proj", "v_proj"]))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(model.named_parameters(), again.named_parameters()))


def test_unknown_target_module_names_the_key_and_the_linear_layers(tiny_dir):
    with pytest.raises(ValueError, match=r"learner.lora.target_modules: \['qkv'\] match no linear layer") as info:
        wrap(load(tiny_dir), LoraConfig(rank=4, target_modules=["q_proj", "qkv"]))
    assert "'down_proj'" in str(info.value) and "'lm_head'" in str(info.value)


def test_adapter_off_is_the_base_model(tiny_dir):
    model = lora_model(tiny_dir)

    class Engine:   # what AdapterOff uses of a DeepSpeed engine
        module = model

        def eval(self):
            model.eval()

        def __call__(self, **kw):
            return model(**kw)

    with torch.no_grad():
        off = AdapterOff(Engine())(input_ids=IDS).logits
        on = model(input_ids=IDS).logits
        base = load(tiny_dir)(input_ids=IDS).logits
    assert torch.allclose(off, base, atol=1e-6) and not torch.allclose(on, base, atol=1e-3)


def test_save_writes_the_merged_policy_and_the_adapter(tiny_dir, tmp_path):
    from peft import PeftModel

    model = lora_model(tiny_dir).eval()
    save_merged_and_adapter(model, str(tmp_path / "final"))
    files = {p.name for p in (tmp_path / "final/adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    with torch.no_grad():
        mine = model(input_ids=IDS).logits
        merged = load(str(tmp_path / "final"))(input_ids=IDS).logits
        adapter = PeftModel.from_pretrained(load(tiny_dir), str(tmp_path / "final/adapter"))(input_ids=IDS).logits
    assert torch.allclose(merged, mine, atol=1e-5) and torch.allclose(adapter, mine, atol=1e-6)


def test_invalid_lora_settings_name_the_key():
    with pytest.raises(ConfigError) as info:
        load_config(["learner.lora.rank=-1", "learner.lora.alpha=0", "learner.lora.dropout=1.0",
                     "learner.lora.target_modules=[]", "critic.lora.rank=8"])
    for message in ("learner.lora.rank=-1: must be >= 0", "learner.lora.alpha=0.0: must be > 0",
                    "learner.lora.dropout=1.0: must be in [0, 1)",
                    "learner.lora.target_modules=[]: expected a non-empty list",
                    "critic.lora.rank=8: LoRA is for the policy only"):
        assert message in str(info.value)


def test_lora_config_defaults_and_overrides():
    assert load_config().learner.lora.rank == 0
    cfg = load_config(["learner.lora.rank=8", "learner.lora.target_modules=[q_proj,v_proj]"])
    assert (cfg.learner.lora.rank, cfg.learner.lora.alpha, list(cfg.learner.lora.target_modules)) == \
        (8, 16.0, ["q_proj", "v_proj"])
