"""The policy learner actor: one rank of a DeepSpeed ZeRO data-parallel group.

Thin by design: the losses live in losses.py, the update loop in update.py, batching in data/batching.py, the
weight-sync sender in weight_sync/sender.py. Every rank runs the same number of micro-batches (a token budget's
counts are agreed over the ranks), so the collectives of ZeRO-3 (parameter gathers in forward) stay in lockstep.
One call per step does the reference (and old-policy) pass and the updates, so a shard crosses from the driver
to its rank once; with the KL in the reward the driver needs those log-probs first, and calls `score_batch` then
`rl_step(None, ...)`.
"""
from __future__ import annotations

import math
import os
import socket
import time
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import ray
import torch

from rlframe.cluster.storage import localize, release
from rlframe.config.schema import AlgorithmConfig, LearnerConfig
from rlframe.data.batching import TrainBatch
from rlframe.learner.lora import AdapterOff, merged_sources, save_merged_and_adapter, wrap as wrap_lora
from rlframe.learner.local_collectives import LocalCollectives, install as install_collectives
from rlframe.learner.losses import sft_loss
from rlframe.learner.update import (in_row_order, loss_scales, minibatches, needs_old_logprobs, regroup, run_updates,
                                    sequence_kl, token_kl)
from rlframe.models.cpu_attention import NAME as CPU_SDPA, use_cpu_sdpa
from rlframe.models.loading import DTYPES, load_policy, takes_logits_to_keep
from rlframe.models.logprobs import window_logprobs
from rlframe.models.multimodal import batch_vision_kwargs, collate_images
from rlframe.models.shared_prefix import PackedPrefix, pack_micro_batch, rope_index, window_logits
from rlframe.registry import import_plugin
from rlframe.weight_sync import cuda_ipc
from rlframe.weight_sync.buckets import SyncPayload, SyncSource, plain_sources
from rlframe.weight_sync.collective import SendReport, SyncGroup, SyncPlan, make_plan, send
from rlframe.weight_sync.sender import gather_to_object_store


def deepspeed_config(cfg: LearnerConfig, dtype: str, micro_batch: int, grad_accum: int, world: int,
                     train: bool = True, shared_memory: bool = False) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if shared_memory:   # the gradient bucket all-reduced whole through /dev/shm (local_collectives.py): DeepSpeed's
        # reduce-scatter path would first copy its slices into one more flat tensor to all-reduce that (measured
        # 20-25 ms less a step for 38 MB of bf16 gradients)
        zero["reduce_scatter"] = False
    if cfg.zero_stage == 3:
        zero.update(stage3_param_persistence_threshold=0, stage3_prefetch_bucket_size=5e7)
    if cfg.offload and train:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
        if cfg.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world,
        "zero_optimization": zero,
        "gradient_clipping": cfg.grad_clip,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
    }
    if train:
        # torch_adam: DeepSpeed's fused CPU Adam would be compiled just in time; torch's own fused kernel is
        # one pass over the flat ZeRO partition (measured 62 -> 12 ms a step for 9.6M parameters on one thread)
        ds["optimizer"] = {"type": "AdamW", "params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay,
                                                        "torch_adam": True, "fused": True, "betas": [0.9, 0.999]}}
    return ds


