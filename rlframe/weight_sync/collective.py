"""The tensor transport of a weight sync: learner rank 0 broadcasts packed buckets to every generator over a
torch.distributed group of their own (gloo on CPU, NCCL on GPU). The group stands beside the learners'
DeepSpeed group and vLLM's own, so neither is touched.

Pipelined both ways: rank 0 gathers and packs bucket k+1 while bucket k is in flight, and a generator
receives bucket k+1 while its engine loads bucket k. Each bucket is hashed with xxh3 when it is packed and
when it arrives (xxh3 runs at many times memcpy's speed, so verification costs little next to the copy);
the driver compares the per-bucket digests, so a corrupted or missing bucket fails the run, naming it.
When learner rank 0 and every generator share a machine, the bytes go through shared memory instead of the
gloo group's sockets (shared_memory.py; `weight_sync.shared_memory`).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Iterator, Sequence

import torch

from rlframe.weight_sync import shared_memory
from rlframe.weight_sync.buckets import SyncSource, plan_buckets

log = logging.getLogger("rlframe")

ALIGN = 64   # every tensor starts on a 64-byte boundary of its bucket (so the uint8 -> dtype view is legal)


@dataclass(frozen=True)
class Slot:
    """Where one tensor lies in its packed bucket."""
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class SyncPlan:
    """The layout both ends agree on before the bytes move: buckets of slots and each bucket's size."""
    buckets: tuple[tuple[Slot, ...], ...]
    sizes: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for b in self.buckets for s in b)

    @property
    def offsets(self) -> list[int]:
        """Where each bucket starts when all of them lie end to end (the shared-memory file's layout)."""
        return [0, *itertools.accumulate(self.sizes)][:-1]


