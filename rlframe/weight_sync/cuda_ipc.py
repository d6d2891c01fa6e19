"""CUDA IPC transport (weight_sync.transport=cuda_ipc): learners and generators colocated on the same GPUs
(cluster.colocate=true) share the full tensors' device memory; nothing goes through host memory or a network.

Every learner rank exports a CUDA IPC handle of each full tensor, keyed by its GPU's UUID; the driver merges the
ranks' handles per tensor, and every generator loads through vLLM's native weight-transfer API (backend "ipc":
`start_weight_update`, `update_weights`, `finish_weight_update`), which opens the handle of its own GPU. The
learners keep the exported tensors alive until every generator has loaded them. Pure torch (DeepSpeed only for
ZeRO-3's gather); CUDA-only, so it is refused on CPU before a run starts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from rlframe.errors import WeightSyncError
from rlframe.weight_sync.buckets import SyncSource, tensor_bytes

BLOCK = 1 << 24
CPU_REFUSAL = ("weight_sync.transport=cuda_ipc shares GPU memory between colocated learners and generators "
               "(cluster.colocate=true, rollout=vllm, CUDA); this machine has no CUDA device: use "
               "weight_sync.transport=auto")


@dataclass
class IpcExport:
    """One learner rank's tensors, as vLLM's IPC engine reads them (names, dtypes, shapes, handles per tensor)."""
    names: list[str] = field(default_factory=list)
    dtype_names: list[str] = field(default_factory=list)
    shapes: list[list[int]] = field(default_factory=list)
    handles: list[dict[str, Any]] = field(default_factory=list)   # per tensor: {gpu uuid: rebuild arguments}
    sums: list[int] | None = None                                  # weight_sync.checksum: `checksum` per tensor
    bytes: int = 0
    seconds: float = 0.0


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise WeightSyncError(CPU_REFUSAL)


def checksum(t: torch.Tensor) -> int:
    """The sum of a tensor's bytes, on the tensor's own device, 16 MB at a time (one read at memory bandwidth,
    any alignment). Catches a missing, stale, zeroed or wrong tensor; not an adversarial hash."""
    b = t.detach().contiguous().reshape(-1).view(torch.uint8)
    return sum(int(b[s: s + BLOCK].sum(dtype=torch.int64)) for s in range(0, b.numel(), BLOCK))


def gpu_uuid() -> str:
    return str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)


def export(sources: list[SyncSource], zero3: bool, keep: list[torch.Tensor], sums: bool) -> IpcExport:
    """IPC handles of every full tensor on this rank's GPU (every rank must call: ZeRO-3 gathers are collective).

    Plain ZeRO-1/2 parameters are shared as they are (nothing changes them until the generators have loaded);
    ZeRO-3's gathered tensors are copied first, since each gather is released after its tensor (LoRA's merged
    tensors are new ones anyway). `keep` holds what was exported until the driver says the generators are done."""
    require_cuda()
    import deepspeed
    from torch.multiprocessing.reductions import reduce_tensor

    t0 = time.perf_counter()
    uuid = gpu_uuid()
    out = IpcExport(sums=[] if sums else None)
    for s in sources:
        with deepspeed.zero.GatheredParameters(list(s.params), modifier_rank=None, enabled=zero3):
            t = s.full()
            if zero3 and s.merge is None:
                t = t.clone()   # the gathered storage is released when the context ends
        t = t.contiguous()
        keep.append(t)
        out.names.append(s.name)
        out.dtype_names.append(str(t.dtype).removeprefix("torch."))
        out.shapes.append(list(t.shape))
        out.handles.append({uuid: reduce_tensor(t)[1]})
        out.bytes += tensor_bytes(t)
        if out.sums is not None:
            out.sums.append(checksum(t))
    torch.cuda.synchronize()   # the copies are written before another process reads them
    out.seconds = time.perf_counter() - t0
    return out


def merge(exports: list[IpcExport]) -> dict[str, Any]:
    """vLLM's `update_info`: the tensors of rank 0, each with the handles of every rank's GPU (a generator opens
    the one of its own GPU; a generator on a GPU without a learner rank fails in vLLM, naming its UUID)."""
    first = exports[0]
    for rank, e in enumerate(exports[1:], 1):
        if e.names != first.names or e.shapes != first.shapes:
            raise WeightSyncError(f"weight sync (cuda_ipc): learner rank {rank} exported other tensors than rank 0")
    handles = [{k: v for e in exports for k, v in e.handles[i].items()} for i in range(len(first.names))]
    return {"names": first.names, "dtype_names": first.dtype_names, "shapes": first.shapes, "ipc_handles": handles}


def verify(update_info: dict[str, Any], sums: list[int], version: int, who: str) -> None:
    """weight_sync.checksum on a generator: open each tensor's handle of this GPU, as vLLM does, and compare its
    checksum with the learner's."""
    from torch.multiprocessing.reductions import rebuild_cuda_tensor

    uuid, device = gpu_uuid(), torch.cuda.current_device()
    for name, handle, want in zip(update_info["names"], update_info["ipc_handles"], sums):
        if uuid not in handle:
            raise WeightSyncError(f"weight sync v{version} (cuda_ipc): {who} is on GPU {uuid}, where no learner rank "
                                  f"exported {name}; cuda_ipc needs a learner rank on every generator's GPU")
        args = list(handle[uuid])
        args[6] = device   # the device index in this process (vLLM's IPC engine does the same)
        got = checksum(rebuild_cuda_tensor(*args))
        if got != want:
            raise WeightSyncError(f"weight sync v{version} (cuda_ipc): checksum mismatch on {who} for {name}: "
                                  f"{got} != the learner's {want}")


def release(keep: list[torch.Tensor]) -> None:
    """After every generator loaded: drop the exported tensors and let CUDA free what other processes opened."""
    keep.clear()
    if torch.cuda.is_available():
        torch.cuda.ipc_collect()
