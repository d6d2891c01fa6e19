"""The learner's side of a weight sync: gather full tensors (ZeRO-3 shards too) into object-store buckets."""
from __future__ import annotations

import time
from typing import Any

import ray
import torch

from rlframe.weight_sync.buckets import Digest, SyncPayload, plan_buckets, tensor_bytes


def gather_to_object_store(named_params: list[tuple[str, torch.nn.Parameter]], rank: int, zero3: bool,
                           bucket_mb: float, checksum: bool) -> SyncPayload | None:
    """Every rank must call (ZeRO-3 gathers are collective); rank 0 returns the payload, the others None."""
    import deepspeed

    t0 = time.perf_counter()
    params = dict(named_params)
    sizes = [(n, getattr(p, "ds_numel", p.numel()) * p.element_size()) for n, p in params.items()]
    digest = Digest() if checksum and rank == 0 else None
    payload = SyncPayload()
    for names in plan_buckets(sizes, int(bucket_mb * 2**20)):
        group = [params[n] for n in names]
        unique = list({id(p): p for p in group}.values())
        with deepspeed.zero.GatheredParameters(unique, modifier_rank=None, enabled=zero3):
            if rank == 0:
                bucket: list[tuple[str, Any]] = [(n, p.detach().to("cpu", copy=True)) for n, p in zip(names, group)]
                if digest is not None:
                    digest.update(bucket)
                payload.bytes += sum(tensor_bytes(t) for _, t in bucket)
                payload.refs.append(ray.put(bucket))
    if rank != 0:
        return None
    payload.digest = digest.hexdigest() if digest else None
    payload.gather_seconds = time.perf_counter() - t0
    return payload