def make_plan(sources: Sequence[SyncSource], bucket_bytes: int) -> SyncPlan:
    by_name = {s.name: s for s in sources}
    buckets, sizes = [], []
    for names in plan_buckets([(s.name, s.nbytes()) for s in sources], bucket_bytes):
        slots, off = [], 0
        for n in names:
            src = by_name[n]
            p = src.params[0]
            shape = tuple(getattr(p, "ds_shape", p.shape))
            slots.append(Slot(n, str(p.dtype).removeprefix("torch."), shape, off, src.nbytes()))
            off += -(-src.nbytes() // ALIGN) * ALIGN
        buckets.append(tuple(slots))
        sizes.append(off)
    return SyncPlan(tuple(buckets), tuple(sizes))


def pack(tensors: Sequence[torch.Tensor], slots: Sequence[Slot], buf: torch.Tensor) -> torch.Tensor:
    """Copy the tensors into their slots; the alignment gaps are zeroed (a reused buffer would otherwise carry
    another bucket's bytes there, which a delta sync would count and send as changes)."""
    ends = [s.offset for s in slots[1:]] + [buf.numel()]
    for t, s, end in zip(tensors, slots, ends):
        buf[s.offset:s.offset + s.nbytes].copy_(t.detach().contiguous().reshape(-1).view(torch.uint8))
        buf[s.offset + s.nbytes:end].zero_()
    return buf


def unpack(buf: torch.Tensor, slots: Sequence[Slot]) -> list[tuple[str, torch.Tensor]]:
    """Views into the bucket (no copy): the engine copies them into its own weights."""
    return [(s.name, buf[s.offset:s.offset + s.nbytes].view(getattr(torch, s.dtype)).view(s.shape)) for s in slots]


def digest(buf: torch.Tensor) -> str:
    """xxh3 of a host bucket; on a GPU a word sum computed on the device (weaker, but no host copy)."""
    if buf.is_cuda:
        n = buf.numel() // 8 * 8
        return f"sum:{int(buf[:n].view(torch.int64).sum())}:{int(buf[n:].sum()) if n < buf.numel() else 0}"
    import xxhash

    return xxhash.xxh3_64_hexdigest(buf.numpy())


class SyncGroup:
    """A process group of learner rank 0 (rank 0 here) and every generator, rendezvous over a TCP store.

    It keeps its host bucket buffers between syncs: fresh memory costs a page fault per 4 KB, and on the
    VMs we measured, allocating and filling 1 GB ran at 0.3 GB/s against 3.6-8 GB/s for a copy into memory
    already touched. The sender reuses two (one packing, one in flight); a generator keeps one per bucket
    (a copy of the weights in host memory), because vLLM's layer-wise reload holds the tensors of a layer
    until the whole layer has arrived."""

    def __init__(self, addr: str, port: int, rank: int, world: int, backend: str, timeout_s: float,
                 host: str | None = None, join_timeout_s: float | None = None) -> None:
        """`timeout_s` bounds each broadcast: a sync queued behind a generation in flight (trainer.max_staleness)
        waits for it, so this is the sync's whole deadline; `join_timeout_s` bounds the rendezvous."""
        import torch.distributed as dist

        timeout = timedelta(seconds=timeout_s)
        store = dist.TCPStore(addr, port, world, rank == 0, timeout=timedelta(seconds=join_timeout_s or timeout_s))
        if backend == "nccl":   # GPU generators in their own processes (not yet run on a GPU by our tests)
            self.pg = dist.ProcessGroupNCCL(store, rank, world, dist.ProcessGroupNCCL.Options())
        else:
            opts = dist.ProcessGroupGloo._Options()
            opts._timeout = timeout
            opts._devices = [dist.ProcessGroupGloo.create_device(hostname=host or addr)]
            self.pg = dist.ProcessGroupGloo(store, rank, world, opts)
        self.rank, self.world, self.backend = rank, world, backend
        self._buffers: dict[int, torch.Tensor] = {}
        self.previous: dict[int, torch.Tensor] = {}   # delta sync: what the generators hold, per bucket
        self.region: shared_memory.Region | None = None   # rank 0: its shared-memory file; a generator: its mapping
        self.refused = False     # rank 0: shared memory failed once in this group; it keeps to the sockets
        self.shared = False      # this sync's buckets lie in `region` (the sockets carry only their numbers)
        self.offsets: list[int] = []   # the plan's, while `shared`
        self.path: str | None = None   # rank 0: its file's name until the generators have mapped it

    def prepare(self, plan: SyncPlan, want: bool) -> dict | None:
        """Rank 0: its shared-memory file for `plan` (made, or grown), as an offer; None when not wanted or not
        possible (then never again in this group)."""
        if not want or self.refused or self.backend != "gloo":
            return None
        need = sum(plan.sizes)
        if self.region is None or self.region.data.numel() < need:
            self.region = None
            made = shared_memory.create(need)
            if isinstance(made, str):
                log.warning("weight sync: no shared memory (%s); the buckets go through gloo's sockets", made)
                self.refused = True
                return None
            self.region, offer = made
            self.path = offer["path"]
        return {"path": self.path or "", "token": self.region.token, "size": need}

    def negotiate(self, plan: SyncPlan, want: bool) -> bool:
        """At the start of every sync over gloo (both ends call it): rank 0 offers its shared-memory file, or
        nothing (delta syncs); it is used when every generator has it mapped. The all-reduce is also the barrier
        that keeps rank 0 from packing into the file while a generator still reads the last sync from it."""
        import torch.distributed as dist

        self.shared = False
        if self.backend != "gloo":
            return False
        offer = self.prepare(plan, want) if self.rank == 0 else None
        msg = shared_memory.encode(offer)
        self.broadcast(msg).wait()
        offer = shared_memory.decode(msg)
        ok = offer is not None
        if ok and self.rank != 0:
            got = shared_memory.attach(offer, self.region)
            if isinstance(got, str):
                log.warning("weight sync: cannot map learner rank 0's shared memory (%s); the buckets go through "
                            "gloo's sockets", got)
                ok = False
            else:
                self.region = got
        flag = torch.tensor([int(ok)], dtype=torch.int32)
        opts = dist.AllreduceOptions()
        opts.reduceOp = dist.ReduceOp.MIN
        self.pg.allreduce([flag], opts).wait()
        if self.rank == 0 and self.path:
            shared_memory.unlink(self.path)   # every generator (and learner) that could map it has: nothing to leak
            self.path = None
        if offer is not None and not int(flag):
            self.region, self.refused = None, self.rank == 0
            return False
        self.shared = offer is not None
        self.offsets = plan.offsets
        return self.shared

    def bucket(self, k: int, size: int, device: str | torch.device, sending: bool) -> torch.Tensor:
        """Where bucket k is packed (rank 0) or lands (a generator): its place in the shared file, else a buffer
        of this process (rank 0 reuses two, one packing and one in flight)."""
        if self.shared:
            return self.region.data[self.offsets[k]:self.offsets[k] + size]
        return self.buffer(k % 2 if sending else k, size, device)

    def transfer(self, k: int, buf: torch.Tensor) -> Any:
        """Send (rank 0) or receive bucket k: its bytes over the sockets, or only its number when it is shared."""
        return self.broadcast(torch.tensor([k], dtype=torch.int64) if self.shared else buf)

    def buffer(self, key: int, size: int, device: str | torch.device = "cpu") -> torch.Tensor:
        if torch.device(device).type != "cpu":   # the CUDA caching allocator already reuses memory
            return torch.empty(size, dtype=torch.uint8, device=device)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < size:
            buf = self._buffers[key] = torch.empty(size, dtype=torch.uint8)
        return buf[:size]

    def broadcast(self, buf: torch.Tensor) -> Any:
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank, opts.rootTensor = 0, 0
        return self.pg.broadcast([buf], opts)


def delta_send(group: SyncGroup, k: int, buf: torch.Tensor) -> tuple[int, int]:
    """Send bucket k as the 2-byte words that changed since the last sync (int32 index + int16 value each) when
    that is under half the bucket, else whole; a small header says which. Returns (bytes sent, words changed).

    The generators rebuild the bucket in the buffer that holds its previous version, so the first sync of a
    group (nothing held yet) goes whole, and the digests of the full result are compared as always."""
    words = buf.view(torch.int16)
    prev = group.previous.get(k)
    fresh = prev is None or prev.numel() != words.numel()   # nothing held for this bucket yet
    idx = None if fresh else (words != prev).nonzero().view(-1)
    changed = words.numel() if idx is None else idx.numel()
    sparse = idx is not None and idx.numel() * 6 * 2 < buf.numel()
    group.broadcast(torch.tensor([idx.numel() if sparse else -1], dtype=torch.int64, device=buf.device)).wait()
    if not sparse:
        group.broadcast(buf).wait()
        if fresh:
            group.previous[k] = words.clone()
        else:
            prev.copy_(words)
        return buf.numel(), changed
    if idx.numel():
        vals = words[idx]
        group.broadcast(torch.cat([idx.to(torch.int32).view(torch.uint8), vals.view(torch.uint8)])).wait()
        prev[idx] = vals
    return 8 + 6 * idx.numel(), changed


def delta_receive(group: SyncGroup, k: int, size: int, device: str | torch.device) -> torch.Tensor:
    """The other end of delta_send: bucket k, whole or patched in place over its previous version (kept here
    per bucket on every device: `buffer` hands out fresh CUDA memory each time)."""
    buf = group.previous.get(k)
    if buf is None or buf.numel() != size:
        buf = group.previous[k] = torch.empty(size, dtype=torch.uint8, device=device)
    header = torch.empty(1, dtype=torch.int64, device=device)
    group.broadcast(header).wait()
    n = int(header)
    if n < 0:
        group.broadcast(buf).wait()
    elif n:
        payload = torch.empty(6 * n, dtype=torch.uint8, device=device)
        group.broadcast(payload).wait()
        buf.view(torch.int16)[payload[:4 * n].view(torch.int32).long()] = payload[4 * n:].view(torch.int16)
    return buf


def check_digests(plan: SyncPlan, sent: list[str], received: list[str], version: int, who: str) -> None:
    """Raise WeightSyncError naming the first bucket (and its tensors) whose digests differ or that is missing."""
    from rlframe.errors import WeightSyncError

    bad = [k for k, (a, b) in enumerate(zip(sent, received)) if a != b]
    if not bad and len(sent) == len(received):
        return
    k = bad[0] if bad else min(len(sent), len(received))
    slots = plan.buckets[k] if k < len(plan.buckets) else ()
    names = f"{slots[0].name} .. {slots[-1].name}" if slots else "?"
    raise WeightSyncError(f"weight sync v{version}: checksum mismatch on {who}: bucket {k + 1} of {len(plan.buckets)} "
                          f"({names}) received {received[k] if k < len(received) else 'nothing'}, learner sent "
                          f"{sent[k] if k < len(sent) else 'nothing'}")


def gathered(params: list[torch.nn.Parameter], zero3: bool) -> Any:
    """ZeRO-3: the full parameters for the duration of the block (collective); otherwise nothing to do."""
    if not zero3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


@dataclass
class SendReport:
    """Learner rank 0's side of one sync."""
    digests: list[str] = field(default_factory=list)
    bytes: int = 0
    gather_seconds: float = 0.0   # gathering and packing (what overlaps the sends)
    hash_seconds: float = 0.0
    seconds: float = 0.0
    sent_bytes: int = 0           # on the wire (under delta sync, less than `bytes` when few words changed)
    changed_words: int = 0        # delta sync: 2-byte words that differ from the last sync (all, the first time)
    shared_memory: bool = False   # the buckets went through shared memory (sent_bytes: the sockets' signals only)
    sharded: bool = False         # ZeRO-3: each rank wrote its partitions into the shared file (nothing gathered)


@dataclass
class Received:
    """A generator's side: per-bucket digests, time spent waiting for bytes and hashing them (the rest of
    its time is the engine loading them)."""
    digests: list[str] = field(default_factory=list)
    wait_seconds: float = 0.0
    hash_seconds: float = 0.0


def send(group: SyncGroup | None, sources: Sequence[SyncSource], plan: SyncPlan, rank: int, zero3: bool,
         checksum: bool, delta: bool = False, shared: bool = True) -> SendReport | None:
    """Every learner rank calls (ZeRO-3 gathers are collective); rank 0 broadcasts, keeping two buckets in flight
    (one at a time under delta sync, whose message sizes are only known once a bucket is compared). `shared`:
    offer the generators shared memory (used when all of them can map it)."""
    t0 = time.perf_counter()
    by_name = {s.name: s for s in sources}
    report, inflight = SendReport(), deque()
    device = next(iter(sources)).params[0].device if group is not None and group.backend == "nccl" else "cpu"
    # ZeRO-3 on one machine: every rank writes its own partitions into the shared file, so nothing is gathered
    sharded = zero3 and shared and not delta and shared_memory.shardable(sources)
    learners_ok = sharded and shared_memory.share_with_learners(group.prepare(plan, True) if rank == 0 else None)
    if rank == 0:
        report.shared_memory = group.negotiate(plan, shared and not delta)
    if sharded:
        sharded = report.sharded = shared_memory.agree(learners_ok and report.shared_memory)
    offsets = plan.offsets
    for k, (slots, size) in enumerate(zip(plan.buckets, plan.sizes)):
        group_sources = [by_name[s.name] for s in slots]
        unique = list({id(p): p for src in group_sources for p in src.params}.values())
        g0 = time.perf_counter()
        if sharded:
            data = group.region.data if rank == 0 else shared_memory.learner_data()
            shared_memory.write_partitions(data, offsets[k], slots, [src.params[0] for src in group_sources])
            buf = group.bucket(k, size, device, True) if rank == 0 else None
        else:
            with gathered(unique, zero3):
                if rank == 0:
                    buf = pack([src.full() for src in group_sources], slots, group.bucket(k, size, device, True))
        if rank != 0:
            continue
        h0 = time.perf_counter()
        report.digests.append(digest(buf) if checksum else "")
        report.hash_seconds += time.perf_counter() - h0
        report.gather_seconds += h0 - g0
        report.bytes += sum(s.nbytes for s in slots)
        if delta:
            sent, changed = delta_send(group, k, buf)
            report.sent_bytes, report.changed_words = report.sent_bytes + sent, report.changed_words + changed
            continue
        inflight.append((group.transfer(k, buf), buf))
        report.sent_bytes += 8 if report.shared_memory else size
        if len(inflight) > 1:
            inflight.popleft()[0].wait()
    while inflight:
        inflight.popleft()[0].wait()
    report.seconds = time.perf_counter() - t0
    return report if rank == 0 else None


def receive(group: SyncGroup, engine: Any, plan: SyncPlan, checksum: bool, device: str = "cpu",
            delta: bool = False) -> Received:
    """Stream the broadcast buckets into `engine.load_weights` (bucket k+1 arrives while bucket k loads, except
    under delta sync, where each bucket is rebuilt over its previous version first)."""
    got = Received()
    group.negotiate(plan, False)   # rank 0's offer decides

    def post(k: int) -> tuple[torch.Tensor, Any]:
        buf = group.bucket(k, plan.sizes[k], device, False)
        return buf, group.transfer(k, buf)

    def stream() -> Iterator[tuple[str, torch.Tensor]]:
        pending = deque(post(k) for k in range(min(2, len(plan.buckets)))) if not delta else deque()
        for k, slots in enumerate(plan.buckets):
            t0 = time.perf_counter()
            if delta:
                buf = delta_receive(group, k, plan.sizes[k], device)
            else:
                buf, work = pending.popleft()
                work.wait()
            t1 = time.perf_counter()
            if not delta and k + 2 < len(plan.buckets):
                pending.append(post(k + 2))
            got.digests.append(digest(buf) if checksum else "")
            got.wait_seconds += t1 - t0
            got.hash_seconds += time.perf_counter() - t1
            yield from unpack(buf, slots)

    it = stream()
    engine.load_weights(it)
    for _ in it:   # an engine that stopped early must still drain the broadcast (the sender waits for it)
        pass
    return got
