"""Bucketing and verification of full-weight syncs (pure torch: no Ray, no DeepSpeed).

The learner (rank 0) puts each bucket of full tensors into the object store (shared memory on
a node, Ray's object transfer across nodes); each generator pulls the buckets one at a time
and streams them into its engine's in-place reload hook. Nothing touches the disk. Both sides
hash the tensors in the same order, so a corrupted or partial transfer fails the run.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch

NamedTensors = list[tuple[str, torch.Tensor]]


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def plan_buckets(sizes: Iterable[tuple[str, int]], bucket_bytes: int) -> list[list[str]]:
    """Group names (in order) into buckets of at most bucket_bytes (one oversized tensor gets its own)."""
    buckets: list[list[str]] = []
    cur: list[str] = []
    cur_size = 0
    for name, size in sizes:
        if cur and cur_size + size > bucket_bytes:
            buckets.append(cur)
            cur, cur_size = [], 0
        cur.append(name)
        cur_size += size
    if cur:
        buckets.append(cur)
    return buckets


class Digest:
    """Order-sensitive hash over (name, dtype, shape, bytes) of every tensor."""

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)

    def update(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        for name, t in named:
            t = t.detach().contiguous().cpu()
            self._h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            self._h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def iter_verified(buckets: Iterable[NamedTensors], digest: Digest | None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield tensors bucket by bucket, hashing them on the way (streams into the engine's reload)."""
    for bucket in buckets:
        if digest is not None:
            digest.update(bucket)
        yield from bucket


@dataclass
class SyncPayload:
    """What learner rank 0 hands to the generators: bucket refs in the object store and their checksum."""
    refs: list[Any] = field(default_factory=list)
    digest: str | None = None
    bytes: int = 0
    gather_seconds: float = 0.0


@dataclass
class SyncReceipt:
    """What a generator reports after loading a payload."""
    version: int
    bytes: int
    seconds: float
    digest: str | None

