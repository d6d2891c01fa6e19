"""`rlframe eval`: greedy decoding of the held-out sets through the rollout workers, metrics per subset.

Subsets are the records' `split` field (SP_ID, SP_OD, MP_ID, MP_OD for PreferImg-style data; "eval" when
a task has none). Per subset: accuracy, format-valid rate, and profile-prediction similarity (the mean
sentence-embedding cosine of the predicted to the ground-truth profiles, `profile_cosine_raw`, when the
profile_similarity reward is configured) and `profile_exact` (the fraction of profile terms predicted exactly);
then their unweighted mean across subsets, as the paper reports.
"""
from __future__ import annotations

import json
import logging
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

log = logging.getLogger("rlframe")

# reward component -> reported metric
METRICS = {"accuracy": "accuracy", "format": "format_valid", "profile_cosine_raw": "profile_similarity",
           "profile_exact": "profile_exact"}


def subset_metrics(samples: list[dict[str, Any]], components: dict[str, list[float]]) -> dict[str, Any]:
    """{"subsets": {name: {n, metric: mean}}, "mean": {metric: unweighted mean over subsets}} (pure)."""
    by_subset: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_subset.setdefault(str(s.get("split") or "eval"), []).append(i)
    subsets = {}
    for name in sorted(by_subset):
        rows = by_subset[name]
        subsets[name] = {"n": len(rows), **{metric: statistics.fmean(components[key][i] for i in rows)
                                            for key, metric in METRICS.items() if key in components}}
    metrics = [m for m in METRICS.values() if any(m in v for v in subsets.values())]
    mean = {m: statistics.fmean(v[m] for v in subsets.values()) for m in metrics}
    return {"subsets": subsets, "mean": mean}


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per (num_history, subset), then the mean row of each sweep value."""
    metrics = [m for m in METRICS.values() if any(m in r["mean"] for r in results.values())]
    lines = ["| num_history | subset | n | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for k, r in results.items():
        for name, v in r["subsets"].items():
            lines.append(f"| {k} | {name} | {v['n']} | " + " | ".join(f"{v[m]:.3f}" for m in metrics) + " |")
        n = sum(v["n"] for v in r["subsets"].values())
        lines.append(f"| {k} | **mean** | {n} | " + " | ".join(f"**{r['mean'][m]:.3f}**" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def run_eval(ctl: Any) -> Path:
    """Evaluate `model.path` / `model.init_from` (a Controller does the set-up); writes eval.json, eval.md
    and eval_predictions.jsonl into the run folder."""
    from rlframe.rollout.engine import SamplingSettings
    from rlframe.tasks.registry import TASKS

    cfg = ctl.cfg
    e = cfg.eval
    params = SamplingSettings(n=1, temperature=0.0, max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens,
                              repetition_penalty=e.repetition_penalty)
    sweep = list(e.num_history) or [cfg.data.num_history]
    results: dict[str, dict[str, Any]] = {}
    with open(ctl.run_dir / "eval_predictions.jsonl", "w") as pred_file:
        for k in sweep:
            task = ctl.task if k == cfg.data.num_history else TASKS[cfg.data.task](
                replace(cfg.data, num_history=k), ctl.cache_dir)
            comps = ctl.generate(ctl.encode_prompts(task.eval, task), params)
            samples = [task.eval[c["prompt_index"]] for c in comps]   # aligned with comps and the scores
            scored = ctl.score([ctl._sample(s, c) for s, c in zip(samples, comps)])
            results[str(k)] = subset_metrics(samples, scored["components"])
            for j, (s, c) in enumerate(zip(samples, comps)):
                pred_file.write(json.dumps({"num_history": k, "id": s.get("id"), "split": s.get("split") or "eval",
                                            "answer": s.get("answer"), "completion": c["text"],
                                            **{m: scored["components"][key][j] for key, m in METRICS.items()
                                               if key in scored["components"]}}) + "\n")
            log.info("eval num_history=%d: %s", k, ", ".join(f"{m} {v:.3f}" for m, v in results[str(k)]["mean"].items()))
    out = {"model": ctl.model_path, "settings": {"greedy": True, "max_new_tokens": params.max_new_tokens,
                                                  "repetition_penalty": params.repetition_penalty,
                                                  "rollout_workers": cfg.rollout.num_workers},
           "num_history": results}
    (ctl.run_dir / "eval.json").write_text(json.dumps(out, indent=2))
    table = markdown_table(results)
    (ctl.run_dir / "eval.md").write_text(f"# Evaluation of {ctl.model_path}\n\n{table}")
    print(table, end="")
    return ctl.run_dir
