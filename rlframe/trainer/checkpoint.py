"""Complete checkpoints on disk: written atomically, found again, pruned (no Ray, no DeepSpeed).

A checkpoint is a folder ``<run>/checkpoints/<seq>-<stage>-step<step>/`` holding what the driver's save
function writes (each learner's DeepSpeed checkpoint under ``learner/``, the Hugging Face policy under
``policy/``), the driver's ``state.pt`` (run state, RNG, generator RNG, metrics position) and, written last,
the ``COMPLETE`` marker. It is built under a ``.tmp-`` name and renamed, so a run killed while writing leaves
an incomplete folder that resuming skips with a message.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

log = logging.getLogger("rlframe")
ROOT = "checkpoints"
MARKER = "COMPLETE"
STATE = "state.pt"
_NAME = re.compile(r"^(\d+)-([a-z0-9_]+)-step(\d+)$")


def checkpoint_problem(path: str | Path) -> str | None:
    """Why `path` is not a complete checkpoint (None if it is one)."""
    p = Path(path)
    if not p.is_dir():
        return f"{p} is not a folder"
    if not (p / MARKER).is_file():
        return f"{p} is not a complete checkpoint (no {MARKER} marker: it was still being written)"
    if not (p / STATE).is_file():
        return f"{p} has no {STATE}"
    return None


def listing(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(complete checkpoints oldest first, incomplete folders) under `run_dir`/checkpoints."""
    root = run_dir / ROOT
    if not root.is_dir():
        return [], []
    complete, incomplete = [], []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if p.name.startswith(".tmp-") or (m and checkpoint_problem(p)):
            incomplete.append(p)
        elif m:
            complete.append(p)
    complete.sort(key=lambda p: int(_NAME.match(p.name).group(1)))
    return complete, incomplete


def find_latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint; incomplete ones are named in the log and skipped."""
    complete, incomplete = listing(run_dir)
    for p in incomplete:
        log.warning("skipping incomplete checkpoint %s (the run was stopped while writing it)", p)
    return complete[-1] if complete else None


def write_checkpoint(run_dir: Path, stage: str, step: int, save: Callable[[Path], None], state: dict[str, Any],
                     keep_last: int) -> Path:
    """`save(folder)` writes the learner and policy parts; then the state, the marker, the rename, pruning."""
    root = run_dir / ROOT
    root.mkdir(parents=True, exist_ok=True)
    complete, _ = listing(run_dir)
    seq = int(_NAME.match(complete[-1].name).group(1)) + 1 if complete else 1
    name = f"{seq:04d}-{stage}-step{step:06d}"
    tmp, final = root / f".tmp-{name}", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.perf_counter()
    save(tmp)
    torch.save(state, tmp / STATE)
    (tmp / MARKER).write_text(json.dumps({"stage": stage, "step": step, "time": time.time()}))
    tmp.rename(final)
    prune(run_dir, keep_last)
    log.info("checkpoint %s written in %.1f s", final, time.perf_counter() - t0)
    return final


def prune(run_dir: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` complete checkpoints; drop leftovers of interrupted writes."""
    complete, incomplete = listing(run_dir)
    for p in complete[:-keep_last] + [p for p in incomplete if p.name.startswith(".tmp-")]:
        shutil.rmtree(p, ignore_errors=True)


def load_state(path: Path) -> dict[str, Any]:
    problem = checkpoint_problem(path)
    if problem:
        raise FileNotFoundError(problem)
    return torch.load(path / STATE, weights_only=False)
