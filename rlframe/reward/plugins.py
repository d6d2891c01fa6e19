"""Load a reward function from anywhere and call it through one batch interface.

A researcher's function runs unmodified whichever framework it was written for. Its convention is read
from its signature (or declared with ``style:``):

=========  ==========================================================  ==================================
style      signature                                                   returns
=========  ==========================================================  ==================================
batch      ``fn(samples)``: a list of sample dicts                     list of floats, list of dicts of
                                                                       components, or dict of lists
trl        ``fn(completions, **kwargs)`` or with named columns, e.g.   list of floats
           ``accuracy_reward(completions, solution, **kwargs)``
openrlhf   ``reward_func(queries, prompts, labels, **kw)``             dict with ``rewards`` (+ ``scores``,
                                                                       ``extra_logs``), or a list/tensor
verl       ``compute_score(data_source, solution_str, ground_truth,    float, or dict with ``score``
           extra_info)``, called once per sample
=========  ==========================================================  ==================================

``async def`` functions are awaited (per-sample ones concurrently). A class is instantiated once per worker
with ``kwargs`` (so it can load a model in ``__init__``) and its instance is called. Every field of a data
record reaches the function: as ``**columns`` (TRL), ``labels`` (OpenRLHF, ``label_key``), ``extra_info``
(veRL) or the sample dict itself (batch). Nothing here imports Ray.

TRL style is called as TRL calls it: ``prompts``, ``completions``, ``completion_ids``, ``trainer_state``
(``global_step``) and every record field as a column. On conversational data (records that carry the chat
``messages`` the prompt was rendered from) prompts are message lists and each completion is
``[{"role": "assistant", "content": text}]``; otherwise both are strings. ``style: trl_conversational`` or
``trl_standard`` forces one form.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.util
import inspect
import logging
import math
import numbers
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from rlframe.config.schema import RewardFnConfig
from rlframe.errors import RewardError, RewardShapeError, RewardTimeout
from rlframe.reward.registry import REWARDS
from rlframe.reward.remote import RemoteReward

log = logging.getLogger("rlframe")
STYLES = ("auto", "batch", "trl", "trl_conversational", "trl_standard", "openrlhf", "verl")
TRL_STYLES = ("trl", "trl_conversational", "trl_standard")
Components = dict[str, list[float]]
# TRL's None: this function does not score this sample (e.g. a gold answer it cannot parse). It is NaN in a
# component, adds nothing to the total and is left out of every mean; a sample no function scores is left out
# of the loss with its group (TRL gives it no advantage).
SKIP = float("nan")
BatchCall = Callable[[list[dict[str, Any]]], Components]


# ----------------------------------------------------------------------------------------- resolution
def describe(spec: RewardFnConfig) -> str:
    """Where a reward comes from, for messages."""
    if spec.url:
        return f"{spec.name!r} (service {spec.url})"
    if spec._target_:
        return f"{spec.name!r} ({spec._target_})"
    if spec.path:
        return f"{spec.name!r} ({spec.path}:{spec.function or spec.name})"
    return f"{spec.name!r} (built-in)"


def _load_file(path: str) -> Any:
    file = Path(path).expanduser()
    if not file.is_file():
        raise RewardError(f"reward file {path!r} does not exist (resolved to {file.resolve()})")
    mod_name = f"rlframe_user_reward_{abs(hash(str(file.resolve())))}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[mod_name]
        raise RewardError(f"reward file {path!r} failed to import: {type(err).__name__}: {err}") from err
    return module


def resolve_object(spec: RewardFnConfig) -> Any:
    """The function, class or factory a reward spec names (imports user code, builds nothing)."""
    sources = [k for k in ("_target_", "path", "url") if getattr(spec, k)]
    if len(sources) > 1:
        raise RewardError(f"reward {spec.name!r}: give one of _target_, path, url (got {', '.join(sources)})")
    if spec._target_:
        target = spec._target_
        module_name, _, attr = target.partition(":") if ":" in target else target.rpartition(".")
        if not module_name or not attr:
            raise RewardError(f"reward {spec.name!r}: _target_={target!r} is not 'package.module:function'")
        try:
            module = importlib.import_module(module_name)
        except Exception as err:
            raise RewardError(f"reward {spec.name!r}: cannot import {module_name!r} for _target_={target!r}: "
                              f"{type(err).__name__}: {err}") from err
        if not hasattr(module, attr):
            raise RewardError(f"reward {spec.name!r}: module {module_name!r} has no attribute {attr!r}")
        return getattr(module, attr)
    if spec.path:
        module = _load_file(spec.path)
        attr = spec.function or spec.name
        if not hasattr(module, attr):
            found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
            raise RewardError(f"reward {spec.name!r}: {spec.path} defines no {attr!r} (callables there: {found}); "
                              f"set `function:` to the name to use")
        return getattr(module, attr)
    if spec.name not in REWARDS:
        raise RewardError(f"reward {spec.name!r} is not a registered reward (registered: {REWARDS.names()}); "
                          f"give _target_, path or url to use your own")
    return REWARDS.get(spec.name)


def _params(fn: Any) -> tuple[list[str], bool]:
    """Parameter names (without self) and whether it takes **kwargs."""
    sig = inspect.signature(fn)
    names = [p.name for p in sig.parameters.values()
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def detect_style(fn: Callable, declared: str = "auto", name: str = "?", bound: Sequence[str] = ()) -> str:
    """The calling convention of `fn`, from its parameter names (`bound`: those given by `kwargs`)."""
    if declared != "auto":
        if declared not in STYLES:
            raise RewardError(f"reward {name!r}: style={declared!r}; expected one of {', '.join(STYLES)}")
        return declared
    names, _ = _params(fn)
    if "queries" in names:
        return "openrlhf"
    if "solution_str" in names:
        return "verl"
    if "completions" in names:   # TRL passes everything by keyword: completions (+ prompts, columns, **kwargs)
        return "trl"
    required = [p for p in inspect.signature(fn).parameters.values() if p.name not in bound
                and p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(required) == 1:
        return "batch"
    raise RewardError(f"reward {name!r}: cannot tell the calling convention from its signature "
                      f"{inspect.signature(fn)}; set style: to one of {', '.join(STYLES[1:])}")


def check_reward(spec: RewardFnConfig) -> str:
    """Resolve and detect without building (for config validation); returns the style."""
    if spec.url:
        return "batch"
    obj = resolve_object(spec)
    if not spec._target_ and not spec.path:
        return "builtin"
    if inspect.isclass(obj):
        return detect_style(obj.__call__, spec.style, spec.name, bound=("self",))
    return detect_style(obj, spec.style, spec.name, bound=list(spec.kwargs))


# ----------------------------------------------------------------------------------------- calling
def _run_maybe_async(call: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call; await a coroutine result; enforce `timeout` seconds (0 = none)."""
    def target() -> Any:
        result = call()
        return asyncio.run(result) if inspect.isawaitable(result) else result

    if timeout <= 0:
        return target()
    # A sync function cannot be interrupted; it is abandoned in its thread on timeout.
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(target).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise RewardTimeout(f"{what} timed out after {timeout:g} s (timeout_s)") from None
    finally:
        pool.shutdown(wait=False)


