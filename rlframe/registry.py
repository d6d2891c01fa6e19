"""Named extension points (tasks, rewards, advantage estimators, CLI commands) and the plugins that fill them.

The core never imports a task: a task package registers itself when it is imported, and it is imported by
name, either because an installed distribution lists it under the ``rlframe.plugins`` entry-point group
(rlframe's own example task does, in pyproject.toml) or because a config value names it
(``data.task=my_pkg.tasks:build``). Lookups load the plugins on their first miss.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Generic, Iterator, TypeVar

T = TypeVar("T")
ENTRY_POINT_GROUP = "rlframe.plugins"
_loaded = False


def load_plugins() -> None:
    """Import every module listed under the ``rlframe.plugins`` entry points (once per process)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(ep.value.split(":")[0])


def import_object(target: str) -> Any:
    """``pkg.module:attr`` (or ``pkg.module.attr``) -> the object; ImportError/AttributeError name it."""
    module, sep, attr = target.partition(":")
    if not sep:
        module, _, attr = target.rpartition(".")
    if not module or not attr:
        raise ImportError(f"{target!r} is not of the form 'pkg.module:name'")
    return getattr(importlib.import_module(module), attr)


def import_plugin(spec: str) -> Any:
    """A module by name (``pkg.module``) or a ``.py`` file by path (relative: to the working directory),
    imported once per process: importing it runs its ``register`` calls."""
    if not spec.endswith(".py"):
        return importlib.import_module(spec)
    file = Path(spec).expanduser().resolve()
    name = f"rlframe_plugin_{file.stem}_{abs(hash(str(file)))}"
    if name not in sys.modules:
        if not file.is_file():
            raise ImportError(f"plugin file {spec!r} does not exist (resolved to {file})")
        loader = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        try:
            loader.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


class Registry(Generic[T]):
    """A name -> object table; `get` loads the plugins before it reports a name as unknown."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None) -> Any:
        """``registry.register(name, obj)``, or ``@registry.register(name)`` as a decorator."""
        def add(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj
        return add(item) if item is not None else add

    def get(self, name: str) -> T:
        if name not in self._items:
            load_plugins()
        if name not in self._items:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or '(none)'}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        if name not in self._items:
            load_plugins()
        return name in self._items

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
