"""The tensor transport of a weight sync (rlframe/weight_sync/collective.py): the plan both ends agree on,
packing, per-bucket digests, and a real two-process gloo broadcast into an engine's load_weights."""
from __future__ import annotations

import glob
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from rlframe.errors import WeightSyncError
from rlframe.weight_sync import collective, shared_memory
from rlframe.weight_sync.buckets import Digest, SyncSource, plain_sources
from rlframe.weight_sync.collective import (ALIGN, SyncGroup, check_digests, digest, make_plan, pack, receive,
                                            send, unpack)
from rlframe.weight_sync.shared_memory import SHM_DIR


def _params() -> list[tuple[str, torch.nn.Parameter]]:
    g = torch.Generator().manual_seed(0)
    shapes = {"embed.weight": ((37, 16), torch.float32), "layer.0.bias": ((13,), torch.bfloat16),
              "layer.0.weight": ((16, 16), torch.float32), "scale": ((3,), torch.float64),
              "head.weight": ((5, 7), torch.bfloat16)}
    return [(n, torch.nn.Parameter(torch.randn(*s, generator=g).to(dt), requires_grad=False))
            for n, (s, dt) in shapes.items()]


def test_plan_aligns_every_tensor_and_pack_unpack_round_trips():
    sources = plain_sources(_params())
    plan = make_plan(sources, 1500)
    assert [s.name for b in plan.buckets for s in b] == [s.name for s in sources]   # order kept, nothing lost
    assert len(plan.buckets) > 1 and plan.nbytes == sum(s.nbytes() for s in sources)
    for slots, size in zip(plan.buckets, plan.sizes):
        assert all(s.offset % ALIGN == 0 for s in slots) and size >= slots[-1].offset + slots[-1].nbytes
        by_name = {s.name: s for s in sources}
        buf = pack([by_name[s.name].full() for s in slots], slots, torch.empty(size, dtype=torch.uint8))
        for name, t in unpack(buf, slots):
            assert t.dtype == by_name[name].params[0].dtype and torch.equal(t, by_name[name].params[0])


def test_a_merge_source_sends_its_merged_tensor():
    w, a, b = (torch.nn.Parameter(torch.full(s, v)) for s, v in (((4, 3), 1.0), ((2, 3), 0.5), ((4, 2), 2.0)))
    src = SyncSource("proj.weight", (w, a, b), merge=lambda t: t[0] + 0.5 * t[2] @ t[1])
    plan = make_plan([src], 1 << 20)
    (name, t), = unpack(pack([src.full()], plan.buckets[0], torch.empty(plan.sizes[0], dtype=torch.uint8)),
                        plan.buckets[0])
    assert name == "proj.weight" and t.shape == (4, 3) and torch.allclose(t, torch.full((4, 3), 2.0))


def test_a_flipped_byte_changes_the_digest_and_check_digests_names_the_bucket():
    plan = make_plan(plain_sources(_params()), 1500)
    buf = torch.arange(plan.sizes[1], dtype=torch.int64).to(torch.uint8)
    sent = [digest(torch.zeros(plan.sizes[0], dtype=torch.uint8)), digest(buf)]
    corrupt = buf.clone()
    corrupt[7] ^= 1
    assert digest(corrupt) != sent[1] and digest(buf.clone()) == sent[1]
    check_digests(plan, sent, list(sent), 3, "rollout rank 0")             # equal: passes
    first_of_second = plan.buckets[1][0].name
    with pytest.raises(WeightSyncError, match=rf"v3: checksum mismatch on rollout rank 0: bucket 2 of "
                                              rf"{len(plan.buckets)} \({first_of_second}"):
        check_digests(plan, sent, [sent[0], digest(corrupt)], 3, "rollout rank 0")
    with pytest.raises(WeightSyncError, match="received nothing"):          # a bucket that never arrived
        check_digests(plan, sent, sent[:1], 3, "rollout rank 0")


class _Engine:
    """Stands in for vLLM's reload hook: keeps copies, like an engine copying into its own weights."""

    def __init__(self) -> None:
        self.loaded: dict[str, torch.Tensor] = {}

    def load_weights(self, weights) -> None:
        for name, t in weights:
            self.loaded[name] = t.clone()


def _fingerprint(named) -> str:
    """(name, dtype, shape, bytes) of every tensor, hashed (tensors do not cross the queue)."""
    d = Digest()
    d.update(sorted((n, t.detach()) for n, t in named))
    return d.hexdigest()


