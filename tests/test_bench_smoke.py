"""A smoke run of every benchmark (`rlframe bench NAME --quick`), for real, so a benchmark that breaks is caught.

The figures of a quick run mean nothing; what is checked is that each script runs its real path to the end
and that its JSON line (the last stdout line, which `rlframe bench table` and `compare` read) holds the figures
its README section promises. The rollout benchmark's smoke run is in test_bench.py.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from rlframe import bench

ROOT = Path(__file__).resolve().parents[1]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_weight_sync(rec: dict) -> None:
    by_transport = {r["transport"]: r for r in rec["results"]}
    assert set(by_transport) == {"collective", "collective-sockets", "object_store"}
    for r in by_transport.values():
        assert _positive(r["gbps"]) and _positive(r["memcpy_gbps"]) and 0 < r["fraction_of_memcpy"]
        assert r["gb"] > 0.002                      # the tiny model's 0.6M fp32 parameters
    assert any("memcpy" in k for k in rec["headline"]["ratios"])
    assert {"gather_seconds", "send_seconds", "load_seconds", "hash_seconds"} <= by_transport["collective"].keys()
    # each against each other transport, as the median of interleaved pairs
    assert set(by_transport["collective"]["speedup_pairs"]) == {"collective-sockets", "object_store"}
    assert "shared memory speed / sockets speed (median of pairs)" in rec["headline"]["ratios"]
    # each figure's per-repeat values (its noise for `rlframe bench compare`), one per repeat
    assert rec["headline"]["pairs"].keys() == rec["headline"]["ratios"].keys()
    assert all(len(v) == rec["config"]["repeats"] for v in rec["headline"]["pairs"].values())


def check_step_time(rec: dict) -> None:
    for side in ("rlframe", "trl"):
        assert _positive(rec["seconds_per_step"][side]["median"]), side
    assert _positive(rec["trl_over_rlframe_step_time"])
    phases = rec["rlframe_phases"]
    assert _positive(phases["train"]["median"]) and _positive(phases["generate"]["median"])
    update = rec["rlframe_update"]   # the train phase's forward, backward and optimizer step
    assert all(_positive(update[k]["median"]) for k in ("forward", "backward", "optimizer"))
    # each figure is the slowest rank's, and each a median over steps: their sum may pass train's own (the slowest
    # rank's whole update) by the ranks' and steps' spread, not by the update twice. A quick run's update takes tens
    # of ms, where a few ms of one rank's jitter on a loaded machine is over 10% (a CI run: 0.061 against 0.055 s)
    assert sum(update[k]["median"] for k in update) <= phases["train"]["median"] * 1.3


def check_reward_throughput(rec: dict) -> None:
    assert _positive(rec["pool_over_per_sample"]) and rec["max_abs_diff_pool_vs_per_sample"] < 1e-5
    assert _positive(rec["model_load_s"])


def check_reward_service(rec: dict) -> None:
    assert rec["nothing_lost_or_double_scored"] is True and rec["hostile_all_answered_4xx_5xx"] is True
    assert _positive(rec["concurrent_over_single"])


def check_async_rl(rec: dict) -> None:
    assert _positive(rec["k1_over_k0_steps_per_s"])
    # k=0 trains on fresh rollouts only; k=1 on rollouts one version old
    assert max(rec["staleness_mean"]["k0"]) == 0 and max(rec["staleness_mean"]["k1"]) > 0


def check_algorithms(rec: dict) -> None:
    assert rec["algorithms"] == ["grpo"] and not rec["failed"]
    assert _positive(rec["table"]["grpo"]["seconds_per_step"]) and "heldout_accuracy_after" in rec["table"]["grpo"]


def check_ablation(rec: dict) -> None:
    (table,) = rec["tables"].values()           # one repetition penalty
    assert set(table) == {"base", "sft", "rl"}   # --quick: the no-profile arm is checked in test_bench.py
    assert set(rec["sp_id_accuracy"]) == set(table)


def check_learning_seeds(rec: dict) -> None:
    (seed,) = rec["seeds"]
    assert rec["quick"] is True and seed["seed"] == 0 and _positive(seed["wall_seconds"])
    assert "eval/accuracy" in seed["eval"]      # held-out evaluation before and after GRPO


def check_packing(rec: dict) -> None:
    for name in ("padded", "group_rows", "packed"):
        assert _positive(rec["layout"][name]["seconds"]["median"]), name
    # packing never computes more tokens than one group per row, which never computes more than padded rows
    tokens = {n: rec["layout"][n]["row_tokens"]["median"] for n in rec["layout"]}
    assert tokens["packed"] <= tokens["group_rows"] <= tokens["padded"]
    assert rec["logprob_max_abs_diff_vs_padded"] < 0.05          # bf16: the three layouts compute the same thing
    assert _positive(rec["group_rows_over_packed"]) and _positive(rec["contiguous_over_balanced"])
    assert rec["split"]["balanced"]["tokens_max_over_mean"]["median"] >= 1.0
    for forward in ("padded", "packed"):   # micro-batches by rows and by a token budget no bigger than them
        ways = rec["micro"][forward]
        assert _positive(ways["rows"]["seconds"]["median"]) and _positive(ways["tokens"]["seconds"]["median"])
        assert ways["tokens"]["micro_batches"]["median"] >= 1 and _positive(ways["tokens"]["row_tokens"]["median"])
        assert _positive(rec["micro_rows_over_tokens"][forward])
    # SFT rows packed padding-free: never more tokens computed than padded, the same loss (bf16)
    assert rec["sft"]["packed"]["row_tokens"]["median"] <= rec["sft"]["padded"]["row_tokens"]["median"]
    assert _positive(rec["sft_padded_over_packed"]) and rec["sft_loss_max_abs_diff"] < 0.05
    # the no-grad pass over one micro-batch of all rows, regrouped: fewer forward calls, the same log-probs
    calls = {n: rec["no_grad"][n]["forward_calls"]["median"] for n in ("update", "own")}
    assert calls["own"] == 1 < calls["update"] and rec["no_grad_logprob_max_abs_diff"] < 0.05
    assert _positive(rec["no_grad_update_over_own"])
    # Qwen2.5-VL rows: each group's pictures through the vision tower once (G=4 rows a group), the same log-probs
    assert rec["vl_vision_patches"]["padded"] == 4 * rec["vl_vision_patches"]["packed"] > 0
    assert _positive(rec["vl_padded_over_packed"]) and rec["vl_logprob_max_abs_diff"] < 1e-3
    # the logits window: the LM head on fewer positions, the loss reading fewer columns, the same log-probs
    assert len(rec["window"]) == 2 and rec["window_logprob_max_abs_diff"] < 0.05
    for ways in rec["window"].values():
        assert ways["window"]["head_positions"] < ways["every"]["head_positions"]
        assert ways["window"]["loss_columns"] < ways["every"]["loss_columns"]
    assert all(_positive(r) for r in rec["every_over_window"].values())


def check_collectives(rec: dict) -> None:
    ops = {(r["op"], r["mb"]) for r in rec["results"]}
    assert ops == {("all_reduce", 2.0), ("all_gather", 2.0)}
    for r in rec["results"]:
        assert r["same_result"] and _positive(r["gloo_ms"]["median"]) and _positive(r["shared_memory_ms"]["median"])
        assert len(r["speedup_pairs"]) == rec["config"]["repeats"]
    assert rec["headline"]["pairs"].keys() == rec["headline"]["ratios"].keys() and len(rec["headline"]["ratios"]) == 2


#: name -> (extra arguments, the check of its JSON line); {out} is the test's own folder for the runs
SMOKE: dict[str, tuple[list[str], Callable[[dict], None]]] = {
    "weight_sync": (["--repeats", "1"], check_weight_sync),
    "step_time": (["--repeats", "1"], check_step_time),
    "reward_throughput": (["--repeats", "1"], check_reward_throughput),
    "reward_service": (["--repeats", "1"], check_reward_service),
    "async_rl": (["--repeats", "1"], check_async_rl),
    "algorithms": (["--seeds", "0", "--algorithms", "grpo", "--out", "{out}"], check_algorithms),
    "ablation": (["--seeds", "0", "--repetition-penalties", "1.15", "--out", "{out}"], check_ablation),
    "learning_seeds": (["--out", "{out}"], check_learning_seeds),
    "packing": ([], check_packing),
    "collectives": (["--repeats", "1"], check_collectives),
}


def test_every_benchmark_has_a_smoke_run():
    assert set(bench.available()) == set(SMOKE) | {"rollout"}   # rollout: test_bench.py


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(SMOKE))
def test_benchmark_quick_runs_for_real(name, tmp_path):
    extra, check = SMOKE[name]
    args = [a.replace("{out}", str(tmp_path / "runs")) for a in extra]
    rlframe = Path(sys.executable).with_name("rlframe")
    proc = subprocess.run([str(rlframe), "bench", name, "--quick", "--no-save", "--results-dir", str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    # the ablation names its results after the task it ran (ablation_text, ablation_vl)
    assert rec["benchmark"] == {"ablation": "ablation_text"}.get(name, name)
    assert rec["command"].startswith(f"rlframe bench {name} --quick")
    assert not list(tmp_path.glob("*.jsonl"))      # --no-save appends nothing
    check(rec)
