"""The driver's side of a weight sync: learners -> every generator, versioned, verified, probed, timed."""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from rlframe.config.schema import WeightSyncConfig
from rlframe.errors import WeightSyncError


class WeightSync:
    """Sends versioned weights; the driver's run state owns the version (so a resume continues it). The
    first sync from a new weight source (new learners) is always probed: the log-probs of a fixed sequence
    under the learner and under every generator must agree."""

    def __init__(self, cfg: WeightSyncConfig, timeout_s: float = 600.0) -> None:
        self.cfg, self.timeout_s = cfg, timeout_s
        self.syncs = 0
        self.probe_next = True

    def new_source(self) -> None:
        self.probe_next = True

    def sync(self, learners: Any, generators: Any, version: int, probe_args: Sequence[Any]) -> dict[str, float]:
        """Send the learners' weights to every generator as `version`, check versions (and the probe)."""
        t0 = time.perf_counter()
        deadline = self.timeout_s
        payload = learners.wait(learners.call("gather_weights", self.cfg.bucket_mb, self.cfg.checksum),
                                "weight gather", deadline, "weight_sync_s")[0]
        receipts = generators.wait(generators.call("update_weights", version, payload), "weight load", deadline,
                                   "weight_sync_s")
        versions = generators.wait(generators.call("weight_version"), "weight version", deadline, "weight_sync_s")
        if any(v != version for v in versions):
            raise WeightSyncError(f"weight sync: generators report versions {versions}, learner is at {version}")
        probe = {}
        if self.probe_next or (self.cfg.probe_every and self.syncs % self.cfg.probe_every == 0):
            probe["weight_sync/probe_max_abs_diff"] = self.probe(learners, generators, version, probe_args)
            self.probe_next = False
        self.syncs += 1
        seconds = time.perf_counter() - t0
        return {"weight_sync/seconds": round(seconds, 4), "weight_sync/bytes": payload.bytes,
                "weight_sync/gather_seconds": round(payload.gather_seconds, 4),
                "weight_sync/load_seconds": round(max(r.seconds for r in receipts), 4),
                "weight_sync/gbps": payload.bytes / seconds / 1e9, "weight_sync/version": version, **probe}

    def probe(self, learners: Any, generators: Any, version: int, probe_args: Sequence[Any]) -> float:
        """Largest |log-prob difference| on the probe sequence; above probe_tolerance the run stops."""
        mine = torch.tensor(learners.wait(learners.call("probe_logprobs", *probe_args), "probe", self.timeout_s,
                                          "weight_sync_s")[0])
        worst = 0.0
        for theirs in generators.wait(generators.call("probe_logprobs", *probe_args), "probe", self.timeout_s,
                                      "weight_sync_s"):
            worst = max(worst, float((mine - torch.tensor(theirs)).abs().max()))
        if worst > self.cfg.probe_tolerance:
            raise WeightSyncError(
                f"weight sync v{version}: generator log-probs differ from the learner's by {worst:.3g} "
                f"(> weight_sync.probe_tolerance={self.cfg.probe_tolerance}) on the probe sequence")
        return worst
