"""Learner collectives on one machine: gloo's loopback sockets against rlframe's shared-memory path, per size.

DeepSpeed ZeRO-1/2 runs two collectives a step over the learners' gloo group: the all-reduce of the gradients and
the all-gather of the updated parameters. `learner.shared_memory_collectives` (rlframe/learner/local_collectives.py)
does both through one /dev/shm file when the ranks share a machine. Here N forked ranks (one torch thread each,
as learners run) time each collective both ways, interleaved, on bf16 tensors of each size (per rank: the
all-gather's input is size / N), and check that the two give the same bits (two ranks) before timing them.
Sizes in MB; 38 is the step-time model's bf16 gradients (19M parameters).

    rlframe bench collectives [--sizes 4,38,150] [--ranks 2] [--iters 5] [--repeats 3] [--quick]
"""
from __future__ import annotations

import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, emit, new_figure, pair_median, pair_ratios, save_plot, summarize  # noqa: E402

OPS = ("all_reduce", "all_gather")


def parse(argv: list[str] | None = None):
    p = base_parser(__doc__)
    p.add_argument("--sizes", type=lambda v: [float(x) for x in v.split(",")], default=[4.0, 38.0, 150.0],
                   help="tensor sizes in MB (default 4,38,150)")
    p.add_argument("--ranks", type=int, default=2, help="ranks of the group (default 2)")
    p.add_argument("--iters", type=int, default=5, help="calls per measurement, their median kept (default 5)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.iters, args.repeats = [2.0], 2, min(args.repeats, 2)
    return args


def rank_main(rank: int, world: int, port: int, args, queue) -> None:
    """One rank: for each repeat, size and op, both paths in the repeat's rotating order; rank 0 reports."""
    import warnings

    import torch
    import torch.distributed as dist

    from rlframe.learner.local_collectives import LocalCollectives

    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.* is deprecated")   # DeepSpeed's call
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    coll = LocalCollectives.open()
    assert coll.usable, coll.failed
    paths = {"gloo": {"all_reduce": lambda t: dist.all_reduce(t),
                      "all_gather": lambda o, p: dist.all_gather_into_tensor(o, p)},
             "shared_memory": {"all_reduce": lambda t: coll.all_reduce(t),
                               "all_gather": lambda o, p: coll.all_gather_into_tensor(o, p)}}
    out: dict = {}
    for mb in args.sizes:
        n = int(mb * 2**20) // 2 // world * world   # bf16 elements, a multiple of the ranks
        grad = torch.randn(n, generator=torch.Generator().manual_seed(rank)).to(torch.bfloat16)
        flat = torch.empty(n, dtype=torch.bfloat16)   # the all-gather's output; this rank's part is a view of it
        part = flat[rank * (n // world):(rank + 1) * (n // world)]
        part.copy_(grad[: n // world])
        same = {}
        for op in OPS:   # the two paths agree before they are timed
            results = []
            for path in paths:
                if op == "all_reduce":
                    t = grad.clone()
                    paths[path][op](t)
                else:
                    t = torch.empty_like(flat)
                    paths[path][op](t, part)
                results.append(t)
            same[op] = bool(torch.equal(*results)) if world == 2 else bool(torch.allclose(*[r.float() for r in results],
                                                                                          rtol=1e-2, atol=1e-2))
        for r in range(args.repeats):
            order = list(paths) if r % 2 == 0 else list(paths)[::-1]
            for op in OPS:
                for path in order:
                    times = []
                    for _ in range(args.iters):
                        t = grad.clone() if op == "all_reduce" else None
                        dist.barrier()
                        t0 = time.perf_counter()
                        paths[path][op](t) if op == "all_reduce" else paths[path][op](flat, part)
                        times.append(time.perf_counter() - t0)
                    out.setdefault((mb, op, path), []).append(statistics.median(times))
        out[(mb, "same")] = same
    if rank == 0:
        queue.put(out)
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    loads = [os.getloadavg()[0]]
    procs = [ctx.Process(target=rank_main, args=(r, args.ranks, port, args, queue)) for r in range(args.ranks)]
    for p in procs:
        p.start()
    raw = queue.get(timeout=3600)   # {(mb, op, path): seconds per repeat, (mb, "same"): {op: equal}}
    for p in procs:
        p.join()
    loads.append(os.getloadavg()[0])
    results, ratios, pairs = [], {}, {}
    for mb in args.sizes:
        for op in OPS:
            g, s = raw[(mb, op, "gloo")], raw[(mb, op, "shared_memory")]
            key = f"{op.replace('_', '-')} {mb:g} MB: gloo / shared memory time (median of pairs)"
            ratios[key], pairs[key] = pair_median(g, s), pair_ratios(g, s)
            results.append({"mb": mb, "op": op, "gloo_ms": summarize(x * 1e3 for x in g),
                            "shared_memory_ms": summarize(x * 1e3 for x in s), "gloo_over_shared_memory": ratios[key],
                            "speedup_pairs": pairs[key], "same_result": raw[(mb, "same")][op]})
    mid = min(args.sizes, key=lambda m: abs(m - 38))
    fig_row = {r["op"]: r for r in results if r["mb"] == mid}
    record = {
        "config": {"sizes_mb": args.sizes, "ranks": args.ranks, "iters": args.iters, "repeats": args.repeats,
                   "dtype": "bfloat16", "torch_threads": 1, "quick": args.quick},
        "results": results, "load_avg_1m": summarize(loads),
        "headline": {"figures": f"{mid:g} MB bf16, {args.ranks} ranks: all-reduce gloo "
                                f"{fig_row['all_reduce']['gloo_ms']['median']:.1f} ms, shared memory "
                                f"{fig_row['all_reduce']['shared_memory_ms']['median']:.1f} ms; all-gather gloo "
                                f"{fig_row['all_gather']['gloo_ms']['median']:.1f} ms, shared memory "
                                f"{fig_row['all_gather']['shared_memory_ms']['median']:.1f} ms (1-min load "
                                f"{min(loads):.1f}-{max(loads):.1f})",
                     "ratios": ratios, "pairs": pairs},
    }
    plot(results, args)
    emit("collectives", record, args)
    return 0 if all(r["same_result"] for r in results) else 1


def plot(results: list[dict], args) -> None:
    fig, axes = new_figure(ncols=len(OPS), width=5.0)
    for ax, op in zip(axes, OPS):
        rows = [r for r in results if r["op"] == op]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r["gloo_ms"]["median"] for r in rows], width=0.4, label="gloo sockets")
        ax.bar([x + 0.2 for x in xs], [r["shared_memory_ms"]["median"] for r in rows], width=0.4,
               label="shared memory")
        ax.set_xticks(list(xs), [f"{r['mb']:g} MB" for r in rows])
        ax.set_title(f"{op.replace('_', '-')}, {args.ranks} ranks (bf16)")
        ax.set_ylabel("ms per call (median)")
        ax.legend()
    save_plot(fig, "collectives", args)


if __name__ == "__main__":
    sys.exit(main())
