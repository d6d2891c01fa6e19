"""`rlframe bench NAME [args...]`: run benchmarks/NAME.py; `rlframe bench table` regenerates the README table.

Imports nothing heavy: this module is imported by `rlframe --help`.
"""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

START, END = "<!-- performance:start -->", "<!-- performance:end -->"


def benchmarks_dir() -> Path:
    import rlframe

    return Path(rlframe.__file__).resolve().parents[1] / "benchmarks"


def available() -> dict[str, str]:
    """Benchmark scripts (benchmarks/*.py, not _private ones) and the first line of their docstrings."""
    out = {}
    for path in sorted(benchmarks_dir().glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        except SyntaxError:
            doc = ""
        out[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return out


HELP = "run a benchmark from benchmarks/ and append its JSON line to benchmarks/results/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("name", nargs="?", help="benchmark (benchmarks/NAME.py), 'table' to regenerate "
                                                "the README Performance table from benchmarks/results/, or "
                                                "'compare' to check the latest results against the committed ones")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark (NAME --help)")


def run(args: argparse.Namespace) -> int:
    known = available()
    if args.list or not args.name:
        for name, doc in known.items():
            print(f"{name:<20} {doc}")
        print(f"{'table':<20} regenerate the README 'Performance' table from benchmarks/results/*.jsonl")
        print(f"{'compare':<20} latest results vs the committed baseline (same machine class); exit 1 on a regression")
        return 0 if args.list else 2
    if args.name == "table":
        return table(args.rest)
    if args.name == "compare":
        return compare(args.rest)
    if args.name not in known:
        print(f"rlframe bench: unknown benchmark {args.name!r}; known: {', '.join(known)} (and 'table', 'compare')",
              file=sys.stderr)
        return 2
    script = benchmarks_dir() / f"{args.name}.py"
    return subprocess.run([sys.executable, str(script), *args.rest], cwd=benchmarks_dir().parent).returncode


def table(argv: list[str]) -> int:
    """Regenerate the README's Performance table (latest_by_machine); --check only says whether it is current."""
    p = argparse.ArgumentParser(prog="rlframe bench table", description="Regenerate the README's Performance table "
                                "from the results: each benchmark's latest record on each machine class, dated.")
    p.add_argument("--results", default=str(benchmarks_dir() / "results"), help="folder of *.jsonl results")
    p.add_argument("--readme", default=str(benchmarks_dir().parent / "README.md"),
                   help=f"file holding the {START} ... {END} block")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if the table is out of date")
    a = p.parse_args(argv)
    readme, (block, rows) = Path(a.readme), render_table(Path(a.results))
    try:
        text = readme.read_text()
        new = replace_block(text, block)
    except (OSError, ValueError) as e:
        p.error(f"--readme {readme}: {e}")
    if a.check:
        print(f"{readme}: Performance table is {'current' if new == text else 'out of date: run rlframe bench table'}")
        return 0 if new == text else 1
    readme.write_text(new)
    print(f"{readme}: Performance table with {rows} row(s)")
    return 0


def compare(argv: list[str]) -> int:
    """Exit 1 when a figure regressed beyond its noise (see rlframe/bench_compare.py)."""
    from rlframe.bench_compare import compare_dir, format_report

    p = argparse.ArgumentParser(prog="rlframe bench compare", description="Compare the latest record of each "
                                "benchmark with the newest committed one of the same machine class and command; exit 1 "
                                "when a figure fell by more than the tolerance and the runs' own noise.")
    p.add_argument("--ref", default="HEAD", help="git ref holding the baseline results (default HEAD)")
    p.add_argument("--tolerance", type=float, default=0.1, help="smallest relative drop flagged (default 0.1)")
    p.add_argument("--results", default=str(benchmarks_dir() / "results"))
    a = p.parse_args(argv)
    report = compare_dir(Path(a.results), a.ref, a.tolerance)
    print(format_report(report))
    return 1 if any(r["regressed"] for b in report for r in b["rows"]) else 0


# ---------------------------------------------------------------------- README table
def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def table_row(rec: dict) -> list[str]:
    """benchmark (date, CPU) | headline | ratio vs peer | target met | command, from a record's "headline" block.

    A record without one (an older or foreign benchmark) shows its top-level "*ratio*" keys instead.
    """
    h = rec.get("headline") or {}
    figures = h.get("figures") or ""
    ratios = h.get("ratios")
    if ratios is None:
        ratios = {k: v for k, v in rec.items() if "ratio" in k and isinstance(v, (int, float))}
    ratio_text = "; ".join(f"{k} {_fmt(v)}" for k, v in ratios.items()) if isinstance(ratios, dict) else _fmt(ratios)
    target = h.get("target")
    met = h.get("target_met")
    met_text = "" if met is None else ("yes" if met else "no")
    if target:
        met_text = f"{met_text} ({target})" if met_text else str(target)
    hw = (rec.get("env") or {}).get("hardware") or {}
    cpu = " ".join(w for w in str(hw.get("cpu") or "").replace("(R)", "").split() if w != "Processor")
    cpu = f"{cpu} ({hw['isa']})" if cpu and hw.get("isa") else cpu
    where = ", ".join(x for x in ((rec.get("time") or "")[:10], cpu, hw.get("gpu")) if x)
    return [f"{rec.get('benchmark', '?')} ({where})", str(figures), ratio_text, met_text,
            f"`{rec.get('command', '')}`"]


def latest_by_machine(records: list[dict]) -> list[dict]:
    """The latest record of each machine class, newest first: figures from different CPUs side by side, each row
    dated, so a run on one CPU does not hide the others' (a rule of "only the latest day" did)."""
    from rlframe.bench_compare import machine_class

    last: dict[str, dict] = {}
    for rec in records:
        last[machine_class(rec)] = rec
    return sorted(last.values(), key=lambda r: r.get("time") or "", reverse=True)


def render_table(results_dir: Path) -> tuple[str, int]:
    """Markdown table from results/*.jsonl: each benchmark's latest run on each machine class (latest_by_machine)."""
    from rlframe.bench_compare import read_records

    rows = []
    for path in sorted(Path(results_dir).glob("*.jsonl")):
        for rec in latest_by_machine(read_records(path.read_text())):
            rec.setdefault("benchmark", path.stem)
            if rec.get("headline") or any("ratio" in k for k in rec):  # e.g. learning_seeds has its own table
                rows.append(table_row(rec))
    head = ["benchmark (date, CPU)", "headline (median of repeats)", "ratio vs peer", "target met?", "command"]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    out += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(out), len(rows)


def replace_block(text: str, block: str) -> str:
    """Replace what lies between the performance markers; everything else is left byte for byte."""
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"README has no {START} ... {END} block")
    return text[: i + len(START)] + "\n" + block + "\n" + text[j:]


def main(argv: list[str] | None = None) -> int:
    """`python -m rlframe.bench NAME ...`: the same as `rlframe bench NAME ...`."""
    parser = argparse.ArgumentParser(prog="rlframe bench")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
