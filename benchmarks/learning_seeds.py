"""Does the embedded default learn, beyond noise, for several seeds?

Runs `rlframe train` (the embedded default plus any overrides) once per seed, one after the other,
collects each run's summary.json, prints one JSON line with the per-seed figures, appends it to
benchmarks/results/learning_seeds.jsonl, and plots the GRPO reward curves to learning_seeds.png.

    .venv/bin/python benchmarks/learning_seeds.py --seeds 0,1,2 [override ...]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1, 2],
                    help="comma-separated, e.g. 0,1,2")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "learning_seeds"), help="folder for the runs")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    args = ap.parse_args()
    rlframe = Path(sys.executable).with_name("rlframe")
    runs = []
    for seed in args.seeds:
        run_dir = Path(args.out) / f"seed{seed}"
        cmd = [str(rlframe), "train", f"run.seed={seed}", f"data.seed={1234 + seed}",
               f"run.output_dir={run_dir}", "trainer.progress=false", *args.overrides]
        print("$", " ".join(cmd), file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        summary = json.loads((run_dir / "summary.json").read_text())
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        runs.append({"seed": seed, "wall_seconds": round(time.perf_counter() - t0, 1), "summary": summary,
                     "curve": [r["reward/total"] for r in rows if r["stage"] == "grpo"],
                     "accuracy_curve": [r["reward/accuracy"] for r in rows if r["stage"] == "grpo"]})
    line = {
        "benchmark": "learning_seeds",
        "overrides": args.overrides,
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
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "learning_seeds.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    _plot(runs, RESULTS / "learning_seeds.png")
    print(json.dumps(line))
    return 0 if line["all_learn"] else 1


def _plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