async def _gather_per_sample(fn: Callable, calls: list[dict[str, Any]], timeout: float, what: str) -> list[Any]:
    async def one(kw: dict[str, Any]) -> Any:
        try:
            return await (asyncio.wait_for(fn(**kw), timeout) if timeout > 0 else fn(**kw))
        except asyncio.TimeoutError:
            raise RewardTimeout(f"{what} timed out after {timeout:g} s (timeout_s)") from None
    return await asyncio.gather(*(one(kw) for kw in calls))


def _columns(samples: list[dict[str, Any]], exclude: Sequence[str]) -> dict[str, list[Any]]:
    keys = list(dict.fromkeys(k for s in samples for k in s if k not in exclude))
    return {k: [s.get(k) for s in samples] for k in keys}


def _to_list(values: Any, fn_name: str) -> list[Any]:
    if hasattr(values, "tolist"):   # torch tensors, numpy arrays
        values = values.tolist()
    if isinstance(values, numbers.Real):   # one number (bools too): a batch of one, or a wrong-length result
        values = [values]
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise RewardShapeError(f"reward {fn_name!r} returned {type(values).__name__} {values!r:.60}: expected one "
                               f"number per sample")
    return list(values)


def _ground_truth(sample: dict[str, Any], label_key: str) -> Any:
    rm = sample.get("reward_model")
    if isinstance(rm, dict) and "ground_truth" in rm:
        return rm["ground_truth"]
    return sample.get(label_key)


