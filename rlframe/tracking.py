"""Run metrics: metrics.jsonl (one object per step), TensorBoard, optional Weights & Biases."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence


class Tracker:
    def __init__(self, run_dir: Path, loggers: Sequence[str], config: dict[str, Any] | None = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        self._file = self.path.open("a")
        self._tb = None
        self._wandb = None
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in loggers:
            import wandb

            self._wandb = wandb.init(project="rlframe", dir=str(run_dir), config=config)

    def log(self, metrics: dict[str, Any]) -> None:
        """`metrics` must hold "step" and "stage"; scalars go to TensorBoard as <stage>/<key>."""
        self._file.write(json.dumps(metrics, sort_keys=True) + "\n")
        self._file.flush()
        step, stage = metrics["step"], metrics["stage"]
        scalars = {f"{stage}/{k}": float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"
                   and math.isfinite(float(v))}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
