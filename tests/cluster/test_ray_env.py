"""What reaches Ray's workers (the job's runtime_env on a cluster, the raylet's environment on the private Ray)
and how the private Ray is started: without a token only when it is bound to loopback; a joined cluster keeps
its token authentication. ray.init is replaced here, except in the last test."""
from __future__ import annotations

import json

import pytest

import rlframe.cluster.ray_cluster as rc
from rlframe.config.schema import ClusterConfig


@pytest.fixture
def fake_init(monkeypatch):
    import ray._private.ray_constants as ray_constants

    import os

    calls: list[dict] = []

    def init(**kw):   # what the private Ray's start sees: the loopback switch and the environment during ray.init
        calls.append({**kw, "_loopback": (os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"),
                                          ray_constants.ENABLE_RAY_CLUSTER), "_environ": dict(os.environ)})

    monkeypatch.setattr(rc.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(rc.ray, "init", init)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    for key in ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_JOB_CONFIG_JSON_ENV_VAR"):
        monkeypatch.delenv(key, raising=False)
    return calls


def test_worker_env_reaches_actors_through_the_runtime_env(fake_init, monkeypatch, tmp_path):
    import ray._private.ray_constants as ray_constants

    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "eth7")
    rc.init_ray(ClusterConfig(address="10.0.0.1:6379"), tmp_path)
    (kw,) = fake_init
    env = kw["runtime_env"]["env_vars"]
    assert kw["address"] == "10.0.0.1:6379"
    assert env["OMP_NUM_THREADS"] == "1" and env["HF_HUB_OFFLINE"] == "1" and env["NCCL_SOCKET_IFNAME"] == "eth7"
    # a cluster someone else started: its nodes have their own paths and accelerators; auth stays as it is
    assert "TORCH_EXTENSIONS_DIR" not in env and "DS_ACCELERATOR" not in env
    import os

    assert "RAY_AUTH_MODE" not in os.environ and ray_constants.ENABLE_RAY_CLUSTER


def test_the_private_ray_runs_without_a_token_only_on_loopback(fake_init, monkeypatch, tmp_path):
    import os

    import ray._private.ray_constants as ray_constants

    monkeypatch.delenv("VLLM_CACHE_ROOT", raising=False)
    rc.init_ray(ClusterConfig(num_cpus=3), tmp_path)
    (kw,) = fake_init
    assert kw["num_cpus"] == 3 and "address" not in kw
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
    assert kw["_loopback"] == ("0", False)
    # restored once Ray is up: a cluster this process joins later must not resolve its nodes to loopback
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ and ray_constants.ENABLE_RAY_CLUSTER is True
    # its workers inherit the environment the raylet starts with (no runtime_env: it would start each worker
    # through Ray's setup_worker.py)
    assert "runtime_env" not in kw
    assert kw["_environ"]["OMP_NUM_THREADS"] == "1" and kw["_environ"]["TORCH_EXTENSIONS_DIR"]
    # vLLM's caches stay under the run's cache folder, for the actors and for an engine in the driver's process
    assert os.environ["VLLM_CACHE_ROOT"] == kw["_environ"]["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm")


def test_a_submitted_job_keeps_its_own_env_vars(monkeypatch):
    """`ray job submit --runtime-env-json` with env_vars: Ray refuses the same key twice, so the job's win."""
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {"OMP_NUM_THREADS": "4"}}}))
    env = rc.worker_env()
    assert "OMP_NUM_THREADS" not in env and env["TOKENIZERS_PARALLELISM"] == "false"


@pytest.mark.integration
def test_actors_on_the_private_ray_get_the_worker_env(ray_session):
    """For real: the settings reach a Ray worker of the session's private Ray through its raylet."""
    import os

    @ray_session.remote(num_cpus=0.1)
    def environ() -> dict[str, str | None]:
        keys = (*rc.WORKER_ENV, "TORCH_EXTENSIONS_DIR", "VLLM_CACHE_ROOT", "DS_ACCELERATOR")
        return {k: os.environ.get(k) for k in keys}

    seen = ray_session.get(environ.remote(), timeout=120)
    assert seen["MKL_NUM_THREADS"] == "1" and seen["DO_NOT_TRACK"] == "1" and seen["PYTHONWARNINGS"] == "ignore"
    assert all(seen[k] == os.environ[k] for k in rc.WORKER_ENV)
    assert seen["TORCH_EXTENSIONS_DIR"] == os.environ["TORCH_EXTENSIONS_DIR"]
    assert seen["VLLM_CACHE_ROOT"] == os.environ["VLLM_CACHE_ROOT"]
    assert seen["DS_ACCELERATOR"] == os.environ.get("DS_ACCELERATOR")   # "cpu" without CUDA
