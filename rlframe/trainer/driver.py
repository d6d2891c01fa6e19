"""The driver process: set-up, the role groups, generation, scoring, weight sync and the run's stages; the loops
themselves are in sft.py and rl.py, and this file holds what they share."""
from __future__ import annotations

import json
import logging
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import ray
import torch

from rlframe.cluster.ray_cluster import init_ray, shutdown_ray
from rlframe.cluster.roles import ActorGroup, Roles
from rlframe.cluster.storage import RunStorage
from rlframe.config import to_dict, to_yaml
from rlframe.config.schema import RLConfig
from rlframe.data.batching import split_even
from rlframe.data.chat import ChatFormat, has_chat_template, render_records, stop_token_ids
from rlframe.data.rollout_batch import Completion, RolloutBatch
from rlframe.doctor import preflight
from rlframe.errors import (ConfigError, RewardError, RoleDied, RoleFailure, RoleRestarting, RoleTimeout,
                            RunInterrupted)
from rlframe.learner.learner import grad_accum_steps
from rlframe.models.loading import model_source
from rlframe.models.tiny import build_tiny_model
from rlframe.reward.pool import RewardPool
from rlframe.reward.scoring import Scores, combine, unscorable
from rlframe.rollout.engine import SamplingSettings
from rlframe.tasks.registry import task_spec
from rlframe.tracking import Tracker, format_summary, read_metrics, summarize
from rlframe.trainer.evaluation import run_eval
from rlframe.trainer.metrics import Timer, mean
from rlframe.trainer.rl import run_rl
from rlframe.trainer.roles import ROLES, needs_generators
from rlframe.trainer.run_state import RunState
from rlframe.trainer.sft import run_sft
from rlframe.trainer.survival import RunGuard
from rlframe.weight_sync.coordinator import WeightSync

log = logging.getLogger("rlframe")


