"""The SFT stage: cross-entropy on the target (assistant) tokens, optionally evaluated and stopped early."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rlframe.data.batching import collate
from rlframe.errors import ConfigError
from rlframe.trainer.metrics import Timer, merge_ranks, progress
from rlframe.trainer.schedule import lr_at

if TYPE_CHECKING:
    from rlframe.trainer.driver import Driver

log = logging.getLogger("rlframe")


def sft_target(ids: list[int], stop_ids: list[int]) -> list[int]:
    """The target ids ending with a stop id: a chat template's end of turn is already there, else the EOS."""
    return ids if ids and ids[-1] in stop_ids else ids + stop_ids[:1]


def run_sft(d: Driver) -> str:
    """Train `trainer.sft.steps` steps (or until the stop metric is reached); returns the saved policy folder."""
    cfg, s = d.cfg, d.cfg.trainer.sft
    world = cfg.learner.world_size
    d.start_learners(d.model_path, None, s.batch_size // world)
    first = d.guard.restore_learners("sft")
    sampler = d.state.sampler("sft", len(d.task.train), cfg.run.seed)
    targets: dict[int, list[int]] = {}
    bar = progress(s.steps, "sft", cfg.trainer.progress)
    bar.update(first)
    for step in range(first, s.steps):
        timer = Timer()
        with timer("data"):
            idx = sampler.take(s.batch_size)
            for i in idx:
                if i not in targets:
                    targets[i] = sft_target(d.encode(d.task.train[i]["target"]), d.stop_ids)
            batch = collate([d.train_prompts[i] for i in idx], [targets[i] for i in idx], d.pad_id)
        lr = lr_at(step, s.steps, s.lr, s.warmup_steps, "cosine", s.min_lr_ratio)
        d.roles.sleep("rollout")   # cluster.colocate=true: the generators free the GPUs the learners share
        with timer("train"):
            shards = [(batch.rows(rows), lr) for rows in batch.balanced_split(world)]
            m = merge_ranks(d.learners.wait(d.learners.call_each("sft_step", shards), "sft_step",
                                            d.train_deadline(s.batch_size / world), "train_s"))
        d.state.step = step + 1
        d.tracker.log({"step": step + 1, "stage": "sft", **m, "epoch": sampler.epoch, **timer.metrics()})
        bar.set_postfix(loss=f"{m['loss']:.3f}")
        bar.update()
        if s.eval_every and d.task.eval and step + 1 >= s.min_steps and (step + 1) % s.eval_every == 0 \
                and should_stop(d, step + 1):
            break
        if cfg.trainer.save_every and (step + 1) % cfg.trainer.save_every == 0 and step + 1 < s.steps:
            d.guard.checkpoint()
        d.guard.check_stop()
    bar.close()
    out = str(d.run_dir / "sft")
    d.save_policy(out)
    return out


def should_stop(d: Driver, step: int) -> bool:
    """Evaluate the SFT policy through the generators; True once the stop metric is reached.

    Stopping as soon as a skill appears keeps SFT short and leaves the rest to RL.
    """
    s = d.cfg.trainer.sft
    d.wait_ready()
    d.sync_weights()
    ev = d.evaluate()
    d.tracker.log({"step": step, "stage": "sft_eval", **ev})
    value = ev.get(s.stop_metric)
    if value is None:
        raise ConfigError(f"trainer.sft.stop_metric={s.stop_metric!r}: not among {sorted(ev)}")
    log.info("SFT step %d: %s = %.3f", step, s.stop_metric, value)
    if s.stop_threshold is not None and value >= s.stop_threshold:
        log.info("SFT stops at step %d (%s >= %.3f)", step, s.stop_metric, s.stop_threshold)
        return True
    return False