def _peer(rank: int, port: int, queue, shared: bool = True) -> None:
    torch.set_num_threads(1)   # forked from pytest: no OpenMP pool in the child
    params = _params()
    group = SyncGroup("127.0.0.1", port, rank, 3, "gloo", 60)
    plan = make_plan(plain_sources(params), 1500)
    for step in range(2):   # two syncs: the second reuses the buffers (or the shared file) of the first
        if rank == 0:
            for _, p in params:
                p.data.add_(step)
            rep = send(group, plain_sources(params), plan, 0, False, True, shared=shared)
            left = glob.glob(f"{SHM_DIR}/rlframe-weight-sync-{os.getpid()}-*")
            queue.put((rank, step, rep.digests, (rep.bytes, rep.shared_memory, left), _fingerprint(params)))
        else:
            eng = _Engine()
            got = receive(group, eng, plan, True)
            queue.put((rank, step, got.digests, (plan.nbytes, group.shared, []), _fingerprint(eng.loaded.items())))


def _run_peers(target, syncs: int, *extra) -> dict:
    """Learner rank 0 and two generators, each a forked process running `target`: {(rank, sync): result}."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")   # torch is imported already: the peers start in milliseconds
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(r, port, queue, *extra)) for r in range(3)]
    for p in procs:
        p.start()
    try:
        return {(r, step): (d, n, w) for r, step, d, n, w in (queue.get(timeout=120) for _ in range(3 * syncs))}
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


@pytest.mark.parametrize("shared", [True, False], ids=["shared-memory", "sockets"])
def test_a_real_gloo_broadcast_reaches_every_generator_intact_twice(shared):
    got = _run_peers(_peer, 2, shared)
    for step in range(2):
        digests, (nbytes, used, left), weights = got[(0, step)]
        assert used == shared and left == []   # on one machine the file is used, and unlinked once mapped
        for r in (1, 2):
            their_digests, (their_bytes, their_used, _), loaded = got[(r, step)]
            assert their_digests == digests and their_bytes == nbytes and len(digests) > 1 and their_used == shared
            assert loaded == weights   # every tensor arrived with its name, dtype, shape and bytes
    assert got[(0, 0)][0] != got[(0, 1)][0]   # the weights changed between the syncs, and so did the digests


def _fallback_peer(rank: int, port: int, queue, why: str) -> None:
    """Shared memory fails at one end: generator rank 2 cannot map the file (as on another machine), or learner
    rank 0 cannot make it (a full /dev/shm)."""
    if why == "unmappable" and rank == 2:
        collective.shared_memory.attach = lambda offer, held: "not on this machine"
    if why == "no room" and rank == 0:
        collective.shared_memory.create = lambda nbytes, directory=None: "/dev/shm has 0 MiB free"
    _peer(rank, port, queue)


@pytest.mark.parametrize("why", ["unmappable", "no room"])
def test_when_shared_memory_fails_at_one_end_every_peer_keeps_to_the_sockets_intact(why):
    got = _run_peers(_fallback_peer, 2, why)
    for step in range(2):
        digests, (_, used, left), weights = got[(0, step)]
        assert not used and left == []
        for r in (1, 2):
            their_digests, (_, their_used, _), loaded = got[(r, step)]
            assert their_digests == digests and loaded == weights and not their_used


def _corrupting_peer(rank: int, port: int, queue) -> None:
    """Learner rank 0 flips a byte of bucket 2 in the shared file after hashing it: the generators must see it."""
    if rank == 0:
        clean, seen = collective.digest, []

        def digest_then_corrupt(buf):
            d = clean(buf)
            seen.append(d)
            if len(seen) == 2:
                buf[3] ^= 1
            return d
        collective.digest = digest_then_corrupt
    params = _params()
    group = SyncGroup("127.0.0.1", port, rank, 3, "gloo", 60)
    plan = make_plan(plain_sources(params), 1500)
    if rank == 0:
        rep = send(group, plain_sources(params), plan, 0, False, True)
        queue.put((rank, 0, rep.digests, rep.shared_memory, None))
    else:
        queue.put((rank, 0, receive(group, _Engine(), plan, True).digests, group.shared, None))


def test_a_byte_changed_in_shared_memory_fails_the_digest_check():
    got = _run_peers(_corrupting_peer, 1)
    sent, used, _ = got[(0, 0)]
    plan = make_plan(plain_sources(_params()), 1500)
    assert used and all(got[(r, 0)][1] for r in (1, 2))
    for r in (1, 2):
        received = got[(r, 0)][0]
        assert received[0] == sent[0] and received[1] != sent[1]
        with pytest.raises(WeightSyncError, match=f"bucket 2 of {len(plan.buckets)}"):
            check_digests(plan, sent, received, 1, f"rollout rank {r}")


def test_no_room_in_dev_shm_or_a_namesake_file_is_a_reason_not_a_crash(tmp_path):
    assert shared_memory.create(1 << 20, str(tmp_path / "absent")) == f"no {tmp_path / 'absent'}"
    assert "the weights need" in shared_memory.create(1 << 60, str(tmp_path))   # more than any disk has free
    region, offer = shared_memory.create(4096, str(tmp_path))
    region.data[:5] = torch.arange(5, dtype=torch.uint8)
    mapped = shared_memory.attach(offer, None)
    assert torch.equal(mapped.data[:5], torch.arange(5, dtype=torch.uint8)) and mapped.data.numel() == 4096
    assert shared_memory.attach(offer, mapped) is mapped   # already held: not mapped again
    assert "another file" in shared_memory.attach({**offer, "token": "0" * 32}, None)
    shared_memory.unlink(offer["path"])
    assert "No such file" in shared_memory.attach(offer, None)
    assert shared_memory.decode(shared_memory.encode(offer)) == offer and shared_memory.decode(
        shared_memory.encode(None)) is None


def _delta_peer(rank: int, port: int, queue) -> None:
    """Three delta syncs: the first whole (nothing held yet), then one element per tensor changed, then all."""
    torch.set_num_threads(1)
    params = _params()
    group = SyncGroup("127.0.0.1", port, rank, 3, "gloo", 60)
    plan = make_plan(plain_sources(params), 1500)
    eng = _Engine()
    for step in range(3):
        if rank == 0:
            for _, p in params:
                if step == 1:
                    p.data.view(-1)[0] += 1
                elif step == 2:
                    p.data.add_(1)
            rep = send(group, plain_sources(params), plan, 0, False, True, delta=True)
            queue.put((rank, step, rep.digests, (rep.sent_bytes, rep.changed_words), _fingerprint(params)))
        else:
            got = receive(group, eng, plan, True, delta=True)
            queue.put((rank, step, got.digests, None, _fingerprint(eng.loaded.items())))


def test_delta_sync_sends_only_changed_words_and_rebuilds_the_same_weights():
    got = _run_peers(_delta_peer, 3)
    plan = make_plan(plain_sources(_params()), 1500)
    for step in range(3):
        digests, _, weights = got[(0, step)]
        for r in (1, 2):
            assert got[(r, step)][0] == digests and got[(r, step)][2] == weights   # the full result, checked
    (sent0, changed0), (sent1, changed1), (sent2, changed2) = (got[(0, s)][1] for s in range(3))
    assert sent0 == sum(plan.sizes) and changed0 == sum(plan.sizes) // 2      # first sync: whole
    # one element per tensor: 1 or 2 words each (2-byte words), sent as index + value with an 8-byte header
    assert len(_params()) <= changed1 <= 4 * len(_params())
    assert sent1 == 8 * len(plan.buckets) + 6 * changed1 < sum(plan.sizes) // 2
    assert sent2 == sum(plan.sizes) and changed2 > sum(plan.sizes) // 4       # everything changed: whole again


def _partition_writer(rank: int, port: int, queue, directory: str) -> None:
    """Three learner ranks, each holding DeepSpeed ZeRO-3's partition of every tensor (odd sizes padded to a
    multiple of the world), write them into rank 0's shared file; rank 0 reports the bytes it then reads."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=3)
    try:
        params = [p for _, p in _params()]
        for p in params:   # what DeepSpeed's _partition_param leaves on each rank
            flat = p.detach().reshape(-1)
            part = -(-flat.numel() // 3)
            padded = torch.cat([flat, flat.new_zeros(3 * part - flat.numel())])
            p.ds_numel, p.ds_tensor = flat.numel(), padded[rank * part:(rank + 1) * part].clone()
            p.ds_tensor.ds_numel = part
        sources = plain_sources(list(zip([n for n, _ in _params()], params)))
        assert shared_memory.shardable(sources)
        plan = make_plan(sources, 1500)
        region, offer = shared_memory.create(sum(plan.sizes), directory) if rank == 0 else (None, None)
        assert shared_memory.share_with_learners(offer)
        data = region.data if rank == 0 else shared_memory.learner_data()
        offset = 0
        for slots, size in zip(plan.buckets, plan.sizes):
            by_name = dict(zip([n for n, _ in _params()], params))
            shared_memory.write_partitions(data, offset, slots, [by_name[s.name] for s in slots])
            offset += size
        if rank == 0:
            whole = [bytes(data[o:o + s].numpy()) for o, s in zip(plan.offsets, plan.sizes)]
            queue.put((rank, 0, whole, None, None))
        else:
            queue.put((rank, 0, None, None, None))
    finally:
        dist.destroy_process_group()


def test_zero3_ranks_write_their_partitions_into_the_shared_file_whole(tmp_path):
    got = _run_peers(_partition_writer, 1, str(tmp_path))
    params = _params()
    plan = make_plan(plain_sources(params), 1500)
    by_name = dict(params)
    expected = [bytes(pack([by_name[s.name].detach() for s in slots], slots, torch.zeros(size, dtype=torch.uint8))
                      .numpy()) for slots, size in zip(plan.buckets, plan.sizes)]
    assert any(p.numel() % 3 for _, p in params)   # some tensors end in padding on the last rank
    assert got[(0, 0)][0] == expected
