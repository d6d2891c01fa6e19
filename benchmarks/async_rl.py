"""Bounded-staleness async GRPO: trainer.max_staleness=0 vs 1, steps/s and reward per wall-clock second.

The embedded default's GRPO stage (trainer.stages=[grpo]: a vLLM generator, 2 ZeRO-2 learner ranks, a reward
worker, 32 prompts x 4 samples per step) runs with trainer.max_staleness=0 (synchronous) and =1 (the next step's
rollout generates while the learners train), interleaved k0, k1, k0, k1, ..., each run in a fresh process. All
runs start from one policy: a short SFT of the tiny init model (`--sft-steps`, default 150, made once and
reused; `--sft-steps 0` starts from the random init, where every reward is 0 and reward/s reads 0).

Per run: steps/s over the GRPO loop (steps / the sum of `timing/step`), reward per wall-clock second (the sum of
the steps' mean `reward/total` over the same time), the steady step time (median after step 1), the phase
medians (`timing/generate`, `reward`, `ref`, `train`, `weight_sync`; with k=1 also `overlap`, `wait_batch`,
`rollout/staleness_mean`) and the 1-minute load average before and after. Headline: the median over the
interleaved pairs of k1/k0 steps/s. GPU estimate from the k=0 phases, with generation and training on their own
devices (no shared cores): T_g = generate + reward, T_t = ref + train, T_s = weight_sync; k=0 takes
T_g + T_t + T_s per step, k=1 max(T_g, T_t) + T_s.

    rlframe bench async_rl [--repeats 2] [--steps 8] [--sft-steps 150] [--quick] [overrides ...]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, emit, interleave, new_figure, save_plot, summarize  # noqa: E402

PHASES = ("generate", "reward", "ref", "train", "weight_sync", "overlap", "wait_batch")  # absent ones read 0
# the generators' own pause for a sync (loading the weights); timing/weight_sync with k=1 also holds the wait for
# the generation call in flight, which the sync queues behind
KEYS = {**{ph: f"timing/{ph}" for ph in PHASES}, "sync_load": "weight_sync/load_seconds"}
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "bench" / "async_rl"


def parse(argv: list[str] | None = None):
    p = base_parser(__doc__)
    p.set_defaults(repeats=2)
    p.add_argument("--steps", type=int, default=8, help="GRPO steps per run (trainer.max_steps)")
    p.add_argument("--sft-steps", type=int, default=150, help="SFT steps of the shared start policy (0: random init)")
    p.add_argument("--worker", type=int, help=__import__("argparse").SUPPRESS)   # k, in a fresh process
    p.add_argument("--spec", help=__import__("argparse").SUPPRESS)
    p.add_argument("overrides", nargs="*", help="config overrides for every run (key=value)")
    args = p.parse_args(argv)
    if args.quick:
        # from the random init (no SFT process): a smoke run checks the path, not the rewards
        args.steps, args.sft_steps, args.repeats = min(args.steps, 3), 0, 1
        args.overrides = ["trainer.prompts_per_step=8", "rollout.max_new_tokens=32", *args.overrides]
    return args


def run_worker(spec: dict, k: int) -> dict:
    """One GRPO run through the Driver; its per-step rows from metrics.jsonl."""
    from rlframe.config import load_config
    from rlframe.trainer.driver import Driver

    out = OUT / f"k{k}-{os.getpid()}"
    cfg = load_config(["trainer.stages=[grpo]", f"trainer.max_steps={spec['steps']}", f"trainer.max_staleness={k}",
                       "trainer.eval_every=0", "trainer.progress=false", "trainer.loggers=[]", f"run.output_dir={out}",
                       *([f"model.init_from={spec['init']}"] if spec["init"] else []), *spec["overrides"]])
    t0 = time.perf_counter()
    run_dir = Driver(cfg).run()
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"rows": [r for r in rows if r.get("stage") == "grpo"], "total_seconds": time.perf_counter() - t0}


def run_side(k: int, spec_path: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(k), "--spec", str(spec_path)]
    print(f"[async_rl] k={k} run ...", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RuntimeError(f"k={k} worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    res = digest(json.loads(proc.stdout.strip().splitlines()[-1]))
    res["load_avg_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]   # before and after the run
    print(f"[async_rl] k={k}: {res['steps_per_s']:.4f} steps/s, reward/s {res['reward_per_s']:.4f}, "
          f"load {res['load_avg_1m']}", file=sys.stderr, flush=True)
    return res


def digest(res: dict) -> dict:
    """Steps/s, reward per wall second, steady step time and phase medians from a run's rows."""
    rows = res["rows"]
    loop = sum(r["timing/step"] for r in rows)
    med = lambda key: statistics.median([r.get(key, 0.0) for r in rows[1:] or rows])  # noqa: E731
    return {"steps": len(rows), "loop_seconds": loop, "steps_per_s": len(rows) / loop,
            "reward_per_s": sum(r["reward/total"] for r in rows) / loop,
            "rewards": [r["reward/total"] for r in rows], "step_seconds": [r["timing/step"] for r in rows],
            "steady_step_seconds": med("timing/step"), "phases": {ph: med(key) for ph, key in KEYS.items()},
            "staleness_mean": med("rollout/staleness_mean"), "mismatch_kl": med("mismatch/kl"),
            "total_seconds": res["total_seconds"]}


