"""Run metrics: metrics.jsonl (one object per step), TensorBoard, optional Weights & Biases."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Sequence


class Tracker:
    """`resume_at`: a resumed run's metrics.jsonl is cut back to that byte offset (what the checkpoint had
    logged; later rows are redone) and TensorBoard is rebuilt from it, so no step appears twice."""

    def __init__(self, run_dir: Path, loggers: Sequence[str], config: dict[str, Any] | None = None,
                 resume_at: int | None = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        replay: list[dict[str, Any]] = []
        if resume_at is not None and self.path.exists():
            with self.path.open("r+b") as f:
                f.truncate(resume_at)
            replay = read_metrics(self.path)
            shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        self._file = self.path.open("a")
        self._tb = None
        self._wandb = None
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            for row in replay:
                self._scalars(row, to_wandb=False)
        if "wandb" in loggers:
            import wandb

            self._wandb = wandb.init(project="rlframe", dir=str(run_dir), config=config)

    def offset(self) -> int:
        """Bytes of metrics.jsonl written so far (a checkpoint records it)."""
        self._file.flush()
        return self._file.tell()

    def log(self, metrics: dict[str, Any]) -> None:
        """`metrics` must hold "step" and "stage"; scalars go to TensorBoard as <stage>/<key>."""
        self._file.write(json.dumps(metrics, sort_keys=True) + "\n")
        self._file.flush()
        self._scalars(metrics)

    def _scalars(self, metrics: dict[str, Any], to_wandb: bool = True) -> None:
        step, stage = metrics["step"], metrics["stage"]
        scalars = {f"{stage}/{k}": float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"
                   and math.isfinite(float(v))}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None and to_wandb:
            self._wandb.log(scalars)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """One JSON object per line (values JSON cannot hold, e.g. tensors, as their str)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize(rows: list[dict[str, Any]], window: int = 10) -> dict[str, Any]:
    """Did GRPO learn? First vs last `window` steps of each reward component, beside the noise.

    `noise` is the per-step standard deviation of the mean total reward, pooled over the two windows
    (each around its own mean, so the rise between them does not count as noise).
    """
    grpo = [r for r in rows if r.get("stage") == "grpo"]
    out: dict[str, Any] = {"grpo_steps": len(grpo)}
    if len(grpo) < 4:
        return out
    w = max(2, min(window, len(grpo) // 2))
    first, last = grpo[:w], grpo[-w:]
    for key in sorted(k for k in grpo[0] if k.startswith("reward/") and not k.endswith(("_std", "_groups"))):
        a = sum(r[key] for r in first) / w
        b = sum(r[key] for r in last) / w
        out[key] = {"first": round(a, 4), "last": round(b, 4), "change": round(b - a, 4)}
    sq = 0.0
    for part in (first, last):
        vals = [r["reward/total"] for r in part]
        mean = sum(vals) / w
        sq += sum((v - mean) ** 2 for v in vals)
    noise = math.sqrt(sq / (2 * w - 2))
    margin = out["reward/total"]["change"]
    out.update(window=w, margin=round(margin, 4), noise=round(noise, 4),
               margin_over_noise=round(margin / noise, 2) if noise > 0 else float("inf"))
    evals = [r for r in rows if r.get("stage") == "eval"]
    if len(evals) >= 2:
        out["eval"] = {k: {"before": round(evals[0][k], 4), "after": round(evals[-1][k], 4)}
                       for k in evals[0] if k.startswith("eval/")}
    return out


def format_summary(s: dict[str, Any]) -> str:
    if "margin" not in s:
        return f"GRPO steps: {s.get('grpo_steps', 0)} (too few to summarise)"
    lines = [f"GRPO, first {s['window']} vs last {s['window']} of {s['grpo_steps']} steps:"]
    for key, v in s.items():
        if key.startswith("reward/"):
            lines.append(f"  {key:<28} {v['first']:.3f} -> {v['last']:.3f}  ({v['change']:+.3f})")
    lines.append(f"  margin {s['margin']:+.3f} vs per-step noise (std) {s['noise']:.3f}: "
                 f"{s['margin_over_noise']:.1f}x")
    for key, v in s.get("eval", {}).items():
        lines.append(f"  held-out {key[5:]:<19} {v['before']:.3f} -> {v['after']:.3f}  (greedy)")
    return "\n".join(lines)
