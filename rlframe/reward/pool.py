"""The reward pool: reward-worker actors that take whole batches, fed while generation is still running.

Batches go to the worker with the fewest batches in flight. Workers are Ray actors with `max_restarts`
and `max_task_retries`: one that dies is restarted (its reward models load again) and the batch is
retried; restarts are counted from the workers' process ids.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from rlframe.cluster.roles import ActorGroup
from rlframe.config.schema import RewardConfig, TimeoutsConfig
from rlframe.errors import RewardError, RoleDied, RoleTimeout
from rlframe.reward.scoring import Scores

log = logging.getLogger("rlframe")


@dataclass
class Ticket:
    """Batches submitted together; `gather` returns their scores in submission order."""
    parts: list[tuple[int, ray.ObjectRef, int]] = field(default_factory=list)   # (worker, ref, n samples)


class RewardPool:
    """Load balancing and restart accounting over the reward role's actors (RewardWorker)."""

    def __init__(self, group: ActorGroup, cfg: RewardConfig, timeouts: TimeoutsConfig | None = None) -> None:
        self.cfg = cfg
        self.timeouts = timeouts or TimeoutsConfig()
        self.group = group
        self.in_flight = [0] * len(group)
        self.pids: list[int | None] = [None] * len(group)
        self.restarts = 0

    def __len__(self) -> int:
        return len(self.group)

    def ready(self) -> list[ray.ObjectRef]:
        return self.group.call("ready")

    def wait_ready(self, timeout: float = 900.0) -> None:
        """Block until every worker has built its rewards; remember their pids (to count restarts)."""
        try:
            pids = self.group.wait(self.ready(), "start-up", timeout, "startup_s")
        except RoleDied as err:   # a reward failed to build (import, model load, ...)
            raise RewardError(f"a reward worker failed to start: {str(err).split(': ', 1)[-1]}") from None
        for i, pid in enumerate(pids):
            self.pids[i] = self.pids[i] or pid

    def submit(self, samples: list[dict[str, Any]]) -> Ticket:
        """Split `samples` over the least-busy workers (at most one piece per worker) without waiting."""
        ticket = Ticket()
        if not samples:
            return ticket
        pieces = min(len(self.group), len(samples))
        size = math.ceil(len(samples) / pieces)
        for start in range(0, len(samples), size):
            w = min(range(len(self.group)), key=lambda i: self.in_flight[i])
            chunk = samples[start: start + size]
            ticket.parts.append((w, self.group.actors[w].score.remote(chunk), len(chunk)))
            self.in_flight[w] += 1
        return ticket

    def gather(self, tickets: list[Ticket]) -> Scores:
        """Scores of every ticket, in submission order, with failures per function, worker seconds, restarts."""
        merged = Scores()
        components = merged.components
        done = 0
        t0 = time.monotonic()
        n_all = sum(n for ticket in tickets for _, _, n in ticket.parts)
        deadline = t0 + self.timeouts.reward_s + self.timeouts.reward_per_sample_s * n_all / max(1, len(self))
        for ticket in tickets:
            for w, ref, n in ticket.parts:
                try:
                    out = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
                except ray.exceptions.GetTimeoutError:
                    raise RoleTimeout(f"reward {self.group.where([w])}: no scores for a batch of {n} samples within "
                                      f"{deadline - t0:.0f} s (cluster.timeouts.reward_s + reward_per_sample_s); "
                                      f"check the reward functions (a remote service that hangs?) and that "
                                      f"worker's log") from None
                except ray.exceptions.RayTaskError as err:
                    cause = getattr(err, "cause", None)
                    raise RewardError(str(cause) if isinstance(cause, RewardError) else str(err)) from None
                except ray.exceptions.RayActorError as err:
                    raise RewardError(f"reward worker {w} died {self.cfg.max_restarts + 1} times on a batch of {n} "
                                      f"samples (reward.max_restarts={self.cfg.max_restarts}): {err}") from None
                finally:
                    self.in_flight[w] -= 1
                if self.pids[w] is not None and out.pid != self.pids[w]:
                    self.restarts += 1
                    log.warning("reward worker %d was restarted (pid %s -> %s); its batch was retried",
                                w, self.pids[w], out.pid)
                self.pids[w] = out.pid
                for k in list(components) + [k for k in out.components if k not in components]:
                    components.setdefault(k, [self.cfg.fallback_value] * done)
                    components[k].extend(out.components.get(k, [self.cfg.fallback_value] * n))
                for k, v in out.failures.items():
                    merged.failures[k] = merged.failures.get(k, 0) + v
                merged.failed.extend(done + i for i in out.failed)
                merged.errors.extend(out.errors)
                merged.seconds += out.seconds
                done += n
        merged.restarts = self.restarts
        return merged

    def score(self, samples: list[dict[str, Any]]) -> Scores:
        return self.gather([self.submit(samples)])
