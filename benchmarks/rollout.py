"""Rollout throughput: rlframe's Ray generator actors against the same vLLM engine in-process and HF generate.

The default run's policy, prompts and sampling settings (G samples per prompt, temperature, top-p,
max_new_tokens) are sent (a) through rlframe's rollout layer (Driver.generate -> RolloutWorker actors
-> vLLM), with 1 and 2 workers, (b) to the same vLLM engine class built in this process, and (c) to
transformers `generate` in this process, interleaved per repeat (the order rotated) at several batch sizes. Each
ratio is the median over repeats of the two sides' tokens/s in the same repeat. Target: the rollout layer keeps
>= 95% of in-process vLLM's tokens/s with one worker. `--block-sizes 128` adds a one-worker
generator per KV-cache block size (rollout.vllm.block_size), against the default's (64 tokens on CPU).

    rlframe bench rollout [--repeats 5] [--batch-sizes 8,32,64] [--block-sizes 128] [--quick] [--device cuda]
"""
from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (base_parser, emit, interleave, new_figure, pair_median, pair_ratios, save_plot,  # noqa: E402
                     summarize)


def parse(argv: list[str] | None = None):
    p = base_parser(__doc__, repeats=5)   # one repeat's pair ratio moved by +-8% on 2 shared cores
    p.add_argument("--batch-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[8, 32, 64],
                   help="prompts per request (the default run sends trainer.prompts_per_step=32)")
    p.add_argument("--workers", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2],
                   help="rollout.num_workers settings to compare")
    p.add_argument("--no-hf", action="store_true", help="skip transformers generate (slow on big batches)")
    p.add_argument("--block-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[],
                   help="rollout.vllm.block_size settings to compare with the default, one 1-worker generator each")
    p.add_argument("overrides", nargs="*", help="config overrides for the workload (e.g. rollout.max_new_tokens=64)")
    args = p.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.workers = [4], [1]
        args.overrides = ["rollout.max_new_tokens=32", *args.overrides]
    return args


