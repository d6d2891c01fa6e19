"""The driver: one controller process, one loop per stage, every phase timed.

GRPO step:  sample prompts -> generate G each -> rewards -> advantages -> reference log-probs
            -> learner update -> weight sync -> log (-> evaluate, checkpoint)
"""
from __future__ import annotations

import logging
import math
import random
import shutil
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import ray
import torch
from omegaconf import OmegaConf

from rlframe.cluster.ray_cluster import ActorGroup, init_ray, shutdown_ray
from rlframe.config import ConfigError
from rlframe.config.schema import RLConfig
from rlframe.data.batching import collate, split_even
from rlframe.data.sampler import EpochSampler
from rlframe.learner.advantages import compute_advantages
from rlframe.learner.learner import LearnerWorker, grad_accum_steps
from rlframe.learner.weight_sync import WeightSyncError
from rlframe.models import build_tiny_model, model_source
from rlframe.reward.plugins import RewardError
from rlframe.reward.pool import RewardPool
from rlframe.reward.scoring import combine
from rlframe.rollout.engine import SamplingSettings
from rlframe.rollout.generator import RolloutWorker
from rlframe.tasks.registry import TASKS
import json

from rlframe.tracking import Tracker, format_summary, read_metrics, summarize

log = logging.getLogger("rlframe")


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        return {f"timing/{k}": round(v, 4) for k, v in self.seconds.items()}


