"""The CUDA IPC transport's pure parts (rlframe/weight_sync/cuda_ipc.py) and its refusal off a GPU; the transfer
itself needs CUDA and is in tests/integration/test_colocate_gpu.py (marked gpu)."""
from __future__ import annotations

import pytest
import torch

from rlframe.config import load_config
from rlframe.errors import ConfigError, WeightSyncError
from rlframe.weight_sync import cuda_ipc
from rlframe.weight_sync.cuda_ipc import IpcExport, checksum, merge


def export(uuid: str, names: list[str]) -> IpcExport:
    return IpcExport(names=names, dtype_names=["bfloat16"] * len(names), shapes=[[2, 3]] * len(names),
                     handles=[{uuid: (uuid, n)} for n in names], bytes=12 * len(names))


def test_merge_gives_each_tensor_the_handle_of_every_ranks_gpu():
    info = merge([export("GPU-a", ["x", "y"]), export("GPU-b", ["x", "y"])])
    assert info["names"] == ["x", "y"] and info["dtype_names"] == ["bfloat16"] * 2 and info["shapes"] == [[2, 3]] * 2
    assert info["ipc_handles"] == [{"GPU-a": ("GPU-a", "x"), "GPU-b": ("GPU-b", "x")},
                                   {"GPU-a": ("GPU-a", "y"), "GPU-b": ("GPU-b", "y")}]
    with pytest.raises(WeightSyncError, match="learner rank 1 exported other tensors than rank 0"):
        merge([export("GPU-a", ["x", "y"]), export("GPU-b", ["y", "x"])])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.uint8])
def test_checksum_sees_a_changed_zeroed_or_misplaced_tensor(dtype):
    t = (torch.arange(13, dtype=torch.float32) * 7 + 1).to(dtype)   # 13 elements: 2-byte types end mid-word
    base = checksum(t)
    assert checksum(t.clone()) == base
    changed = t.clone()
    changed[-1] += 1
    assert checksum(changed) != base
    assert checksum(torch.zeros_like(t)) != base
    assert checksum(t[1:]) != base                                     # one element short (any alignment)


def test_cuda_ipc_is_refused_before_a_run_without_colocated_gpus(monkeypatch):
    with pytest.raises(ConfigError, match=r"weight_sync.transport=cuda_ipc: .*cluster.colocate=true"):
        load_config(["weight_sync.transport=cuda_ipc"])
    with pytest.raises(ConfigError, match=r"weight_sync.delta=true: .*not cuda_ipc"):
        load_config(["weight_sync.transport=cuda_ipc", "weight_sync.delta=true"])
    # and at the learner, should a CPU process ever be asked to export
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(WeightSyncError, match="no CUDA device: use weight_sync.transport=auto"):
        cuda_ipc.require_cuda()
