"""The generator's side of a weight sync: pull the buckets, stream them into the engine, verify the checksum."""
from __future__ import annotations

import os
import time
from typing import Any, Iterator

import ray

from rlframe.errors import WeightSyncError
from rlframe.weight_sync.buckets import Digest, SyncPayload, SyncReceipt, iter_verified, tensor_bytes


def receive(engine: Any, payload: SyncPayload, version: int, who: str) -> SyncReceipt:
    """Load `payload` into `engine` (its `load_weights(iterable of (name, tensor))`); raise on a bad checksum."""
    t0 = time.perf_counter()
    digest = Digest() if payload.digest is not None else None
    nbytes = 0

    def buckets() -> Iterator[list]:
        nonlocal nbytes
        for ref in payload.refs:
            bucket = ray.get(ref)
            nbytes += sum(tensor_bytes(t) for _, t in bucket)
            yield bucket

    engine.load_weights(iter_verified(buckets(), digest))
    got = digest.hexdigest() if digest is not None else None
    if payload.digest is not None and got != payload.digest:
        raise WeightSyncError(f"weight sync v{version}: checksum mismatch on {who}: "
                              f"received {got}, learner sent {payload.digest}")
    return SyncReceipt(version=version, bytes=nbytes, seconds=time.perf_counter() - t0, digest=got, pid=os.getpid())
