"""Roles, resource pools and actor groups: how a role map becomes placed Ray actors.

A role (generators, reward workers, learners, ...) is declared once as a :class:`RoleSpec`: its actor class,
the config section that gives its count and per-actor resources, and the resource pool it lives in. A pool
is one Ray placement group; roles that name the same pool share its bundles (actor i of each member role
goes to bundle i), which is how roles are colocated on the same devices. CPU accounting, start-up and
shutdown all walk the same map, so a new role is one entry.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlframe.cluster.observe import Observer
from rlframe.errors import RoleDied, RoleRestarting, RoleTimeout

log = logging.getLogger("rlframe")
PLACEMENT_TIMEOUT_S = 120


@dataclass(frozen=True)
class Resources:
    """What each actor of a role asks for."""
    count: int
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    custom: dict[str, float] = field(default_factory=dict)

    def bundle(self) -> dict[str, float]:
        out = {"CPU": self.num_cpus} if self.num_cpus else {}
        if self.num_gpus:
            out["GPU"] = self.num_gpus
        return {**out, **self.custom}


def worker_resources(section: Any, count: int) -> Resources:
    """A role's per-actor ask, read from its config section (`num_cpus_per_worker`, `num_gpus_per_worker`,
    `resources`), so every role takes the same placement keys."""
    return Resources(count, section.num_cpus_per_worker, section.num_gpus_per_worker,
                     {k: float(v) for k, v in (section.resources or {}).items()})


@dataclass(frozen=True)
class RoleSpec:
    name: str
    actor_cls: Any
    # (config) -> the role's count and per-actor resources
    resources: Callable[[Any], Resources]
    # (config) -> whether this run starts the role at all
    needed: Callable[[Any], bool] = lambda cfg: True
    # roles with the same pool share its bundles: a name or (config) -> a name (None: its own, the role's name)
    pool: str | Callable[[Any], str | None] | None = None
    # extra Ray actor options (e.g. max_restarts)
    options: Callable[[Any], dict[str, Any]] = lambda cfg: {}

    def pool_name(self, cfg: Any = None) -> str:
        return (self.pool(cfg) if callable(self.pool) else self.pool) or self.name


class ActorGroup:
    """A role's actors; `call` fans a method out to all of them, `wait` collects under a deadline."""

    def __init__(self, name: str, actors: list[Any], pool: "ResourcePool", heartbeat_s: float = 60.0) -> None:
        self.name, self.actors, self.pool, self.heartbeat_s = name, actors, pool, heartbeat_s
        self.infos: list[ray.ObjectRef] = []   # where each actor runs (observe.whoami)
        self.asleep = False

    def __len__(self) -> int:
        return len(self.actors)

    def call(self, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def call_each(self, method: str, per_actor_args: Sequence[Sequence[Any]], **kwargs: Any) -> list[ray.ObjectRef]:
        return [getattr(a, method).remote(*args, **kwargs) for a, args in zip(self.actors, per_actor_args)]

    def run(self, method: str, *args: Any, timeout: float = 600.0, **kwargs: Any) -> list[Any]:
        return self.wait(self.call(method, *args, **kwargs), method, timeout)

    def wait(self, refs: Sequence[ray.ObjectRef], phase: str, timeout: float, key: str = "",
             ranks: Sequence[int] | None = None) -> list[Any]:
        """Results of `refs` (ref i from actor `ranks[i]`, default i). Logs every heartbeat which actors have not
        answered; an actor that died or a deadline that passed raises an error naming the role, rank, node,
        phase and time."""
        refs = list(refs)
        rank_of = dict(zip(refs, ranks if ranks is not None else range(len(refs))))
        results: dict[ray.ObjectRef, Any] = {}
        failed: list[tuple[ray.ObjectRef, Exception]] = []   # the actors' own errors (RayTaskError)
        t0, pending = time.monotonic(), list(refs)
        while pending:
            elapsed = time.monotonic() - t0
            ready, pending = ray.wait(pending, num_returns=len(pending),
                                      timeout=max(0.0, min(self.heartbeat_s, timeout - elapsed)))
            # a dead actor surfaces here (RoleDied), even while its peers block in a collective
            for ref in ready:
                self._collect(ref, rank_of[ref], phase, results, failed)
            if failed:
                # a peer's collective that failed because a rank died (gloo: connection reset): report the
                # dead rank, if one shows up; otherwise the actor's own error, as it is
                others, _ = ray.wait(pending, num_returns=len(pending), timeout=10) if pending else ([], [])
                for ref in others:
                    self._collect(ref, rank_of[ref], phase, results, failed)
                raise failed[0][1]
            elapsed = time.monotonic() - t0
            if pending and elapsed >= timeout:
                late = [rank_of[r] for r in pending]
                raise RoleTimeout(
                    f"{self.name} {self.where(late)}: no answer to {phase} after {elapsed:.0f} s "
                    f"(deadline {timeout:.0f} s{f', cluster.timeouts.{key}' if key else ''}); check that node's "
                    f"load and memory and the actor's log (Ray dashboard or `ray logs`), or raise the deadline")
            if pending:
                log.warning("%s: waiting %.0f s for %s %s (deadline %.0f s)", phase, elapsed, self.name,
                            self.where([rank_of[r] for r in pending]), timeout)
        return [results[r] for r in refs]

    def _collect(self, ref: ray.ObjectRef, rank: int, phase: str, results: dict, failed: list) -> None:
        try:
            results[ref] = self.fetch(ref, rank, phase)
        except ray.exceptions.RayTaskError as err:
            failed.append((ref, err))

    def fetch(self, ref: ray.ObjectRef, rank: int, phase: str) -> Any:
        """The value of a finished `ref` (fetched once); RoleDied if its actor died (RoleRestarting while Ray
        restarts it); the actor's own exceptions propagate as they are."""
        try:
            return ray.get(ref, timeout=0)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as err:
            lines = [x for x in (getattr(err, "error_msg", None) or str(err)).strip().splitlines() if x.strip()]
            # a constructor that raised: its exception is the traceback's last line; a killed process: the first
            cause = (lines[-1] if any("Traceback" in x for x in lines) else lines[0]) if lines else type(err).__name__
            kind = RoleRestarting if isinstance(err, ray.exceptions.ActorUnavailableError) else RoleDied
            raise kind(f"{self.name} {self.where([rank])} died during {phase}: {cause.strip()}") from None

    def where(self, ranks: Sequence[int]) -> str:
        """'rank 1 on node 10.0.0.5': actor i sits in bundle i of its pool's placement group, which GCS maps
        to a node (no dashboard needed); 'unknown node' if Ray cannot say."""
        try:
            bundles = ray.util.placement_group_table(self.pool.pg).get("bundles_to_node_id", {})
            ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        except Exception:  # noqa: BLE001 - naming the node is best effort; the error itself must still come
            bundles, ips = {}, {}
        return ", ".join(f"rank {i} on node {ips.get(bundles.get(i), 'unknown')}" for i in ranks)

    def kill(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []


def pool_bundles(members: list[Resources]) -> list[dict[str, float]]:
    """Bundle i of a pool: the sum of what actor i of each member role asks for (roles side by side on it)."""
    bundles: list[dict[str, float]] = [{} for _ in range(max(r.count for r in members))]
    for res in members:
        for i in range(res.count):
            for k, v in res.bundle().items():
                bundles[i][k] = bundles[i].get(k, 0.0) + v
    return [b or {"CPU": 0.01} for b in bundles]


class ResourcePool:
    """One placement group; bundle i holds what actor i of every member role asks for, summed."""

    def __init__(self, name: str, members: list[tuple[RoleSpec, Resources]], strategy: str) -> None:
        self.name = name
        self.bundles = pool_bundles([res for _, res in members])
        self.members = [spec.name for spec, _ in members]
        self.pg = placement_group(self.bundles, strategy=strategy)
        ready, _ = ray.wait([self.pg.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            remove_placement_group(self.pg)
            raise RuntimeError(
                f"could not place resource pool {name!r} (roles {self.members}: bundles {self.bundles}) within "
                f"{PLACEMENT_TIMEOUT_S} s: the cluster has {ray.available_resources()}; lower the roles' "
                f"num_workers / world_size / num_cpus_per_worker / num_gpus_per_worker or add nodes")

    def strategy(self, bundle: int) -> PlacementGroupSchedulingStrategy:
        return PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=bundle)

    def remove(self) -> None:
        remove_placement_group(self.pg)


class Roles:
    """The live side of a role map: which roles this run needs, their pools, their groups."""

    def __init__(self, role_map: dict[str, RoleSpec], cfg: Any, strategy: str = "PACK",
                 heartbeat_s: float = 60.0, run_dir: Any = None) -> None:
        self.map, self.cfg, self.strategy, self.heartbeat_s = role_map, cfg, strategy, heartbeat_s
        # with a run folder: placement.json as actors come up, logs/<role>-<rank>.log as roles stop
        self.observer = Observer(run_dir) if run_dir is not None else None
        self.groups: dict[str, ActorGroup] = {}
        self.pools: dict[str, ResourcePool] = {}

    def needed(self) -> list[RoleSpec]:
        return [spec for spec in self.map.values() if spec.needed(self.cfg)]

    def required(self) -> dict[str, float]:
        """Resources of every role this run starts (each pool at its widest), for sizing a local Ray."""
        total: dict[str, float] = {}
        for spec in self.needed():
            res = spec.resources(self.cfg)
            for k, v in res.bundle().items():
                total[k] = total.get(k, 0.0) + v * res.count
        return total

    def start(self, name: str, args: Sequence[Any] = (), per_rank_args: bool = False) -> ActorGroup:
        """Create the role's actors (not waiting for their constructors); the pool is placed on first use."""
        spec = self.map[name]
        res = spec.resources(self.cfg)
        name_of_pool = spec.pool_name(self.cfg)
        pool = self.pools.get(name_of_pool)
        if pool is None:
            members = [(s, s.resources(self.cfg)) for s in self.needed() if s.pool_name(self.cfg) == name_of_pool]
            pool = self.pools[name_of_pool] = ResourcePool(name_of_pool, members or [(spec, res)], self.strategy)
        actors = []
        for i in range(res.count):
            opts = dict(num_cpus=res.num_cpus, num_gpus=res.num_gpus, scheduling_strategy=pool.strategy(i),
                        **({"resources": dict(res.custom)} if res.custom else {}), **spec.options(self.cfg))
            a = args[i] if per_rank_args else args
            actors.append(ray.remote(spec.actor_cls).options(**opts).remote(*a))
        group = self.groups[name] = ActorGroup(name, actors, pool, self.heartbeat_s)
        if self.observer is not None:
            group.infos = self.observer.watch(name, actors, res.bundle(), pool.name)
        return group

    def __getitem__(self, name: str) -> ActorGroup:
        return self.groups[name]

    def get(self, name: str) -> ActorGroup | None:
        return self.groups.get(name)

    def stop(self, name: str) -> None:
        """Kill a role's actors; its pool goes once no member role is running."""
        group = self.groups.pop(name, None)
        if group is None:
            return
        if self.observer is not None:
            self.observer.gather(name, group.actors, group.infos)
        group.kill()
        if not any(g.pool is group.pool for g in self.groups.values()):
            group.pool.remove()
            self.pools.pop(group.pool.name, None)

    def sleep(self, name: str) -> None:
        """cluster.colocate=true: the role's engines free their GPU memory (vLLM sleep) while the learners run."""
        group = self.groups.get(name)
        if self.cfg.cluster.colocate and group is not None and not group.asleep:
            group.run("sleep", timeout=self.cfg.cluster.timeouts.weight_sync_s)
            group.asleep = True

    def wake(self, name: str) -> None:
        """Before the role generates or loads weights again (a no-op unless it sleeps)."""
        group = self.groups.get(name)
        if group is not None and group.asleep:
            group.run("wake", timeout=self.cfg.cluster.timeouts.weight_sync_s)
            group.asleep = False

    def stop_all(self) -> None:
        for name in list(self.groups):
            self.stop(name)
