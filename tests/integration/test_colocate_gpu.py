"""cluster.colocate=true on a GPU: vLLM sleeps (level 1: weights to CPU memory, KV cache freed) while the
learners train and wakes with the same weights; weight_sync.transport=cuda_ipc syncs through CUDA IPC handles.
Needs CUDA and the CUDA build of vLLM: marked `gpu`, deselected
by `make test` / CI (`-m "not gpu"`); run on a GPU machine with `pytest -m gpu tests/integration/test_colocate_gpu.py`.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlframe.config import load_config
from rlframe.rollout.engine import SamplingSettings

pytestmark = [pytest.mark.gpu, pytest.mark.integration,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM's sleep mode is CUDA-only")]
CACHE = Path(__file__).resolve().parents[2] / ".cache"


def test_vllm_sleep_frees_gpu_memory_and_wakes_with_the_same_weights(tiny_model_dir, monkeypatch):
    monkeypatch.delenv("VLLM_TARGET_DEVICE", raising=False)   # conftest sets the CPU build's defaults
    from rlframe.rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(tiny_model_dir, on_gpu=True, gpu_memory_utilization=0.3, max_model_len=256,
                        stop_token_ids=[2], sleep_mode=True)
    params = SamplingSettings(n=1, temperature=0.0, max_new_tokens=8)
    before = [c.token_ids for c in engine.generate([[5, 6, 7]], params)]
    used_awake = torch.cuda.mem_get_info()[1] - torch.cuda.mem_get_info()[0]
    engine.sleep()
    used_asleep = torch.cuda.mem_get_info()[1] - torch.cuda.mem_get_info()[0]
    assert used_asleep < used_awake - 2**28, (used_awake, used_asleep)   # the KV cache (>= 256 MiB) is freed
    engine.wake()
    assert [c.token_ids for c in engine.generate([[5, 6, 7]], params)] == before


def test_a_colocated_grpo_run_on_one_gpu(tmp_path):
    """Generators and learners share the GPU (half each); the driver sleeps the generators around every
    learner phase (tests/trainer/test_colocate.py checks the order on CPU)."""
    from rlframe.trainer.driver import Driver

    cfg = load_config(["rollout=vllm", "cluster.colocate=true", "rollout.num_gpus_per_worker=0.5",
                       "learner.num_gpus_per_worker=0.5", "rollout.vllm.gpu_memory_utilization=0.3",
                       "learner.world_size=1", "trainer.stages=[grpo]", "trainer.max_steps=2",
                       "trainer.prompts_per_step=2", "algorithm.group_size=2", "trainer.progress=false",
                       "trainer.loggers=[]", f"run.output_dir={tmp_path / 'run'}", f"run.cache_dir={CACHE}"])
    run_dir = Driver(cfg).run()
    assert (run_dir / "final" / "config.json").exists()


def test_a_colocated_run_syncs_through_cuda_ipc(tmp_path):
    """weight_sync.transport=cuda_ipc: the generator loads the learner's tensors from CUDA IPC handles through
    vLLM's native weight transfer; checksums on the generator's side and the log-prob probe on every sync."""
    import json

    from rlframe.trainer.driver import Driver

    cfg = load_config(["rollout=vllm", "cluster.colocate=true", "rollout.num_gpus_per_worker=0.5",
                       "learner.num_gpus_per_worker=0.5", "rollout.vllm.gpu_memory_utilization=0.3",
                       "learner.world_size=1", "trainer.stages=[grpo]", "trainer.max_steps=2",
                       "trainer.prompts_per_step=2", "algorithm.group_size=2", "trainer.progress=false",
                       "weight_sync.transport=cuda_ipc", "weight_sync.probe_every=1", "trainer.loggers=[]",
                       f"run.output_dir={tmp_path / 'run'}", f"run.cache_dir={CACHE}"])
    run_dir = Driver(cfg).run()
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    syncs = [r for r in rows if "weight_sync/bytes" in r]
    assert len(syncs) >= 3                                    # the start, and after each of the 2 steps
    for r in syncs:
        assert r["weight_sync/bytes"] > 0 and "weight_sync/send_seconds" not in r   # not the collective path
        assert r["weight_sync/probe_max_abs_diff"] <= 0.5     # bf16/fp32 tolerance: the generator has the weights
