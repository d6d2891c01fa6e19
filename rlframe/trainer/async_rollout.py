"""Bounded-staleness rollouts (trainer.max_staleness=k > 0): the next k batches generate while the learners train.

    step s: queue batches up to s+k -> take batch s -> learners update while batches s+1..s+k generate (one
    background thread, in step order) -> weight sync v_s -> v_s + 1

A generator runs its calls one at a time, in the order sent, so the sync sent after step s's update loads between
two generation calls (pause, load, resume, at batch granularity). A batch queued at step s starts from version
>= v_s and is trained at step s + j <= s + k with v_s + j: at most k versions old (`take` checks it, and logs
`rollout/staleness_mean|max`); algorithm.mismatch (TIS/MIS) corrects the gap. A checkpoint saves the sampler as it
was before the queued batches drew (RunState.ahead): a resumed run generates the same prompts again with the
checkpoint's weights (not bit-identical; k = 0 is). A generator lost mid-batch: the queue is dropped, the sampler
rewound, the generators recovered on the main thread and the batches generated again.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, Callable

from rlframe.errors import RoleFailure
from rlframe.trainer.dapo import collect_batch
from rlframe.trainer.metrics import Timer

if TYPE_CHECKING:
    from rlframe.data.sampler import EpochSampler
    from rlframe.rollout.engine import SamplingSettings
    from rlframe.trainer.driver import Driver


class GeneratorLost(RoleFailure):
    """A generator died or answered restarted during a batch generated ahead (recovered on the main thread)."""


def _lost(why: str) -> None:
    raise GeneratorLost(why)


def covered(spans: list[list[float | None]], start: float, end: float) -> float:
    """Seconds of [start, end] during which a span [a, b] ran (b None: still running at `end`)."""
    return sum(max(0.0, min(end, b if b is not None else end) - max(start, a)) for a, b in spans if a is not None)


class Job:
    """One queued step's batch; to `collect_batch` it is the sampler, recording where it was before its draws."""

    def __init__(self, step: int, sampler: EpochSampler, lock: Any, floor: int) -> None:
        self.step, self.sampler, self.lock, self.floor = step, sampler, lock, floor   # floor: the version then
        self.future, self.timer, self.span, self.before = Future(), Timer(), [None, None], None

    def take(self, n: int) -> list[int]:
        with self.lock:
            self.before = self.before or self.sampler.state_dict()
            return self.sampler.take(n)


class Prefetcher:
    """Up to k batches generating ahead of the step being trained, on one thread, in step order."""

    def __init__(self, d: Driver, sampler: EpochSampler, params: SamplingSettings, k: int, stage: str = "grpo",
                 collect: Callable[..., Any] = collect_batch) -> None:
        self.d, self.sampler, self.params, self.k, self.collect = d, sampler, params, k, collect
        self.jobs: deque[Job] = deque()   # queued and not trained yet, in step order
        self.todo: queue.Queue = queue.Queue()
        d.state.ahead[stage] = self.position
        threading.Thread(target=self._work, name="rlframe-rollout-ahead", daemon=True).start()

    def position(self) -> dict | None:
        """The sampler position before the draws of the batches not trained yet (None: none has drawn)."""
        return self.jobs[0].before if self.jobs else None

    def _work(self) -> None:
        while (job := self.todo.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue
            job.span[0] = time.perf_counter()
            try:
                out, err = self.collect(self.d, job.step, job, self.params, job.timer, floor=job.floor,
                                        on_lost=_lost), None
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
                out, err = None, e
            job.span[1] = time.perf_counter()
            job.future.set_exception(err) if err is not None else job.future.set_result(out)

    def fill(self, step: int) -> None:
        """Queue the batches up to step + k (not past trainer.max_steps), each from the version now loaded."""
        last = min(step + self.k, self.d.cfg.trainer.max_steps)
        for s in range(self.jobs[-1].step + 1 if self.jobs else step, last + 1):
            self.jobs.append(Job(s, self.sampler, self.d.state.lock, self.d.state.weight_version))
            self.todo.put(self.jobs[-1])

    def take(self, step: int, timer: Timer) -> tuple[Any, Any, dict[str, float]]:
        """Step `step`'s scored batch, with the `dapo/*` and `rollout/staleness_*` metrics; its phases go into
        `timer`, and `wait_batch` is what the learners waited for it."""
        t0 = time.perf_counter()
        while True:
            self.fill(step)
            try:
                batch, scores, extra = _result(self.jobs[0].future)
                break
            except GeneratorLost as err:
                self.reset()
                if not self._current():   # (the last weight sync may have recovered it already)
                    self.d.recover_generators(str(err))
        job = self.jobs.popleft()
        assert job.step == step, (job.step, step)
        for phase, seconds in job.timer.seconds.items():
            timer.add(phase, seconds)
        timer.add("wait_batch", time.perf_counter() - t0)
        version = self.d.state.weight_version   # the weights the learners update from in this step
        stale = [version - c.weight_version for c in batch.done()]
        if max(stale) > self.k:
            raise RuntimeError(f"step {step}: a completion is {max(stale)} weight versions old, more than "
                               f"trainer.max_staleness={self.k}")
        return batch, scores, {**extra, "rollout/staleness_mean": sum(stale) / len(stale),
                               "rollout/staleness_max": max(stale)}

    def overlap(self, start: float) -> float:
        """Seconds since `start` (the learner update's start) during which a batch was generating (the batches
        still queued: the step's own finished before the update)."""
        return round(covered([j.span for j in self.jobs], start, time.perf_counter()), 4)

    def _current(self) -> bool:
        g = self.d.generators
        try:
            return all(v == self.d.state.weight_version for v in g.wait(g.call("weight_version"), "recover", 60))
        except RoleFailure:
            return False

    def drain(self) -> None:
        """Let the queued batches finish (before the main thread uses the generators and rewards itself)."""
        wait([j.future for j in self.jobs])

    def reset(self) -> None:
        """Drop the queued batches (the one in flight finishes first) and rewind the sampler to before them."""
        for job in self.jobs:
            job.future.cancel()
        self.drain()
        with self.d.state.lock:
            if self.position() is not None:
                self.sampler.load_state_dict(self.position())
            self.jobs.clear()

    def close(self) -> None:
        for job in self.jobs:
            job.future.cancel()
        self.todo.put(None)


def _result(future: Future) -> Any:
    while True:   # in slices: a signal's handler (SIGTERM, the grace timer) runs on this thread meanwhile
        try:
            return future.result(timeout=1.0)
        except FutureTimeout:
            continue
