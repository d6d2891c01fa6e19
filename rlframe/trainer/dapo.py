"""A step's rollout with DAPO's reward-side pieces: the soft overlong penalty and dynamic sampling.

Dynamic sampling (algorithm.dynamic_sampling): a group whose rewards all agree has zero group-relative
advantage, so it only dilutes the step; it is dropped and new prompts are generated until the batch holds
trainer.prompts_per_step informative groups, for at most `max_rounds` extra rounds. A batch still short after
them is filled with dropped groups kept out of the loss, so the learners always get the same shapes.
The two pure functions are unit-tested; `collect_batch` is the driver's side.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from rlframe.data.rollout_batch import RolloutBatch
from rlframe.reward.scoring import Scores

if TYPE_CHECKING:
    from rlframe.data.sampler import EpochSampler
    from rlframe.rollout.engine import SamplingSettings
    from rlframe.trainer.driver import Driver
    from rlframe.trainer.metrics import Timer


def overlong_penalty(lengths: Sequence[int], expected_len: int, cache_len: int, factor: float = 1.0) -> list[float]:
    """DAPO's soft overlong punishment: 0 up to `expected_len` tokens, falling linearly to -factor over the
    next `cache_len`, -factor beyond (a truncated answer is punished, a nearly long one only a little)."""
    return [-factor * min(max(n - expected_len, 0) / cache_len, 1.0) for n in lengths]


def informative_groups(rewards: Sequence[float], group_size: int, masked: Sequence[int] = ()) -> list[int]:
    """Groups whose rewards do not all agree (and none of whose samples is masked): the ones with a signal."""
    out = []
    for g in range(len(rewards) // group_size):
        r = rewards[g * group_size: (g + 1) * group_size]
        if max(r) - min(r) > 1e-9 and g not in masked:
            out.append(g)
    return out


def _scored_round(d: Driver, idx: list[int], step: int, params: SamplingSettings, timer: Timer,
                  **rollout: Any) -> tuple[RolloutBatch, Scores]:
    """Generate and score one round of prompts; the overlong penalty goes into the rewards here, before any
    filter looks at them. `rollout`: `Driver.rollout`'s floor and on_lost (a batch generated ahead)."""
    a = d.cfg.algorithm
    batch = RolloutBatch([d.task.train[i] for i in idx], [d.train_prompts[i] for i in idx], a.group_size, step=step)
    scores = d.rollout(batch, params, timer, stream=d.cfg.reward.stream_batch, **rollout)
    ol = a.overlong_penalty
    if ol.enabled:   # a reward component of its own: logged as reward/overlong_penalty, replayed in dumps
        expected = ol.expected_len if ol.expected_len is not None else params.max_new_tokens - ol.cache_len
        pen = overlong_penalty([len(c.token_ids) for c in batch.done()], expected, ol.cache_len, ol.factor)
        batch.components["overlong_penalty"] = pen
        batch.rewards = [r + p for r, p in zip(batch.rewards, pen)]
    return batch, scores


def collect_batch(d: Driver, step: int, sampler: EpochSampler, params: SamplingSettings, timer: Timer,
                  **rollout: Any) -> tuple[RolloutBatch, Scores, dict[str, float]]:
    """The step's scored batch (one round unless dynamic sampling is on) and the `dapo/*` metrics."""
    a, want = d.cfg.algorithm, d.cfg.trainer.prompts_per_step
    batch, scores = _scored_round(d, sampler.take(want), step, params, timer, **rollout)
    if not a.dynamic_sampling.enabled:
        return batch, scores, {}
    out, spare, rounds, dropped, seen = RolloutBatch([], [], a.group_size, step=step), [], 1, 0, 0
    every = [scores]
    while True:
        keep = informative_groups(batch.rewards, a.group_size, batch.masked_groups())
        out.extend(batch, keep[: want - len(out.prompts)])
        spare += [(batch, g) for g in range(len(batch.prompts)) if g not in keep]
        dropped, seen = dropped + len(batch.prompts) - len(keep), seen + len(batch.prompts)
        missing = want - len(out.prompts)
        if not missing or rounds > a.dynamic_sampling.max_rounds:
            break
        # as many prompts as the rate of informative groups so far says will fill the gap (at most a batch)
        n = min(want, math.ceil(missing * seen / len(out.prompts))) if out.prompts else want
        batch, s = _scored_round(d, sampler.take(n), step, params, timer, **rollout)
        every.append(s)
        rounds += 1
    for b, g in spare[:missing]:
        out.extend(b, [g], excluded=True)
    merged = Scores(failures={k: sum(s.failures.get(k, 0) for s in every) for s in every for k in s.failures},
                    errors=[e for s in every for e in s.errors], seconds=sum(s.seconds for s in every),
                    restarts=every[-1].restarts)
    return out, merged, {"dapo/rounds": rounds, "dapo/dropped_groups": dropped, "dapo/filled_groups": missing}
