"""The paper's ablation on synthetic users: base, SFT, SFT + RL without and with the profile reward.

For each seed the script runs, through the `rlframe` CLI:

1. `rlframe sft`: cold-start SFT from a freshly initialised tiny policy (it stops early once greedy
   accuracy reaches `trainer.sft.stop_threshold`, leaving headroom for RL);
2. `rlframe train trainer.stages=[grpo]` twice from that SFT checkpoint: once with the profile-similarity
   reward's weight set to 0 (the component is still computed and logged, it just does not enter the total),
   once with the default weight (0.7);
3. `rlframe eval eval.policies=[...]` of the four policies: the untrained initial model (base), the SFT
   checkpoint and both RL results, on the same held-out samples, greedy, once under each `--repetition-penalties`
   value (1.15 is the paper's, 1.0 none).

It reports accuracy per subset (SP_ID, SP_OD, MP_ID, MP_OD: seen / unseen users with single / multiple
liked terms per dimension), their unweighted mean, the format-valid rate and the profile similarity (raw
sentence-embedding cosine) and exact-term rate of the predicted profiles, as Markdown tables
(`results/ablation_<task>.md`), a plot (`results/ablation_<task>.png`) and one JSON line
(`results/ablation_<task>.jsonl`). Runs that finished before with the same settings are reused.

    rlframe bench ablation                         # text-rendered task, seed 0 (~20 min on 2 cores)
    rlframe bench ablation --task vl               # the tiny Qwen2.5-VL on images
    rlframe bench ablation --seeds 0,1 trainer.max_steps=80   # overrides go to every run

`--quick` is the test suite's smoke run: tiny budgets, and the three variants of QUICK_VARIANTS.

`--task text` trains on `data.task=preference_synthetic_splits`; `--task vl` on
`experiment=preferthinker_tiny_vl` with a longer SFT and RL budget (see VL_OVERRIDES).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, base_parser, command_line, emit, new_figure, save_plot  # noqa: E402

VARIANTS = ("base", "sft", "rl_no_profile", "rl")
LABELS = {"base": "Base (no training)", "sft": "SFT", "rl_no_profile": "SFT + RL w/o profile reward",
          "rl": "SFT + RL (full reward)"}
SUBSETS = ("SP_ID", "SP_OD", "MP_ID", "MP_OD")
#: the paper's Seen-SP (SP_ID) accuracy of the four variants (Qwen2.5-VL-7B, PreferImg)
PAPER_SP_ID = {"base": 75.4, "sft": 92.0, "rl_no_profile": 93.8, "rl": 96.6}

TEXT_OVERRIDES = ["data.task=preference_synthetic_splits", "data.num_eval=256"]
VL_OVERRIDES = ["experiment=preferthinker_tiny_vl", "data.num_train=1024", "data.num_eval=128",
                "trainer.sft.steps=1200", "trainer.sft.eval_every=100", "trainer.sft.min_steps=300",
                "trainer.sft.stop_threshold=0.6", "trainer.max_steps=40", "trainer.prompts_per_step=16",
                "trainer.eval_every=10"]
# rollout=hf in the smoke: each of its processes skips vLLM's start-up; the script's path is the same
QUICK_OVERRIDES = ["rollout=hf", "data.num_train=64", "data.num_eval=8", "trainer.sft.steps=4",
                   "trainer.sft.eval_every=0", "trainer.sft.stop_threshold=null",
                   "trainer.max_steps=1", "trainer.prompts_per_step=4", "trainer.eval_every=0",
                   "rollout.max_new_tokens=32"]
#: where the profile-similarity reward sits in conf/reward/preference.yaml's `fns`
PROFILE_FN_INDEX = 2
# the smoke run leaves out the arm without the profile reward: it is the full-reward arm's path with one override,
# which tests/test_bench.py checks against the resolved config (the arm would add a 25 s run to the test suite)
QUICK_VARIANTS = ("base", "sft", "rl")
WITHOUT_PROFILE = [f"reward.fns.{PROFILE_FN_INDEX}.weight=0.0"]


def merge_overrides(*groups: list[str]) -> list[str]:
    """Hydra overrides in order, a later value of the same key replacing the earlier one (pure)."""
    merged: dict[str, str] = {}
    for group in groups:
        for o in group:
            merged.pop(o.split("=", 1)[0], None)
            merged[o.split("=", 1)[0]] = o
    return list(merged.values())


def _run(cmd: list[str], log_path: Path) -> None:
    """One `rlframe` command; its output goes to a log file (the tail is shown if it fails)."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail)
                         + f"\nfull log: {log_path}")


def _rp_key(rp: float) -> str:
    return f"{rp:g}"


