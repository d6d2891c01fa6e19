"""The driver's side of a weight sync: learners -> every generator, versioned, verified, probed, timed."""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import ray
import torch

from rlframe.config.schema import WeightSyncConfig
from rlframe.errors import RoleFailure, WeightSyncError
from rlframe.weight_sync.collective import check_digests
from rlframe.weight_sync.cuda_ipc import merge as merge_ipc

log = logging.getLogger("rlframe")
#: the probe's tolerance when weight_sync.probe_tolerance is null, by model.dtype
PROBE_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.5, "float16": 0.5}


class WeightSync:
    """Sends versioned weights; the driver's run state owns the version (so a resume continues it). The
    first sync from a new weight source (new learners, a restarted generator) is always probed: the
    log-probs of a fixed sequence under the learner and under every generator must agree.

    Transport (`weight_sync.transport`): `collective` broadcasts packed tensor buckets from learner rank 0
    over a process group of its own with the generators (collective.py; through shared memory when they share a
    machine, `weight_sync.shared_memory`); `object_store` puts pickled
    buckets into Ray's object store; `auto` tries the group once per weight source and falls back to the
    object store (with a warning) when a generator cannot join it; `cuda_ipc` (colocated on GPUs) hands the
    generators CUDA IPC handles of the learners' tensors (cuda_ipc.py)."""

    def __init__(self, cfg: WeightSyncConfig, timeout_s: float = 600.0, dtype: str = "float32") -> None:
        self.cfg, self.timeout_s = cfg, timeout_s
        self.tolerance = cfg.probe_tolerance if cfg.probe_tolerance is not None else PROBE_TOLERANCE[dtype]
        self.syncs = 0
        self.probe_next = True
        self.connected, self.fallback = False, False
        self.plans: dict[float, Any] = {}

    def new_source(self) -> None:
        # a new source tries the group again (`auto`): a generator that failed to join may have been the one replaced
        self.probe_next, self.connected, self.fallback, self.plans = True, False, False, {}

    def sync(self, learners: Any, generators: Any, version: int, probe_args: Sequence[Any]) -> dict[str, float]:
        """Send the learners' weights to every generator as `version`, check versions (and the probe)."""
        t0 = time.perf_counter()
        collective = self.cfg.transport in ("auto", "collective")
        if collective and not self.connected and not self.fallback:
            self.connect(learners, generators)
        if self.cfg.transport == "cuda_ipc":
            stats = self.cuda_ipc(learners, generators, version)
        elif collective and self.connected:
            stats = self.broadcast(learners, generators, version)
        else:
            stats = self.object_store(learners, generators, version)
        versions = generators.wait(generators.call("weight_version"), "weight version", self.timeout_s,
                                   "weight_sync_s")
        if any(v != version for v in versions):
            raise WeightSyncError(f"weight sync: generators report versions {versions}, learner is at {version}")
        probe = {}
        if self.probe_next or (self.cfg.probe_every and self.syncs % self.cfg.probe_every == 0):
            probe["weight_sync/probe_max_abs_diff"] = self.probe(learners, generators, version, probe_args)
            self.probe_next = False
        self.syncs += 1
        seconds = time.perf_counter() - t0
        return {"weight_sync/seconds": round(seconds, 4), **stats, "weight_sync/gbps": stats["weight_sync/bytes"]
                / seconds / 1e9, "weight_sync/version": version, **probe}

    def connect(self, learners: Any, generators: Any) -> None:
        """Learner rank 0 and every generator join a process group of their own (a fresh one per source)."""
        addr, port, device = learners.wait([learners.actors[0].sync_endpoint.remote()], "weight-sync group",
                                           self.timeout_s, "weight_sync_s")[0]
        backend, world = ("nccl" if device == "cuda" else "gloo"), 1 + len(generators)
        join_s = min(self.timeout_s, 120.0)
        lrefs = learners.call("open_sync_group", addr, port, world, backend, self.timeout_s, join_s)
        grefs = generators.call_each("open_sync_group", [(addr, port, i + 1, world, backend, self.timeout_s, join_s)
                                                         for i in range(len(generators))])
        try:
            generators.wait(grefs, "weight-sync group", join_s + 30, "weight_sync_s")
            learners.wait(lrefs, "weight-sync group", join_s + 30, "weight_sync_s")
        except (RoleFailure, ray.exceptions.RayTaskError) as err:
            why = str(err).strip().splitlines()[0]
            if self.cfg.transport == "collective":
                raise WeightSyncError(f"weight_sync.transport=collective: the generators could not join a {backend} "
                                      f"group with learner rank 0 at {addr}:{port}: {why}") from None
            log.warning("weight sync: no %s group between learner rank 0 (%s:%d) and the generators (%s); using "
                        "Ray's object store instead (weight_sync.transport=object_store skips the attempt)",
                        backend, addr, port, why)
            self.fallback = True
            return
        self.connected = True
        log.info("weight sync: learner rank 0 -> %d generator(s) over a %s group", world - 1, backend)

    def broadcast(self, learners: Any, generators: Any, version: int) -> dict[str, float]:
        bucket = self.cfg.bucket_mb
        if bucket not in self.plans:
            self.plans[bucket] = learners.wait([learners.actors[0].sync_plan.remote(bucket)], "weight-sync plan",
                                               self.timeout_s, "weight_sync_s")[0]
        plan, check, delta = self.plans[bucket], self.cfg.checksum, self.cfg.delta
        sends = learners.call("send_weights", plan, check, delta, self.cfg.shared_memory)
        recvs = generators.call("receive_weights", version, plan, check, delta)
        try:
            receipts = generators.wait(recvs, "weight load", self.timeout_s, "weight_sync_s")
            sent = learners.wait(sends, "weight send", self.timeout_s, "weight_sync_s")[0]
        except RoleFailure:
            self.connected = False   # a generator (or learner) died mid-transfer: a fresh group next time
            raise
        if check:
            for i, r in enumerate(receipts):
                check_digests(plan, sent.digests, r.bucket_digests, version, f"rollout rank {i} (pid {r.pid})")
        slowest = max(receipts, key=lambda r: r.seconds)
        # delta sync: what went on the wire, and the share of 2-byte words that changed since the last sync
        words = max(1, sum(plan.sizes) // 2)
        extra = {"weight_sync/sent_bytes": sent.sent_bytes,
                 "weight_sync/changed_fraction": round(sent.changed_words / words, 6)} if delta else {}
        return {**extra, "weight_sync/bytes": sent.bytes, "weight_sync/shared_memory": int(sent.shared_memory),
                "weight_sync/sharded": int(sent.sharded), "weight_sync/gather_seconds": round(sent.gather_seconds, 4),
                "weight_sync/send_seconds": round(sent.seconds, 4),
                "weight_sync/load_seconds": round(slowest.seconds, 4),
                "weight_sync/recv_wait_seconds": round(slowest.wait_seconds, 4),
                "weight_sync/hash_seconds": round(sent.hash_seconds + slowest.hash_seconds, 4)}

    def object_store(self, learners: Any, generators: Any, version: int) -> dict[str, float]:
        payload = learners.wait(learners.call("gather_weights", self.cfg.bucket_mb, self.cfg.checksum),
                                "weight gather", self.timeout_s, "weight_sync_s")[0]
        receipts = generators.wait(generators.call("update_weights", version, payload), "weight load",
                                   self.timeout_s, "weight_sync_s")
        return {"weight_sync/bytes": payload.bytes, "weight_sync/gather_seconds": round(payload.gather_seconds, 4),
                "weight_sync/load_seconds": round(max(r.seconds for r in receipts), 4)}

    def cuda_ipc(self, learners: Any, generators: Any, version: int) -> dict[str, float]:
        """Every learner rank exports handles of its GPU's full tensors; every generator loads from its own GPU's;
        the learners let go of the tensors once all have loaded (or failed)."""
        exports = learners.wait(learners.call("export_ipc", self.cfg.checksum), "weight export", self.timeout_s,
                                "weight_sync_s")
        try:
            receipts = generators.wait(generators.call("receive_ipc", version, merge_ipc(exports), exports[0].sums),
                                       "weight load", self.timeout_s, "weight_sync_s")
        finally:
            learners.wait(learners.call("release_ipc"), "weight release", self.timeout_s, "weight_sync_s")
        return {"weight_sync/bytes": exports[0].bytes,
                "weight_sync/gather_seconds": round(max(e.seconds for e in exports), 4),
                "weight_sync/load_seconds": round(max(r.seconds for r in receipts), 4)}

    def probe(self, learners: Any, generators: Any, version: int, probe_args: Sequence[Any]) -> float:
        """Largest |log-prob difference| on the probe sequence; above probe_tolerance the run stops."""
        mine = torch.tensor(learners.wait(learners.call("probe_logprobs", *probe_args), "probe", self.timeout_s,
                                          "weight_sync_s")[0])
        worst = 0.0
        for theirs in generators.wait(generators.call("probe_logprobs", *probe_args), "probe", self.timeout_s,
                                      "weight_sync_s"):
            worst = max(worst, float((mine - torch.tensor(theirs)).abs().max()))
        if worst > self.tolerance:
            raise WeightSyncError(
                f"weight sync v{version}: generator log-probs differ from the learner's by {worst:.3g} "
                f"(> weight_sync.probe_tolerance={self.tolerance}) on the probe sequence")
        return worst
