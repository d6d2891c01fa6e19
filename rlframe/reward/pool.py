"""The reward pool: reward-worker actors that take whole batches, fed while generation is still running.

Batches go to the worker with the fewest batches in flight. Workers are Ray actors with `max_restarts`
and `max_task_retries`: one that dies is restarted (its reward models load again) and the batch is
retried; restarts are counted from the workers' process ids.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import ray

from rlframe.cluster.ray_cluster import ActorGroup
from rlframe.config.schema import RewardConfig
from rlframe.reward.plugins import RewardError
from rlframe.reward.worker import RewardWorker

log = logging.getLogger("rlframe")


@dataclass
class Ticket:
    """Batches submitted together; `gather` returns their scores in submission order."""
    parts: list[tuple[int, ray.ObjectRef, int]] = field(default_factory=list)   # (worker, ref, n samples)


class RewardPool:
    def __init__(self, cfg: RewardConfig, strategy: str = "PACK") -> None:
        self.cfg = cfg
        self.group = ActorGroup("reward", RewardWorker, cfg.num_workers, cfg.num_cpus_per_worker,
                                cfg.num_gpus_per_worker, strategy,
                                args=(list(cfg.fns), cfg.torch_threads, cfg.on_error, cfg.fallback_value),
                                actor_options={"max_restarts": cfg.max_restarts,
                                               "max_task_retries": cfg.max_restarts})
        self.in_flight = [0] * cfg.num_workers
        self.pids: list[int | None] = [None] * cfg.num_workers
        self.restarts = 0

    def __len__(self) -> int:
        return len(self.group)

    def ready(self) -> list[ray.ObjectRef]:
        return self.group.call("ready")

    def wait_ready(self) -> None:
        """Block until every worker has built its rewards; remember their pids (to count restarts)."""
        try:
            pids = ray.get(self.ready())
        except ray.exceptions.RayActorError as err:   # a reward failed to build (import, model load, ...)
            cause = getattr(err, "error_msg", None) or str(err)
            raise RewardError(f"a reward worker failed to start: {cause.strip().splitlines()[-1]}") from None
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

    def gather(self, tickets: list[Ticket]) -> dict[str, Any]:
        """Scores of every ticket in order: components, failures per function, worker seconds, restarts."""
        components: dict[str, list[float]] = {}
        failures: dict[str, int] = {}
        errors: list[str] = []
        seconds = 0.0
        done = 0
        for ticket in tickets:
            for w, ref, n in ticket.parts:
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    cause = getattr(err, "cause", None)
                    raise RewardError(str(cause) if isinstance(cause, RewardError) else str(err)) from None
                except ray.exceptions.RayActorError as err:
                    raise RewardError(f"reward worker {w} died {self.cfg.max_restarts + 1} times on a batch of {n} "
                                      f"samples (reward.max_restarts={self.cfg.max_restarts}): {err}") from None
                finally:
                    self.in_flight[w] -= 1
                if self.pids[w] is not None and out["pid"] != self.pids[w]:
                    self.restarts += 1
                    log.warning("reward worker %d was restarted (pid %s -> %s); its batch was retried",
                                w, self.pids[w], out["pid"])
                self.pids[w] = out["pid"]
                for k in list(components) + [k for k in out["components"] if k not in components]:
                    components.setdefault(k, [self.cfg.fallback_value] * done)
                    components[k].extend(out["components"].get(k, [self.cfg.fallback_value] * n))
                for k, v in out["failures"].items():
                    failures[k] = failures.get(k, 0) + v
                errors.extend(out["errors"])
                seconds += out["seconds"]
                done += n
        return {"components": components, "failures": failures, "errors": errors, "worker_seconds": seconds,
                "restarts": self.restarts}

    def score(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return self.gather([self.submit(samples)])

    def kill(self) -> None:
        self.group.kill()