def main() -> int:
    args = parse()
    import torch
    from _workload import RoleMemory, prepare, start_ray, stop_ray

    from rlframe.cluster.roles import Roles
    from rlframe.rollout.engine import SamplingSettings
    from rlframe.rollout.generator import make_engine, rollout_threads
    from rlframe.rollout.hf_engine import HFEngine
    from rlframe.trainer.roles import ROLES

    gpu = args.device == "cuda"
    ov = ["trainer.stages=[grpo]", f"data.num_train={max(args.batch_sizes)}", *args.overrides]
    if gpu:
        ov += ["rollout.num_gpus_per_worker=0.2", "rollout.vllm.gpu_memory_utilization=0.15"]
    ctl = prepare("rollout/prep", ov)
    cfg, r = ctl.cfg, ctl.cfg.rollout
    params = SamplingSettings(n=cfg.algorithm.group_size, temperature=r.temperature, top_p=r.top_p,
                              top_k=r.top_k, max_new_tokens=r.max_new_tokens)
    threads = rollout_threads(r)  # the in-process engines get what one actor of a 1-worker group gets
    results: dict[str, dict] = {}
    with RoleMemory() as mem:
        pools: dict = {}
        # every group lives at once
        start_ray(ctl, cpus=(sum(args.workers) + len(args.block_sizes)) * r.num_cpus_per_worker)
        try:
            import ray

            # one generator role per worker count (and per KV block size, 1 worker), each in a pool of its own
            for w in [*args.workers, *(f"b{b}" for b in args.block_sizes)]:
                cfg_w = copy.deepcopy(cfg)
                cfg_w.rollout.num_workers = w if isinstance(w, int) else 1
                if not isinstance(w, int):
                    cfg_w.rollout.vllm.block_size = int(w[1:])
                pools[w] = Roles({"rollout": ROLES["rollout"]}, cfg_w, cfg.cluster.placement_strategy)
                pools[w].start("rollout", (ctl.model_path, str(ctl.tokenizer_dir), cfg_w.rollout, cfg.model.dtype,
                                           cfg.run.seed, ctl.eos_id, ctl.pad_id))
            groups = {w: roles["rollout"] for w, roles in pools.items()}
            ray.get([ref for g in groups.values() for ref in g.call("ready")])
            os.environ["OMP_NUM_THREADS"] = str(threads)  # what vLLM-CPU sizes its thread pool from
            torch.set_num_threads(threads)
            inproc = make_engine(ctl.model_path, r, cfg.model.dtype, cfg.run.seed, ctl.eos_id, ctl.pad_id)
            hf = None if args.no_hf else HFEngine(ctl.model_path, dtype=cfg.model.dtype,
                                                   device="cuda" if gpu else "cpu", eos_token_id=ctl.eos_id,
                                                   pad_token_id=ctl.pad_id)

            def through_ray(workers: int, prompts, stream: bool = False):
                ctl.roles.groups["rollout"] = groups[workers]
                # stream: what the GRPO loop uses when reward.stream_batch > 0 (groups as they finish)
                return [c for part in (ctl.generate_stream if stream else ctl.generate)(prompts, params)
                        for c in part]

            for bs in args.batch_sizes:
                prompts = ctl.train_prompts[:bs]
                configs = {f"rlframe_ray_w{w}": (lambda p=prompts, w=w: through_ray(w, p)) for w in args.workers}
                configs.update({f"rlframe_ray_w1_block{b}": (lambda p=prompts, b=b: through_ray(f"b{b}", p))
                                for b in args.block_sizes})
                if 1 in groups:
                    configs["rlframe_ray_w1_stream"] = lambda p=prompts: through_ray(1, p, stream=True)
                configs["vllm_inprocess"] = lambda p=prompts: inproc.generate(p, params)
                if hf is not None:
                    configs["hf_generate"] = lambda p=prompts: hf.generate(p, params)
                for fn in configs.values():  # warm-up: first calls pay allocations and kernel selection
                    fn()
                # a one-worker group's actor says how long its engine took: the rest is what the layer costs
                one = {"rlframe_ray_w1": 1, "rlframe_ray_w1_stream": 1,
                       **{f"rlframe_ray_w1_block{b}": f"b{b}" for b in args.block_sizes}}
                actor = {k: groups[g].actors[0] for k, g in one.items() if k in configs}
                runs = interleave({k: (lambda f=f, a=actor.get(k): _measure(f, a)) for k, f in configs.items()},
                                  args.repeats)
                results[str(bs)] = {k: {"tokens_per_s": summarize([x[0] for x in v]),
                                        "samples_per_s": summarize([x[1] for x in v]),
                                        "mean_tokens": v[0][2],
                                        "load_avg_1m": summarize([x[3] for x in v]),
                                        **({"engine_share": summarize([x[4] for x in v])} if k in actor else {})}
                                    for k, v in runs.items()}
                print(f"[rollout] batch {bs}: " + ", ".join(f"{k} {v['tokens_per_s']['median']:.0f} tok/s"
                                                            for k, v in results[str(bs)].items()),
                      file=sys.stderr, flush=True)
            threads = torch.get_num_threads()  # what the in-process engines ran with
        finally:
            ctl.roles.groups.pop("rollout", None)
            for roles in pools.values():
                roles.stop_all()
            stop_ray(ctl)
    default_bs = str(cfg.trainer.prompts_per_step if str(cfg.trainer.prompts_per_step) in results
                     else args.batch_sizes[-1])
    at = results[default_bs]

    def pairs(a: str, b: str) -> float | None:   # median of the repeats' a/b tokens-per-second ratios
        if a not in at or b not in at:
            return None
        return pair_median(at[a]["tokens_per_s"]["runs"], at[b]["tokens_per_s"]["runs"])

    keep = pairs("rlframe_ray_w1", "vllm_inprocess")
    keep_stream = pairs("rlframe_ray_w1_stream", "vllm_inprocess")
    vs_hf = pairs("rlframe_ray_w1", "hf_generate")
    scaling = {f"w{w}_over_w1": pairs(f"rlframe_ray_w{w}", "rlframe_ray_w1") for w in args.workers if w != 1}
    blocks = {f"w1_over_w1_block{b}": pairs("rlframe_ray_w1", f"rlframe_ray_w1_block{b}") for b in args.block_sizes}
    loads = [x for v in at.values() for x in v["load_avg_1m"]["runs"]]
    ratios = {"vs in-process vLLM (median of pairs)": keep,
              "streamed vs in-process vLLM (median of pairs)": keep_stream,
              "vs HF generate (median of pairs)": vs_hf, **scaling, **blocks}
    keep_pairs = pair_ratios(at["rlframe_ray_w1"]["tokens_per_s"]["runs"],
                             at["vllm_inprocess"]["tokens_per_s"]["runs"]) if "rlframe_ray_w1" in at else []
    share = {k: at[c]["engine_share"]["median"] for k, c in (("plain", "rlframe_ray_w1"),
                                                             ("streamed", "rlframe_ray_w1_stream")) if c in at}
    ratios |= {f"engine's share of a {k} call (1 worker)": v for k, v in share.items()}
    met = keep is not None and keep >= 0.95 and (keep_stream is None or keep_stream >= 0.95)
    record = {
        "config": {"group_size": params.n, "temperature": params.temperature, "top_p": params.top_p,
                   "max_new_tokens": params.max_new_tokens, "batch_sizes": args.batch_sizes, "workers": args.workers,
                   "model": cfg.model.hidden_size, "default_batch": int(default_bs), "driver_threads": threads,
                   "device": args.device, "repeats": args.repeats, "quick": args.quick, "overrides": args.overrides,
                   "block_sizes": args.block_sizes},
        "by_batch_size": results, "ray_w1_over_inprocess": keep, "pair_ratios": keep_pairs,
        "ray_w1_stream_over_inprocess": keep_stream, "engine_share": share,
        "ray_w1_over_hf": vs_hf, "worker_scaling": scaling, "block_size_ratios": blocks,
        "block_size": r.vllm.block_size,
        "tokens_per_s": at.get("rlframe_ray_w1", {}).get("tokens_per_s", {}).get("median"),
        "peak_rss_mb": mem.report(), "target": ">= 0.95", "target_met": met,
        "headline": {"figures": f"rlframe (1 worker) {at['rlframe_ray_w1']['tokens_per_s']['median']:.0f} tok/s, "
                               f"in-process vLLM {at['vllm_inprocess']['tokens_per_s']['median']:.0f} tok/s "
                               f"({default_bs} prompts x G={params.n}, 1-min load {min(loads):.1f}-{max(loads):.1f})",
                     "ratios": {k: v for k, v in ratios.items() if v is not None},
                     "target": ">= 95% of in-process vLLM (both paths)", "target_met": met},
    }
    plot(results, args)
    emit("rollout", record, args)
    return 0


