"""The learner's side of a weight sync: gather full tensors (ZeRO-3 shards too) into object-store buckets."""
from __future__ import annotations

import time
from typing import Any

import ray
import torch

from rlframe.weight_sync.buckets import Digest, SyncPayload, SyncSource, plan_buckets, tensor_bytes


def gather_to_object_store(sources: list[SyncSource], rank: int, zero3: bool,
                           bucket_mb: float, checksum: bool) -> SyncPayload | None:
    """Every rank must call (ZeRO-3 gathers are collective); rank 0 returns the payload, the others None."""
    import deepspeed

    t0 = time.perf_counter()
    by_name = {s.name: s for s in sources}
    sizes = [(s.name, s.nbytes()) for s in sources]
    digest = Digest() if checksum and rank == 0 else None
    payload = SyncPayload()
    for names in plan_buckets(sizes, int(bucket_mb * 2**20)):
        group = [by_name[n] for n in names]
        unique = list({id(p): p for s in group for p in s.params}.values())
        with deepspeed.zero.GatheredParameters(unique, modifier_rank=None, enabled=zero3):
            if rank == 0:
                bucket: list[tuple[str, Any]] = [(s.name, s.full().to("cpu", copy=True)) for s in group]
                if digest is not None:
                    digest.update(bucket)
                payload.bytes += sum(tensor_bytes(t) for _, t in bucket)
                payload.refs.append(ray.put(bucket))
    if rank != 0:
        return None
    payload.digest = digest.hexdigest() if digest else None
    payload.gather_seconds = time.perf_counter() - t0
    return payload
