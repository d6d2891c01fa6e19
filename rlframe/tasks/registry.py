"""Tasks by name. A task builds its data and tokenizer and says what it needs (images, data files).

Tasks live outside the core (``rlframe/tasks/preference`` is the example) and register themselves with
``register_task`` when imported; ``data.task`` is a registered name or ``pkg.module:builder``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rlframe.registry import Registry, import_object


@dataclass
class TaskData:
    train: list[dict[str, Any]]   # each: id, prompt (str), target (str, for SFT), label fields
    eval: list[dict[str, Any]]
    tokenizer: Any                # a transformers tokenizer with eos and pad tokens
    # image tasks: turns prompts into prompts that carry pixel inputs (`attach(records, prompts, tokenizer)`)
    # and gives the tokenizer's vision token ids (`token_ids(tokenizer)`)
    vision: Any = None
    # reward component -> the name `rlframe eval` reports it under (empty: every component, own name)
    eval_metrics: dict[str, str] = field(default_factory=dict)
    # records the loader dropped (data.on_invalid=skip)
    skipped: int = 0


Builder = Callable[[Any, Path], TaskData]   # (DataConfig, cache_dir) -> TaskData


@dataclass
class TaskSpec:
    name: str
    build: Builder
    # the policy must be a vision-language model (prompts carry images)
    vision: bool = False
    # the task reads data.path / data.eval_path (False: it generates its data and refuses those keys)
    reads_files: bool = False
    # extra checks of the whole config: (RLConfig) -> list of error messages naming keys
    check: Callable[[Any], list[str]] | None = None


TASKS: Registry[TaskSpec] = Registry("task")


def register_task(name: str, *, vision: bool = False, reads_files: bool = False,
                  check: Callable[[Any], list[str]] | None = None) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        TASKS.register(name, TaskSpec(name, fn, vision=vision, reads_files=reads_files, check=check))
        return fn
    return deco


def task_spec(name: str) -> TaskSpec:
    """A registered task, or ``pkg.module:attr`` naming a TaskSpec or a plain builder (text-only, no files)."""
    if ":" not in name:
        return TASKS.get(name)
    obj = import_object(name)
    return obj if isinstance(obj, TaskSpec) else TaskSpec(name, obj)