def _measure(fn, actor=None) -> tuple[float, float, float, float, float | None]:
    """tokens/s, samples/s, mean tokens per sample, the 1-minute load average right after the call, and with a
    generator `actor` the share of the call's time its engine took (the rest: decoding, Ray's calls and copies)."""
    import ray

    t0 = time.perf_counter()
    comps = fn()
    dt = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for c in comps)
    share = ray.get(actor.last_engine_seconds.remote()) / dt if actor is not None else None
    return tokens / dt, len(comps) / dt, tokens / max(1, len(comps)), round(os.getloadavg()[0], 2), share


def plot(results: dict, args) -> None:
    fig, ax = new_figure(1, 6.5, 4)
    sizes = [int(b) for b in results]
    for k in next(iter(results.values())):
        med = [results[str(b)][k]["tokens_per_s"]["median"] for b in sizes]
        lo = [m - results[str(b)][k]["tokens_per_s"]["min"] for m, b in zip(med, sizes)]
        hi = [results[str(b)][k]["tokens_per_s"]["max"] - m for m, b in zip(med, sizes)]
        ax.errorbar(sizes, med, yerr=[lo, hi], marker="o", capsize=3, label=k)
    ax.set_xlabel("prompts per request (G samples each)")
    ax.set_ylabel("generated tokens / s (median, min-max)")
    ax.set_xscale("log", base=2)
    ax.set_title(f"rollout throughput ({args.device})")
    ax.legend(fontsize=8)
    save_plot(fig, "rollout", args)


if __name__ == "__main__":
    sys.exit(main())
