"""Tasks by name: each builds its data, its tokenizer, and registers its rewards."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rlframe.config.schema import DataConfig


@dataclass
class TaskData:
    train: list[dict[str, Any]]   # each: id, prompt (str), target (str, for SFT), label fields
    eval: list[dict[str, Any]]
    tokenizer: Any                # a transformers tokenizer with eos and pad tokens
    # image tasks: turns prompts into prompts that carry pixel inputs (tasks/preference/vl_task.VisionInputs)
    vision: Any = None


TaskBuilder = Callable[[DataConfig, Path], TaskData]
TASKS: dict[str, TaskBuilder] = {}


def register_task(name: str) -> Callable[[TaskBuilder], TaskBuilder]:
    def deco(fn: TaskBuilder) -> TaskBuilder:
        TASKS[name] = fn
        return fn
    return deco


import rlframe.tasks.preference.task  # noqa: E402,F401  (built-in tasks)
import rlframe.tasks.preference.vl_task  # noqa: E402,F401
