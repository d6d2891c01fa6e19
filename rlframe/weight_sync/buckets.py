"""What a weight sync sends (SyncSource), how it is bucketed, and the object-store transport's payload and
whole-transfer digest (pure torch: no Ray, no DeepSpeed)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

NamedTensors = list[tuple[str, torch.Tensor]]


@dataclass(frozen=True)
class SyncSource:
    """One tensor the generators receive: the name their `load_weights` expects, the learner parameters it is
    computed from (gathered together under ZeRO-3) and how (`merge` of their full tensors; None: the single
    parameter as it is). LoRA's merged weights are `W + scale * B @ A` of three parameters."""
    name: str
    params: tuple[torch.nn.Parameter, ...]
    merge: Callable[[Sequence[torch.Tensor]], torch.Tensor] | None = None

    def nbytes(self) -> int:
        p = self.params[0]
        return getattr(p, "ds_numel", p.numel()) * p.element_size()

    def full(self) -> torch.Tensor:
        """The tensor to send (call with the parameters gathered)."""
        if self.merge is None:
            return self.params[0].detach()
        return self.merge([p.detach() for p in self.params])


def plain_sources(named: Iterable[tuple[str, torch.nn.Parameter]]) -> list[SyncSource]:
    return [SyncSource(n, (p,)) for n, p in named]


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
    """Order-sensitive hash over (name, dtype, shape, bytes) of every tensor (xxh3: many GB/s)."""

    def __init__(self) -> None:
        import xxhash

        self._h = xxhash.xxh3_128()

    def update(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        for name, t in named:
            t = t.detach().contiguous().cpu()
            self._h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            if t.numel():
                self._h.update(t.reshape(-1).view(torch.uint8).numpy())

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
    """What a generator reports after loading a payload (the object store's digest, or per-bucket digests)."""
    version: int
    bytes: int
    seconds: float
    digest: str | None
    bucket_digests: list[str] = field(default_factory=list)
    pid: int = 0
    wait_seconds: float = 0.0   # collective transport: waiting for bytes, and hashing them
    hash_seconds: float = 0.0