def run_seed(seed: int, out: Path, common: list[str], rlframe: str, penalties: list[float],
             variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """Train and evaluate the variants for one seed: {"evals": {penalty: {variant: eval.json}},
    "seconds": {run: s}}. A run whose result is already in `out` is not repeated (resume after a crash)."""
    out.mkdir(parents=True, exist_ok=True)
    seed_args = [f"run.seed={seed}", "trainer.progress=false", *common]
    stamp = out / "overrides.json"   # finished runs are reused only if they were made with the same settings
    if stamp.exists() and json.loads(stamp.read_text()) != seed_args:
        raise SystemExit(f"{out} holds runs made with other settings ({stamp}); pass --out or remove the folder")
    stamp.write_text(json.dumps(seed_args))
    times: dict[str, float] = {}

    def step(name: str, args: list[str], result: str) -> None:
        if (out / name / result).exists():
            print(f"  {name}: done before ({out / name / result})", file=sys.stderr)
            return
        t0 = time.perf_counter()
        _run([rlframe, *args, *seed_args, f"run.output_dir={out / name}"], out / f"{name}.log")
        times[name] = round(time.perf_counter() - t0, 1)

    step("sft", ["sft"], "final/config.json")
    sft = out / "sft" / "final"
    if "rl_no_profile" in variants:
        step("rl_no_profile", ["train", "trainer.stages=[grpo]", f"model.init_from={sft}", *WITHOUT_PROFILE],
             "final/config.json")
    step("rl", ["train", "trainer.stages=[grpo]", f"model.init_from={sft}"], "final/config.json")
    policies = {v: p for v, p in {"base": out / "sft" / "init_model", "sft": sft,
                                  "rl_no_profile": out / "rl_no_profile" / "final", "rl": out / "rl" / "final"}.items()
                if v in variants}
    evals: dict[str, dict[str, Any]] = {}
    listed = "[" + ",".join(f"'{p}'" for p in policies.values()) + "]"
    for rp in penalties:   # one `rlframe eval` of all the policies per penalty (one start-up, not one each)
        name = f"eval_rp{_rp_key(rp)}"
        step(name, ["eval", f"eval.policies={listed}", f"eval.repetition_penalty={rp}"],
             f"policy-{len(policies) - 1}/eval.json")
        evals[_rp_key(rp)] = {v: json.loads((out / name / f"policy-{i}" / "eval.json").read_text())
                              for i, v in enumerate(policies)}
    return {"evals": evals, "seconds": times}


METRIC_KEYS = ("mean_accuracy", "format_valid", "profile_similarity", "profile_exact")


def variant_metrics(eval_json: dict[str, Any]) -> dict[str, Any]:
    """The figures of one evaluated policy: accuracy per subset, the mean and the other means."""
    sweep = eval_json["num_history"]
    r = sweep[sorted(sweep, key=int)[-1]]          # the run's own num_history (or the largest of a sweep)
    return {"accuracy": {s: v["accuracy"] for s, v in r["subsets"].items()},
            "mean_accuracy": r["mean"].get("accuracy"),
            **{k: r["mean"].get(k) for k in METRIC_KEYS[1:]},
            "n": {s: v["n"] for s, v in r["subsets"].items()}}


def aggregate(per_seed: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Mean over seeds of every figure, per variant; each item of per_seed is {variant: eval.json} (pure)."""
    out = {}
    for v in VARIANTS:
        ms = [variant_metrics(s[v]) for s in per_seed if v in s]
        if not ms:
            continue
        subsets = sorted({k for m in ms for k in m["accuracy"]}, key=lambda k: (SUBSETS + (k,)).index(k))
        out[v] = {"accuracy": {k: statistics.fmean(m["accuracy"][k] for m in ms if k in m["accuracy"])
                               for k in subsets},
                  **{k: statistics.fmean(m[k] for m in ms) for k in METRIC_KEYS if all(m[k] is not None for m in ms)},
                  "n": ms[0]["n"], "seeds": len(ms)}
    return out


def markdown(table: dict[str, Any]) -> str:
    """Variant rows; accuracy per subset, the mean, format-valid rate, profile similarity and exact-term rate
    (in %), and the paper's Seen-SP accuracy beside them."""
    subsets = [s for s in SUBSETS if any(s in r["accuracy"] for r in table.values())]
    head = ["variant", *subsets, "mean acc.", "format valid", "profile sim.", "profile exact", "paper (Seen-SP)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]

    def pct(r: dict, k: str) -> str:
        return f"{100 * r[k]:.1f}" if r.get(k) is not None else "-"

    for v, r in table.items():
        cells = [LABELS[v], *(f"{100 * r['accuracy'][s]:.1f}" if s in r["accuracy"] else "-" for s in subsets),
                 f"**{100 * r['mean_accuracy']:.1f}**", pct(r, "format_valid"), pct(r, "profile_similarity"),
                 pct(r, "profile_exact"), f"{PAPER_SP_ID[v]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(tables: dict[str, dict[str, Any]], title: str, args: Any, name: str) -> Path:
    """Accuracy per subset under the first repetition penalty; the mean under each; profile exact-term rate."""
    fig, (ax, ax2, ax3) = new_figure(ncols=3, width=5.0, height=4.2)
    first = next(iter(tables))
    table = tables[first]
    subsets = [s for s in SUBSETS if any(s in r["accuracy"] for r in table.values())] + ["mean"]
    names = list(table)
    width = 0.8 / max(1, len(names))
    for i, (v, r) in enumerate(table.items()):
        ys = [100 * (r["accuracy"].get(s, 0.0) if s != "mean" else r["mean_accuracy"]) for s in subsets]
        ax.bar([x + i * width for x in range(len(subsets))], ys, width, label=LABELS[v], color=f"C{i}")
    ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(subsets))], subsets)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_title(f"{title}\ngreedy, repetition penalty {first}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    short = [LABELS[v].replace(" (", "\n(").replace(" w/o", "\nw/o") for v in names]
    width = 0.8 / max(1, len(tables))
    for j, (rp, t) in enumerate(tables.items()):
        ax2.bar([x + j * width for x in range(len(names))], [100 * t[v]["mean_accuracy"] for v in names], width,
                label=f"repetition penalty {rp}", color="k" if j == 0 else f"0.{5 + 2 * j}")
    ax2.set_xticks([x + width * (len(tables) - 1) / 2 for x in range(len(names))], short, fontsize=7)
    ax2.set_ylabel("mean accuracy over subsets (%)")
    ax2.set_ylim(0, 100)
    ax2.axhline(50, color="grey", lw=0.8, ls="--")
    ax2.legend(fontsize=7)
    ax2.set_title("mean accuracy by eval setting", fontsize=9)
    ax3.bar(range(len(names)), [100 * (table[v].get("profile_exact") or 0.0) for v in names],
            color=[f"C{i}" for i in range(len(names))])
    ax3.set_xticks(range(len(names)), short, fontsize=7)
    ax3.set_ylabel("profile terms predicted exactly (%)")
    ax3.set_ylim(0, 100)
    ax3.set_title(f"profile prediction, repetition penalty {first}", fontsize=9)
    return save_plot(fig, name, args)


def main(argv: list[str] | None = None) -> int:
    ap = base_parser(__doc__)
    ap.add_argument("--task", choices=["text", "vl"], default="text", help="text-rendered task or the VL one")
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0],
                    help="comma-separated; the whole pipeline runs once per seed (default 0)")
    ap.add_argument("--repetition-penalties", type=lambda v: [float(x) for x in v.split(",")], default=[1.15, 1.0],
                    help="evaluate every policy under each (the first is the paper's protocol); default 1.15,1.0")
    ap.add_argument("--out", default=None, help="folder for the runs (default outputs/ablation_<task>)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    args = ap.parse_args(argv)
    name = f"ablation_{args.task}"
    out = Path(args.out or ROOT / "outputs" / name)
    common = merge_overrides(TEXT_OVERRIDES if args.task == "text" else VL_OVERRIDES,
                             QUICK_OVERRIDES if args.quick else [], args.overrides)
    rlframe = str(Path(sys.executable).with_name("rlframe"))
    t0 = time.perf_counter()
    per_seed = []
    for seed in args.seeds:
        res = run_seed(seed, out / f"seed{seed}", common, rlframe, args.repetition_penalties,
                       QUICK_VARIANTS if args.quick else VARIANTS)
        per_seed.append({"seed": seed, **res})
    tables = {rp: aggregate([s["evals"][rp] for s in per_seed]) for rp in per_seed[0]["evals"]}
    md = "".join(f"Greedy, repetition penalty {rp}:\n\n{markdown(t)}\n" for rp, t in tables.items())
    title = "Ablation, text-rendered task" if args.task == "text" else "Ablation, tiny Qwen2.5-VL on images"
    png = plot(tables, title, args, name)
    if not args.no_save:
        (Path(args.results_dir) / f"{name}.md").write_text(md)
    print(md, file=sys.stderr)
    main_table = next(iter(tables.values()))
    sp = {v: round(100 * r["accuracy"].get("SP_ID", float("nan")), 1) for v, r in main_table.items()}
    order = [sp[v] for v in VARIANTS if v in sp]
    emit(name, {"command": command_line("ablation", argv), "task": args.task, "seeds": args.seeds,
                "overrides": common, "tables": tables,
                "per_seed": [{"seed": s["seed"], "seconds": s["seconds"],
                              "variants": {rp: {v: variant_metrics(e) for v, e in ev.items()}
                                           for rp, ev in s["evals"].items()}} for s in per_seed],
                "sp_id_accuracy": sp, "paper_sp_id_accuracy": PAPER_SP_ID,
                "paper_order_reproduced": all(a < b for a, b in zip(order, order[1:])),
                "plot": str(png), "wall_seconds": round(time.perf_counter() - t0, 1)}, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
