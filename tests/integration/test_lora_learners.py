"""LoRA learners (learner.lora.rank=8) under ZeRO-2 and ZeRO-3: 2 gloo ranks train the adapter only, the reference is
the base (adapter off), the synced tensors are peft's merged model, the final save holds the merged policy and the
adapter, and a DeepSpeed checkpoint of the adapter alone restores it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlframe.config.schema import AlgorithmConfig, LearnerConfig, LoraConfig
from rlframe.learner.learner import LearnerWorker
from rlframe.weight_sync.buckets import Digest

from test_learners import WORLD, fixed_batch, shards

pytestmark = pytest.mark.integration
PROBE = [11, 12, 13, 14, 15, 16, 17, 18]


@pytest.mark.parametrize("stage", [2, 3])
def test_lora_learners_sync_merged_weights_and_save_both(ray_session, start_role, tiny_model_dir, tmp_path, stage):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rlframe.rollout.hf_engine import HFEngine

    ray = ray_session
    cfg = LearnerConfig(world_size=WORLD, zero_stage=stage, lr=1e-2, micro_batch_size=4, num_cpus_per_worker=0.5,
                        lora=LoraConfig(rank=8))
    group = start_role("learner", LearnerWorker, WORLD, [(r, WORLD, cfg, ".cache") for r in range(WORLD)],
                       per_rank_args=True)
    addr, port = ray.get(group.actors[0].master_address.remote())
    group.run("setup", addr, port, tiny_model_dir, "float32", 2, tiny_model_dir)   # reference = the adapter off

    def gathered() -> tuple[dict[str, torch.Tensor], str]:
        info = group.run("gather_weights", 1.0, True)[0]
        return {n: t for b in ray.get(info.refs) for n, t in b}, info.digest

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    start, _ = gathered()
    assert list(start) == list(base) and all(torch.equal(start[n], base[n]) for n in base)   # lora_B starts at 0

    batch = fixed_batch()
    ray.get(group.call_each("sft_step", [(sh, 1e-2) for sh in shards(batch)]))
    batch.advantages = torch.tensor([1.0, -1.0] * 8)
    batch.sample_logp = torch.zeros_like(batch.loss_mask)
    ms = ray.get(group.call_each("rl_step", [(sh, 1e-3, AlgorithmConfig(kl_coef=0.04), 1.0) for sh in shards(batch)]))
    assert all(m["kl"] > 0 for m in ms)   # the policy moved away from the base, which the reference still is

    merged, digest = gathered()
    moved = {n for n in base if not torch.equal(merged[n], base[n])}
    assert moved == {n for n in base if n.endswith("_proj.weight")}   # only the adapted weights, every one of them
    group.run("save_hf", str(tmp_path / "final"))
    # the base under the adapter is unchanged: the original model plus the saved adapter is what was synced
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                        str(tmp_path / "final/adapter"))
    expected = adapter.merge_and_unload().state_dict()
    assert all(torch.allclose(merged[n], expected[n], atol=1e-6) for n in base)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "final").state_dict()
    assert all(torch.equal(saved[n], merged[n]) for n in base)

    # the probe: a transformers generator given the synced tensors, and the saved folder, agree with the learner
    mine = group.run("probe_logprobs", PROBE)[0]
    engine = HFEngine(tiny_model_dir)
    engine.load_weights(merged.items())
    for other in (engine, HFEngine(str(tmp_path / "final"))):
        assert max(abs(a - b) for a, b in zip(mine, other.probe_logprobs(PROBE))) < 1e-4

    # the DeepSpeed checkpoint holds the adapter only (DeepSpeed keeps a tied alias's name), and loading it
    # restores the adapter exactly
    group.run("save_checkpoint", str(tmp_path / "ckpt"))
    for f in Path(tmp_path / "ckpt/state").glob("*model_states.pt"):
        module = torch.load(f, map_location="cpu", weights_only=False)["module"] or {}
        assert {k for k in module if "lora_" not in k} <= {"base_model.model.lm_head.weight"}, f
    ray.get(group.call_each("sft_step", [(sh, 1e-2) for sh in shards(fixed_batch(seed=1))]))
    assert gathered()[1] != digest
    group.run("load_checkpoint", str(tmp_path / "ckpt"))
    assert gathered()[1] == digest
