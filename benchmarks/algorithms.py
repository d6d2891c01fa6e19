"""Learning comparison of the RL algorithms on the embedded default: one SFT policy, same RL budget.

For each seed the script runs, through the `rlframe` CLI, one after the other:

1. `rlframe sft` once: the embedded default's SFT stage (`run.seed=S data.seed=1234+S`, stopping early once
   greedy held-out accuracy reaches `trainer.sft.stop_threshold`), saved to `<out>/seed<S>/sft/final`;
2. for each algorithm, `rlframe train trainer.stages=[grpo] model.init_from=<that SFT policy> algorithm=NAME`
   (the RL stage is called `grpo` whatever the algorithm). Every algorithm gets the same budget: the same
   `trainer.max_steps`, `trainer.prompts_per_step` and `algorithm.group_size` (set to 4 for all: RLOO's own
   config says 8), the same learning rate, data, seed and evaluation. The rest of each algorithm is its own
   config file (KL, clip range, updates per batch, PPO's critic, DAPO's dynamic sampling and overlong penalty).

Each RL run evaluates its policy greedily on the 256 held-out samples (new users) before the first step and
after the last one. The script collects every run's `summary.json` and `metrics.jsonl`: held-out accuracy and
total reward before/after, the training reward and sampled accuracy of the first and last 10 steps, KL, wall
seconds and seconds per step, DAPO's dropped groups and extra generation rounds, PPO's critic figures. It
prints one JSON line, appends it to `results/algorithms.jsonl`, writes `results/algorithms.md` (a table per
algorithm and seed, the mean over seeds) and `results/algorithms.png` (training curves, held-out accuracy).

    rlframe bench algorithms                                   # seeds 0,1; grpo,rloo,reinforce_pp,ppo,dapo
    rlframe bench algorithms --steps 30                        # fewer RL steps, the same for every algorithm
    rlframe bench algorithms --algorithms grpo,gspo --seeds 0  # any conf/algorithm/ names
    rlframe bench algorithms --quick                           # smoke test: tiny data, 2 RL steps, no SFT

Runs that finished before with the same settings are reused (a run folder holding `summary.json`), so an
interrupted comparison continues where it stopped. A run that fails is reported (exit code, log tail) and the
others go on. The "What we conclude" section of an existing `algorithms.md` is kept when the file is rewritten
(it is written by hand from the numbers).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, command_line, emit, new_figure, save_plot  # noqa: E402

NAME = "algorithms"
DEFAULT_ALGORITHMS = ["grpo", "rloo", "reinforce_pp", "ppo", "dapo"]
LABELS = {"grpo": "GRPO", "rloo": "RLOO", "reinforce_pp": "REINFORCE++", "ppo": "PPO (critic)", "dapo": "DAPO",
          "dr_grpo": "Dr.GRPO", "gspo": "GSPO", "reinforce_pp_baseline": "REINFORCE++-baseline"}
#: the budget every algorithm shares (on top of the embedded default's trainer settings)
SAME_BUDGET = ["algorithm.group_size=4"]
# rollout=hf in the smoke: it skips vLLM's start-up (the script's path is the same; the test suite runs vLLM elsewhere)
QUICK_OVERRIDES = ["rollout=hf", "data.num_train=64", "data.num_eval=16", "trainer.sft.steps=10",
                   "trainer.sft.eval_every=0", "trainer.sft.stop_threshold=null", "trainer.prompts_per_step=4",
                   "rollout.max_new_tokens=48"]
CONCLUSION_HEADING = "## What we conclude"
WINDOW = 10   # first / last steps compared (summary.json's window)


def _run(cmd: list[str], log_path: Path, cwd: Path) -> int:
    """One `rlframe` command, its output in a log file; returns the exit code."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    with open(log_path, "w") as log:
        return subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def run_figures(run_dir: Path) -> dict[str, Any]:
    """The figures of one finished RL run, from its summary.json and metrics.jsonl (pure reading)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    steps = [r for r in rows if r.get("stage") == "grpo"]
    evals = [r for r in rows if r.get("stage") == "eval"]
    w = max(1, min(WINDOW, len(steps) // 2)) if steps else 1

    def window(key: str, part: list[dict]) -> float | None:
        return _mean([r.get(key) for r in part])

    out: dict[str, Any] = {
        "rl_steps": len(steps),
        "reward_first": window("reward/total", steps[:w]), "reward_last": window("reward/total", steps[-w:]),
        "sampled_accuracy_first": window("reward/accuracy", steps[:w]),
        "sampled_accuracy_last": window("reward/accuracy", steps[-w:]),
        "sampled_format_first": window("reward/format", steps[:w]),
        "sampled_format_last": window("reward/format", steps[-w:]),
        "margin_over_noise": summary.get("margin_over_noise"), "noise": summary.get("noise"),
        "kl_last": window("kl", steps[-w:]),
        "response_length_last": window("response_length", steps[-w:]),
        "seconds_per_step": statistics.median(r["timing/step"] for r in steps) if steps else None,
        "run_seconds": summary.get("seconds"),
        "curve": [r.get("reward/total") for r in steps],
        "accuracy_curve": [r.get("reward/accuracy") for r in steps],
    }
    if steps and "reward/overlong_penalty" in steps[0]:   # DAPO: the total without its length term too
        out["overlong_penalty_first"] = window("reward/overlong_penalty", steps[:w])
        out["overlong_penalty_last"] = window("reward/overlong_penalty", steps[-w:])
        out["curve_without_overlong"] = [r["reward/total"] - r["reward/overlong_penalty"] for r in steps]
    if steps and "dapo/dropped_groups" in steps[0]:
        out["dapo"] = {"dropped_groups_per_step": _mean([r["dapo/dropped_groups"] for r in steps]),
                       "rounds_per_step": _mean([r["dapo/rounds"] for r in steps]),
                       "filled_groups_per_step": _mean([r["dapo/filled_groups"] for r in steps]),
                       "dropped_groups_total": sum(r["dapo/dropped_groups"] for r in steps)}
    if steps and "critic/loss" in steps[0]:
        out["critic"] = {k.split("/", 1)[1] + "_last": window(k, steps[-w:])
                         for k in ("critic/loss", "critic/explained_var", "critic/value_mean", "critic/clip_frac")
                         if k in steps[0]}
        out["critic"]["seconds_per_step"] = statistics.median(r.get("timing/critic", 0.0) for r in steps)
    if evals:
        first, last = evals[0], evals[-1]
        out["eval_steps"] = [first.get("step"), last.get("step")]
        for k in ("accuracy", "total", "format", "profile_similarity"):
            if f"eval/{k}" in first:
                out[f"heldout_{k}_before"] = first[f"eval/{k}"]
                out[f"heldout_{k}_after"] = last[f"eval/{k}"] if len(evals) > 1 else None
    return out


def run_seed(seed: int, out: Path, algorithms: list[str], common: list[str], rl_extra: list[str],
             rlframe: str, cwd: Path, collect_only: bool = False, sft: bool = True) -> dict[str, Any]:
    """SFT once, then every algorithm's RL stage from it (`sft=False`, the smoke test: from the random init, one
    process less). Returns {"sft": {...}, "runs": {algo: figures or {"failed": ...}}}. Finished runs
    (summary.json present, same settings) are reused; with `collect_only` nothing is started and a run not
    finished yet is reported as not run."""
    out.mkdir(parents=True, exist_ok=True)
    seed_args = [f"run.seed={seed}", f"data.seed={1234 + seed}", "trainer.progress=false", *common]
    stamp = out / "overrides.json"
    settings = {"seed_args": seed_args, "rl_extra": rl_extra}
    if stamp.exists() and json.loads(stamp.read_text()) != settings:
        raise SystemExit(f"{out} holds runs made with other settings ({stamp}); pass --out or remove the folder")
    stamp.write_text(json.dumps(settings))
    result: dict[str, Any] = {"seed": seed, "runs": {}}
    sft_dir = out / "sft"
    not_run = {"failed": True, "not_run": True, "exit_code": None}
    if collect_only and sft and not (sft_dir / "final" / "config.json").exists():
        return {**result, "sft": {"steps": None, "seconds": None}, "runs": {a: dict(not_run) for a in algorithms}}
    if sft and not (sft_dir / "final" / "config.json").exists():
        t0 = time.perf_counter()
        rc = _run([rlframe, "sft", *seed_args, f"run.output_dir={sft_dir}"], out / "sft.log", cwd)
        if rc != 0:
            raise SystemExit(f"SFT failed for seed {seed} (exit {rc}):\n{_tail(out / 'sft.log')}")
        (out / "sft.seconds").write_text(f"{time.perf_counter() - t0:.1f}")
    sft_rows = [json.loads(ln) for ln in (sft_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()] \
        if sft else []
    sft_steps = [r["step"] for r in sft_rows if r.get("stage") == "sft"]
    result["sft"] = {"steps": max(sft_steps) if sft_steps else None,
                     "seconds": float((out / "sft.seconds").read_text()) if (out / "sft.seconds").exists() else None}
    for algo in algorithms:
        run_dir = out / algo
        if collect_only and not (run_dir / "summary.json").exists():
            result["runs"][algo] = dict(not_run)
            continue
        if not (run_dir / "summary.json").exists():
            t0 = time.perf_counter()
            start = [f"model.init_from={sft_dir / 'final'}"] if sft else []
            rc = _run([rlframe, "train", "trainer.stages=[grpo]", *start, f"algorithm={algo}", *SAME_BUDGET,
                       *seed_args, *rl_extra, f"run.output_dir={run_dir}"], out / f"{algo}.log", cwd)
            if rc != 0 or not (run_dir / "summary.json").exists():
                result["runs"][algo] = {"failed": True, "exit_code": rc, "log": str(out / f"{algo}.log"),
                                        "log_tail": _tail(out / f"{algo}.log")}
                print(f"  {algo} (seed {seed}) FAILED, exit {rc}: see {out / f'{algo}.log'}", file=sys.stderr)
                continue
            (run_dir / "wall.seconds").write_text(f"{time.perf_counter() - t0:.1f}")
        else:
            print(f"  {algo} (seed {seed}): done before ({run_dir})", file=sys.stderr)
        figs = run_figures(run_dir)
        wall = run_dir / "wall.seconds"
        figs["wall_seconds"] = float(wall.read_text()) if wall.exists() else figs.get("run_seconds")
        result["runs"][algo] = figs
    return result


MEAN_KEYS = ("reward_first", "reward_last", "sampled_accuracy_first", "sampled_accuracy_last",
             "heldout_accuracy_before", "heldout_accuracy_after", "heldout_total_before", "heldout_total_after",
             "kl_last", "seconds_per_step", "wall_seconds")


def aggregate(per_seed: list[dict[str, Any]], algorithms: list[str]) -> dict[str, Any]:
    """Mean over seeds of each figure, per algorithm, and the held-out accuracy change per seed (pure)."""
    out = {}
    for algo in algorithms:
        runs = [s["runs"][algo] for s in per_seed if algo in s["runs"] and not s["runs"][algo].get("failed")]
        if not runs:
            out[algo] = {"seeds": 0}
            continue
        row = {k: _mean([r.get(k) for r in runs]) for k in MEAN_KEYS}
        row["heldout_accuracy_change"] = [None if r.get("heldout_accuracy_after") is None else
                                          round(r["heldout_accuracy_after"] - r["heldout_accuracy_before"], 4)
                                          for r in runs]
        row["seeds"] = len(runs)
        out[algo] = row
    return out


def _f(x: Any, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def markdown(per_seed: list[dict[str, Any]], table: dict[str, Any], algorithms: list[str], meta: dict) -> str:
    w = meta["window"]
    head = ["algorithm", "seed", f"reward, first {w} -> last {w} steps", f"sampled accuracy, first {w} -> last {w}",
            "held-out accuracy, before -> after", "held-out reward, before -> after", "KL (last 10)",
            "s / step", "run s"]
    lines = [f"# Algorithms on the embedded default: {meta['steps']} RL steps of {meta['prompts']} prompts x "
             f"{meta['group_size']} samples each", "",
             f"`{meta['command']}` ({meta['date']}, git {meta['git']}). Per seed one SFT policy "
             "(`rlframe sft`, the embedded default's), then each algorithm's RL stage from it with the same "
             "steps, prompts per step, group size, learning rate, data and seed. Held-out: greedy, "
             f"{meta['num_eval']} samples of new users, before the first RL step and after the last. "
             "Reward and sampled accuracy: the policy's own rollouts at temperature 1, mean of the first / last "
             f"{w} steps.", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for algo in algorithms:
        for s in per_seed:
            r = s["runs"].get(algo)
            if r is None:
                continue
            if r.get("failed"):
                what = "not run" if r.get("not_run") else f"FAILED (exit {r['exit_code']})"
                lines.append(f"| {LABELS.get(algo, algo)} | {s['seed']} | {what} |"
                             + " |" * (len(head) - 3))
                continue
            lines.append("| " + " | ".join([
                LABELS.get(algo, algo), str(s["seed"]),
                f"{_f(r['reward_first'])} -> {_f(r['reward_last'])}",
                f"{_f(r['sampled_accuracy_first'])} -> {_f(r['sampled_accuracy_last'])}",
                f"{_f(r.get('heldout_accuracy_before'))} -> **{_f(r.get('heldout_accuracy_after'))}**",
                f"{_f(r.get('heldout_total_before'))} -> {_f(r.get('heldout_total_after'))}",
                _f(r.get("kl_last"), 4), _f(r.get("seconds_per_step"), 1), _f(r.get("wall_seconds"), 0)]) + " |")
    lines += ["", "Mean over seeds:", "",
              "| algorithm | seeds | reward, first -> last | sampled accuracy, first -> last | "
              "held-out accuracy, before -> after | change per seed | s / step |", "|---" * 7 + "|"]
    for algo in algorithms:
        r = table[algo]
        if not r.get("seeds"):
            lines.append(f"| {LABELS.get(algo, algo)} | 0 | no finished run | | | | |")
            continue
        ch = ", ".join("-" if c is None else f"{c:+.3f}" for c in r["heldout_accuracy_change"])
        lines.append(f"| {LABELS.get(algo, algo)} | {r['seeds']} | {_f(r['reward_first'])} -> {_f(r['reward_last'])} | "
                     f"{_f(r['sampled_accuracy_first'])} -> {_f(r['sampled_accuracy_last'])} | "
                     f"{_f(r['heldout_accuracy_before'])} -> **{_f(r['heldout_accuracy_after'])}** | {ch} | "
                     f"{_f(r['seconds_per_step'], 1)} |")
    extras = []
    for s in per_seed:
        for algo in algorithms:
            r = s["runs"].get(algo) or {}
            if "dapo" in r:
                d = r["dapo"]
                extras.append(f"- DAPO, seed {s['seed']}: {d['dropped_groups_per_step']:.1f} groups dropped per step "
                              f"(all rewards equal), {d['rounds_per_step']:.2f} generation rounds per step, "
                              f"{d['filled_groups_per_step']:.2f} groups per step filled with dropped ones; overlong "
                              f"penalty {_f(r.get('overlong_penalty_first'))} -> {_f(r.get('overlong_penalty_last'))} "
                              "(part of DAPO's reward column).")
            if "critic" in r:
                c = r["critic"]
                extras.append(f"- PPO, seed {s['seed']}: critic explained variance (last {meta['window']} steps) "
                              f"{_f(c.get('explained_var_last'))}, value loss {_f(c.get('loss_last'), 4)}, "
                              f"critic {_f(c.get('seconds_per_step'), 1)} s per step.")
    sft = ", ".join(f"seed {s['seed']}: " + (f"{s['sft']['steps']} steps" if s["sft"]["steps"] else "not run")
                    for s in per_seed)
    se = (0.75 * 0.25 / max(1, meta["num_eval"])) ** 0.5
    noise = _mean([r.get("noise") for s in per_seed for r in s["runs"].values()])
    lines += ["", f"SFT stopped at {sft}. The noise: a held-out accuracy on {meta['num_eval']} samples has a "
              f"standard error of about {se:.3f} near 0.75; the per-step training reward's standard deviation "
              f"(summary.json's `noise`, mean over runs) is {_f(noise)}.", ""]
    if extras:
        lines += ["Algorithm-specific figures:", "", *extras, ""]
    return "\n".join(lines) + "\n"


def plot(per_seed: list[dict[str, Any]], table: dict[str, Any], algorithms: list[str], args: Any) -> Path:
    fig, (ax1, ax2, ax3) = new_figure(ncols=3, width=5.2, height=4.2)

    def smooth(ys: list[float], k: int = 5) -> list[float]:
        return [statistics.fmean(ys[max(0, i - k + 1): i + 1]) for i in range(len(ys))]

    for i, algo in enumerate(algorithms):
        for ax, key in ((ax1, "curve"), (ax2, "accuracy_curve")):
            curves = [s["runs"][algo][key] for s in per_seed
                      if algo in s["runs"] and not s["runs"][algo].get("failed") and s["runs"][algo].get(key)]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            mean = [statistics.fmean(c[j] for c in curves) for j in range(n)]
            ax.plot(range(1, n + 1), mean, color=f"C{i}", alpha=0.25)
            ax.plot(range(1, n + 1), smooth(mean), color=f"C{i}", label=LABELS.get(algo, algo))
    ax1.set_title("training reward per step (mean of seeds;\n5-step mean bold; DAPO: kept groups, with its "
                  "length penalty)", fontsize=8)
    ax2.set_title("sampled accuracy per step (T=1, mean of seeds)", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_xlabel("RL step")
        ax.legend(fontsize=7)
    names = [a for a in algorithms if table[a].get("seeds")]
    xs = range(len(names))
    ax3.bar([x - 0.2 for x in xs], [table[a]["heldout_accuracy_before"] for a in names], 0.4, color="0.75",
            label="before RL (SFT policy)")
    ax3.bar([x + 0.2 for x in xs], [table[a]["heldout_accuracy_after"] or 0.0 for a in names], 0.4,
            color=[f"C{algorithms.index(a)}" for a in names], label="after RL")
    for x, a in zip(xs, names):
        for s in per_seed:
            r = s["runs"].get(a) or {}
            if r.get("heldout_accuracy_after") is not None:
                ax3.plot(x + 0.2, r["heldout_accuracy_after"], "k.", ms=6)
                ax3.plot(x - 0.2, r["heldout_accuracy_before"], "k.", ms=6)
    ax3.set_xticks(list(xs), [LABELS.get(a, a) for a in names], fontsize=7, rotation=15)
    lows = [r.get(k) for s in per_seed for r in s["runs"].values()
            for k in ("heldout_accuracy_before", "heldout_accuracy_after") if r.get(k) is not None]
    ax3.set_ylim(min([0.4, *[v - 0.05 for v in lows]]), 1.0)
    ax3.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax3.set_ylabel("held-out accuracy (greedy, new users)")
    ax3.set_title("held-out accuracy, mean of seeds (dots: seeds)", fontsize=9)
    ax3.legend(fontsize=7, loc="upper left")
    return save_plot(fig, NAME, args)


def _keep_conclusion(path: Path) -> str:
    """The hand-written conclusion of an existing algorithms.md, to carry over when the file is rewritten."""
    if not path.exists():
        return ""
    text = path.read_text()
    i = text.find(CONCLUSION_HEADING)
    return text[i:] if i >= 0 else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1],
                    help="comma-separated; one SFT per seed, every algorithm from it (default 0,1)")
    ap.add_argument("--algorithms", type=lambda v: v.split(","), default=DEFAULT_ALGORITHMS,
                    help=f"comma-separated conf/algorithm names (default {','.join(DEFAULT_ALGORITHMS)})")
    ap.add_argument("--steps", type=int, default=None,
                    help="RL steps for every algorithm (default: the embedded default's trainer.max_steps)")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="held-out evaluation every N RL steps (default: only before the first and after the last)")
    ap.add_argument("--out", default=None, help="folder for the runs (default outputs/algorithms)")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny data, 2 RL steps from the random init")
    ap.add_argument("--collect-only", action="store_true",
                    help="start nothing: tabulate the runs already finished in --out (the others: not run)")
    ap.add_argument("--no-save", action="store_true", help="print the JSON line but do not write results/")
    ap.add_argument("--results-dir", default=str(RESULTS), help="folder for algorithms.jsonl, .md and .png")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run (SFT and RL)")
    args = ap.parse_args(argv)
    steps = args.steps if args.steps is not None else (2 if args.quick else 50)   # conf/trainer/default.yaml
    eval_every = args.eval_every or steps
    common = [*(QUICK_OVERRIDES if args.quick else []), *args.overrides]
    rl_extra = [f"trainer.max_steps={steps}", f"trainer.eval_every={eval_every}"]
    out = Path(args.out or ROOT / "outputs" / (f"{NAME}_quick" if args.quick else NAME))
    rlframe = str(Path(sys.executable).with_name("rlframe"))
    t0 = time.perf_counter()
    per_seed = [run_seed(seed, out / f"seed{seed}", args.algorithms, common, rl_extra, rlframe, ROOT,
                         args.collect_only, sft=not args.quick) for seed in args.seeds]
    table = aggregate(per_seed, args.algorithms)
    first_cfg = next((out / f"seed{s['seed']}" / a / "config.yaml" for s in per_seed for a in args.algorithms
                      if not s["runs"].get(a, {}).get("failed")), None)
    prompts, num_eval = 32, 256
    if first_cfg is not None and first_cfg.exists():
        import yaml

        cfg = yaml.safe_load(first_cfg.read_text())
        prompts, num_eval = cfg["trainer"]["prompts_per_step"], cfg["data"].get("num_eval", num_eval)
    from _common import _git_sha

    meta = {"window": max(1, min(WINDOW, steps // 2)), "steps": steps, "prompts": prompts, "group_size": 4, "num_eval": num_eval,
            "command": command_line(NAME, argv), "date": time.strftime("%Y-%m-%d"), "git": _git_sha()}
    failed = [f"{a} (seed {s['seed']})" for s in per_seed for a, r in s["runs"].items()
              if r.get("failed") and not r.get("not_run")]
    not_run = [f"{a} (seed {s['seed']})" for s in per_seed for a, r in s["runs"].items() if r.get("not_run")]
    png = plot(per_seed, table, args.algorithms, args)
    md = markdown(per_seed, table, args.algorithms, meta)
    if not args.no_save:
        md_path = Path(args.results_dir) / f"{NAME}.md"
        conclusion = _keep_conclusion(md_path)
        md_path.write_text(md + ("\n" + conclusion if conclusion else ""))
    print(md, file=sys.stderr)
    slim = [{"seed": s["seed"], "sft": s["sft"],
             "runs": {a: {k: v for k, v in r.items() if k not in ("curve", "accuracy_curve", "curve_without_overlong")}
                      for a, r in s["runs"].items()},
             "curves": {a: {k: r.get(k) for k in ("curve", "accuracy_curve")}
                        for a, r in s["runs"].items() if not r.get("failed")}} for s in per_seed]
    best = max((a for a in args.algorithms if table[a].get("heldout_accuracy_after") is not None),
               key=lambda a: table[a]["heldout_accuracy_after"], default=None)
    emit(NAME, {"seeds": args.seeds, "algorithms": args.algorithms, "quick": args.quick,
                "budget": {"rl_steps": steps, "prompts_per_step": prompts, "group_size": 4, "eval_every": eval_every},
                "overrides": {"common": common, "rl": [*SAME_BUDGET, *rl_extra]},
                "table": table, "per_seed": slim, "failed": failed, "not_run": not_run,
                "best_heldout_accuracy_after": best, "plot": str(png),
                "wall_seconds": round(time.perf_counter() - t0, 1)}, args)
    return 1 if failed or not_run else 0


if __name__ == "__main__":
    sys.exit(main())