def lr_at(step: int, total: int, base: float, warmup: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Linear warm-up, then constant or cosine decay to min_ratio * base (step counts from 0)."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return base
    frac = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _avg_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {k: _mean([d[k] for d in dicts]) for k in dicts[0]}


class Controller:
    def __init__(self, cfg: RLConfig) -> None:
        self.cfg = cfg
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(cfg.run.output_dir or f"outputs/{cfg.run.name}-{stamp}").resolve()
        self.cache_dir = Path(cfg.run.cache_dir or ".cache").resolve()
        self.generators: ActorGroup | None = None
        self.rewarders: RewardPool | None = None
        self.learners: ActorGroup | None = None
        self.tracker: Tracker | None = None
        self.version = 0
        self.syncs = 0
        self.probe_next_sync = True
        self.owns_ray = False
        self.last_checkpoint: str | None = None

    # ------------------------------------------------------------------ set-up
    def prepare(self) -> None:
        """Everything before Ray: run folder, resolved config, data, tokenizer, initial model."""
        cfg = self.cfg
        src = model_source(cfg.model)
        if src is not None and not (Path(src) / "config.json").exists():
            key = "model.init_from" if cfg.model.init_from else "model.path"
            raise ConfigError(f"{key}={src!r}: not a Hugging Face model folder (no config.json there)")
        for fn in cfg.reward.fns:   # reward workers may start elsewhere: pin files to where the run started
            if fn.path:
                fn.path = str(Path(fn.path).expanduser().resolve())
            if fn.url:              # a reward service that is down should stop the run now, not after SFT
                from rlframe.reward.remote import check_service

                try:
                    check_service(fn)
                except RewardError as err:
                    raise ConfigError(f"reward.fns: {err}") from None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        t0 = time.perf_counter()
        self.task = TASKS[cfg.data.task](cfg.data, self.cache_dir)
        if src is not None and (Path(src) / "tokenizer_config.json").exists():
            from transformers import AutoTokenizer

            self.task.tokenizer = AutoTokenizer.from_pretrained(src)  # a checkpoint keeps its own tokenizer
        tok = self.tokenizer = self.task.tokenizer
        self.tokenizer_dir = self.run_dir / "tokenizer"
        tok.save_pretrained(self.tokenizer_dir)
        self.eos_id, self.pad_id = tok.eos_token_id, tok.pad_token_id
        if src is None:
            vision_ids = None if self.task.vision is None else self.task.vision.token_ids(tok)
            src = str(build_tiny_model(cfg.model, len(tok), tok.bos_token_id, self.eos_id, self.pad_id,
                                       self.run_dir / "init_model", seed=cfg.run.seed, vision_token_ids=vision_ids))
        self.model_path = src
        self.train_prompts = self.encode_prompts(self.task.train)
        self.eval_prompts = self.encode_prompts(self.task.eval)
        log.info("data: %d train / %d eval samples, vocab %d, prompt tokens %d-%d (%.1f s); model %s",
                 len(self.task.train), len(self.task.eval), len(tok), min(map(len, self.train_prompts)),
                 max(map(len, self.train_prompts)), time.perf_counter() - t0, src)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_prompts(self, records: list[dict[str, Any]], task: Any = None) -> list[list[int]]:
        """Prompt token ids of `records`; for image tasks each prompt also carries its images' pixel inputs."""
        vision = (task or self.task).vision
        prompts = [self._encode(s["prompt"]) for s in records]
        return prompts if vision is None else vision.attach(records, prompts, self.tokenizer)

    def start_cluster(self) -> None:
        cfg = self.cfg
        need = cfg.learner.world_size * cfg.learner.num_cpus_per_worker
        if self.needs_generators():
            need += cfg.rollout.num_workers * cfg.rollout.num_cpus_per_worker
            need += cfg.reward.num_workers * cfg.reward.num_cpus_per_worker
        self.owns_ray = init_ray(cfg.cluster, self.cache_dir, required_cpus=need)
        self.tracker = Tracker(self.run_dir, cfg.trainer.loggers, OmegaConf.to_container(OmegaConf.structured(cfg)))

    def needs_generators(self) -> bool:
        """Whether a training run starts generators and reward workers: for GRPO, or to evaluate during SFT."""
        t = self.cfg.trainer
        return "grpo" in t.stages or ("sft" in t.stages and bool(t.sft.eval_every))

    def start_rollout_and_reward(self, model_path: str) -> None:
        """Create generators and reward workers without waiting: their start-up overlaps SFT."""
        cfg = self.cfg
        r = cfg.rollout
        self.generators = ActorGroup(
            "rollout", RolloutWorker, r.num_workers, r.num_cpus_per_worker, r.num_gpus_per_worker,
            cfg.cluster.placement_strategy,
            args=(model_path, str(self.tokenizer_dir), r, cfg.model.dtype, cfg.run.seed, self.eos_id, self.pad_id))
        self.rewarders = RewardPool(cfg.reward, cfg.cluster.placement_strategy)

    def start_learners(self, model_path: str, ref_path: str | None, local_batch: int) -> None:
        cfg = self.cfg
        lc = cfg.learner
        self.learners = ActorGroup(
            "learner", LearnerWorker, lc.world_size, lc.num_cpus_per_worker, lc.num_gpus_per_worker,
            cfg.cluster.placement_strategy, per_rank_args=True,
            args=[(rank, lc.world_size, lc, str(self.cache_dir)) for rank in range(lc.world_size)])
        self.probe_next_sync = True  # a new weight source: verify its first sync
        addr, port = ray.get(self.learners.actors[0].master_address.remote())
        infos = self.learners.run("setup", addr, port, model_path, cfg.model.dtype,
                                  grad_accum_steps(local_batch, lc.micro_batch_size), ref_path,
                                  cfg.model.gradient_checkpointing)
        log.info("learners: %d x ZeRO-%d over %s, %.2fM parameters, ready in %.1f s%s", lc.world_size,
                 lc.zero_stage, infos[0]["backend"], infos[0]["params"] / 1e6, max(i["seconds"] for i in infos),
                 " (+ frozen reference)" if ref_path else "")

    def stop_learners(self) -> None:
        if self.learners is not None:
            self.learners.kill()
            self.learners = None

    # ------------------------------------------------------------------ SFT
    def run_sft(self) -> str:
        cfg, s = self.cfg, self.cfg.trainer.sft
        world = cfg.learner.world_size
        self.start_learners(self.model_path, None, s.batch_size // world)
        sampler = EpochSampler(len(self.task.train), cfg.run.seed)
        targets = {}
        bar = _progress(s.steps, "sft", cfg.trainer.progress)
        for step in range(s.steps):
            timer = Timer()
            with timer("data"):
                idx = sampler.take(s.batch_size)
                for i in idx:
                    if i not in targets:
                        targets[i] = self._encode(self.task.train[i]["target"]) + [self.eos_id]
                batch = collate([self.train_prompts[i] for i in idx], [targets[i] for i in idx], self.pad_id)
            lr = lr_at(step, s.steps, s.lr, s.warmup_steps, "cosine", s.min_lr_ratio)
            with timer("train"):
                shards = [{k: v[sl] for k, v in batch.items()} for sl in split_even(s.batch_size, world)]
                m = _avg_dicts(ray.get(self.learners.call_each("sft_step", [(sh, lr) for sh in shards])))
            metrics = {"step": step + 1, "stage": "sft", **m, "epoch": sampler.epoch, **timer.metrics()}
            self.tracker.log(metrics)
            bar.set_postfix(loss=f"{m['loss']:.3f}")
            bar.update()
            if s.eval_every and step + 1 >= s.min_steps and (step + 1) % s.eval_every == 0 \
                    and self.sft_should_stop(step + 1):
                break
        bar.close()
        out = str(self.run_dir / "sft")
        self.save_policy(out)
        return out

    def sft_should_stop(self, step: int) -> bool:
        """Evaluate the SFT policy through the generators; True once the stop metric is reached.

        Stopping as soon as a skill appears keeps SFT short and leaves the rest to RL.
        """
        s = self.cfg.trainer.sft
        self.wait_ready()
        self.version += 1
        self.sync_weights()
        ev = self.evaluate()
        self.tracker.log({"step": step, "stage": "sft_eval", **ev})
        value = ev.get(s.stop_metric)
        if value is None:
            raise ConfigError(f"trainer.sft.stop_metric={s.stop_metric!r}: not among {sorted(ev)}")
        log.info("SFT step %d: %s = %.3f", step, s.stop_metric, value)
        if s.stop_threshold is not None and value >= s.stop_threshold:
            log.info("SFT stops at step %d (%s >= %.3f)", step, s.stop_metric, s.stop_threshold)
            return True
        return False

    # ------------------------------------------------------------------ GRPO
    def run_grpo(self, policy_path: str) -> None:
        cfg = self.cfg
        a, t, world = cfg.algorithm, cfg.trainer, cfg.learner.world_size
        batch_size = t.prompts_per_step * a.group_size
        self.start_learners(policy_path, policy_path if a.kl_coef > 0 else None, batch_size // world)
        self.wait_ready()
        self.log_sync(self.sync_weights(), step=0)
        if t.eval_every:
            self.tracker.log({"step": 0, "stage": "eval", **self.evaluate()})
        sampler = EpochSampler(len(self.task.train), cfg.run.seed + 1)
        params = SamplingSettings(n=a.group_size, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                                  top_k=cfg.rollout.top_k, max_new_tokens=cfg.rollout.max_new_tokens)
        bar = _progress(t.max_steps, "grpo", t.progress)
        for step in range(1, t.max_steps + 1):
            timer, t_step = Timer(), time.perf_counter()
            idx = sampler.take(t.prompts_per_step)
            try:
                comps, scores = self.rollout_and_score([self.train_prompts[i] for i in idx], idx, params, timer)
            except RewardError:
                if step > 1:
                    self.save_policy(str(self.run_dir / f"checkpoint-{step - 1}"))
                raise
            rewards = torch.tensor(scores["total"])
            advantages = compute_advantages(a.name, rewards, a.group_size, a.adv_eps)
            batch = collate([self.train_prompts[idx[c["prompt_index"]]] for c in comps],
                            [c["token_ids"] for c in comps], self.pad_id, self.eos_id)
            batch["advantages"] = advantages
            batch["sample_logp"] = _pad_rows([c["logprobs"] for c in comps], batch["loss_mask"])
            shards = [{k: v[sl] for k, v in batch.items()} for sl in split_even(batch_size, world)]
            with timer("ref"):
                refs = ray.get(self.learners.call_each("ref_logprobs", [(sh, params.temperature) for sh in shards]))
                for sh, ref in zip(shards, refs):
                    if ref is not None:
                        sh["ref_logp"] = ref
            lr = lr_at(step - 1, t.max_steps, cfg.learner.lr, cfg.learner.warmup_steps, t.lr_schedule)
            with timer("train"):
                m = _avg_dicts(ray.get(self.learners.call_each("grpo_step", [(sh, lr, a, params.temperature,
                                                                              params.max_new_tokens) for sh in shards])))
            self.version += 1
            with timer("weight_sync"):
                sync = self.sync_weights()
            metrics = {"step": step, "stage": "grpo", **_reward_metrics(scores, a.group_size), **m,
                       "response_length": _mean([len(c["token_ids"]) for c in comps]),
                       "truncated_frac": _mean([float(c["finish_reason"] == "length") for c in comps]),
                       **sync}
            if t.eval_every and (step % t.eval_every == 0 or step == t.max_steps):
                with timer("eval"):
                    self.tracker.log({"step": step, "stage": "eval", **self.evaluate()})
            if t.save_every and step % t.save_every == 0 and step < t.max_steps:
                with timer("save"):
                    self.save_policy(str(self.run_dir / f"checkpoint-{step}"))
            metrics.update(timer.metrics())
            metrics["timing/step"] = round(time.perf_counter() - t_step, 4)
            self.tracker.log(metrics)
            bar.set_postfix(reward=f"{metrics['reward/total']:.3f}",
                            acc=f"{metrics.get('reward/accuracy', float('nan')):.2f}")
            bar.update()
        bar.close()

    def wait_ready(self) -> None:
        ray.get(self.generators.call("ready"))
        self.rewarders.wait_ready()

    def generate(self, prompts: list[list[int]], params: SamplingSettings) -> list[dict[str, Any]]:
        """Split the prompts across the generators; samples come back grouped by prompt."""
        slices = split_even(len(prompts), len(self.generators))
        refs = [actor.generate.remote(prompts[sl], params, sl.start)
                for actor, sl in zip(self.generators.actors, slices) if sl.stop > sl.start]
        return [c for part in ray.get(refs) for c in part]

    def generate_stream(self, prompts: list[list[int]], params: SamplingSettings) -> Iterator[list[dict[str, Any]]]:
        """Like `generate`, but yields whole groups from every generator as they finish (any order)."""
        slices = split_even(len(prompts), len(self.generators))
        pending = [actor.generate_stream.remote(prompts[sl], params, sl.start)
                   for actor, sl in zip(self.generators.actors, slices) if sl.stop > sl.start]
        while pending:
            ready, _ = ray.wait(pending, num_returns=1)
            for gen in ready:
                try:
                    ref = next(gen)
                except StopIteration:
                    pending.remove(gen)
                    continue
                yield ray.get(ref)

    def rollout_and_score(self, prompts: list[list[int]], idx: list[int], params: SamplingSettings,
                          timer: Timer) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Generate G samples per prompt and score them; with reward.stream_batch > 0 the reward pool
        scores finished groups while the rest are generated, and `reward_wait` is the time left after
        the last completion. Returns completions grouped by prompt and their scores in the same order."""
        stream = self.cfg.reward.stream_batch
        comps: list[dict[str, Any]] = []
        tickets, pending = [], []

        def samples(cs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [self._sample(self.task.train[idx[c["prompt_index"]]], c) for c in cs]

        with timer("generate"):
            for part in (self.generate_stream(prompts, params) if stream else [self.generate(prompts, params)]):
                comps += part
                pending += part
                if stream and len(pending) >= stream:
                    tickets.append(self.rewarders.submit(samples(pending)))
                    pending = []
        with timer("reward_wait" if stream else "reward"):
            if pending:
                tickets.append(self.rewarders.submit(samples(pending)))
            scores = self._combine(self.rewarders.gather(tickets))
        order = sorted(range(len(comps)), key=lambda j: (comps[j]["prompt_index"], comps[j]["sample_index"]))
        comps = [comps[j] for j in order]
        scores["components"] = {k: [v[j] for j in order] for k, v in scores["components"].items()}
        scores["total"] = [scores["total"][j] for j in order]
        return comps, scores

    def _sample(self, record: dict[str, Any], comp: dict[str, Any]) -> dict[str, Any]:
        """What a reward function sees: the data record, its prompt, the completion text and ids."""
        return {**record, "completion": comp["text"], "completion_ids": comp["token_ids"]}

    def _combine(self, scored: dict[str, Any]) -> dict[str, Any]:
        scored["total"] = combine(scored["components"], self.cfg.reward.fns, self.cfg.reward.normalize)
        for msg in scored["errors"][:3]:
            log.warning("reward fallback (reward.on_error=fallback): %s", msg)
        return scored

    def score(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return self._combine(self.rewarders.score(samples))

    def evaluate(self) -> dict[str, float]:
        """Greedy decoding on the held-out users; every reward component's mean."""
        params = SamplingSettings(n=1, temperature=0.0, max_new_tokens=self.cfg.rollout.max_new_tokens)
        comps = self.generate(self.eval_prompts, params)
        scores = self.score([self._sample(self.task.eval[c["prompt_index"]], c) for c in comps])
        return {f"eval/{k}": _mean(v) for k, v in {**scores["components"], "total": scores["total"]}.items()}

    # ------------------------------------------------------------------ weights
    def sync_weights(self) -> dict[str, float]:
        """Learners -> every generator, bucketed through the object store; verified."""
        ws = self.cfg.weight_sync
        t0 = time.perf_counter()
        gathered = self.learners.run("gather_weights", ws.bucket_mb, ws.checksum)[0]
        results = ray.get(self.generators.call("update_weights", self.version, gathered["refs"], gathered["digest"]))
        del gathered["refs"]
        versions = ray.get(self.generators.call("weight_version"))
        if any(v != self.version for v in versions):
            raise WeightSyncError(f"weight sync: generators report versions {versions}, learner is at {self.version}")
        probe = {}
        if self.probe_next_sync or (ws.probe_every and self.syncs % ws.probe_every == 0):
            probe["weight_sync/probe_max_abs_diff"] = self.probe()
            self.probe_next_sync = False
        self.syncs += 1
        seconds = time.perf_counter() - t0
        return {"weight_sync/seconds": round(seconds, 4), "weight_sync/bytes": gathered["bytes"],
                "weight_sync/gather_seconds": round(gathered["gather_seconds"], 4),
                "weight_sync/load_seconds": round(max(r["seconds"] for r in results), 4),
                "weight_sync/gbps": gathered["bytes"] / seconds / 1e9, "weight_sync/version": self.version,
                **probe}

    def probe(self) -> float:
        """Log-probs of a fixed eval sequence, learner vs every generator; a mismatch stops the run."""
        sample = self.task.eval[0]
        prompt = self.eval_prompts[0]
        images = getattr(prompt, "images", None)  # a VLM probes with the sample's images (never cut: whole prompt)
        ids = (prompt + self._encode(sample.get("target", "")))[:128 if images is None else len(prompt) + 128]
        probe_args = (ids,) if images is None else (ids, images)
        mine = torch.tensor(self.learners.run("probe_logprobs", *probe_args)[0])
        worst = 0.0
        for theirs in ray.get(self.generators.call("probe_logprobs", *probe_args)):
            worst = max(worst, float((mine - torch.tensor(theirs)).abs().max()))
        if worst > self.cfg.weight_sync.probe_tolerance:
            raise WeightSyncError(
                f"weight sync v{self.version}: generator log-probs differ from the learner's by {worst:.3g} "
                f"(> weight_sync.probe_tolerance={self.cfg.weight_sync.probe_tolerance}) on the probe sequence")
        return worst

    def log_sync(self, sync: dict[str, float], step: int) -> None:
        self.tracker.log({"step": step, "stage": "weight_sync", **sync})
        log.info("weight sync v%d: %.2f MB in %.3f s, probe max |dlogp| %.2e", self.version,
                 sync["weight_sync/bytes"] / 1e6, sync["weight_sync/seconds"],
                 sync.get("weight_sync/probe_max_abs_diff", float("nan")))

    def save_policy(self, path: str) -> None:
        self.learners.run("save_hf", path)
        self.tokenizer.save_pretrained(path)
        self.last_checkpoint = path
        log.info("saved policy (Hugging Face format): %s", path)

    # ------------------------------------------------------------------ the run
    def run(self, mode: str = "train") -> Path:
        """mode "train": trainer.stages in order; "eval": `rlframe eval` of the given model."""
        cfg = self.cfg
        t0 = time.perf_counter()
        self.prepare()
        try:
            self.start_cluster()
            if mode == "eval":
                from rlframe.evaluation import run_eval

                self.start_rollout_and_reward(self.model_path)
                self.wait_ready()
                return run_eval(self)
            policy = self.model_path
            if self.needs_generators():
                self.start_rollout_and_reward(policy)
            for stage in cfg.trainer.stages:
                if stage == "sft":
                    policy = self.run_sft()
                else:
                    self.run_grpo(policy)
                    policy = str(self.run_dir / "final")
                    self.save_policy(policy)
                self.stop_learners()
            if policy != self.model_path and Path(policy).name != "final":
                shutil.copytree(policy, self.run_dir / "final", dirs_exist_ok=True)
        except RewardError as err:
            log.error("stopping the run: %s", err)
            log.error("last checkpoint: %s", self.last_checkpoint or "(none yet)")
            raise
        finally:
            if self.tracker is not None:
                self.tracker.close()
            for group in (self.learners, self.generators, self.rewarders):
                if group is not None:
                    group.kill()
            if self.owns_ray:
                shutdown_ray()
        summary = summarize(read_metrics(self.run_dir / "metrics.jsonl"))
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if "margin" in summary:
            log.info("%s", format_summary(summary))
        log.info("done in %.0f s: %s", summary["seconds"], self.run_dir)
        return self.run_dir


def _pad_rows(rows: list[list[float]], like: torch.Tensor) -> torch.Tensor:
    """Place each completion's per-token values at its target positions in a [B, L-1] tensor."""
    out = torch.zeros_like(like)
    for i, row in enumerate(rows):
        pos = like[i].nonzero().flatten()
        k = min(len(row), len(pos))
        out[i, pos[:k]] = torch.tensor(row[:k], dtype=out.dtype)
    return out


def _reward_metrics(scores: dict[str, Any], group_size: int) -> dict[str, float]:
    """Each component's raw mean and std, the weighted total, failures per function, pool health."""
    out = {}
    for k, v in scores["components"].items():
        out[f"reward/{k}"] = _mean(v)
        out[f"reward/{k}_std"] = statistics.pstdev(v) if len(v) > 1 else 0.0
    total = scores["total"]
    out["reward/total"] = _mean(total)
    for name, n in scores["failures"].items():
        out[f"reward/failures/{name}"] = n
    out["reward/worker_restarts"] = scores["restarts"]
    out["timing/reward_compute"] = round(scores["worker_seconds"], 4)
    groups = [total[i: i + group_size] for i in range(0, len(total), group_size)]
    out["reward/total_std"] = statistics.pstdev(total) if len(total) > 1 else 0.0
    out["reward/zero_variance_groups"] = _mean([float(max(g) == min(g)) for g in groups])
    return out


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True)