class PluginReward:
    """A loaded reward: `__call__(samples) -> {component: values}` whatever the function's convention."""

    def __init__(self, spec: RewardFnConfig, obj: Any = None) -> None:
        """`obj`: the function or class itself (Python API and tests); otherwise it is resolved from spec."""
        self.spec = spec
        self.name = spec.name
        self.dropped: set[str] = set()   # extra keys that were not numbers (logged once each, kept out of metrics)
        if spec.url and obj is None:
            self.fn: Callable = RemoteReward(spec)
            self.style, self.call_kwargs, self.is_async = "batch", {}, False
            self.names, self.var_kw = ["samples"], False
            return
        builtin = obj is None and not spec._target_ and not spec.path
        obj = resolve_object(spec) if obj is None else obj
        kwargs = dict(spec.kwargs)
        if builtin or inspect.isclass(obj):
            self.fn, self.call_kwargs = obj(**kwargs), {}   # built once per worker (may load a model)
        else:
            self.fn, self.call_kwargs = obj, kwargs
        self.style = "batch" if builtin else detect_style(self.fn, spec.style, spec.name, bound=list(self.call_kwargs))
        call = self.fn if inspect.isfunction(self.fn) or inspect.ismethod(self.fn) else \
            getattr(self.fn, "__call__", self.fn)
        self.is_async = inspect.iscoroutinefunction(call)
        self.names, self.var_kw = _params(self.fn)

    def __call__(self, samples: list[dict[str, Any]]) -> Components:
        what = f"reward {self.name!r}"
        raw = self._invoke(samples, what)
        return self._components(raw, len(samples), samples)

    # -- one convention each
    def _kw(self, offered: dict[str, Any]) -> dict[str, Any]:
        """The offered keyword arguments this function accepts (all of them if it takes **kwargs)."""
        merged = {**offered, **self.call_kwargs}
        return merged if self.var_kw else {k: v for k, v in merged.items() if k in self.names}

    def _invoke(self, samples: list[dict[str, Any]], what: str) -> Any:
        s, timeout = self.spec, self.spec.timeout_s
        if self.style == "batch":
            return _run_maybe_async(lambda: self.fn(samples, **self.call_kwargs), timeout, what)
        if self.style in TRL_STYLES:
            offered = trl_arguments(samples, self.style)
            return _run_maybe_async(lambda: self.fn(**self._kw(offered)), timeout, what)
        if self.style == "openrlhf":
            offered = {"queries": [f"{x.get('prompt', '')}{x.get('completion', '')}" for x in samples],
                       "prompts": [x.get("prompt") for x in samples],
                       "labels": [x.get(s.label_key) for x in samples]}
            return _run_maybe_async(lambda: self.fn(**self._kw(offered)), timeout, what)
        calls = [self._kw({"data_source": x.get("data_source", x.get("task", "rlframe")),
                           "solution_str": x.get("completion"), "ground_truth": _ground_truth(x, s.label_key),
                           "extra_info": x}) for x in samples]
        if self.is_async:
            return _run_maybe_async(lambda: _gather_per_sample(self.fn, calls, timeout, what), 0, what)
        return _run_maybe_async(lambda: [self.fn(**kw) for kw in calls], timeout, what)

    def _components(self, raw: Any, n: int, samples: list[dict[str, Any]]) -> Components:
        name = self.name
        if self.style == "openrlhf" and isinstance(raw, dict):
            if "rewards" not in raw:
                raise RewardShapeError(f"reward {name!r} (OpenRLHF style) returned a dict with keys {sorted(raw)}: "
                                  f"expected 'rewards'")
            parts = {name: _to_list(raw["rewards"], name)}
            if raw.get("scores") is not None:
                parts[f"{name}/scores"] = _to_list(raw["scores"], name)
            for k, v in (raw.get("extra_logs") or {}).items():
                parts[f"{name}/{k}"] = _to_list(v, name)
        elif self.style == "verl" or (isinstance(raw, list) and raw and isinstance(raw[0], dict)):
            parts = self._per_sample_dicts(_to_list(raw, name), "score" if self.style == "verl" else name)
        elif isinstance(raw, dict):
            parts = {k if k == name or k.startswith(f"{name}/") or self.style == "batch" else f"{name}/{k}":
                     _to_list(v, name) for k, v in raw.items()}
            if name not in parts:
                raise RewardShapeError(f"reward {name!r} returned a dict with keys {sorted(raw)}, which lack its own "
                                  f"name {name!r} (the component that is weighted)")
        else:
            parts = {name: _to_list(raw, name)}
        skips = self.style in TRL_STYLES or bool(self.spec.url)   # None: TRL's "not scored" (a service's null)
        for key in [k for k in parts if k.startswith(f"{name}/")]:   # an extra key: logged, never weighted
            values = parts.pop(key)
            if key in self.dropped:   # once left out, always: every batch has the same keys
                continue
            if _is_metric(values, skips):
                parts[key] = values
            else:
                self.dropped.add(key)
                odd = next(v for v in values if not isinstance(v, numbers.Real))
                log.warning("reward %r: its extra key %r is not a number on every sample (e.g. %.60r%s); it is "
                            "left out of the metrics", name, key.split("/", 1)[1], odd,
                            ", the key missing there" if odd is None else "")
        for key, values in parts.items():
            check_values(name, key, values, n, samples, skips)
        return {k: [SKIP if v is None else float(v) for v in vals] for k, vals in parts.items()}

    def _per_sample_dicts(self, rows: list[Any], main: str) -> Components:
        if not any(isinstance(r, dict) for r in rows):
            return {self.name: rows}
        rows = [r if isinstance(r, dict) else {main: r} for r in rows]   # veRL: a float here, a dict there
        keys = list(dict.fromkeys(k for r in rows for k in r))
        if main not in keys and len(keys) == 1:
            main = keys[0]   # a single component, whatever its name
        if main not in keys:
            raise RewardShapeError(f"reward {self.name!r} returned dicts with keys {keys}: expected {main!r}")
        out = {self.name: [r.get(main) for r in rows]}
        for k in keys:
            if k != main:
                out[f"{self.name}/{k}"] = [r.get(k) for r in rows]
        return out