class LearnerWorker:
    def __init__(self, rank: int, world_size: int, cfg: LearnerConfig, cache_dir: str) -> None:
        self.rank, self.world = rank, world_size
        self.cfg = cfg
        self.cache_dir = cache_dir
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.engine = None
        self.ref = None
        self.collectives: LocalCollectives | None = None
        self._pending: tuple | None = None   # score_batch -> rl_step: micro-batches, ref and old log-probs
        self._exported: list[torch.Tensor] = []   # cuda_ipc: alive until the generators have loaded them

    def master_address(self) -> tuple[str, int]:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, master_addr: str, master_port: int, model_path: str, dtype: str, grad_accum: int,
              ref_path: str | None = None, gradient_checkpointing: bool = False) -> dict:
        """Join the process group, load the policy (and the frozen reference), wrap with DeepSpeed."""
        t0 = time.perf_counter()
        # a run-folder model shipped to this node (no shared filesystem), or a path checked to exist here
        model_path, ref_path = localize(model_path, "model"), localize(ref_path, "reference model")
        gpu = torch.cuda.is_available() and bool(ray.get_gpu_ids())
        backend = self.cfg.dist_backend if self.cfg.dist_backend != "auto" else ("nccl" if gpu else "gloo")
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world), LOCAL_RANK="0")
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(self.cache_dir) / "torch_extensions"))
        if gpu:
            torch.cuda.set_device(0)  # Ray sets CUDA_VISIBLE_DEVICES per actor
        import deepspeed

        if not gpu:   # its CPU shared-memory all-reduce serves only DeepSpeed's inference tensor parallelism, which
            # rlframe does not use; building it cost the first learner on a machine 60-90 s of g++ (measured)
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
        self.collectives = self.open_collectives(backend)
        self.device = torch.device("cuda", 0) if gpu else torch.device("cpu")
        self.dtype = dtype
        mbs = self.cfg.micro_batch_size
        ds_cfg = deepspeed_config(self.cfg, dtype, mbs, grad_accum, self.world,
                                  shared_memory=bool(self.collectives and self.collectives.usable))
        hf_ds = None
        if self.cfg.zero_stage == 3:
            # load straight into partitions (zero.Init) instead of a full copy per rank
            from transformers.integrations import HfDeepSpeedConfig

            hf_ds = HfDeepSpeedConfig(ds_cfg)  # noqa: F841 (must stay alive during from_pretrained)
        model = self.build_model(model_path, DTYPES[dtype])
        if self.cfg.compile and not gpu and dtype != "float32":   # its gain needs inductor and bf16 multiplies
            use_cpu_sdpa(model)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.config.use_cache = False
        if self.cfg.lora.rank:   # before DeepSpeed: only the adapter trains (the optimizer gets what requires grad)
            model = wrap_lora(model, self.cfg.lora)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds_cfg)
        if self.cfg.compile:   # compiled at the first call; dynamic: the micro-batch shapes change every step
            self.engine.compile(compile_kwargs={"dynamic": True})
        if ref_path is not None and self.cfg.lora.rank and ref_path == model_path:
            self.ref = AdapterOff(self.engine)   # the frozen base under the adapter: no second copy of it
        elif ref_path is not None:
            ref_cfg = deepspeed_config(self.cfg, dtype, mbs, grad_accum, self.world, train=False)
            # frozen: sharded under ZeRO-3, a plain replica otherwise (ZeRO-1/2 shard optimizer state only)
            ref_cfg["zero_optimization"] = {"stage": 3 if self.cfg.zero_stage == 3 else 0}
            ref = load_policy(ref_path, DTYPES[dtype])
            ref.requires_grad_(False)
            self.ref, *_ = deepspeed.initialize(model=ref, config=ref_cfg)
            self.ref.eval()
            if self.cfg.compile:
                self.ref.compile(compile_kwargs={"dynamic": True})
        del hf_ds
        release(model_path, ref_path)
        return {"rank": self.rank, "backend": backend, "seconds": time.perf_counter() - t0,
                "params": sum(getattr(p, "ds_numel", p.numel()) for p in self.engine.module.parameters()),
                "attention": getattr(model.config, "_attn_implementation", None),
                "collectives": "shared memory" if self.collectives and self.collectives.usable else backend}

    def open_collectives(self, backend: str) -> LocalCollectives | None:
        """CPU ranks on one machine: DeepSpeed's gradient all-reduce and parameter all-gather through /dev/shm
        (learner.shared_memory_collectives; local_collectives.py says why)."""
        if backend != "gloo" or self.world < 2 or self.cfg.zero_stage == 3 or not self.cfg.shared_memory_collectives:
            return None   # ZeRO-3's parameter gathers are asynchronous and its gradients reduce-scattered
        from deepspeed.comm import comm

        coll = LocalCollectives.open()
        if coll.usable:
            install_collectives(comm.cdb, coll)
        return coll

    # ---------------------------------------------------------------- helpers
    def build_model(self, model_path: str, dtype: torch.dtype) -> torch.nn.Module:
        """The trained module (the critic overrides it with a value model)."""
        return load_policy(model_path, dtype)

    def _minibatches(self, batch: TrainBatch, algo: AlgorithmConfig) -> list[list[TrainBatch]]:
        return minibatches(batch, algo.updates_per_batch, self.cfg.micro_batch_size, self.device,
                           self.cfg.micro_batch_tokens, self._packs(), partial(self.sum_over_ranks, op="MAX"))

    def forward_parts(self, batch: TrainBatch) -> list[TrainBatch] | None:
        """The micro-batches of the passes without gradients (learner.forward_micro_batch_size/_tokens), bigger
        than the update's since no activations are kept (veRL's log_prob_micro_batch_size_per_gpu); None: the
        update's own."""
        c = self.cfg
        if c.forward_micro_batch_size is None and c.forward_micro_batch_tokens is None:
            return None
        return minibatches(batch, 1, c.forward_micro_batch_size or c.micro_batch_size, self.device,
                           c.forward_micro_batch_tokens, self._packs(), partial(self.sum_over_ranks, op="MAX"))[0]

    @torch.no_grad()
    def no_grad_pass(self, fn: Any, parts: list[TrainBatch] | None, minis: list[list[TrainBatch]]
                     ) -> list[list[torch.Tensor]]:
        """`fn` (micro-batch -> [b, w-1]) over `parts` (`forward_parts`), laid out as the update's micro-batches."""
        if parts is None:
            return [[fn(mb) for mb in mini] for mini in minis]
        return regroup(minis, parts, [fn(mb) for mb in parts])

    def _packs(self) -> bool:
        """Whether micro-batches take the packed forward (learner.packing): eager or SDPA attention (rlframe's CPU
        one included), and a VLM only if it gives its own rotary positions (Qwen2.5-VL)."""
        module = self.engine.module
        return (self.cfg.packing and module.config._attn_implementation in ("sdpa", "eager", CPU_SDPA)
                and (getattr(module.config, "vision_config", None) is None or rope_index(module) is not None))

    def _packed(self, mb: TrainBatch) -> PackedPrefix | None:
        """The packed layout of a micro-batch, or None for padded rows."""
        return pack_micro_batch(self.engine.module, mb) if self._packs() else None

    def _logits(self, module: Any, mb: TrainBatch) -> tuple[torch.Tensor, int]:
        """The logits of the columns from `mb.loss_start()` on, and that column (`window_logits`)."""
        packed = self._packed(mb)   # a packed VLM row carries its own images; padded rows take the batch's
        padded = {} if packed is not None else batch_vision_kwargs(self.engine.module.config, mb)
        return window_logits(module, mb, packed, DTYPES[self.dtype], takes_logits_to_keep(self.engine.module),
                             **padded)

    def _logprobs(self, module: Any, mb: TrainBatch, temperature: float) -> torch.Tensor:
        return window_logprobs(*self._logits(module, mb), mb.input_ids, temperature)

    def sum_over_ranks(self, values: list[float], op: str = "SUM") -> list[float]:
        """Element-wise sums (or maxima: op MAX) over the data-parallel ranks, one all-reduce: the loss normalisers
        of a step, the micro-batch counts of a token budget."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(t, op=getattr(torch.distributed.ReduceOp, op))
        return t.tolist()

    def scales(self, minis: list[list[TrainBatch]], agg: str) -> list[list[float]]:
        return loss_scales(minis, agg, self.engine.gradient_accumulation_steps(), self.world, self.sum_over_ranks)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # ---------------------------------------------------------------- SFT
    def sft_step(self, batch: TrainBatch, lr: float) -> dict[str, float]:
        self.engine.train()
        self._set_lr(lr)
        losses, tokens = [], 0.0
        mbs = minibatches(batch, 1, self.cfg.micro_batch_size, self.device, self.cfg.micro_batch_tokens,
                          self._packs(), partial(self.sum_over_ranks, op="MAX"))[0]
        for j, (mb, scale) in enumerate(zip(mbs, self.scales([mbs], "token_mean")[0])):   # over every rank's tokens
            self.engine.set_gradient_accumulation_boundary(j == len(mbs) - 1)
            logits, start = self._logits(self.engine, mb)
            loss = sft_loss(logits, mb.input_ids[:, 1 + start:], mb.loss_mask[:, start:])
            self.engine.backward(loss * scale)
            self.engine.step()
            losses.append(loss.item())
            tokens += float(mb.loss_mask.sum())
        return {"loss": sum(losses) / len(losses), "grad_norm": float(self.engine.get_global_grad_norm() or 0.0),
                "tokens": tokens, "lr": lr}

    # ---------------------------------------------------------------- RL
    def score_batch(self, batch: TrainBatch, algo: AlgorithmConfig, temperature: float) -> dict[str, Any]:
        """First half of an RL step: the rank's mini/micro-batches, reference log-probs (if a reference is
        loaded) and, when needed, the old policy's, kept for `rl_step`. With algorithm.kl_in=reward it also
        returns each sequence's summed KL to the reference (`kl_seq`), which the driver puts into the rewards."""
        for spec in algo.plugins:
            import_plugin(spec)
        t0 = time.perf_counter()
        minis, old_pass = self._minibatches(batch, algo), needs_old_logprobs(algo, self.ref is not None)
        parts = self.forward_parts(batch) if self.ref is not None or old_pass else None
        refs = [[None] * len(m) for m in minis] if self.ref is None else \
            self.no_grad_pass(partial(self._logprobs, self.ref, temperature=temperature), parts, minis)
        t1 = time.perf_counter()
        olds = None
        if old_pass:
            self.engine.eval()
            olds = self.no_grad_pass(partial(self._logprobs, self.engine, temperature=temperature), parts, minis)
        self._pending = (minis, refs, olds, {"timing/ref": t1 - t0, "timing/old_logp": time.perf_counter() - t1})
        if algo.kl_in != "reward" or self.ref is None or olds is None:
            return {}
        kl = [sequence_kl(o, r, mb.loss_mask, algo.kl_estimator) for mm, om, rm in zip(minis, olds, refs)
              for mb, o, r in zip(mm, om, rm)]
        out = {"kl_seq": in_row_order(minis, torch.cat(kl).cpu()).tolist()}
        if algo.name == "gae":   # GAE puts each token's KL into that token's reward
            out["kl_tok"] = token_kl(minis, olds, refs, algo.kl_estimator, batch.loss_mask.shape[1])
        return out

    def rl_step(self, batch: TrainBatch | None, lr: float, algo: AlgorithmConfig, temperature: float,
                max_new_tokens: int | None = None, advantages: torch.Tensor | None = None) -> dict[str, float]:
        """The rank's share of one RL step: `score_batch` (unless the driver called it already: batch None,
        `advantages` this rank's rows), then algorithm.epochs x updates_per_batch optimizer updates.
        Returns averaged metrics plus `timing/ref`, `timing/old_logp` and `timing/train` seconds."""
        if batch is not None:
            self.score_batch(batch, algo, temperature)
        if self._pending is None:
            raise RuntimeError("rl_step(None, ...) needs a score_batch call of this step first")
        minis, refs, olds, timing = self._pending
        self._pending = None
        for mb in [mb for m in minis for mb in m] if advantages is not None else []:
            adv = advantages[mb.index.cpu()]   # the driver's, in this rank's row order; GAE's cut to the width
            mb.advantages = (adv if adv.ndim == 1 else adv[:, : mb.loss_mask.shape[1]]).to(self.device)
        t1, calls = time.perf_counter(), self.collectives.calls if self.collectives else 0
        self.engine.train()
        self._set_lr(lr)
        out = run_updates(self.engine, partial(self._logits, self.engine), minis, refs, olds, algo, temperature,
                          max_new_tokens, self.scales(minis, algo.loss_agg))
        if self.collectives:   # how many of the update's collectives went through shared memory
            out["learner/shm_collectives"] = self.collectives.calls - calls
        return {**out, "lr": lr, **timing, "timing/train": time.perf_counter() - t1}

    # ---------------------------------------------------------------- weights
    def _named_params(self) -> list[tuple[str, torch.nn.Parameter]]:
        # tied aliases too (lm_head.weight): vLLM-CPU keeps its own repacked copy of each name
        return list(self.engine.module.named_parameters(remove_duplicate=False))

    def sync_sources(self) -> list[SyncSource]:
        """What the generators receive, by the names their engines expect."""
        if self.cfg.lora.rank:   # each adapted weight merged (W + scaling * B @ A) under its base name
            return merged_sources(self.engine.module)
        return plain_sources(self._named_params())

    def gather_weights(self, bucket_mb: float, checksum: bool) -> SyncPayload | None:
        """Full weights in object-store buckets (rank 0 returns the payload; all ranks must call)."""
        return gather_to_object_store(self.sync_sources(), self.rank, self.cfg.zero_stage == 3, bucket_mb, checksum)

    def sync_endpoint(self) -> tuple[str, int, str]:
        """Where the weight-sync group meets (this node, a free port) and this rank's device type."""
        return (*self.master_address(), self.device.type)

    def open_sync_group(self, addr: str, port: int, world: int, backend: str, timeout_s: float,
                        join_timeout_s: float) -> None:
        """Rank 0 joins the generators' weight-sync group as its rank 0 (the other ranks only gather)."""
        if self.rank == 0:
            self.sync_group = SyncGroup(addr, port, 0, world, backend, timeout_s, addr, join_timeout_s)

    def sync_plan(self, bucket_mb: float) -> SyncPlan:
        return make_plan(self.sync_sources(), int(bucket_mb * 2**20))

    def send_weights(self, plan: SyncPlan, checksum: bool, delta: bool = False,
                     shared_memory: bool = True) -> SendReport | None:
        """Broadcast the full weights bucket by bucket (all ranks must call; rank 0 returns the report)."""
        return send(getattr(self, "sync_group", None), self.sync_sources(), plan, self.rank,
                    self.cfg.zero_stage == 3, checksum, delta, shared_memory)

    def export_ipc(self, checksum: bool) -> cuda_ipc.IpcExport:
        """CUDA IPC handles of the full weights on this rank's GPU (transport cuda_ipc; all ranks must call)."""
        return cuda_ipc.export(self.sync_sources(), self.cfg.zero_stage == 3, self._exported, checksum)

    def release_ipc(self) -> None:
        cuda_ipc.release(self._exported)

    @torch.no_grad()
    def probe_logprobs(self, token_ids: Sequence[int], images: dict | None = None) -> list[float]:
        """Log-probs of a fixed sequence at temperature 1 (all ranks must call under ZeRO-3)."""
        self.engine.eval()
        ids = torch.tensor([list(token_ids)], device=self.device)
        # a VLM probe: row-padded image tensors, as in a training batch
        vision = {k: v.to(self.device) for k, v in collate_images([images]).items()} if images is not None else {}
        mb = TrainBatch(ids, torch.ones_like(ids), torch.ones_like(ids[:, 1:]), **vision)
        return self._logprobs(self.engine, mb, 1.0).squeeze(0).cpu().tolist()

    @torch.no_grad()
    def greedy_generate(self, token_ids: Sequence[int], max_new_tokens: int, eos_id: int | None = None) -> list[int]:
        """Greedy continuation with the learner's own weights (all ranks must call under ZeRO-3)."""
        self.engine.eval()
        ids = list(token_ids)
        for _ in range(max_new_tokens):
            x = torch.tensor([ids], device=self.device)
            nxt = int(self.engine(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1].argmax())
            ids.append(nxt)
            if nxt == eos_id:
                break
        return ids[len(token_ids):]

    def save_checkpoint(self, path: str) -> None:
        """DeepSpeed's own checkpoint of this rank (weights, ZeRO partitions, optimizer; all ranks must call)."""
        # LoRA: the adapter and its optimizer state only (the frozen base comes back from the model folder)
        self.engine.save_checkpoint(path, tag="state", exclude_frozen_parameters=bool(self.cfg.lora.rank))
        torch.distributed.barrier()

    def load_checkpoint(self, path: str) -> None:
        """Restore what `save_checkpoint` wrote (same world size and ZeRO stage; all ranks must call)."""
        path = localize(path, "checkpoint")   # shipped from the driver's node when no filesystem is shared
        load_path, _ = self.engine.load_checkpoint(path, tag="state", load_optimizer_states=True,
                                                   load_lr_scheduler_states=True,
                                                   load_module_strict=not self.cfg.lora.rank)
        release(path)
        if load_path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {path} (tag 'state')")

    def save_hf(self, path: str) -> str | None:
        """Save the full policy in Hugging Face format (gathered under ZeRO-3; all ranks must call); with LoRA the
        merged policy, and the adapter in `path/adapter`."""
        import deepspeed

        module = self.engine.module
        params = self._named_params()
        with deepspeed.zero.GatheredParameters(list({id(p): p for _, p in params}.values()), modifier_rank=None,
                                               enabled=self.cfg.zero_stage == 3):
            if self.rank == 0 and self.cfg.lora.rank:   # merged at `path`, peft's adapter in `path/adapter`
                save_merged_and_adapter(module, path)
            elif self.rank == 0:
                state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
                module.save_pretrained(path, state_dict=state, safe_serialization=True)
        torch.distributed.barrier()
        return path if self.rank == 0 else None


def grad_accum_steps(local_batch: int, micro_batch: int) -> int:
    """Micro-batches per optimizer update (`local_batch`: the rows of one update on one rank)."""
    return max(1, math.ceil(local_batch / micro_batch))
