"""`rlframe eval`: greedy decoding of the held-out sets through the rollout workers, metrics per subset.

Subsets are the records' `split` field ("eval" when a record has none). Per subset, each reward component
the task names in `TaskData.eval_metrics` (every component, under its own name, when the task names none),
then their unweighted mean across subsets (the usual headline of multi-subset benchmarks).
"""
from __future__ import annotations

import json
import logging
import statistics
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlframe.data.rollout_batch import RolloutBatch
from rlframe.models.loading import is_vision_language, weight_layout
from rlframe.reward.scoring import json_safe, known
from rlframe.rollout.engine import SamplingSettings

if TYPE_CHECKING:
    from rlframe.trainer.driver import Driver

log = logging.getLogger("rlframe")


def subset_metrics(samples: list[dict[str, Any]], components: dict[str, list[float]],
                   metrics: dict[str, str] | None = None) -> dict[str, Any]:
    """{"subsets": {name: {n, metric: mean}}, "mean": {metric: unweighted mean over subsets}} (pure).

    `metrics`: reward component -> reported name (None or empty: every component under its own name)."""
    metrics = metrics or {k: k for k in components}
    by_subset: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_subset.setdefault(str(s.get("split") or "eval"), []).append(i)
    subsets = {}
    for name in sorted(by_subset):
        rows, row = by_subset[name], {"n": len(by_subset[name])}
        for key, metric in metrics.items():
            scored = known([components[key][i] for i in rows]) if key in components else []
            if scored:   # (a subset that no function scored, TRL's None, has no mean)
                row[metric] = statistics.fmean(scored)
        subsets[name] = row
    names = [m for m in metrics.values() if any(m in v for v in subsets.values())]
    mean = {m: statistics.fmean(v[m] for v in subsets.values() if m in v) for m in names}
    return {"subsets": subsets, "mean": mean}


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per (num_history, subset), then the mean row of each sweep value."""
    metrics = list(dict.fromkeys(m for r in results.values() for m in r["mean"]))
    lines = ["| num_history | subset | n | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for k, r in results.items():
        for name, v in r["subsets"].items():
            lines.append(f"| {k} | {name} | {v['n']} | " + " | ".join(f"{v[m]:.3f}" for m in metrics) + " |")
        n = sum(v["n"] for v in r["subsets"].values())
        lines.append(f"| {k} | **mean** | {n} | " + " | ".join(f"**{r['mean'][m]:.3f}**" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def check_policies(policies: list[str], tokenizer: Any) -> None:
    """Every eval.policies entry with a tokenizer of its own has the run's: the prompts are encoded once, with
    the tokenizer of model.init_from / model.path (by default the first policy's). That every entry is a model
    folder, config validation checked."""
    from transformers import AutoTokenizer

    from rlframe.config import ConfigError

    vocab = tokenizer.get_vocab()
    for i, path in enumerate(policies):
        own = (Path(path) / "tokenizer_config.json").is_file()
        if own and AutoTokenizer.from_pretrained(path).get_vocab() != vocab:
            raise ConfigError(f"eval.policies[{i}]={path!r}: its tokenizer differs from the one that encoded the "
                              f"prompts (model.init_from / model.path, by default the first policy's); evaluate it "
                              f"in a run of its own")


def run_eval(d: Driver) -> Path:
    """Evaluate `model.path` / `model.init_from`, or each of eval.policies in turn (a policy laid out as the last
    one is loaded into the running generators, any other restarts them; Ray, the reward workers and the encoded
    prompts serve all). Writes eval.json, eval.md and eval_predictions.jsonl into the run folder, or into
    <run>/policy-<i>/ for each policy."""
    policies = list(d.cfg.eval.policies)
    if policies:
        check_policies(policies, d.tokenizer)
        (d.run_dir / "policies.json").write_text(json.dumps({f"policy-{i}": p for i, p in enumerate(policies)},
                                                            indent=2))
    d.start_rollout_and_reward(policies[0] if policies else d.model_path)
    cfg = d.cfg   # the held-out set of each num_history value, built and encoded once for every policy
    sets = {k: d.task if k == cfg.data.num_history else d.task_spec.build(replace(cfg.data, num_history=k),
                                                                           d.cache_dir)
            for k in list(cfg.eval.num_history) or [cfg.data.num_history]}
    sets = {k: (task, d.encode_prompts(task.eval, task)) for k, task in sets.items()}
    layout = None
    for i, path in enumerate(policies or [d.model_path]):
        # a text policy laid out as the last one is loaded into the running engines; any other restarts them (a
        # VLM's checkpoint names its tensors otherwise than the model it loads into)
        last, layout = layout, None if is_vision_language(path) else weight_layout(path)
        if i and last is not None and layout == last:
            d.generators.wait(d.generators.call("load_checkpoint", d.storage.ship(path)), "start-up",
                              d.timeouts.startup_s, "startup_s")
            log.info("eval: %s loaded into the running generators (laid out as the last policy)", path)
        elif i:
            d.roles.stop("rollout")
            d.start_generators(path)
        d.wait_ready()
        out = d.run_dir / f"policy-{i}" if policies else d.run_dir
        out.mkdir(parents=True, exist_ok=True)
        evaluate_policy(d, path, out, sets)
    return d.run_dir


def evaluate_policy(d: Driver, model: str, out_dir: Path, sets: dict[int, tuple[Any, list]]) -> None:
    """Greedy decoding of the held-out sets (`sets`: num_history -> task, prompts) by the generators holding `model`."""
    cfg = d.cfg
    e = cfg.eval
    params = SamplingSettings(n=1, temperature=0.0, max_new_tokens=e.max_new_tokens or cfg.rollout.max_new_tokens,
                              repetition_penalty=e.repetition_penalty)
    results: dict[str, dict[str, Any]] = {}
    with open(out_dir / "eval_predictions.jsonl", "w") as pred_file:
        for k, (task, prompts) in sets.items():
            batch = RolloutBatch(task.eval, prompts, 1)
            d.rollout(batch, params)
            metrics = task.eval_metrics or {c: c for c in batch.components}
            results[str(k)] = subset_metrics(task.eval, batch.components, metrics)
            scored = json_safe({m: batch.components[key] for key, m in metrics.items() if key in batch.components})
            for j, (s, c) in enumerate(zip(task.eval, batch.done())):
                pred_file.write(json.dumps({"num_history": k, "id": s.get("id"), "split": s.get("split") or "eval",
                                            "answer": s.get("answer"), "completion": c.text,
                                            **{m: v[j] for m, v in scored.items()}}) + "\n")
            log.info("eval num_history=%d: %s", k, ", ".join(f"{m} {v:.3f}" for m, v in results[str(k)]["mean"].items()))
    out = {"model": model, "settings": {"greedy": True, "max_new_tokens": params.max_new_tokens,
                                        "repetition_penalty": params.repetition_penalty,
                                        "rollout_workers": cfg.rollout.num_workers},
           "num_history": results}
    (out_dir / "eval.json").write_text(json.dumps(out, indent=2))
    table = markdown_table(results)
    (out_dir / "eval.md").write_text(f"# Evaluation of {model}\n\n{table}")
    print(f"{model}:\n{table}" if cfg.eval.policies else table, end="")
