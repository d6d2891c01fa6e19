"""Does the embedded default learn, beyond noise, for several seeds?

Runs `rlframe train` (the embedded default plus any overrides) once per seed, one after the other,
collects each run's summary.json, prints one JSON line with the per-seed figures, appends it to
benchmarks/results/learning_seeds.jsonl, and plots the GRPO reward curves to learning_seeds.png.

    rlframe bench learning_seeds --seeds 0,1,2 [override ...]
    rlframe bench learning_seeds --quick --no-save      # smoke test: one seed, tiny data, 4 GRPO steps
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, base_parser, emit, new_figure, save_plot

#: smoke test (--quick): one seed, a few SFT and 4 GRPO steps (the fewest run summaries compare) on tiny data;
#: rollout=hf skips vLLM's start-up (the script's path is the same; the test suite runs vLLM elsewhere)
QUICK_OVERRIDES = ["rollout=hf", "data.num_train=64", "data.num_eval=8", "trainer.sft.steps=4", "trainer.sft.eval_every=0",
                   "trainer.sft.stop_threshold=null", "trainer.max_steps=4", "trainer.prompts_per_step=4",
                   "trainer.eval_every=4", "rollout.max_new_tokens=32"]


def main(argv: list[str] | None = None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="comma-separated, e.g. 0,1,2 (default 0,1,2; --quick: 0)")
    ap.add_argument("--out", default=None, help="folder for the runs (default outputs/learning_seeds)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    args = ap.parse_args(argv)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    out = Path(args.out or ROOT / "outputs" / ("learning_seeds_quick" if args.quick else "learning_seeds"))
    overrides = [*(QUICK_OVERRIDES if args.quick else []), *args.overrides]
    rlframe = Path(sys.executable).with_name("rlframe")
    runs = []
    for seed in seeds:
        run_dir = out / f"seed{seed}"
        cmd = [str(rlframe), "train", f"run.seed={seed}", f"data.seed={1234 + seed}",
               f"run.output_dir={run_dir}", "trainer.progress=false", *overrides]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        summary = json.loads((run_dir / "summary.json").read_text())
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        runs.append({"seed": seed, "wall_seconds": round(time.perf_counter() - t0, 1), "summary": summary,
                     "curve": [r["reward/total"] for r in rows if r["stage"] == "grpo"],
                     "accuracy_curve": [r["reward/accuracy"] for r in rows if r["stage"] == "grpo"]})
    line = {
        "overrides": overrides,
        "quick": args.quick,
        "seeds": [{"seed": r["seed"], "wall_seconds": r["wall_seconds"],
                   "reward_first": r["summary"]["reward/total"]["first"],
                   "reward_last": r["summary"]["reward/total"]["last"],
                   "margin": r["summary"]["margin"], "noise": r["summary"]["noise"],
                   "margin_over_noise": r["summary"]["margin_over_noise"],
                   "accuracy_first": r["summary"]["reward/accuracy"]["first"],
                   "accuracy_last": r["summary"]["reward/accuracy"]["last"],
                   "format_last": r["summary"]["reward/format"]["last"],
                   "eval": r["summary"].get("eval", {})} for r in runs],
        "all_learn": all(r["summary"]["margin"] > r["summary"]["noise"] for r in runs),
    }
    line["plot"] = str(_plot(runs, args))
    emit("learning_seeds", line, args)
    return 0 if line["all_learn"] or args.quick else 1


def _plot(runs: list[dict], args) -> Path:
    fig, axes = new_figure(ncols=2, width=5.5)
    for r in runs:
        for ax, key in zip(axes, ("curve", "accuracy_curve")):
            ys = r[key]
            smooth = [sum(ys[max(0, i - 4): i + 1]) / len(ys[max(0, i - 4): i + 1]) for i in range(len(ys))]
            line, = ax.plot(range(1, len(ys) + 1), ys, alpha=0.3)
            ax.plot(range(1, len(ys) + 1), smooth, color=line.get_color(), label=f"seed {r['seed']}")
    axes[0].set_title("GRPO: mean total reward per step (5-step mean bold)")
    axes[1].set_title("GRPO: accuracy reward per step (sampled, T=1)")
    for ax in axes:
        ax.set_xlabel("GRPO step")
        ax.legend()
    return save_plot(fig, "learning_seeds", args)


if __name__ == "__main__":
    sys.exit(main())