def prepare(args) -> dict:
    """The shared start policy (a short SFT, made once per --sft-steps) and the spec every run reads."""
    init = None
    if args.sft_steps:
        sft = OUT / f"sft-{args.sft_steps}"
        init = sft / "final"
        if not (init / "config.json").exists():
            print(f"[async_rl] SFT {args.sft_steps} steps -> {init}", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "rlframe.cli", "sft", f"trainer.sft.steps={args.sft_steps}",
                            "trainer.sft.eval_every=0", "trainer.sft.stop_threshold=null", "trainer.progress=false",
                            "trainer.loggers=[]", f"run.output_dir={sft}"], cwd=ROOT, check=True,
                           capture_output=True, text=True)
    spec = {"steps": args.steps, "init": str(init) if init else None, "overrides": args.overrides}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "spec.json").write_text(json.dumps(spec))
    return spec


def gpu_estimate(ph: dict) -> dict:
    t_g, t_t, t_s = ph["generate"] + ph["reward"], ph["ref"] + ph["train"], ph["weight_sync"]
    sync_step, async_step = t_g + t_t + t_s, max(t_g, t_t) + t_s
    return {"T_g": t_g, "T_t": t_t, "T_s": t_s, "k0_step": sync_step, "k1_step": async_step,
            "k1_over_k0_steps_per_s": sync_step / async_step}


def main() -> int:
    args = parse()
    if args.worker is not None:
        print(json.dumps(run_worker(json.loads(Path(args.spec).read_text()), args.worker)))
        return 0
    spec = prepare(args)
    runs = interleave({"k0": lambda: run_side(0, OUT / "spec.json"), "k1": lambda: run_side(1, OUT / "spec.json")},
                      args.repeats)
    sps = {k: summarize([r["steps_per_s"] for r in v]) for k, v in runs.items()}
    rps = {k: summarize([r["reward_per_s"] for r in v]) for k, v in runs.items()}
    pairs = [b["steps_per_s"] / a["steps_per_s"] for a, b in zip(runs["k0"], runs["k1"])]
    reward_pairs = [b["reward_per_s"] / a["reward_per_s"] if a["reward_per_s"] else None
                    for a, b in zip(runs["k0"], runs["k1"])]
    phases = {k: {ph: statistics.median([r["phases"][ph] for r in v]) for ph in KEYS} for k, v in runs.items()}
    est = gpu_estimate(phases["k0"])
    speedup = statistics.median(pairs)
    valid = [x for x in reward_pairs if x is not None]
    loads = [x for v in runs.values() for r in v for x in r["load_avg_1m"]]
    record = {
        "config": {**spec, "repeats": args.repeats, "quick": args.quick, "sft_steps": args.sft_steps},
        "steps_per_s": sps, "reward_per_s": rps, "phases_median_s": phases,
        "steady_step_seconds": {k: summarize([r["steady_step_seconds"] for r in v]) for k, v in runs.items()},
        "staleness_mean": {k: [r["staleness_mean"] for r in v] for k, v in runs.items()},
        "mismatch_kl": {k: [r["mismatch_kl"] for r in v] for k, v in runs.items()},
        "rewards": {k: [r["rewards"] for r in v] for k, v in runs.items()},
        "step_seconds": {k: [r["step_seconds"] for r in v] for k, v in runs.items()},
        "load_avg_1m": {k: [r["load_avg_1m"] for r in v] for k, v in runs.items()},
        "k1_over_k0_steps_per_s": speedup, "pair_ratios": pairs, "reward_pair_ratios": reward_pairs,
        "gpu_estimate": est,
        "headline": {"figures": f"k=0 {sps['k0']['median']:.3f} steps/s, k=1 {sps['k1']['median']:.3f} steps/s; "
                                f"reward/s {rps['k0']['median']:.3f} vs {rps['k1']['median']:.3f} "
                                f"({args.steps} GRPO steps, 1-min load {min(loads):.1f}-{max(loads):.1f})",
                     "ratios": {"k1/k0 steps/s (median of pairs)": speedup,
                                "k1/k0 reward/s (median of pairs)": statistics.median(valid) if valid else None,
                                "GPU estimate k1/k0 steps/s": est["k1_over_k0_steps_per_s"]}},
    }
    plot(runs, phases, args)
    emit("async_rl", record, args)
    return 0


def plot(runs: dict, phases: dict, args) -> None:
    fig, (left, right) = new_figure(2, 5.5, 4)
    colors = {"k0": "tab:blue", "k1": "tab:orange"}
    for k, v in runs.items():
        for i, r in enumerate(v):
            wall = [sum(r["step_seconds"][: j + 1]) for j in range(len(r["step_seconds"]))]
            left.plot(wall, r["rewards"], marker="o", ms=3, color=colors[k], alpha=0.8,
                      label=f"max_staleness={k[1]} (load {r['load_avg_1m'][0]:.1f})")
    left.set_xlabel("wall-clock seconds of the GRPO loop")
    left.set_ylabel("reward/total (step mean)")
    left.legend(fontsize=7)
    shown = (*PHASES, "sync_load")
    width = 0.4
    for j, k in enumerate(runs):
        steady = statistics.median([r["steady_step_seconds"] for r in runs[k]])
        xs = [i + (j - 0.5) * width for i in range(len(shown) + 1)]
        right.bar(xs, [phases[k][ph] for ph in shown] + [steady], width, color=colors[k],
                  label=f"max_staleness={k[1]}")
    right.set_xticks(range(len(shown) + 1), [*shown, "step"], rotation=45, fontsize=8)
    right.set_ylabel("seconds (median over steps 2.., runs)")
    right.legend(fontsize=7)
    save_plot(fig, "async_rl", args)


if __name__ == "__main__":
    sys.exit(main())
