"""`rlframe bench compare`: the latest result of each benchmark against the committed baseline of the same
machine class, flagging every ratio that got worse beyond the measured noise (a regression gate).

Ratios in our results are "higher is better" (rlframe vs a peer, or vs the machine's own limit). The noise
of a figure is the spread of its interleaved pair ratios around their median (``headline.pairs[figure]`` where a
record has several figures, else the record's ``pair_ratios``); a figure regresses when it falls below the
baseline by more than the larger of that noise in either record and ``--tolerance``. Pure: no Ray.
"""
from __future__ import annotations

import json
import shlex
import statistics
import subprocess
from pathlib import Path
from typing import Any


def machine_class(rec: dict[str, Any]) -> str:
    """CPU model and count, RAM rounded, GPU, and the CPU's widest matrix instructions where the record names them
    (one model name, "AMD EPYC", has covered CPUs with and without bf16 ones): results are only comparable within
    one class. A record from before `isa` was recorded is a class of its own."""
    hw = (rec.get("env") or {}).get("hardware") or rec.get("machine") or {}
    cpus = hw.get("cpu_count", hw.get("cpus"))
    isa = f"/{hw['isa']}" if hw.get("isa") else ""
    return f"{hw.get('cpu', '?')}/{cpus}cpu/{round(float(hw.get('ram_gib') or 0))}GiB/{hw.get('gpu') or 'nogpu'}{isa}"


# options that change how often or where a benchmark runs, not what it measures
NOT_WHAT = ("--repeats", "--results-dir")


def command_key(command: str | None) -> tuple[tuple[str, ...], frozenset[tuple[str, ...]]]:
    """A benchmark command as what it measures: the program words, then its options and overrides in any order,
    without `NOT_WHAT` (`--repeats 5 --dtype bfloat16` is a baseline for `--dtype bfloat16 --repeats 3`)."""
    words = [part for w in shlex.split(command or "")   # `--repeats=5` as `--repeats 5`
             for part in (w.split("=", 1) if w.startswith("--") and "=" in w else [w])]
    i = next((n for n, w in enumerate(words) if w.startswith("-") or "=" in w), len(words))
    groups, rest = [], words[i:]
    while rest:
        takes_value = rest[0].startswith("--") and len(rest) > 1 and not rest[1].startswith("-") and "=" not in rest[1]
        group, rest = tuple(rest[:2] if takes_value else rest[:1]), rest[2 if takes_value else 1:]
        if group[0] not in NOT_WHAT:
            groups.append(group)
    return tuple(words[:i]), frozenset(groups)


def ratios(rec: dict[str, Any]) -> dict[str, float]:
    """The record's headline ratios and its top-level ``*_over_*`` figures (numbers only)."""
    out = {k: float(v) for k, v in ((rec.get("headline") or {}).get("ratios") or {}).items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.update({k: float(v) for k, v in rec.items() if "_over_" in k and isinstance(v, (int, float))
                and not isinstance(v, bool)})
    return out


def noise(rec: dict[str, Any], figure: str | None = None) -> float:
    """Relative spread of the figure's pair ratios (max |p - median| / median); 0 without pairs."""
    own = ((rec.get("headline") or {}).get("pairs") or {}).get(figure) if figure else None
    pairs = [float(p) for p in own or rec.get("pair_ratios") or rec.get("baseline_pair_ratios") or []
             if isinstance(p, (int, float))]
    if len(pairs) < 2:
        return 0.0
    med = statistics.median(pairs)
    return max(abs(p - med) for p in pairs) / abs(med) if med else 0.0


def read_records(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a results/*.jsonl text, one a line; other lines (blank, cut short) are skipped."""
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def committed(path: Path, ref: str) -> list[dict[str, Any]]:
    """The file's records at git `ref` (empty when it was not committed there)."""
    rel = path.resolve().relative_to(_repo_root(path))
    got = subprocess.run(["git", "show", f"{ref}:{rel.as_posix()}"], cwd=_repo_root(path),
                         capture_output=True, text=True)
    return read_records(got.stdout) if got.returncode == 0 else []


def _repo_root(path: Path) -> Path:
    out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path.resolve().parent,
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def compare_record(new: dict[str, Any], base: dict[str, Any], tolerance: float) -> list[dict[str, Any]]:
    """One row per ratio both records have: baseline, latest, change, allowed drop, regressed?"""
    rows = []
    b, n = ratios(base), ratios(new)
    for key in sorted(set(b) & set(n)):
        allowed = max(tolerance, noise(new, key), noise(base, key))
        change = (n[key] - b[key]) / abs(b[key]) if b[key] else 0.0
        rows.append({"figure": key, "baseline": b[key], "latest": n[key], "change": change,
                     "allowed_drop": allowed, "regressed": change < -allowed})
    return rows


def compare_dir(results: Path, ref: str = "HEAD", tolerance: float = 0.1) -> list[dict[str, Any]]:
    """Every benchmark's latest record against the newest committed record of the same machine class and
    command (when the latest is itself committed, against the one before it)."""
    out = []
    for path in sorted(Path(results).glob("*.jsonl")):
        current = read_records(path.read_text())
        if not current:
            continue
        latest, base_recs = current[-1], committed(path, ref)
        if base_recs and latest == base_recs[-1]:   # nothing new: compare the last two committed runs
            base_recs = base_recs[:-1]
        cls = machine_class(latest)
        # the same machine class and the same command (a run with other sizes or options is not a baseline)
        key = command_key(latest.get("command"))
        same = [r for r in base_recs if machine_class(r) == cls and command_key(r.get("command")) == key]
        status = {"benchmark": path.stem, "machine": cls}
        if not ratios(latest):
            continue   # no ratio figures (e.g. learning tables): nothing to gate
        if not same:
            out.append({**status, "rows": [], "note": "no committed baseline with the same command on this "
                                                      "machine class"})
            continue
        out.append({**status, "rows": compare_record(latest, same[-1], tolerance),
                    "baseline_time": same[-1].get("time", ""), "latest_time": latest.get("time", "")})
    return out


def format_report(report: list[dict[str, Any]]) -> str:
    lines = []
    width = max((len(r["figure"]) for b in report for r in b["rows"]), default=0)   # long names stay aligned
    for b in report:
        lines.append(f"{b['benchmark']} [{b['machine']}]" + (f": {b['note']}" if b.get("note") else
                     f" {b.get('baseline_time', '')[:16]} -> {b.get('latest_time', '')[:16]}"))
        for r in b["rows"]:
            flag = "REGRESSED" if r["regressed"] else "ok"
            lines.append(f"  {flag:<9} {r['figure']:<{width}} {r['baseline']:>8.3f} -> {r['latest']:>8.3f} "
                         f"({r['change']:+.1%}, allowed -{r['allowed_drop']:.0%})")
    return "\n".join(lines)
