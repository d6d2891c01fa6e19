"""`rlframe bench compare`: the latest result against the committed baseline of the same machine class and
command; a ratio that fell beyond the measured noise is flagged and the command exits 1."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from rlframe.bench_compare import command_key, compare_dir, format_report, noise

HW = {"cpu": "AMD EPYC", "cpu_count": 2, "ram_gib": 23.5, "gpu": None}


def rec(ratio: float, pairs=(), hw=HW, command="rlframe bench step_time") -> dict:
    return {"benchmark": "step_time", "time": "2026-12-02T08:00", "command": command, "env": {"hardware": hw},
            "headline": {"ratios": {"TRL/rlframe step time": ratio, "pairs": "text is ignored"}},
            "pair_ratios": list(pairs)}


def repo(tmp_path: Path, committed: list[dict], latest: list[dict]) -> Path:
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    path = results / "step_time.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in committed))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "baseline"], cwd=tmp_path, check=True)
    with path.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in latest)
    return results


def test_a_drop_beyond_the_noise_is_flagged(tmp_path):
    report = compare_dir(repo(tmp_path, [rec(2.0, [1.9, 2.0, 2.1])], [rec(1.5, [1.45, 1.5, 1.55])]))
    [row] = report[0]["rows"]
    assert row["regressed"] and row["change"] == -0.25 and row["allowed_drop"] == 0.1
    assert "REGRESSED" in format_report(report)


def test_a_drop_within_the_measured_noise_passes(tmp_path):
    # pairs 1.2 .. 2.8 around 2.0: a 30% spread, so 2.0 -> 1.6 (-20%) is noise
    report = compare_dir(repo(tmp_path, [rec(2.0, [1.2, 2.0, 2.8])], [rec(1.6, [1.6, 1.7, 1.5])]))
    assert not report[0]["rows"][0]["regressed"] and noise(rec(2.0, [1.2, 2.0, 2.8])) == 0.4


def test_a_figure_with_pairs_of_its_own_is_gated_by_its_own_noise(tmp_path):
    def two(a: float, b: float, a_pairs=(), b_pairs=()) -> dict:
        r = rec(a)
        r["headline"]["ratios"]["other figure"] = b
        r["headline"]["pairs"] = {"TRL/rlframe step time": list(a_pairs), "other figure": list(b_pairs)}
        return r
    # the other figure's pairs spread 30%: its 20% drop is noise; the first figure's pairs agree: 20% regresses
    report = compare_dir(repo(tmp_path, [two(2.0, 2.0, [2.0, 2.0, 2.02], [1.4, 2.0, 2.6])],
                              [two(1.6, 1.6, [1.6, 1.6, 1.61], [1.6, 1.6, 1.6])]))
    rows = {r["figure"]: r for r in report[0]["rows"]}
    assert rows["TRL/rlframe step time"]["regressed"] and rows["TRL/rlframe step time"]["allowed_drop"] == 0.1
    assert not rows["other figure"]["regressed"] and abs(rows["other figure"]["allowed_drop"] - 0.3) < 1e-9


def test_other_machines_and_other_commands_are_not_baselines(tmp_path):
    gpu = {**HW, "gpu": "H200"}
    report = compare_dir(repo(tmp_path, [rec(9.0, hw=gpu), rec(9.0, command="rlframe bench step_time --x")],
                              [rec(1.0)]))
    assert report[0]["rows"] == [] and "no committed baseline" in report[0]["note"]


def test_one_cpu_name_with_other_matrix_instructions_is_not_a_baseline(tmp_path):
    """"AMD EPYC" has named a CPU with AVX512-BF16 and one with AVX2 alone (bf16 40x slower there): never compared."""
    zen4, zen3 = {**HW, "isa": "avx512_bf16"}, {**HW, "isa": "avx2"}
    report = compare_dir(repo(tmp_path, [rec(2.0, hw=zen4), rec(2.0)], [rec(0.1, hw=zen3)]))
    assert report[0]["rows"] == [] and "no committed baseline" in report[0]["note"]
    report = compare_dir(repo(tmp_path / "same", [rec(2.0, [2.0, 2.0], hw=zen3)], [rec(1.5, [1.5, 1.5], hw=zen3)]))
    assert report[0]["rows"][0]["regressed"]


def test_the_same_options_in_another_order_or_with_other_repeats_are_a_baseline(tmp_path):
    base = "rlframe bench step_time --repeats 3 --dtype bfloat16 --no-trl learner.zero_stage=1"
    latest = "rlframe bench step_time --no-trl learner.zero_stage=1 --dtype bfloat16 --repeats 5 --results-dir /r"
    report = compare_dir(repo(tmp_path, [rec(2.0, command=base)], [rec(1.0, command=latest)]))
    assert report[0]["rows"][0]["baseline"] == 2.0 and report[0]["rows"][0]["regressed"]
    assert command_key(base) == command_key("rlframe bench step_time --dtype=bfloat16 --repeats=2 --no-trl "
                                            "learner.zero_stage=1")
    for other in ("rlframe bench step_time --dtype float32", "rlframe bench step_time --dtype bfloat16 --no-trl",
                  "rlframe bench rollout --dtype bfloat16 --no-trl learner.zero_stage=1"):
        assert command_key(other) != command_key(base)


def test_without_a_new_run_the_last_two_committed_runs_are_compared(tmp_path):
    report = compare_dir(repo(tmp_path, [rec(2.0), rec(2.1)], []))
    assert report[0]["rows"][0]["baseline"] == 2.0 and report[0]["rows"][0]["latest"] == 2.1


def test_the_report_keeps_its_columns_aligned_whatever_the_figure_names():
    long = "sync / memcpy speed (collective-sockets, ZeRO-3, 64 MB, a figure name past the old column)"
    rows = [{"figure": f, "regressed": False, "baseline": 1.0, "latest": 1.1, "change": 0.1, "allowed_drop": 0.1}
            for f in ("short", long)]
    lines = format_report([{"benchmark": "weight_sync", "machine": "m", "rows": rows}]).splitlines()[1:]
    assert len({line.index("->") for line in lines}) == 1 and long in lines[1]
