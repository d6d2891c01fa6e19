"""Learner collectives through /dev/shm (rlframe/learner/local_collectives.py), checked against gloo's own results
in real forked gloo process groups: equal bits for two ranks, the exact sum rounded once for three, in pieces
when a tensor outgrows the slot, and every rank on gloo when one of them cannot map the file."""
from __future__ import annotations

import glob
import hashlib
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlframe.learner.local_collectives import LocalCollectives, install
from rlframe.weight_sync import shared_memory

SLOT = 256 << 10   # small slots: the larger tensors below go through in pieces
MIN = 16 << 10


def _data(rank: int, n: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(1000 * rank + n)).to(dtype)


def _h(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _peer(rank: int, world: int, port: int, queue, scenario: str) -> None:
    torch.set_num_threads(1)   # one thread, as learners run
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        queue.put((rank, _scenario(rank, world, scenario)))
    except Exception as err:   # the parent asserts on it; a peer that dies silently would only time out
        queue.put((rank, {"error": repr(err)}))
    finally:
        dist.destroy_process_group()


def _scenario(rank: int, world: int, scenario: str) -> dict:
    if scenario == "late reader":
        return _late_reader(rank, world)
    if scenario == "unmappable" and rank == world - 1:
        shared_memory.attach = lambda offer, held: "not on this machine"
    if scenario == "full" and rank == 0:
        shared_memory.create = lambda nbytes, directory, prefix: "/dev/shm has 3 MiB free"
    coll = LocalCollectives.open(slot_cap=SLOT, min_bytes=MIN)
    out: dict = {"usable": coll.usable, "failed": coll.failed}
    for dtype in (torch.bfloat16, torch.float32):
        for n in (100_003, 300_001):   # one piece, then several (256 KB slots), odd sizes
            mine, ref = _data(rank, n, dtype), _data(rank, n, dtype)
            out[f"took {dtype} {n}"] = took = coll.all_reduce(mine)
            if not took:   # as install() does: the call goes to gloo
                dist.all_reduce(mine)
            dist.all_reduce(ref)
            exact = sum(_data(r, n, dtype).double() for r in range(world))
            out[f"reduce {dtype} {n}"] = (_h(mine), torch.equal(mine, ref),
                                          float((mine.double() - exact).abs().max()),
                                          float((exact.to(dtype).double() - exact).abs().max()))
    # a transposed (non-contiguous) tensor: reduced through a copy, written back in its own layout
    t = _data(rank, 600 * 70, torch.float32).view(600, 70).t()
    ref = t.contiguous()
    out["took strided"] = coll.all_reduce(t) or dist.all_reduce(t) or False
    coll.all_reduce(ref) or dist.all_reduce(ref)   # the same call on the contiguous copy: the same bits
    out["strided"] = torch.equal(t, ref) and t.stride() == (1, 70)
    # DeepSpeed's all-gather: every rank's partition is a view into the flat buffer it gathers into
    n = 90_001
    flat = torch.zeros(n * world, dtype=torch.bfloat16)
    flat[rank * n:(rank + 1) * n] = _data(rank, n, torch.bfloat16)
    ref = torch.empty_like(flat)
    out["took gather"] = coll.all_gather_into_tensor(flat, flat[rank * n:(rank + 1) * n])
    if not out["took gather"]:
        dist.all_gather_into_tensor(flat, flat[rank * n:(rank + 1) * n].clone())
    dist.all_gather_into_tensor(ref, _data(rank, n, torch.bfloat16))
    out["gather"] = torch.equal(flat, ref)
    # what stays on gloo, on every rank alike: small, integer, another op, a subgroup
    sub = dist.new_group([0, 1])   # the whole group when world is 2: taken then
    out["small"] = coll.all_reduce(torch.ones(100))
    out["int"] = coll.all_reduce(torch.ones(MIN, dtype=torch.int64))
    out["max"] = coll.all_reduce(torch.ones(MIN), op=dist.ReduceOp.MAX)
    out["subgroup"] = coll.all_reduce(torch.ones(MIN), group=sub) if rank in (0, 1) else world == 2
    out["calls"] = coll.calls
    # install(): the backend's methods answer for what the file does not take (async and small calls)
    backend = _Backend()
    install(backend, coll)
    big, small = torch.ones(MIN), torch.ones(8)
    backend.all_reduce(big)
    backend.all_reduce(small)
    backend.all_reduce(torch.ones(MIN), async_op=True).wait()
    backend.all_gather_into_tensor(torch.empty(MIN * world), torch.ones(MIN))
    out["install"] = (backend.own, float(big[0]), float(small[0]), coll.calls - out["calls"])
    dist.barrier()
    out["left"] = glob.glob(f"{shared_memory.SHM_DIR}/rlframe-collectives-{os.getpid()}-*") if rank == 0 else []
    return out


def _late_reader(rank: int, world: int) -> dict:
    """Rank 0 reads the other ranks' slots late, while the others go straight on to their next collectives, which
    write their slots again: the barrier that ends each collective must hold them until rank 0 has read."""
    coll = LocalCollectives.open(slot_cap=SLOT, min_bytes=MIN)
    if rank == 0:
        typed = coll._typed

        def late(slot: int, dtype: torch.dtype, n: int) -> torch.Tensor:
            if slot != 0:
                time.sleep(0.2)
            return typed(slot, dtype, n)

        coll._typed = late
    n, out = 90_001, {}
    for i in range(3):   # gather, gather, reduce: each would overwrite what rank 0 has yet to read
        flat = torch.empty(n * world, dtype=torch.bfloat16)
        assert coll.all_gather_into_tensor(flat, _data(rank + 10 * i, n, torch.bfloat16))
        out[f"gather {i}"] = torch.equal(flat, torch.cat([_data(r + 10 * i, n, torch.bfloat16) for r in range(world)]))
    mine = _data(rank, n, torch.float32)
    assert coll.all_reduce(mine)
    out["reduce"] = torch.equal(mine, sum(_data(r, n, torch.float32) for r in range(world)))
    return out


class _Backend:
    """Stands in for DeepSpeed's TorchBackend: its two methods call gloo and count what reached them."""

    def __init__(self) -> None:
        self.own = 0

    def all_reduce(self, tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        self.own += 1
        return dist.all_reduce(tensor, op=op, group=group, async_op=async_op)

    def all_gather_into_tensor(self, output_tensor, input_tensor, group=None, async_op=False):
        self.own += 1
        return dist.all_gather_into_tensor(output_tensor, input_tensor, group=group, async_op=async_op)


def _run(world: int, scenario: str) -> dict[int, dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # spawned, not forked: after an in-process vLLM engine (earlier tests) has bound this process's OpenMP threads,
    # a forked child's first parallel kernel hangs (these tensors are large enough to run in parallel)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_peer, args=(r, world, port, queue, scenario)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        got = dict(queue.get(timeout=120) for _ in range(world))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for r, out in got.items():
        assert "error" not in out, (r, out)
    return got


@pytest.mark.parametrize("world", [2, 3])
def test_shared_memory_collectives_give_gloos_results_on_every_rank(world):
    got = _run(world, "shared")
    assert got[0]["left"] == []   # unlinked as soon as every rank had it mapped
    for r, out in got.items():
        assert out["usable"] and not out["failed"]
        for key in [k for k in out if k.startswith("reduce ")]:
            digest, same_as_gloo, err, rounding = out[key]
            assert out[key.replace("reduce", "took")]
            assert digest == got[0][key][0], (key, r)   # every rank holds the same bits
            if world == 2:
                assert same_as_gloo, key                 # a + b, as gloo adds them
            else:   # float32-accumulated and rounded once: within one rounding of the exact sum
                assert err <= rounding * (1 + 1e-6) + (1e-6 if "float32" in key else 0.0), (key, err, rounding)
        assert out["took strided"] and out["strided"]
        assert out["took gather"] and out["gather"]
        assert not any(out[k] for k in ("small", "int", "max"))
        assert out["subgroup"] == (world == 2)
        assert out["calls"] == 7 + (world == 2)   # 4 reduces, the strided pair, the gather (and the subgroup's)
        own, big, small, taken = out["install"]
        assert own == 2 and taken == 2 and big == small == world   # the async and the small call were gloo's


@pytest.mark.parametrize("why", ["unmappable", "full"])
def test_every_rank_stays_on_gloo_when_one_cannot_use_the_file(why):
    """A rank that cannot map rank 0's file (as on another machine), or a rank 0 with no room to make it."""
    got = _run(3 if why == "unmappable" else 2, why)   # rank 2 cannot map it: ranks 0 and 1 learn another could not
    says = {"unmappable": {2: "not on this machine", 1: "could not map", 0: "could not map"},
            "full": {0: "3 MiB free", 1: "rank 0 could not make"}}[why]
    for r, out in got.items():
        assert not out["usable"] and says[r] in out["failed"], (r, out["failed"])
        assert out["calls"] == 0 and not any(out[k] for k in out if k.startswith("took "))
        assert out["gather"] and all(v[1] for k, v in out.items() if k.startswith("reduce "))   # gloo's results
        assert out["install"][0] == 4 and out["install"][3] == 0   # every call reached the backend
    assert got[0]["left"] == []


def test_a_rank_that_reads_late_still_reads_what_was_written_for_it():
    got = _run(2, "late reader")
    for r, out in got.items():
        assert all(out.values()), (r, out)
