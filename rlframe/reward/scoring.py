"""Score a batch with every configured reward, apply the error policy, and combine components (pure)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from rlframe.config.schema import RewardFnConfig
from rlframe.errors import RewardError, RewardShapeError, RewardTimeout
from rlframe.reward.plugins import Components, PluginReward

ON_ERROR = ("raise", "fallback", "mask")
NORMALIZE = ("none", "batch")


def known(values: Sequence[float]) -> list[float]:
    """The values a function scored (not plugins.SKIP, TRL's None)."""
    return [v for v in values if v == v]


def unscorable(components: Components, specs: Sequence[RewardFnConfig]) -> list[int]:
    """Indices of the samples that every weighted function skipped."""
    cols = [components[s.name] for s in specs if s.name in components]
    return [i for i, row in enumerate(zip(*cols)) if all(v != v for v in row)] if cols else []


def json_safe(components: Components) -> dict[str, list[float | None]]:
    """Skipped values as JSON null, which is what strict JSON readers (and TRL's convention) expect."""
    return {k: [None if v != v else v for v in vals] for k, vals in components.items()}


@dataclass
class Scores:
    """Scores of a batch, aligned with its samples: each component's values, and how the scoring went."""
    components: Components = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)      # per function, samples that fell back
    errors: list[str] = field(default_factory=list)             # the first failure messages
    seconds: float = 0.0                                        # the workers' compute time
    pid: int | None = None                                      # the worker that scored (pool: unset)
    restarts: int = 0                                           # pool: reward-worker restarts so far
    failed: list[int] = field(default_factory=list)             # indices of samples any function failed on

    def __len__(self) -> int:
        return len(next(iter(self.components.values()))) if self.components else 0


def _chunks(n: int, size: int) -> list[slice]:
    size = size if size > 0 else max(n, 1)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class RewardSet:
    """The configured reward functions, built once (a worker, the reward server or a test holds one).

    on_error="raise": the first failure raises RewardError naming the function and the sample.
    on_error="fallback": failing samples get `fallback_value` and are counted per function.
    on_error="mask": the same, and `Scores.failed` lists them so the trainer can drop them from the loss.
    """

    def __init__(self, specs: Sequence[RewardFnConfig], on_error: str = "raise", fallback_value: float = 0.0,
                 fns: Sequence[Any] | None = None) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"reward.on_error={on_error!r}: expected one of {ON_ERROR}")
        self.specs = list(specs)
        self.fns = list(fns) if fns is not None else [PluginReward(s) for s in self.specs]
        self.on_error = on_error
        self.fallback_value = float(fallback_value)

    def score(self, samples: list[dict[str, Any]]) -> Scores:
        """Every configured function's components for `samples`, with failures counted per function."""
        components: Components = {}
        failures: dict[str, int] = {}
        errors: list[str] = []
        failed_any: set[int] = set()
        for spec, fn in zip(self.specs, self.fns):
            slices = _chunks(len(samples), spec.batch_size)
            parts: list[Components] = []
            failed = 0
            for sl in slices:
                got, bad, msgs = self._call(spec, fn, samples[sl])
                parts.append(got)
                failed += len(bad)
                failed_any.update(sl.start + i for i in bad)
                errors.extend(msgs[: max(0, 5 - len(errors))])
            keys = list(dict.fromkeys(k for p in parts for k in p))
            for k in keys:   # a key one chunk lacks (all its samples fell back) gets the fallback value
                components[k] = [v for p, sl in zip(parts, slices)
                                 for v in p.get(k, [self.fallback_value] * (sl.stop - sl.start))]
            failures[spec.name] = failed
        return Scores(components, failures, errors, failed=sorted(failed_any))

    def _call(self, spec: RewardFnConfig, fn: Any,
              chunk: list[dict[str, Any]]) -> tuple[Components, list[int], list[str]]:
        """The chunk's components, the indices of the samples that failed, and the first messages."""
        try:
            return fn(chunk), [], []
        except Exception as err:  # noqa: BLE001  (user code: any exception is a reward failure)
            first = err
        if isinstance(first, (RewardTimeout, RewardShapeError)) or len(chunk) == 1:
            # a timeout or a wrong-shaped result is a property of the whole call: no per-sample retry
            if self.on_error == "raise":
                raise _named(spec, chunk, first) from first
            return ({spec.name: [self.fallback_value] * len(chunk)}, list(range(len(chunk))),
                    [str(_named(spec, chunk, first))])
        # find the sample(s) that fail, one call each
        rows: list[Components | None] = []
        msgs: list[str] = []
        for sample in chunk:
            try:
                rows.append(fn([sample]))
            except Exception as err:  # noqa: BLE001
                if self.on_error == "raise":
                    raise _named(spec, [sample], err) from err
                rows.append(None)
                msgs.append(str(_named(spec, [sample], err)))
        if self.on_error == "raise":   # every sample passes alone: the batch call itself fails
            raise _named(spec, chunk, first) from first
        keys = list(dict.fromkeys(k for r in rows if r for k in r)) or [spec.name]
        out = {k: [(r[k][0] if r and k in r else self.fallback_value) for r in rows] for k in keys}
        return out, [i for i, r in enumerate(rows) if r is None], msgs


def _named(spec: RewardFnConfig, chunk: list[dict[str, Any]], err: BaseException) -> RewardError:
    ids = [s.get("id", "?") for s in chunk]
    where = f"sample {ids[0]!r}" if len(ids) == 1 else f"a batch of {len(ids)} samples ({ids[0]!r} ... {ids[-1]!r})"
    if isinstance(err, RewardError):
        return type(err)(str(err) if "on sample" in str(err) else f"{err} [on {where}]")
    return RewardError(f"reward {spec.name!r} raised on {where}: {type(err).__name__}: {err}")


def combine(components: Components, specs: Sequence[RewardFnConfig], normalize: str = "none") -> list[float]:
    """The total reward: sum of weight * component, each component z-scored over the batch first if asked."""
    if normalize not in NORMALIZE:
        raise ValueError(f"reward.normalize={normalize!r}: expected one of {NORMALIZE}")
    n = len(next(iter(components.values()))) if components else 0
    total = [0.0] * n
    for spec in specs:
        values = components[spec.name]
        scored = known(values)
        if normalize == "batch" and n > 1 and scored:
            mu, sd = statistics.fmean(scored), statistics.pstdev(scored)
            values = [(v - mu) / sd if sd > 1e-8 else 0.0 for v in values]   # (SKIP stays NaN)
        total = [t if v != v else t + spec.weight * v for t, v in zip(total, values)]
    return total
