"""GRPO seconds per step, rlframe against TRL's GRPOTrainer: same model, prompts, G, lengths, optimizer, steps.

A ~20M-parameter Qwen2 (random weights, head_dim 64) is saved once; both frameworks train it for N steps on
the same P prompts of the preference task (every step uses all P, G samples each), with AdamW at the same
learning rate, the same clipped token-level loss (TRL "dapo" = rlframe token_mean), k3 KL beta to the frozen
initial model, and the same cheap reward (the task's format reward). Each side runs in its own subprocess,
interleaved (rlframe, TRL, then TRL, rlframe, ...); per-step time excludes start-up and the first step (reported
apart). rlframe runs with vLLM's compiled decode and torch.compile'd learners (COMPILED below), which pay
their compiles there; TRL runs its defaults (eager model, `transformers` generate).

    rlframe bench step_time [--repeats 3] [--steps 6] [--quick] [--device cuda] [--no-trl] [--baseline DIR]
                            [rlframe overrides, e.g. rollout.num_workers=2]

`--baseline DIR` adds a third side: the same rlframe run from another checkout of rlframe (an older commit,
say `git worktree add DIR <sha>`), interleaved with this one, for a before/after of a change; the headline is
then the median over interleaved pairs of baseline/current step time.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, emit, interleave, new_figure, ratio, save_plot, summarize  # noqa: E402

PHASES = ("generate", "reward", "reward_compute", "reward_wait", "ref", "train", "weight_sync")  # absent ones read 0
UPDATE = ("forward", "backward", "optimizer")   # the train phase's split (the slowest rank's)
# rlframe as a long run would be set up: vLLM's compiled decode and torch.compile'd learner forwards. Both
# compile once (start-up and the first step, which are reported apart). --quick leaves them out: they would add
# 30-60 s to each smoke run; tests/integration/test_learners.py checks learner.compile against eager learners.
COMPILED = ["rollout.vllm.enforce_eager=false", "learner.compile=true"]
# one GPU: one learner rank (NCCL cannot put two ranks on one device) beside the vLLM engine
GPU_OVERRIDES = ["learner.world_size=1", "learner.num_gpus_per_worker=0.5", "rollout.num_gpus_per_worker=0.5",
                 "rollout.vllm.gpu_memory_utilization=0.3"]


def parse(argv: list[str] | None = None):
    p = base_parser(__doc__)
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first is warm-up)")
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--group-size", type=int, default=4, help="G samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="both sides: rlframe's model.dtype (DeepSpeed bf16, fp32 master weights) and TRL's bf16=True "
                        "with the model loaded in bfloat16; bf16 matmuls use AMX/AVX512-BF16 where the CPU has them")
    p.add_argument("--kl", type=float, default=0.04, help="KL beta (both frameworks then keep a reference model)")
    p.add_argument("--no-trl", action="store_true", help="skip the TRL side (e.g. for a before/after only)")
    p.add_argument("--baseline", metavar="DIR", help="another rlframe checkout to run interleaved with this one")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for the rlframe side only, after the benchmark's "
                                                "own (e.g. rollout.num_workers=2): to measure a setting")
    p.add_argument("--worker", choices=["rlframe", "trl"], help=argparse_hidden())
    p.add_argument("--spec", help=argparse_hidden())
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.prompts, args.max_new_tokens = min(args.steps, 3), 4, 16
        args.hidden, args.layers, args.intermediate = 128, 2, 256
    return args


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


# ---------------------------------------------------------------------- the two workers (subprocesses)
def run_rlframe(spec: dict) -> dict:
    """One `rlframe train` GRPO run through the Driver; per-step phases from its metrics.jsonl."""
    from _workload import OUT, RoleMemory

    from rlframe.config import load_config
    from rlframe.trainer.driver import Driver

    out = OUT / "step_time" / f"rlframe-{os.getpid()}"
    gpu = spec["device"] == "cuda"
    cfg = load_config([
        "trainer.stages=[grpo]", f"model.path={spec['model']}", f"trainer.max_steps={spec['steps']}",
        f"trainer.prompts_per_step={spec['prompts']}", f"data.num_train={spec['prompts']}",
        f"algorithm.group_size={spec['group_size']}", f"algorithm.kl_coef={spec['kl']}",
        f"rollout.max_new_tokens={spec['max_new_tokens']}", f"learner.lr={spec['lr']}", "learner.warmup_steps=0",
        "trainer.eval_every=0", "trainer.progress=false", "trainer.loggers=[]",
        "reward.fns=[{name: format, weight: 1.0}]", f"run.output_dir={out}", f"model.dtype={spec['dtype']}",
        *(GPU_OVERRIDES if gpu else []), *spec.get("overrides", [])])
    t0 = time.perf_counter()
    with RoleMemory() as mem:
        run_dir = Driver(cfg).run()
    total = time.perf_counter() - t0
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("stage") == "grpo"]
    for weights in ("checkpoints", "final"):   # 330 MB a run; the metrics, logs and config stay for a reader
        shutil.rmtree(run_dir / weights, ignore_errors=True)
    return {"step_seconds": [r["timing/step"] for r in steps], "total_seconds": total,
            "phases": {ph: [r.get(f"timing/{ph}", 0.0) for r in steps] for ph in PHASES + UPDATE},
            "response_length": [r["response_length"] for r in steps], "memory_mb": mem.report()}


def run_trl(spec: dict) -> dict:
    """The same training through TRL's GRPOTrainer (CPU mode on CPU), timed by a step callback."""
    t0 = time.perf_counter()
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from _common import peak_rss_mb
    from rlframe.reward.registry import REWARDS

    fmt = REWARDS.get("format")()

    def format_reward(prompts, completions, **kw):
        out = fmt([{"completion": c} for c in completions])
        return list(out["format"] if isinstance(out, dict) else out)

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_begin(self, *a, **k):
            self.marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.marks.append(time.perf_counter())

    tok = AutoTokenizer.from_pretrained(spec["model"])
    tok.padding_side = "left"
    bf16 = spec["dtype"] == "bfloat16"   # TRL's usual bf16 set-up: weights loaded in bf16, bf16=True
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.bfloat16 if bf16 else torch.float32)
    gpu = spec["device"] == "cuda"
    cfg = GRPOConfig(
        output_dir=str(Path(spec["out"]) / f"trl-{os.getpid()}"), use_cpu=not gpu, bf16=bf16,
        per_device_train_batch_size=spec["prompts"] * spec["group_size"], gradient_accumulation_steps=1,
        num_generations=spec["group_size"], max_completion_length=spec["max_new_tokens"], temperature=1.0,
        top_p=1.0, learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, beta=spec["kl"], epsilon=0.2, epsilon_high=0.28, loss_type="dapo",
        max_steps=spec["steps"], logging_steps=1, save_strategy="no", report_to=[], seed=0,
        gradient_checkpointing=False, disable_tqdm=True, dataloader_num_workers=0)
    trainer = GRPOTrainer(model=model, reward_funcs=format_reward, args=cfg, processing_class=tok,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in spec["prompt_texts"]]))
    clock = Clock()
    trainer.add_callback(clock)
    trainer.train()
    shutil.rmtree(cfg.output_dir, ignore_errors=True)   # nothing a reader needs (no checkpoint in 6 steps)
    total = time.perf_counter() - t0
    steps = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"step_seconds": steps, "total_seconds": total, "response_length": lengths,
            "threads": torch.get_num_threads(), "memory_mb": {"trl_process": round(peak_rss_mb(), 1)}}


