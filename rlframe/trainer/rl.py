"""The RL stage (every algorithm.name): one step = rollout -> rewards -> advantages -> learners -> weight sync.

    sample prompts ─> generators (G samples each) ─> reward pool ─> advantages (here, on the driver: they
    need every sample of a group) ─> learners (one call per rank: reference log-probs, then the update)
    ─> weight sync to the generators ─> log (evaluate, save)

trainer.max_staleness=k > 0: the rollouts of the next k steps run while the learners train (async_rollout.py).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from rlframe.data.batching import balanced_split
from rlframe.data.rollout_batch import RolloutBatch
from rlframe.errors import RewardError
from rlframe.learner.advantages import compute_advantages
from rlframe.rollout.engine import SamplingSettings
from rlframe.tracking import write_jsonl
from rlframe.trainer import ppo
from rlframe.trainer.async_rollout import Prefetcher
from rlframe.trainer.dapo import collect_batch
from rlframe.trainer.metrics import Timer, merge_ranks, progress, reward_metrics
from rlframe.trainer.schedule import lr_at

if TYPE_CHECKING:
    from rlframe.data.sampler import EpochSampler
    from rlframe.trainer.driver import Driver


def run_rl(d: Driver, policy_path: str) -> None:
    cfg = d.cfg
    a, t = cfg.algorithm, cfg.trainer
    # grad accumulation = micro-batches of one update (the rank's rows / algorithm.updates_per_batch)
    d.start_learners(policy_path, policy_path if a.kl_coef > 0 else None,
                     t.prompts_per_step * a.group_size // cfg.learner.world_size // a.updates_per_batch)
    if d.roles.map["critic"].needed(cfg):   # PPO's critic (algorithm.name=gae)
        ppo.start_critic(d, policy_path)
    first = d.guard.restore_learners("grpo")
    d.wait_ready()
    # a resumed run's generators get the checkpoint's weights here, verified like any sync
    d.log_sync(d.sync_weights(), step=first)
    if t.eval_every and first == 0 and d.task.eval:
        d.tracker.log({"step": 0, "stage": "eval", **d.evaluate()})
    if first:
        d.guard.restore_generator_rng()
    sampler = d.state.sampler("grpo", len(d.task.train), cfg.run.seed + 1)
    params = SamplingSettings(n=a.group_size, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                              top_k=cfg.rollout.top_k, max_new_tokens=cfg.rollout.max_new_tokens)
    ahead = Prefetcher(d, sampler, params, t.max_staleness) if t.max_staleness else None
    bar = progress(t.max_steps, "grpo", t.progress)
    bar.update(first)
    try:
        for step in range(first + 1, t.max_steps + 1):
            metrics = rl_step(d, step, sampler, params, ahead)
            bar.set_postfix(reward=f"{metrics['reward/total']:.3f}",
                            acc=f"{metrics.get('reward/accuracy', float('nan')):.2f}")
            bar.update()
            d.guard.check_stop()
    finally:
        if ahead:
            ahead.close()
    bar.close()


def rl_step(d: Driver, step: int, sampler: EpochSampler, params: SamplingSettings,
            ahead: Prefetcher | None = None) -> dict[str, float]:
    cfg, t = d.cfg, d.cfg.trainer
    timer, t0 = Timer(), time.perf_counter()
    before = d.state.state_dict()   # where the run was before this step (a checkpoint if rewards fail)
    try:   # one round of generation and rewards (more with DAPO's dynamic sampling), or the batch generated ahead
        batch, scores, dapo = ahead.take(step, timer) if ahead else collect_batch(d, step, sampler, params, timer)
    except RewardError:
        if step > 1:   # the learners have not updated yet: the state before this step is consistent
            d.guard.checkpoint(before)
        raise
    lr = lr_at(step - 1, t.max_steps, cfg.learner.lr, cfg.learner.warmup_steps, t.lr_schedule)
    d.roles.sleep("rollout")   # cluster.colocate=true: generators free the shared GPUs (woken by the sync)
    t_update = time.perf_counter()
    m = learner_update(d, batch, lr, params, step)
    if ahead:   # how long the next batches generated while the learners ran
        timer.add("overlap", ahead.overlap(t_update))
    timer.add("ref", m.pop("timing/ref", 0.0))
    timer.add("train", m.pop("timing/train", 0.0))
    with timer("weight_sync"):
        sync = d.sync_weights()
    d.state.step = step
    if t.dump_rollouts:
        write_jsonl(d.run_dir / "rollouts" / f"step-{step:06d}.jsonl", batch.dump_rows(t.dump_rollouts))
    metrics = {"step": step, "stage": "grpo", **reward_metrics(batch, scores), **dapo, **m, **sync,
               "rollout/restarts": d.generator_restarts}
    if t.eval_every and d.task.eval and (step % t.eval_every == 0 or step == t.max_steps):
        if ahead:
            ahead.drain()   # the generators and the reward pool are the main thread's while it evaluates
        with timer("eval"):
            d.tracker.log({"step": step, "stage": "eval", **d.evaluate()})
    metrics.update(timer.metrics())
    metrics["timing/step"] = round(time.perf_counter() - t0, 4)
    d.tracker.log(metrics)
    if t.save_every and step % t.save_every == 0 and step < t.max_steps:
        d.guard.checkpoint()   # after the step's row: a resumed run continues with the next step
    return metrics


def learner_update(d: Driver, batch: RolloutBatch, lr: float, params: SamplingSettings, step: int) -> dict[str, float]:
    """Advantages, then one `rl_step` call per learner rank. With the KL as a reward penalty the learners first
    score the batch (`score_batch`: reference and old log-probs, kept on the ranks) and the driver subtracts
    kl_coef * each sequence's summed KL from its reward before the advantages. With a critic (algorithm.name=gae)
    the advantages are GAE's, per token, and the critic trains while the actor does (not in its warm-up).
    The ranks get whole groups, as many rows each and as even in tokens as balanced_split makes them."""
    a, world = d.cfg.algorithm, d.cfg.learner.world_size
    rewards, extra, scored = torch.tensor(batch.rewards), {}, None
    deadline = d.train_deadline(len(batch) / world)
    train = batch.train_batch(d.pad_id, d.stop_ids)
    costs = train.token_costs(a.group_size, d.cfg.learner.packing)
    ranks = balanced_split(costs, world, a.group_size)
    order = torch.tensor([i for rows in ranks for i in rows])   # the learners' row order, rank after rank
    loads = [sum(costs[i] for i in rows) for rows in ranks]
    extra["train/rank_tokens_max_over_mean"] = max(loads) * len(loads) / max(sum(loads), 1.0)
    critic = d.roles.get("critic")
    values = ppo.request_values(d, train) if critic else None
    if a.kl_in == "reward" and a.kl_coef > 0:
        scored = d.learners.wait(d.learners.call_each("score_batch", [(train.rows(rows), a, params.temperature)
                                                                      for rows in ranks]),
                                 "score_batch", deadline, "train_s")
        penalty = torch.zeros(len(batch))
        penalty[order] = a.kl_coef * torch.tensor([x for s in scored for x in s["kl_seq"]])
        extra["reward/kl_penalty"] = float(penalty.mean())
        rewards = rewards if critic else rewards - penalty   # GAE takes it per token instead
    critic_refs: list = []
    if critic:
        kl = torch.cat([s["kl_tok"] for s in scored])[torch.argsort(order)] if scored else None
        batch.advantages, critic_refs, cm = ppo.advantages_and_update(d, train, rewards, kl, values, step)
        extra.update(cm)
    else:
        batch.advantages = compute_advantages(a.name, rewards, a.group_size, a.adv_eps)
    train.advantages = batch.advantages
    refs: list = []
    if step > a.critic_warmup_steps:   # in the critic's warm-up the actor does not train
        args = [(None, lr, a, params.temperature, params.max_new_tokens, batch.advantages[rows]) if scored else
                (train.rows(rows), lr, a, params.temperature, params.max_new_tokens) for rows in ranks]
        refs = d.learners.call_each("rl_step", args)
    out = merge_ranks(d.learners.wait(refs, "rl_step", deadline, "train_s")) if refs else {}
    if critic_refs:
        crit = d.roles["critic"].wait(critic_refs, "critic update", d.train_deadline(len(batch) / len(critic)),
                                      "train_s")
        extra.update({k: v for k, v in merge_ranks(crit).items() if not k.startswith("timing/")})
        extra["timing/critic"] = max(c["timing/critic"] + c["timing/critic_values"] for c in crit)
    return {**out, **extra}
