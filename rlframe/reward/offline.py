"""`rlframe reward test`: run the configured reward functions offline, on dumped rollouts or on the task's data.

The loop a researcher iterates in while writing a reward: no Ray, no model. Samples come from
``trainer.dump_rollouts`` files (``rollouts/step-*.jsonl``: each line is exactly what the reward saw in the
run) or any JSONL/JSON list of records with a completion field; ``--targets`` scores the task's own records
with their reference answers as completions. Prints each component's mean/std/min/max, per-sample time and
every failure with the sample named; exits 1 when a reward fails, 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HELP = "test reward functions offline: `rlframe reward test [overrides] --rollouts FILE` (or --targets)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="reward_command", metavar="SUBCOMMAND", required=True)
    t = sub.add_parser("test", help="score samples with the configured reward.fns and report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("overrides", nargs="*", help="Hydra overrides (reward.fns=..., experiment=...)")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--rollouts", metavar="FILE", action="append",
                     help="JSONL (or JSON list) of samples, e.g. <run>/rollouts/step-000010.jsonl (repeatable)")
    src.add_argument("--targets", action="store_true",
                     help="score the task's training records (data.*) with their reference target as completion")
    t.add_argument("--completion-field", default="completion", help="the field holding the completion text")
    t.add_argument("--limit", type=int, default=0, help="score at most N samples (0 = all)")
    t.add_argument("--show", type=int, default=5, help="failures to print in full")


def read_samples(paths: list[str], field: str) -> list[dict[str, Any]]:
    """Every record of the files; a missing file, bad JSON or a record without `field` names the line."""
    out: list[dict[str, Any]] = []
    for path in paths:
        file = Path(path)
        if not file.is_file():
            raise ValueError(f"{path}: no such file")
        text = file.read_text(errors="replace")
        rows = json.loads(text) if text.lstrip().startswith("[") else None
        numbered = (enumerate(rows, 1) if isinstance(rows, list) else
                    ((i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()))
        where = "record" if isinstance(rows, list) else "line"
        for i, row in numbered:
            try:
                rec = row if isinstance(rows, list) else json.loads(row)
            except ValueError as err:
                raise ValueError(f"{path}: {where} {i}: not JSON ({err})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get(field), str):
                raise ValueError(f"{path}: {where} {i}: expected an object with a string {field!r} field "
                                 f"(--completion-field names another)")
            rec.setdefault("id", f"{file.stem}:{i}")
            out.append({**rec, "completion": rec[field]})
    return out


def task_samples(cfg: Any) -> list[dict[str, Any]]:
    """The task's training records, each with its reference target as the completion."""
    from rlframe.tasks.registry import task_spec

    cache = Path(cfg.run.cache_dir or ".cache")
    task = task_spec(cfg.data.task).build(cfg.data, cache)
    return [{**r, "completion": r["target"]} for r in task.train if r.get("target")]


def score_report(specs: list[Any], samples: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per function: its components' statistics, failures and seconds per sample; and the failure messages."""
    from rlframe.reward.scoring import RewardSet, known

    rows, errors = [], []
    for spec in specs:
        rs = RewardSet([spec], on_error="mask")
        t0 = time.perf_counter()
        scores = rs.score(samples)
        per_sample = (time.perf_counter() - t0) / max(1, len(samples))
        failed = scores.failures.get(spec.name, 0)
        errors += scores.errors
        bad = set(scores.failed)
        for key, values in scores.components.items():
            ok = known([v for i, v in enumerate(values) if i not in bad])   # (None from a TRL-style reward: skipped)
            nan = float("nan")
            rows.append({"component": key, "mean": statistics.fmean(ok) if ok else nan,
                         "std": statistics.pstdev(ok) if ok else nan, "min": min(ok, default=nan),
                         "max": max(ok, default=nan), "failures": failed if key == spec.name else 0,
                         "skipped": len(values) - len(bad) - len(ok) if key == spec.name else 0,
                         "ms_per_sample": 1000 * per_sample if key == spec.name else None})
    return rows, errors


def format_table(rows: list[dict[str, Any]], n: int) -> str:
    head = (f"{'component':<36} {'mean':>8} {'std':>8} {'min':>8} {'max':>8} {'failed':>7} {'skipped':>7} "
            f"{'ms/sample':>10}")
    lines = [f"{n} samples", head, "-" * len(head)]
    for r in rows:
        ms = f"{r['ms_per_sample']:.3f}" if r["ms_per_sample"] is not None else ""
        lines.append(f"{r['component']:<36} {r['mean']:>8.4f} {r['std']:>8.4f} {r['min']:>8.4f} {r['max']:>8.4f} "
                     f"{r['failures']:>7} {r['skipped']:>7} {ms:>10}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from rlframe.config import ConfigError, load_config
    from rlframe.config.secrets import scrub

    try:
        cfg = load_config(list(args.overrides))
        samples = task_samples(cfg) if args.targets else read_samples(args.rollouts, args.completion_field)
    except (ConfigError, ValueError) as err:
        print(f"rlframe reward test: {scrub(str(err))}", file=sys.stderr)
        return 2
    if args.limit > 0:
        samples = samples[: args.limit]
    if not samples:
        print("rlframe reward test: no samples to score", file=sys.stderr)
        return 2
    rows, errors = score_report(list(cfg.reward.fns), samples)
    print(format_table(rows, len(samples)))
    failed = sum(r["failures"] for r in rows)
    if failed:
        print(f"\n{failed} failing sample(s); first {min(args.show, len(errors))}:")
        for msg in errors[: args.show]:
            print(f"  {scrub(msg)}")
        return 1
    return 0