class Driver:
    def __init__(self, cfg: RLConfig) -> None:
        self.cfg = cfg
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(cfg.run.output_dir or f"{cfg.run.storage or 'outputs'}/{cfg.run.name}-{stamp}").resolve()
        self.cache_dir = Path(cfg.run.cache_dir or ".cache").resolve()
        self.roles = Roles(ROLES, cfg, cfg.cluster.placement_strategy, cfg.cluster.heartbeat_s, self.run_dir)
        self.storage = RunStorage(cfg, self.run_dir)   # files to and from actors on other nodes
        self.timeouts = cfg.cluster.timeouts
        self.rewarders: RewardPool | None = None
        self.tracker: Tracker | None = None
        self.state = RunState()
        self.weights = WeightSync(cfg.weight_sync, cfg.cluster.timeouts.weight_sync_s, cfg.model.dtype)
        self.owns_ray, self.generator_restarts = False, 0
        self.last_checkpoint: str | None = None
        self.guard = RunGuard(self)

    @property
    def generators(self) -> ActorGroup:
        return self.roles["rollout"]

    @property
    def learners(self) -> ActorGroup:
        return self.roles["learner"]

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
        (self.run_dir / "config.yaml").write_text(to_yaml(cfg))   # secrets masked
        random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        t0 = time.perf_counter()
        self.task_spec = task_spec(cfg.data.task)
        self.task = self.task_spec.build(cfg.data, self.cache_dir)
        if src is not None and (Path(src) / "tokenizer_config.json").exists():
            from transformers import AutoTokenizer

            self.task.tokenizer = AutoTokenizer.from_pretrained(src)  # a checkpoint keeps its own tokenizer
        tok = self.tokenizer = self.task.tokenizer
        self.tokenizer_dir = self.run_dir / "tokenizer"
        tok.save_pretrained(self.tokenizer_dir)
        self.use_checkpoint_format(src)
        if src is None:
            vision_ids = None if self.task.vision is None else self.task.vision.token_ids(tok)
            src = str(build_tiny_model(cfg.model, len(tok), tok.bos_token_id, self.eos_id, self.pad_id,
                                       self.run_dir / "init_model", seed=cfg.run.seed, vision_token_ids=vision_ids))
        self.model_path = src
        self.train_prompts = self.encode_prompts(self.task.train)
        self.eval_prompts = self.encode_prompts(self.task.eval)
        if not self.task.eval and (cfg.trainer.eval_every or cfg.trainer.sft.eval_every):
            log.warning("no held-out records (data.eval_path or data.val_split_ratio): evaluation is skipped%s",
                        " and SFT runs all trainer.sft.steps" if cfg.trainer.sft.stop_threshold is not None else "")
        log.info("data: %d train / %d eval samples%s, vocab %d, prompt tokens %d-%d (%.1f s); model %s",
                 len(self.task.train), len(self.task.eval),
                 f" ({self.task.skipped} invalid records skipped)" if self.task.skipped else "", len(tok),
                 min(map(len, self.train_prompts)), max(map(len, self.train_prompts)), time.perf_counter() - t0, src)

    def use_checkpoint_format(self, src: str | None) -> None:
        """A checkpoint's own conventions: its chat template renders the prompts, its generation_config's EOS
        ids end generation, its image processor sizes the images."""
        tok = self.tokenizer
        self.stop_ids = stop_token_ids(src, tok)
        self.eos_id, self.pad_id = (self.stop_ids or [None])[0], tok.pad_token_id
        if self.pad_id is None:
            raise ConfigError(f"model.path={src}: its tokenizer has no pad token "
                              "(set pad_token in tokenizer_config.json)")
        if src is not None and self.task.vision is not None and self.task.vision.use_checkpoint(src):
            log.info("images: preprocessed with %s/preprocessor_config.json", src)
        if has_chat_template(tok):
            fmt = ChatFormat(tok)
            n = render_records(self.task.train + self.task.eval, fmt)
            log.info("prompts: %d rendered with the checkpoint's chat template (answers end with %r; stop ids %s)",
                     n, fmt.end_of_turn, self.stop_ids)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_prompts(self, records: list[dict[str, Any]], task: Any = None) -> list[list[int]]:
        """Prompt token ids of `records`; for image tasks each prompt also carries its images' pixel inputs."""
        vision = (task or self.task).vision
        prompts = [self.encode(s["prompt"]) for s in records]
        return prompts if vision is None else vision.attach(records, prompts, self.tokenizer)

    def start_cluster(self) -> None:
        cfg = self.cfg
        self.owns_ray = init_ray(cfg.cluster, self.cache_dir, required_cpus=self.roles.required().get("CPU", 0.0))
        preflight(cfg, self.run_dir)   # resources and disk, before any placement group (or a 120 s wait)
        self.tracker = Tracker(self.run_dir, cfg.trainer.loggers, to_dict(cfg),
                               resume_at=self.guard.resumed["metrics_offset"] if self.guard.resumed else None)
        if self.task.skipped and not self.guard.resumed:   # data.on_invalid=skip: in the metrics too
            self.tracker.log({"step": 0, "stage": "data", "data/skipped_records": self.task.skipped,
                              "data/train_records": len(self.task.train), "data/eval_records": len(self.task.eval)})

    def start_rollout_and_reward(self, model_path: str) -> None:
        """Create generators and reward workers without waiting: their start-up overlaps SFT."""
        self.start_generators(model_path)
        rw = self.cfg.reward
        self.rewarders = RewardPool(self.roles.start("reward", (list(rw.fns), rw.torch_threads, rw.on_error,
                                                                rw.fallback_value)), rw, self.timeouts)

    def start_generators(self, model_path: str) -> None:
        cfg, ship = self.cfg, self.storage.ship
        self.roles.start("rollout", (ship(model_path), ship(self.tokenizer_dir), cfg.rollout, cfg.model.dtype,
                                     cfg.run.seed, self.stop_ids, self.pad_id, cfg.cluster.colocate,
                                     cfg.weight_sync.transport == "cuda_ipc"))

    def start_learners(self, model_path: str, ref_path: str | None, local_batch: int, role: str = "learner") -> None:
        lc = getattr(self.cfg, role)   # role "critic": PPO's critic, its own DeepSpeed group (section `critic`)
        learners = self.roles.start(role, [(rank, lc.world_size, lc, str(self.cache_dir))
                                           for rank in range(lc.world_size)], per_rank_args=True)
        if role == "learner":
            self.weights.new_source()
        startup = self.timeouts.startup_s
        addr, port = learners.wait([learners.actors[0].master_address.remote()], "start-up", startup, "startup_s")[0]
        ship = self.storage.ship   # run-folder files reach learners on other nodes through Ray
        infos = learners.wait(learners.call("setup", addr, port, ship(model_path), self.cfg.model.dtype,
                                            grad_accum_steps(local_batch, lc.micro_batch_size), ship(ref_path),
                                            self.cfg.model.gradient_checkpointing), "start-up", startup, "startup_s")
        log.info("%ss: %d x ZeRO-%d over %s, %.2fM parameters, %s attention, ready in %.1f s%s", role, lc.world_size,
                 lc.zero_stage, "{backend} (collectives: {collectives})".format(**infos[0]), infos[0]["params"] / 1e6,
                 infos[0]["attention"], max(i["seconds"] for i in infos), " (+ frozen reference)" if ref_path else "")

    def wait_ready(self) -> None:
        self.generators.wait(self.generators.call("ready"), "start-up", self.timeouts.startup_s, "startup_s")
        self.rewarders.wait_ready(self.timeouts.startup_s)

    # ------------------------------------------------------------------ generation and scoring
    def generate_deadline(self, samples: int) -> float:
        return self.timeouts.generate_s + self.timeouts.generate_per_sample_s * samples / max(1, len(self.generators))

    def train_deadline(self, samples_per_rank: float) -> float:
        """Seconds a learner step (reference pass + update, or an SFT step) may take on each rank."""
        return self.timeouts.train_s + self.timeouts.train_per_sample_s * samples_per_rank

    def generate(self, prompts: list[list[int]], params: SamplingSettings) -> Iterator[list[Completion]]:
        """Prompts split across the generators; yields each generator's completions (one part each)."""
        busy = [(i, sl) for i, sl in enumerate(split_even(len(prompts), len(self.generators))) if sl.stop > sl.start]
        refs = [self.generators.actors[i].generate.remote(prompts[sl], params, sl.start) for i, sl in busy]
        yield from self.generators.wait(refs, "generate", self.generate_deadline(len(prompts) * params.n),
                                        "generate_s", ranks=[i for i, _ in busy])

    def generate_stream(self, prompts: list[list[int]], params: SamplingSettings) -> Iterator[list[Completion]]:
        """Like `generate`, but yields whole groups from every generator as they finish (any order)."""
        slices = split_even(len(prompts), len(self.generators))
        rank = {self.generators.actors[i].generate_stream.remote(prompts[sl], params, sl.start): i
                for i, sl in enumerate(slices) if sl.stop > sl.start}
        pending, t0, deadline = list(rank), time.monotonic(), self.generate_deadline(len(prompts) * params.n)
        while pending:
            ready, _ = ray.wait(pending, num_returns=1, timeout=self.cfg.cluster.heartbeat_s)
            if not ready:
                late, elapsed = self.generators.where([rank[g] for g in pending]), time.monotonic() - t0
                if elapsed >= deadline:
                    raise RoleTimeout(f"rollout {late}: generation not finished after {elapsed:.0f} s (deadline "
                                      f"{deadline:.0f} s, cluster.timeouts.generate_s/generate_per_sample_s)")
                log.warning("generate: waiting %.0f s for rollout %s", elapsed, late)
            for gen in ready:
                try:
                    ref = next(gen)
                except StopIteration:
                    pending.remove(gen)
                    continue
                yield self.generators.fetch(ref, rank[gen], "generate")

    def rollout(self, batch: RolloutBatch, params: SamplingSettings, timer: Timer | None = None, stream: int = 0,
                floor: int | None = None, on_lost: Callable[[str], None] | None = None) -> Scores:
        """Generate the batch's samples and score them into it (components, then the weighted totals).

        With `stream` > 0 finished groups go to the reward pool in chunks of at least `stream` samples while
        the rest are generated (`reward_wait`: the time left after the last completion). A completion below weight
        version `floor` (default: the current one) or a dead generator goes to `on_lost` (default: recover it)."""
        timer, on_lost = timer or Timer(), on_lost or self.recover_generators
        floor = self.state.weight_version if floor is None else floor
        tickets, slots, pending = [], [], []
        todo = list(range(len(batch.prompts)))   # prompts still to generate (all, unless a generator died)
        with timer("generate"):
            self.roles.wake("rollout")   # cluster.colocate=true: the generators slept while the learners ran
            while todo:
                stale = False
                try:
                    for part in (self.generate_stream if stream else self.generate)([batch.prompts[i] for i in todo],
                                                                                    params):
                        if any(not floor <= c.weight_version <= self.state.weight_version for c in part):
                            stale = True   # a generator restarted between calls: it still has the initial weights
                            continue
                        for c in part:
                            c.prompt_index = todo[c.prompt_index]
                        pending += batch.add(part)
                        if stream and len(pending) >= stream:
                            tickets.append(self.rewarders.submit(batch.reward_samples(pending)))
                            slots, pending = slots + pending, []
                except (RoleDied, ray.exceptions.RayActorError) as err:
                    on_lost(str(err).strip().splitlines()[0])
                    stale = False
                if stale:
                    on_lost("a generator answered with stale weights (it was restarted)")
                todo = [i for i in todo if batch.completions[i * batch.group_size] is None]
        with timer("reward_wait" if stream else "reward"):
            if pending:
                tickets.append(self.rewarders.submit(batch.reward_samples(pending)))
                slots += pending
            scores = self.rewarders.gather(tickets)
        batch.done()
        batch.set_scores(slots, scores.components, self.cfg.reward.fallback_value)
        batch.masked = {slots[i] for i in scores.failed} if self.cfg.reward.on_error == "mask" else set()
        batch.masked |= set(unscorable(batch.components, self.cfg.reward.fns))   # every function returned None
        batch.rewards = combine(batch.components, self.cfg.reward.fns, self.cfg.reward.normalize)
        for msg in scores.errors[:3]:
            log.warning("reward failure (reward.on_error=%s): %s", self.cfg.reward.on_error, msg)
        return scores

    def recover_generators(self, why: str) -> None:
        """After a generator died: wait for Ray's restart, send it the current weights (verified, probed),
        then the caller generates the missing prompts again. Bounded by rollout.max_restarts per generator."""
        self.await_generator_restart(why)
        self.log_sync(self.sync_weights(), step=self.state.step)

    def await_generator_restart(self, why: str) -> None:
        limit = self.cfg.rollout.max_restarts * len(self.generators)
        if self.generator_restarts >= limit:
            raise RoleDied(f"{why}; no restarts left (rollout.max_restarts={self.cfg.rollout.max_restarts} per "
                           f"generator, {self.generator_restarts} used)")
        self.generator_restarts += 1
        log.warning("%s: restart %d of %d; syncing the current weights to it, then generating its share again",
                    why, self.generator_restarts, limit)
        t0 = time.monotonic()
        while True:   # calls fail with "the actor is restarting" until its constructor (engine load) is done
            try:
                self.generators.wait(self.generators.call("ready"), "restart", self.timeouts.startup_s, "startup_s")
                break
            except RoleRestarting:
                if time.monotonic() - t0 > self.timeouts.startup_s:
                    raise
                time.sleep(1.0)
        self.weights.new_source()   # a new engine: probe it

    def evaluate(self) -> dict[str, float]:
        """Greedy decoding on the held-out records; every reward component's mean ({} without held-out records)."""
        if not self.task.eval:
            return {}
        params = SamplingSettings(n=1, temperature=0.0, max_new_tokens=self.cfg.rollout.max_new_tokens)
        batch = RolloutBatch(self.task.eval, self.eval_prompts, 1)
        self.rollout(batch, params)
        return {f"eval/{k}": mean(v) for k, v in {**batch.components, "total": batch.rewards}.items()}

    # ------------------------------------------------------------------ weights
    def sync_weights(self) -> dict[str, float]:
        """A new weight version from the learners to every generator (verified, probed when due)."""
        self.state.weight_version += 1
        self.roles.wake("rollout")
        try:
            return self.weights.sync(self.learners, self.generators, self.state.weight_version, self.probe_args())
        except RoleDied as err:   # a generator that died between steps: once it is back, sync it like the rest
            if not str(err).startswith("rollout "):
                raise
            self.await_generator_restart(str(err).splitlines()[0])
            return self.weights.sync(self.learners, self.generators, self.state.weight_version, self.probe_args())

    def probe_args(self) -> tuple:
        """A fixed sequence (prompt + target) for the log-prob probe: the first held-out record, or the first
        training record when there is no held-out set; a VLM's carries its images."""
        prompt, record = (self.eval_prompts[0], self.task.eval[0]) if self.task.eval else \
            (self.train_prompts[0], self.task.train[0])
        images = getattr(prompt, "images", None)   # never cut a VLM prompt: its image tokens must stay whole
        ids = (prompt + self.encode(record.get("target", "")))[:128 if images is None else len(prompt) + 128]
        return (ids,) if images is None else (ids, images)

    def log_sync(self, sync: dict[str, float], step: int) -> None:
        self.tracker.log({"step": step, "stage": "weight_sync", **sync})
        via = {0: " over sockets", 1: " through shared memory"}.get(sync.get("weight_sync/shared_memory"), "")
        log.info("weight sync v%d: %.2f MB in %.3f s%s, probe max |dlogp| %.2e", self.state.weight_version,
                 sync["weight_sync/bytes"] / 1e6, sync["weight_sync/seconds"], via,
                 sync.get("weight_sync/probe_max_abs_diff", float("nan")))

    def save_policy(self, path: str) -> None:
        self.storage.save(self.learners, "save_hf", path, self.timeouts.checkpoint_s)
        self.tokenizer.save_pretrained(path)
        self.last_checkpoint = path
        log.info("saved policy (Hugging Face format): %s", path)

    # ------------------------------------------------------------------ the run
    def run(self, mode: str = "train") -> Path:
        """mode "train": trainer.stages in order; "eval": `rlframe eval` of the given model."""
        cfg = self.cfg
        t0 = time.perf_counter()
        self.prepare()
        if mode == "train":
            self.guard.load_resume()
        try:
            self.start_cluster()
            if mode == "eval":   # (it starts the generators and reward workers)
                return run_eval(self)
            self.guard.install()
            policy = self.state.policy or self.model_path
            if needs_generators(cfg):
                self.start_rollout_and_reward(policy)
            for stage in cfg.trainer.stages:
                if stage in self.state.completed:
                    continue
                if not self.guard.resuming(stage):
                    self.state.enter(stage)
                if stage == "sft":
                    policy = run_sft(self)
                else:
                    run_rl(self, policy)
                    policy = str(self.run_dir / "final")
                    self.save_policy(policy)
                self.state.completed.append(stage)
                self.state.policy = policy
                self.guard.checkpoint()   # the end of every stage
                self.roles.stop("learner")
                self.roles.stop("critic")
                self.guard.check_stop()   # (this stage's checkpoint is written: no second one)
            if policy != self.model_path and Path(policy).name != "final":
                shutil.copytree(policy, self.run_dir / "final", dirs_exist_ok=True)
        except (RewardError, RoleFailure) as err:
            log.error("stopping the run: %s", err)
            log.error("last checkpoint: %s", self.last_checkpoint or "(none yet)")
            raise
        except KeyboardInterrupt:   # a second signal, or the grace period ran out: no new checkpoint
            raise RunInterrupted(self.guard.stop_signal or signal.SIGINT, self.last_checkpoint, str(self.run_dir),
                                 " (the step in progress was abandoned)") from None
        finally:
            self.guard.uninstall()
            if self.tracker is not None:
                self.tracker.close()
            self.roles.stop_all()
            if self.owns_ray:
                shutdown_ray()
        summary = summarize(read_metrics(self.run_dir / "metrics.jsonl"))
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        if self.task.skipped:
            summary["skipped_records"] = self.task.skipped
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if "margin" in summary:
            log.info("%s", format_summary(summary))
        log.info("done in %.0f s: %s", summary["seconds"], self.run_dir)
        return self.run_dir