@dataclass
class TrainerState:
    """What TRL's ``trainer_state`` argument offers reward functions that read it."""
    global_step: int = 0


def conversational(samples: list[dict[str, Any]], style: str = "trl") -> bool:
    """Whether TRL-style rewards get message lists: forced by the style, else when every record carries
    the chat ``messages`` its prompt was rendered from (the task is conversational)."""
    if style != "trl":
        return style == "trl_conversational"
    return bool(samples) and all(isinstance(x.get("messages"), list) for x in samples)


def trl_arguments(samples: list[dict[str, Any]], style: str = "trl") -> dict[str, Any]:
    """The keyword arguments TRL's GRPOTrainer gives a reward function, for these samples."""
    if conversational(samples, style):
        prompts = [x["messages"] if isinstance(x.get("messages"), list) else
                   [{"role": "user", "content": x.get("prompt")}] for x in samples]
        completions: list[Any] = [[{"role": "assistant", "content": x.get("completion")}] for x in samples]
    else:
        prompts = [x.get("prompt") for x in samples]
        completions = [x.get("completion") for x in samples]
    step = max((int(x.get("global_step") or 0) for x in samples), default=0)
    return {"prompts": prompts, "completions": completions,
            "completion_ids": [x.get("completion_ids") for x in samples],
            "trainer_state": TrainerState(step),
            **_columns(samples, ("prompt", "completion", "completion_ids", "messages", "global_step"))}


def _is_metric(values: list[Any], skips: bool) -> bool:
    """Whether an extra key's values are numbers (or skips); otherwise (veRL's ``pred`` is the parsed answer's
    text) the key is information, not a metric, and is left out."""
    return all(isinstance(v, numbers.Real) or (skips and v is None) for v in values)


def check_values(fn_name: str, key: str, values: list[Any], n: int, samples: list[dict[str, Any]],
                 skips: bool = False) -> None:
    """Exactly n finite numbers (booleans count as 0 and 1, as TRL's and veRL's tensors make them; with `skips`,
    None for a sample the function does not score); otherwise a RewardError naming the function, what it
    returned and the sample."""
    if len(values) != n:
        raise RewardShapeError(f"reward {fn_name!r} returned {len(values)} values for {key!r}, expected {n} "
                          f"(one per sample)")
    for i, v in enumerate(values):
        if (v is None and not skips) or (v is not None and (not isinstance(v, numbers.Real) or not math.isfinite(v))):
            raise RewardError(f"reward {fn_name!r} returned {v!r} for {key!r} on sample "
                              f"{samples[i].get('id', i)!r}: expected a finite number"
                              + (" (None, for a sample it does not score, is TRL's convention: style: trl)"
                                 if v is None else ""))