# ---------------------------------------------------------------------- the driver
def make_spec(args) -> dict:
    from _workload import OUT, build_model, prepare

    ctl = prepare("step_time/prep", ["trainer.stages=[grpo]", f"data.num_train={args.prompts}"])
    out = OUT / "step_time"
    model, nparams = build_model(out / "model", len(ctl.tokenizer), args.hidden, args.layers, args.intermediate,
                                 ctl.tokenizer)
    spec = {"model": str(model), "params": nparams, "prompt_texts": [s["prompt"] for s in ctl.task.train],
            "prompt_tokens": sum(map(len, ctl.train_prompts)) / len(ctl.train_prompts), "out": str(out),
            "steps": args.steps, "prompts": args.prompts, "group_size": args.group_size,
            "max_new_tokens": args.max_new_tokens, "lr": args.lr, "kl": args.kl, "device": args.device,
            "dtype": args.dtype, "overrides": ([] if args.quick else COMPILED) + args.overrides}
    (out / "spec.json").write_text(json.dumps(spec))
    return spec


def worker_run(kind: str, spec_path: Path, tree: Path | None = None) -> dict:
    """Run one side in a fresh process: no state (threads, caches, Ray) leaks between the sides.

    With `tree` the rlframe worker runs from that checkout (its own benchmarks/step_time.py and rlframe/,
    first on PYTHONPATH, so the driver and the Ray workers it starts import that tree's code)."""
    root = Path(__file__).resolve().parents[1]
    tree = (tree or root).resolve()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    if tree != root:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["RLFRAME_GIT_SHA"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, text=True,
                                                capture_output=True).stdout.strip()
    cmd = [sys.executable, str(tree / "benchmarks" / "step_time.py"), "--worker", kind, "--spec", str(spec_path)]
    label = kind if tree == root else f"{kind}@{tree}"
    print(f"[step_time] {label} run ...", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
    if proc.returncode != 0:
        raise RuntimeError(f"{label} worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["load_avg_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]   # before and after the run
    print(f"[step_time] {label}: steps {[round(s, 2) for s in res['step_seconds']]}, load {res['load_avg_1m']}",
          file=sys.stderr, flush=True)
    return res


def steady(res: dict) -> float:
    """Median seconds per step after the first (the first step pays lazy allocations and JIT)."""
    import statistics

    s = res["step_seconds"]
    return statistics.median(s[1:] if len(s) > 1 else s)


def main() -> int:
    args = parse()
    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        res = run_rlframe(spec) if args.worker == "rlframe" else run_trl(spec)
        print(json.dumps(res))
        return 0
    if args.dtype == "bfloat16" and args.device == "cpu" and not args.quick:
        from rlframe.cluster.cpu_speed import dtype_speed

        status, detail = dtype_speed("bfloat16", ["learners", "generators"])
        if status == "WARN":   # an AVX2-only CPU: both sides would measure torch's slow bf16 fallback for hours
            print(f"step_time: --dtype bfloat16 refused: {detail}; run --dtype float32", file=sys.stderr)
            return 2
    spec = make_spec(args)
    spec_path = Path(spec["out"]) / "spec.json"
    sides = {"rlframe": lambda: worker_run("rlframe", spec_path)}
    if args.baseline:
        sides["baseline"] = lambda: worker_run("rlframe", spec_path, Path(args.baseline))
    if not args.no_trl:
        sides["trl"] = lambda: worker_run("trl", spec_path)
    runs = interleave(sides, args.repeats)
    step = {k: summarize([steady(r) for r in v]) for k, v in runs.items()}
    startup = {k: summarize([r["total_seconds"] - sum(r["step_seconds"]) for r in v]) for k, v in runs.items()}
    first = {k: summarize([r["step_seconds"][0] for r in v]) for k, v in runs.items()}   # warm-up, compiles
    phases = {ph: summarize([statistics_median(r["phases"][ph][1:] or r["phases"][ph]) for r in runs["rlframe"]])
              for ph in PHASES + UPDATE}
    update = {ph: phases.pop(ph) for ph in UPDATE}
    memory = {k: {role: max(r["memory_mb"].get(role, 0.0) for r in v) for role in v[0]["memory_mb"]}
              for k, v in runs.items()}
    figures = ", ".join(f"{k} {step[k]['median']:.2f} s/step" for k in runs)
    record = {
        "config": {k: spec[k] for k in ("params", "steps", "prompts", "group_size", "max_new_tokens", "lr", "kl",
                                        "prompt_tokens", "device", "dtype", "overrides")}
        | {"repeats": args.repeats, "quick": args.quick, "baseline": args.baseline},
        "seconds_per_step": step, "startup_seconds": startup, "first_step_seconds": first, "rlframe_phases": phases,
        "rlframe_update": update,
        "response_length": {k: summarize([statistics_median(r["response_length"]) for r in v])
                            for k, v in runs.items()},
        "load_avg_1m": {k: [r["load_avg_1m"] for r in v] for k, v in runs.items()},
        "peak_rss_mb": memory,
        "headline": {"figures": f"{figures} ({spec['params'] / 1e6:.0f}M params, {args.prompts}x{args.group_size} "
                                f"samples x {args.max_new_tokens} tokens, {args.dtype})", "ratios": {}},
    }
    # each interleaved pair ran side by side under the same load: its ratio is the robust statistic
    if "baseline" in runs:
        pairs = [b / r for r, b in zip(step["rlframe"]["runs"], step["baseline"]["runs"])]
        record |= {"baseline_over_rlframe_step_time": statistics_median(pairs), "baseline_pair_ratios": pairs}
        record["headline"]["ratios"] |= {"baseline/current step time (median of pairs)": statistics_median(pairs),
                                         "baseline pairs": ", ".join(f"{x:.2f}" for x in pairs)}
    if "trl" in runs:
        pairs = [t / r for r, t in zip(step["rlframe"]["runs"], step["trl"]["runs"])]
        speedup = statistics_median(pairs)
        record |= {"trl_over_rlframe_step_time": speedup, "pair_ratios": pairs,
                   "ratio_of_medians": ratio(step["trl"], step["rlframe"]), "target": ">= 2.0 (median of pair ratios)",
                   "target_met": bool(speedup >= 2.0)}
        record["headline"]["ratios"] |= {"TRL/rlframe step time (median of pairs)": speedup,
                                         "pairs": ", ".join(f"{x:.2f}" for x in pairs)}
        record["headline"] |= {"target": "rlframe >= 2x faster", "target_met": bool(speedup >= 2.0)}
    plot(step, phases, args)
    emit("step_time", record, args)
    return 0


def statistics_median(values: list[float]) -> float:
    import statistics

    return statistics.median(values) if values else 0.0


def plot(step: dict, phases: dict, args) -> None:
    fig, ax = new_figure(1, 6, 4)
    bottom = 0.0
    for ph in PHASES:
        v = phases[ph]["median"] or 0.0
        ax.bar("rlframe", v, bottom=bottom, label=ph)
        bottom += v
    other = max(0.0, step["rlframe"]["median"] - bottom)
    ax.bar("rlframe", other, bottom=bottom, label="other", color="lightgrey")
    others = {"baseline": ("baseline rlframe", "grey"), "trl": ("TRL GRPOTrainer", "black")}
    for k, (label, color) in others.items():
        if k in step:
            ax.bar(label, step[k]["median"], color=color, label=f"{label} (total)")
    for i, k in enumerate(k for k in ("rlframe", "baseline", "trl") if k in step):
        ax.errorbar(i, step[k]["median"], yerr=[[step[k]["median"] - step[k]["min"]],
                                                [step[k]["max"] - step[k]["median"]]], color="red", capsize=4)
    ax.set_ylabel("seconds per GRPO step (median, min-max)")
    ax.set_title("step time, same model and workload")
    ax.legend(fontsize=7)
    save_plot(fig, "step_time", args)


if __name__ == "__main__":
    sys.exit(main())
