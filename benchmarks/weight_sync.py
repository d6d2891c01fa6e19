"""Weight sync: seconds and GB/s of a full learner -> vLLM generator sync against the transport's raw copy speed.

For each model size (random-weight Qwen2s from the tiny default up to a few hundred million parameters),
ZeRO-2 and ZeRO-3 learners (2 ranks) and several bucket sizes, the production path runs
(Driver.sync_weights: gather full tensors, put buckets in Ray's object store, the vLLM actor pulls and
reloads them in place, checksum and version check). Interleaved with each, the same bytes in the same
buckets go actor -> object store -> actor with a plain copy into a preallocated buffer: the raw speed of
the transport on this machine at that moment. The ratio says how much of the transport the sync uses.

    rlframe bench weight_sync [--repeats 3] [--sizes tiny,20m,100m,300m] [--buckets 4,16,64] [--quick]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, emit, new_figure, ratio, save_plot, summarize  # noqa: E402

# name: (hidden, layers, intermediate); head_dim 64 throughout (vLLM-CPU)
SIZES = {"tiny": (128, 2, 512), "20m": (384, 8, 1536), "100m": (768, 12, 2048), "300m": (1024, 20, 3072)}


class Copier:
    """The transport alone: put N bytes as buckets, pull them in another actor, copy into a buffer."""

    def put(self, nbytes: int, bucket_bytes: int) -> list:
        import ray
        import torch

        refs, left = [], nbytes
        while left > 0:
            n = min(bucket_bytes, left)
            refs.append(ray.put(torch.ones(n // 4 + 1, dtype=torch.float32)))
            left -= n
        return refs

    def take(self, refs: list) -> float:
        import ray
        import torch

        total = 0
        for ref in refs:
            t = ray.get(ref)
            buf = torch.empty_like(t)
            buf.copy_(t)
            total += t.numel() * 4
        return total


def parse(argv: list[str] | None = None):
    p = base_parser(__doc__)
    p.add_argument("--sizes", type=lambda v: v.split(","), default=list(SIZES))
    p.add_argument("--buckets", type=lambda v: [float(x) for x in v.split(",")], default=[4.0, 16.0, 64.0],
                   help="weight_sync.bucket_mb values")
    p.add_argument("--stages", type=lambda v: [int(x) for x in v.split(",")], default=[2, 3])
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.buckets, args.stages = ["tiny"], [16.0], [2]
    return args


def main() -> int:
    args = parse()
    import ray
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
        copier = [ray.remote(Copier).options(num_cpus=0.01).remote() for _ in range(2)]
        _raw_copy(copier, 2**20, 2**20)  # warm-up: actor start and first object-store use
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
                    first = ctl.sync_weights()  # warm-up, verified by the log-prob probe
                    for _ in range(args.repeats):
                        for bucket in args.buckets:
                            cfg.weight_sync.bucket_mb = bucket
                            s = ctl.sync_weights()
                            raw = _raw_copy(copier, int(s["weight_sync/bytes"]), int(bucket * 2**20))
                            rows.append({"size": size, "params": nparams, "zero_stage": stage, "bucket_mb": bucket,
                                         "bytes": s["weight_sync/bytes"], "seconds": s["weight_sync/seconds"],
                                         "gather_seconds": s["weight_sync/gather_seconds"],
                                         "load_seconds": s["weight_sync/load_seconds"], "raw_seconds": raw})
                    print(f"[weight_sync] {size} ({nparams / 1e6:.1f}M) ZeRO-{stage}: probe "
                          f"{first.get('weight_sync/probe_max_abs_diff', float('nan')):.1e}, last "
                          f"{rows[-1]['seconds']:.3f} s vs raw {rows[-1]['raw_seconds']:.3f} s", file=sys.stderr,
                          flush=True)
                    ctl.roles.stop("learner")
                ctl.roles.stop("rollout")
        finally:
            for c in copier:
                ray.kill(c)
            stop_ray(ctl)
    table = _aggregate(rows)
    big = max(table, key=lambda t: (t["params"], t["bucket_mb"] == cfg.weight_sync.bucket_mb))
    default = [t for t in table if t["params"] == big["params"] and t["zero_stage"] == args.stages[0]]
    head = min(default, key=lambda t: abs(t["bucket_mb"] - 16.0))
    record = {
        "config": {"sizes": args.sizes, "buckets_mb": args.buckets, "zero_stages": args.stages,
                   "learner_world_size": cfg.learner.world_size, "checksum": cfg.weight_sync.checksum,
                   "device": args.device, "repeats": args.repeats, "quick": args.quick},
        "results": table, "peak_rss_mb": mem.report(),
        "headline": {"figures": f"{head['params'] / 1e6:.1f}M params ({head['gb']:.3f} GB), ZeRO-{head['zero_stage']}, "
                                f"{head['bucket_mb']:g} MB buckets: {head['seconds']['median']:.2f} s "
                                f"({head['gbps']:.2f} GB/s); raw transport {head['raw_gbps']:.2f} GB/s",
                     "ratios": {"sync / raw transport speed": head["fraction_of_raw"]}},
    }
    plot(table, args)
    emit("weight_sync", record, args)
    return 0


def _raw_copy(copier: list, nbytes: int, bucket_bytes: int) -> float:
    import ray

    t0 = time.perf_counter()
    refs = ray.get(copier[0].put.remote(nbytes, bucket_bytes))
    ray.get(copier[1].take.remote(refs))
    dt = time.perf_counter() - t0
    del refs
    return dt


def _aggregate(rows: list[dict]) -> list[dict]:
    keys = sorted({(r["params"], r["size"], r["zero_stage"], r["bucket_mb"]) for r in rows})
    out = []
    for params, size, stage, bucket in keys:
        rs = [r for r in rows if (r["params"], r["zero_stage"], r["bucket_mb"]) == (params, stage, bucket)]
        sec, raw = summarize([r["seconds"] for r in rs]), summarize([r["raw_seconds"] for r in rs])
        nbytes = rs[0]["bytes"]
        out.append({"size": size, "params": params, "zero_stage": stage, "bucket_mb": bucket, "gb": nbytes / 1e9,
                    "seconds": sec, "gather_seconds": summarize([r["gather_seconds"] for r in rs]),
                    "load_seconds": summarize([r["load_seconds"] for r in rs]), "raw_seconds": raw,
                    "gbps": nbytes / 1e9 / sec["median"], "raw_gbps": nbytes / 1e9 / raw["median"],
                    "fraction_of_raw": ratio(raw, sec)})
    return out


def plot(table: list[dict], args) -> None:
    fig, axes = new_figure(2, 5.5, 4)
    for stage in sorted({t["zero_stage"] for t in table}):
        for bucket in sorted({t["bucket_mb"] for t in table}):
            ts = [t for t in table if t["zero_stage"] == stage and t["bucket_mb"] == bucket]
            xs = [t["params"] / 1e6 for t in ts]
            axes[0].plot(xs, [t["seconds"]["median"] for t in ts], marker="o", label=f"ZeRO-{stage}, {bucket:g} MB")
            axes[1].plot(xs, [t["gbps"] for t in ts], marker="o", label=f"ZeRO-{stage}, {bucket:g} MB")
    raw = {t["params"]: t["raw_gbps"] for t in table}
    axes[1].plot([p / 1e6 for p in raw], list(raw.values()), "k--", label="raw object-store copy")
    for ax, label in zip(axes, ("seconds per full sync (median)", "GB/s")):
        ax.set_xscale("log")
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    axes[0].set_title(f"weight sync ({args.device})")
    save_plot(fig, "weight_sync", args)


if __name__ == "__main__":
    sys.exit(main())
