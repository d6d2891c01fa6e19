"""`rlframe doctor` and the preflight of `rlframe train`: a healthy setup passes; missing data, an impossible
resource request and a missing reward file each fail with the item named. No Ray is started here."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlframe.cli import main
from rlframe.config import load_config
from rlframe.doctor import check_resources, format_table, preflight
from rlframe.errors import ConfigError


def doctor(capsys, *overrides: str) -> tuple[int, dict[str, tuple[str, str]]]:
    rc = main(["doctor", *overrides])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {}
    for line in lines[:-1]:
        status, rest = line[:4], line[6:]
        item, _, detail = rest.partition("  ")
        rows[item.strip()] = (status, detail.strip())
    return rc, rows


def test_a_healthy_setup_passes(capsys, tmp_path):
    rc, rows = doctor(capsys, f"run.output_dir={tmp_path / 'run'}")
    assert rc == 0, rows
    assert {s for s, _ in rows.values()} <= {"PASS", "SKIP"}
    for item in ("config", "packages", "package pins", "ports", "resources: rollout", "resources: reward",
                 "resources: learner", "disk", "model", "data", "reward.fns[0] (format)"):
        assert rows[item][0] == "PASS", (item, rows[item])
    assert "torch 2." in rows["packages"][1] and "vllm" in rows["packages"][1]
    assert rows["gpus / nccl"][0] == "SKIP"   # this machine has no GPU: said, not failed
    assert rows["cpu dtype"][0] == "SKIP"     # float32


def test_missing_data_fails_naming_the_key(capsys, tmp_path):
    rc, rows = doctor(capsys, "data.task=preference_images", "model=tiny_qwen2_5_vl", "rollout=hf",
                      f"data.path={tmp_path / 'nope.jsonl'}")
    assert rc == 1
    assert rows["data"][0] == "FAIL" and "data.path=" in rows["data"][1] and "nope.jsonl" in rows["data"][1]


def test_an_invalid_record_fails_with_file_and_line(capsys, tmp_path):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"question": "x"}\n')
    rc, rows = doctor(capsys, "data.task=preference_images", "model=tiny_qwen2_5_vl", "rollout=hf",
                      f"data.path={bad}")
    assert rc == 1 and rows["data"][0] == "FAIL" and "train.jsonl" in rows["data"][1]


@pytest.mark.parametrize("override, item, named", [
    ("learner.num_gpus_per_worker=1", "resources: learner", "learner.num_gpus_per_worker"),
    ("rollout.resources={nobody_has_it: 1}", "resources: rollout", "rollout.resources.nobody_has_it"),
])
def test_an_impossible_resource_request_fails_naming_the_role_and_key(capsys, override, item, named):
    rc, rows = doctor(capsys, override)
    assert rc == 1
    assert rows[item][0] == "FAIL" and named in rows[item][1], rows[item]


def test_a_missing_reward_file_fails_naming_the_entry(capsys, tmp_path):
    rc, rows = doctor(capsys, f"reward.fns=[{{name: mine, path: {tmp_path / 'gone.py'}}}]")
    assert rc == 1
    assert rows["reward.fns[0] (mine)"][0] == "FAIL" and "gone.py" in rows["reward.fns[0] (mine)"][1]


def test_a_bad_config_is_one_failing_row(capsys):
    assert main(["doctor", "learner.zero_stage=4"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL  config") and "learner.zero_stage=4" in out and out.endswith("1 checks, 1 failed\n")


NODES = [{"CPU": 2.0, "node_head": 10.0}, {"CPU": 4.0, "node_gen": 10.0}, {"CPU": 4.0, "GPU": 2.0, "node_learn": 10.0}]


def test_resources_are_checked_per_node_per_pool_and_in_total():
    cfg = load_config(["rollout.resources={node_gen: 1}", "learner.resources={node_learn: 1}",
                       "learner.num_gpus_per_worker=1"])
    assert all(r.status == "PASS" for r in check_resources(cfg, NODES, "the cluster")), \
        format_table(check_resources(cfg, NODES, "the cluster"))
    # two learners on one GPU node: fine; three GPUs in all is more than the cluster has
    cfg.learner.world_size = 3
    rows = {r.item: r for r in check_resources(cfg, NODES, "the cluster")}
    assert rows["resources: all roles"].status == "FAIL" and "GPU: 2" in rows["resources: all roles"].detail
    # a shared pool: each bundle holds one generator and one learner, which no single node has
    cfg.learner.world_size, cfg.rollout.pool, cfg.learner.pool = 2, "shared", "shared"
    rows = {r.item: r for r in check_resources(cfg, NODES, "the cluster")}
    assert rows["resources: pool shared"].status == "FAIL" and "rollout, learner" in rows["resources: pool shared"].detail


def test_train_preflight_stops_before_placement(monkeypatch, tmp_path):
    import rlframe.doctor as doctor_mod

    monkeypatch.setattr(doctor_mod, "ray_nodes", lambda: [{"CPU": 8.0}])
    cfg = load_config(["learner.resources={node_learn: 1}", f"run.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"learner\.resources\.node_learn"):
        preflight(cfg, tmp_path)
    preflight(load_config([f"run.output_dir={tmp_path}"]), tmp_path)   # nothing to complain about


def test_colocation_is_refused_on_cpu_with_the_reason():
    with pytest.raises(ConfigError, match="cluster.colocate=true: .*CUDA-only"):
        load_config(["cluster.colocate=true"])


def test_colocation_puts_generators_and_learners_in_one_pool():
    from rlframe.trainer.roles import ROLES

    cfg = load_config(["cluster.colocate=true", "rollout.num_gpus_per_worker=0.5", "learner.num_gpus_per_worker=0.5"])
    pools = {n: s.pool_name(cfg) for n, s in ROLES.items()}
    assert {n: pools[n] for n in ("rollout", "reward", "learner")} == {"rollout": "colocate", "reward": "reward",
                                                                      "learner": "colocate"}
    rows = check_resources(cfg, [{"CPU": 8.0, "GPU": 2.0}], "the cluster")   # 2 bundles of 1 GPU each
    assert all(r.status == "PASS" for r in rows), format_table(rows)
    assert "pool 'colocate'" in rows[0].detail


def test_too_little_room_in_dev_shm_is_a_warning_that_names_the_fix(monkeypatch, tmp_path):
    from rlframe import doctor as doc

    cfg = load_config([])
    assert doc.check_shared_memory(cfg, str(tmp_path)).status == "PASS"   # the embedded default: a few MB
    monkeypatch.setattr(doc, "_model_bytes", lambda cfg: 1 << 60)
    short = doc.check_shared_memory(cfg, str(tmp_path))
    assert short.status == "WARN" and "--shm-size" in short.detail and "gloo's sockets" in short.detail
    assert "the weight sync and the learners' collectives" in short.detail
    assert doc.check_shared_memory(cfg, str(tmp_path / "absent")).status == "WARN"
    sync_off = ["weight_sync.transport=object_store", "weight_sync.shared_memory=false", "weight_sync.delta=true"]
    for off in sync_off:   # the learners' collectives still use it: world + 1 slots of at most 64 MiB
        only = doc.check_shared_memory(load_config([off]), str(tmp_path))
        assert only.status == "PASS" and only.detail.endswith("(the learners' collectives)"), (off, only.detail)
    monkeypatch.setattr(doc.os, "statvfs", lambda d: SimpleNamespace(f_bavail=100, f_frsize=1 << 20))   # 100 MiB
    short = doc.check_shared_memory(load_config(sync_off[1:2]), str(tmp_path))   # 2 ranks: 3 x 64 MiB
    assert short.status == "WARN" and "take about 192 MiB" in short.detail, short.detail
    for off in ("learner.shared_memory_collectives=false", "learner.zero_stage=3", "learner.world_size=1"):
        assert doc.check_shared_memory(load_config(sync_off[1:2] + [off]), str(tmp_path)).status == "SKIP", off


def test_a_bf16_model_on_a_cpu_without_bf16_matrix_instructions_is_a_warning(monkeypatch, caplog, tmp_path):
    """An AVX2-only CPU (a Zen 3 AMD EPYC) multiplies bf16 at 1/40 of float32's speed: doctor and `rlframe train`'s
    preflight say so and name the fix; the speeds are measured, so a CPU with bf16 instructions passes."""
    from rlframe import doctor as doc
    from rlframe.cluster import cpu_speed

    assert cpu_speed.matmul_gflops("float32", n=64) > 0.1   # one thread: see vllm_in_this_process in conftest.py
    assert doc.check_cpu_dtype(load_config([])).status == "SKIP"   # the embedded default is float32
    gpus = ["learner.num_gpus_per_worker=1", "rollout.num_gpus_per_worker=1"]
    assert doc.check_cpu_dtype(load_config(["model.dtype=bfloat16", *gpus])).status == "SKIP"
    speeds = {"float32": 50.0, "bfloat16": 1.25}
    monkeypatch.setattr(cpu_speed, "matmul_gflops", lambda dtype, **kw: speeds[dtype])
    cfg = load_config(["model.dtype=bfloat16", f"run.output_dir={tmp_path}"])
    slow = doc.check_cpu_dtype(cfg)
    assert slow.status == "WARN" and "1.2 GFLOP/s in bfloat16 against 50.0 in float32" in slow.detail, slow.detail
    assert "of the learners and generators on CPU run about 40x slower than with model.dtype=float32" in slow.detail
    assert "generators" not in doc.check_cpu_dtype(load_config(["model.dtype=bfloat16", gpus[1]])).detail
    monkeypatch.setattr(doc, "ray_nodes", lambda: [{"CPU": 8.0}])
    with caplog.at_level("WARNING", logger="rlframe"):
        preflight(cfg, tmp_path)
    assert any("model.dtype=float32" in r.getMessage() for r in caplog.records), caplog.text
    speeds["bfloat16"] = 120.0   # AVX512-BF16 or AMX: faster than float32
    assert doc.check_cpu_dtype(cfg).status == "PASS"
