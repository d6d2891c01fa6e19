"""Weight sync: seconds of a full learner -> vLLM generator sync, per transport, against this machine's memcpy.

For each model size (random-weight Qwen2s from the tiny default up to a few hundred million parameters),
ZeRO-2 and ZeRO-3 learners (2 ranks), both transports (`collective`: packed buckets broadcast over a gloo
group of learner rank 0 and the generator; `object_store`: pickled buckets through Ray's object store) and
several bucket sizes, the production path runs (Driver.sync_weights: gather, send, the vLLM actor reloads
in place, per-bucket or whole checksums, version check), interleaved. Beside each sync the driver times a
plain copy of the same number of bytes between two buffers already in memory: the memcpy of this machine
at that moment. The headline is sync speed as a fraction of memcpy; the phases say where the rest goes
(gather+pack, send, receive wait, hash, the engine's reload).

    rlframe bench weight_sync [--repeats 3] [--sizes tiny,20m,100m,300m] [--buckets 4,16,64]
                              [--transports collective,collective-sockets,object_store] [--quick]

`collective` passes the buckets through shared memory when the generator shares learner rank 0's machine (as
here); `collective-sockets` is the same group with `weight_sync.shared_memory=false` (the bytes through gloo).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, emit, new_figure, save_plot, summarize  # noqa: E402

# name: (hidden, layers, intermediate); head_dim 64 throughout (vLLM-CPU)
SIZES = {"tiny": (128, 2, 512), "20m": (384, 8, 1536), "100m": (768, 12, 2048), "300m": (1024, 20, 3072)}
PHASES = ("gather_seconds", "send_seconds", "load_seconds", "recv_wait_seconds", "hash_seconds")
# --transports names: (weight_sync.transport, weight_sync.shared_memory)
TRANSPORTS = {"collective": ("collective", True), "collective-sockets": ("collective", False),
              "object_store": ("object_store", True), "auto": ("auto", True)}


def parse(argv: list[str] | None = None):
    p = base_parser(__doc__)
    p.add_argument("--sizes", type=lambda v: v.split(","), default=list(SIZES))
    p.add_argument("--buckets", type=lambda v: [float(x) for x in v.split(",")], default=[4.0, 16.0, 64.0],
                   help="weight_sync.bucket_mb values")
    p.add_argument("--stages", type=lambda v: [int(x) for x in v.split(",")], default=[2, 3])
    p.add_argument("--transports", type=lambda v: v.split(","),
                   default=["collective", "collective-sockets", "object_store"],
                   help=f"interleaved, of {', '.join(TRANSPORTS)}")
    args = p.parse_args(argv)
    bad = [t for t in args.transports if t not in TRANSPORTS]
    if bad:
        p.error(f"--transports: unknown {', '.join(bad)} (expected some of {', '.join(TRANSPORTS)})")
    if args.quick:
        args.sizes, args.buckets, args.stages = ["tiny"], [16.0], [2]
    return args


def main() -> int:
    args = parse()
    import ray
    import torch
    from _workload import OUT, RoleMemory, build_model, prepare, start_ray, stop_ray

    gpu = args.device == "cuda"
    ov = ["trainer.stages=[grpo]", "data.num_train=16", "weight_sync.probe_every=0"]
    if gpu:  # one GPU: one learner rank beside the generator
        ov += ["learner.world_size=1", "learner.num_gpus_per_worker=0.5", "rollout.num_gpus_per_worker=0.4",
               "rollout.vllm.gpu_memory_utilization=0.2"]
    ctl = prepare("weight_sync/prep", ov)
    cfg = ctl.cfg
    cfg.rollout.num_workers = 1
    rows = []
    with RoleMemory() as mem:
        start_ray(ctl, cpus=cfg.learner.world_size * cfg.learner.num_cpus_per_worker + 3)
        try:
            for size in args.sizes:
                hidden, layers, inter = SIZES[size]
                model, nparams = build_model(OUT / "weight_sync" / size, len(ctl.tokenizer), hidden, layers, inter,
                                             ctl.tokenizer)
                r = cfg.rollout
                ctl.roles.start("rollout", (str(model), str(ctl.tokenizer_dir), r, cfg.model.dtype, 0, ctl.eos_id,
                                            ctl.pad_id))
                ray.get(ctl.generators.call("ready"))
                for stage in args.stages:
                    cfg.learner.zero_stage = stage
                    ctl.start_learners(str(model), None, 1)
                    first = {}
                    for transport in args.transports:   # warm-up of each, verified by the log-prob probe
                        cfg.weight_sync.transport, cfg.weight_sync.shared_memory = TRANSPORTS[transport]
                        ctl.weights.probe_next = True
                        first[transport] = ctl.sync_weights().get("weight_sync/probe_max_abs_diff", float("nan"))
                    src = dst = None
                    for _ in range(args.repeats):
                        for bucket in args.buckets:
                            for transport in args.transports:
                                cfg.weight_sync.bucket_mb = bucket
                                cfg.weight_sync.transport, cfg.weight_sync.shared_memory = TRANSPORTS[transport]
                                load = os.getloadavg()[0]
                                s = ctl.sync_weights()
                                if src is None:   # buffers touched once, so the copy measures bandwidth only
                                    src = torch.ones(int(s["weight_sync/bytes"]), dtype=torch.uint8)
                                    dst = torch.zeros_like(src)
                                t0 = time.perf_counter()
                                dst.copy_(src)
                                rows.append({"size": size, "params": nparams, "zero_stage": stage, "bucket_mb": bucket,
                                             "transport": transport, "bytes": s["weight_sync/bytes"],
                                             "seconds": s["weight_sync/seconds"], "load_avg_1m": round(load, 2),
                                             "memcpy_seconds": time.perf_counter() - t0,
                                             **{k: s.get(f"weight_sync/{k}") for k in PHASES}})
                    print(f"[weight_sync] {size} ({nparams / 1e6:.1f}M) ZeRO-{stage}: probe "
                          + ", ".join(f"{t} {v:.1e}" for t, v in first.items()) + "; last "
                          + ", ".join(f"{r['transport']} {r['seconds']:.3f} s" for r in rows[-len(args.transports):])
                          + f", memcpy {rows[-1]['memcpy_seconds']:.3f} s", file=sys.stderr, flush=True)
                    del src, dst
                    ctl.roles.stop("learner")
                ctl.roles.stop("rollout")
        finally:
            stop_ray(ctl)
    table = _aggregate(rows)
    big = max(t["params"] for t in table)
    pick = [t for t in table if t["params"] == big and t["zero_stage"] == args.stages[0]]
    head = {tr: min([t for t in pick if t["transport"] == tr], key=lambda t: abs(t["bucket_mb"] - 16.0))
            for tr in args.transports}
    ratios, pairs = {}, {}   # pairs: each figure's per-repeat values, its noise for `rlframe bench compare`
    for tr, x in head.items():
        key = f"sync / memcpy speed ({tr}, ZeRO-{x['zero_stage']}, {x['bucket_mb']:g} MB)"
        ratios[key], pairs[key] = x["fraction_of_memcpy"], x["fraction_runs"]
    col = head.get("collective", {})
    for other, key in (("object_store", "collective speed / object_store speed (median of pairs)"),
                       ("collective-sockets", "shared memory speed / sockets speed (median of pairs)")):
        if other in col.get("speedup_pairs", {}):
            ratios[key], pairs[key] = col["speedup_pairs"][other], col["pairs"][other]
    h = head[args.transports[0]]
    record = {
        "config": {"sizes": args.sizes, "buckets_mb": args.buckets, "zero_stages": args.stages,
                   "transports": args.transports, "learner_world_size": cfg.learner.world_size,
                   "checksum": cfg.weight_sync.checksum, "device": args.device, "repeats": args.repeats,
                   "quick": args.quick},
        "results": table, "peak_rss_mb": mem.report(),
        "headline": {"figures": f"{h['params'] / 1e6:.1f}M params ({h['gb']:.3f} GB), ZeRO-{h['zero_stage']}, "
                                f"{h['bucket_mb']:g} MB buckets: " + "; ".join(
                                    f"{tr} {x['seconds']['median']:.2f} s ({x['gbps']:.2f} GB/s)"
                                    for tr, x in head.items()) + f"; memcpy {h['memcpy_gbps']:.2f} GB/s",
                     "ratios": ratios, "pairs": pairs, "target": ">= 0.5 of memcpy (collective)",
                     "target_met": bool(head.get("collective", {}).get("fraction_of_memcpy", 0) >= 0.5)},
    }
    plot(table, args)
    emit("weight_sync", record, args)
    return 0


def _aggregate(rows: list[dict]) -> list[dict]:
    keys = sorted({(r["params"], r["size"], r["zero_stage"], r["bucket_mb"], r["transport"]) for r in rows})
    out = []
    for params, size, stage, bucket, transport in keys:
        rs = [r for r in rows if (r["params"], r["zero_stage"], r["bucket_mb"], r["transport"]) ==
              (params, stage, bucket, transport)]
        sec, mem = summarize([r["seconds"] for r in rs]), summarize([r["memcpy_seconds"] for r in rs])
        nbytes = rs[0]["bytes"]
        row = {"size": size, "params": params, "zero_stage": stage, "bucket_mb": bucket, "transport": transport,
               "gb": nbytes / 1e9, "seconds": sec, "memcpy_seconds": mem,
               "gbps": nbytes / 1e9 / sec["median"], "memcpy_gbps": nbytes / 1e9 / mem["median"],
               "fraction_of_memcpy": mem["median"] / sec["median"],
               "fraction_runs": [round(r["memcpy_seconds"] / r["seconds"], 4) for r in rs],
               "load_avg_1m": summarize([r["load_avg_1m"] for r in rs])}
        for k in PHASES:
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                row[k] = summarize(vals)
        # against each other transport, run right after or before this one (same repeat, same bucket)
        for o_name in sorted({r["transport"] for r in rows} - {transport}):
            other = [r for r in rows if (r["params"], r["zero_stage"], r["bucket_mb"], r["transport"]) ==
                     (params, stage, bucket, o_name)]
            if len(other) == len(rs):
                pairs = [round(o["seconds"] / r["seconds"], 4) for r, o in zip(rs, other)]
                row.setdefault("speedup_pairs", {})[o_name] = summarize(pairs)["median"]
                row.setdefault("pairs", {})[o_name] = pairs
        out.append(row)
    return out


def plot(table: list[dict], args) -> None:
    fig, axes = new_figure(2, 5.5, 4)
    for t in sorted({(t["transport"], t["zero_stage"], t["bucket_mb"]) for t in table}):
        ts = [x for x in table if (x["transport"], x["zero_stage"], x["bucket_mb"]) == t]
        xs = [x["params"] / 1e6 for x in ts]
        style = {"collective": "-", "collective-sockets": "--"}.get(t[0], ":")
        label = f"{t[0]}, ZeRO-{t[1]}, {t[2]:g} MB"
        axes[0].plot(xs, [x["seconds"]["median"] for x in ts], style, marker="o", label=label)
        axes[1].plot(xs, [x["fraction_of_memcpy"] for x in ts], style, marker="o", label=label)
    for ax, label in zip(axes, ("seconds per full sync (median)", "sync speed / memcpy speed")):
        ax.set_xscale("log")
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel(label)
        ax.legend(fontsize=6)
    axes[1].axhline(0.5, color="k", ls="--", lw=0.8)
    axes[0].set_title(f"weight sync ({args.device})")
    save_plot(fig, "weight_sync", args)


if __name__ == "__main__":
    sys.exit(main())
