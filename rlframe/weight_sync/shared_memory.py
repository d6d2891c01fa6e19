"""A same-machine data plane for the CPU weight-sync group: learner rank 0 packs the buckets into one file in
/dev/shm that every generator maps, and the group's sockets carry only which bucket is ready.

Over gloo's loopback sockets every byte is copied into the kernel and out again, on both ends, by threads that
compete with vLLM's reload for the same cores. Through shared memory the learner's pack is the only copy before
the engine's own. A dead peer still fails the sync (the sockets still carry the signals), and the digests still
compare what each generator read with what the learner packed.

The file is made once per group (again when a plan needs more room) and offered at every sync; it is used only
when every generator has it mapped, and unlinked as soon as they have, so a crash after that leaves nothing in
/dev/shm.

Under ZeRO-3 every learner rank maps the file as well and writes its own partition of each tensor into place,
so the weights are never gathered: a rank's partition is a contiguous run of the flattened tensor."""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from typing import Any, Sequence

import torch

SHM_DIR = "/dev/shm"
OFFER_BYTES = 512   # the offer travels as a fixed-size message: {"path", "token", "size"} as JSON, zero-padded
HEADER = 64         # the file starts with the token, so a generator on another machine never maps a namesake


@dataclass
class Region:
    """One mapped file: `data` is where the buckets lie (after the header)."""
    token: str
    data: torch.Tensor


def create(nbytes: int, directory: str = SHM_DIR, prefix: str = "rlframe-weight-sync") -> tuple[Region, dict] | str:
    """Learner rank 0: a file of `nbytes` (plus the header) with its pages reserved, mapped; or why not.

    The pages are reserved up front (posix_fallocate) so a full tmpfs (Docker's default /dev/shm is 64 MB) is
    an error here rather than a SIGBUS in the middle of a pack."""
    if not os.path.isdir(directory):
        return f"no {directory}"
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if free < nbytes + HEADER:
        return f"{directory} has {free / 2**20:.0f} MiB free, the weights need {nbytes / 2**20:.0f} MiB"
    token = secrets.token_hex(16)
    path = os.path.join(directory, f"{prefix}-{os.getpid()}-{token[:8]}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, HEADER + nbytes)
            os.pwrite(fd, token.encode(), 0)
        finally:
            os.close(fd)
        buf = torch.from_file(path, shared=True, size=HEADER + nbytes, dtype=torch.uint8)
    except OSError as err:
        unlink(path)
        return f"{path}: {err.strerror or err}"
    return Region(token, buf[HEADER:]), {"path": path, "token": token, "size": nbytes}


def attach(offer: dict, held: Region | None) -> Region | str:
    """A generator: map the offered file (or keep the mapping it holds for the same token); or why not."""
    if held is not None and held.token == offer["token"] and held.data.numel() >= offer["size"]:
        return held
    path, size = offer["path"], offer["size"]
    try:
        with open(path, "rb") as f:
            token = f.read(len(offer["token"])).decode(errors="replace")
            have = os.fstat(f.fileno()).st_size
        if token != offer["token"] or have < HEADER + size:
            return f"{path} is another file here (token or size differ): not on learner rank 0's machine"
        buf = torch.from_file(path, shared=True, size=HEADER + size, dtype=torch.uint8)
    except OSError as err:
        return f"{path}: {err.strerror or err}"
    return Region(offer["token"], buf[HEADER:])


_learner_region: list[Region] = []   # a learner rank other than 0: its mapping of rank 0's file (at most one)


def shardable(sources: Sequence[Any]) -> bool:
    """ZeRO-3 partitioned single tensors on the CPU (no merged LoRA weights), with more than one rank."""
    import torch.distributed as dist

    return (dist.is_initialized() and dist.get_world_size() > 1 and dist.get_backend() == "gloo"
            and all(s.merge is None and hasattr(s.params[0], "ds_tensor") for s in sources))


def share(offer: dict | None, held: Region | None = None) -> tuple[bool, Region | str | None]:
    """Collective over the default group: rank 0's offer (None: none) reaches every rank, which maps the file.
    Returns whether every rank other than 0 has it mapped, and this rank's mapping or why it could not map it
    (None on rank 0, and on every rank when there was no offer)."""
    import torch.distributed as dist

    msg = encode(offer)
    dist.broadcast(msg, 0)
    offer = decode(msg)
    got = attach(offer, held) if offer is not None and dist.get_rank() != 0 else None
    flag = torch.tensor([int(offer is not None and not isinstance(got, str))], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag), got


def share_with_learners(offer: dict | None) -> bool:
    """The ZeRO-3 learners' `share` of rank 0's weight-sync file: True when all of them have it."""
    ok, got = share(offer, _learner_region[0] if _learner_region else None)
    _learner_region[:] = [got] if isinstance(got, Region) else []
    return ok


def agree(decision: bool) -> bool:
    """Rank 0's decision, on every learner rank (the generators' answer reached rank 0 only)."""
    import torch.distributed as dist

    flag = torch.tensor([int(decision)], dtype=torch.int32)
    dist.broadcast(flag, 0)
    if not flag:
        _learner_region.clear()   # not writing into it: let the file's memory go (it is unlinked by now)
    return bool(flag)


def learner_data() -> torch.Tensor:
    """A learner rank other than 0: where the buckets lie in its mapping of rank 0's file."""
    return _learner_region[0].data


def write_partitions(data: torch.Tensor, offset: int, slots: Sequence[Any], params: Sequence[Any]) -> None:
    """This rank's ZeRO-3 partition of each tensor of the bucket at `offset` of `data`; returns when every rank
    has written (the bucket is whole). Rank r holds elements [r * n, (r + 1) * n) of the flattened tensor."""
    import torch.distributed as dist

    rank = dist.get_rank()
    for slot, p in zip(slots, params):
        part = p.ds_tensor.ds_numel
        start, esz = rank * part, p.element_size()
        n = min(part, p.ds_numel - start)
        if n > 0:
            at = offset + slot.offset + start * esz
            data[at:at + n * esz].copy_(p.ds_tensor.detach().reshape(-1)[:n].view(torch.uint8))
    dist.barrier()


def unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def encode(offer: dict | None) -> torch.Tensor:
    msg = torch.zeros(OFFER_BYTES, dtype=torch.uint8)
    if offer:
        raw = json.dumps(offer).encode()
        if len(raw) > OFFER_BYTES:
            raise ValueError(f"weight-sync shared-memory offer of {len(raw)} bytes (> {OFFER_BYTES}): {raw[:80]!r}")
        msg[:len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return msg


def decode(msg: torch.Tensor) -> dict | None:
    raw = bytes(msg.numpy()).rstrip(b"\0")
    return json.loads(raw) if raw else None
