"""Start or join Ray (the placement of roles is cluster/roles.py)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import ray

from rlframe.config.schema import ClusterConfig

log = logging.getLogger("rlframe")

# Given to every Ray worker of the run: through the job's runtime_env on a cluster that someone else started
# (`ray start`, SLURM, KubeRay); on the private Ray the driver starts itself, through the environment its raylet
# inherits from the driver.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "RAY_DEDUP_LOGS": "1",
    "PYTHONWARNINGS": "ignore",
}
# Forwarded from the driver's environment when set there (the network settings of multi-node collectives).
FORWARDED_PREFIXES = ("NCCL_", "GLOO_", "TP_SOCKET_IFNAME", "HF_HOME", "HF_TOKEN")
# Read by the raylet, so only a Ray the driver starts sees it: Ray starts workers at niceness 15; on a machine
# shared with other jobs every actor then gets a small fraction of a core beside any normal process.
LOCAL_RAYLET_ENV = {"RAY_worker_niceness": "0"}


def worker_env() -> dict[str, str]:
    """The env_vars of the job's runtime_env on a cluster: WORKER_ENV (the driver's value wins) and the NCCL/GLOO
    settings the driver has; not its cache paths or accelerator (other nodes have their own)."""
    env = {k: os.environ.get(k, v) for k, v in WORKER_ENV.items()}
    env.update({k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)})
    # a job started by `ray job submit --runtime-env-json ...`: Ray refuses a second value for the same key
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}") or "{}")
    taken = (job.get("runtime_env") or {}).get("env_vars") or {}
    return {k: v for k, v in env.items() if k not in taken}


def init_ray(cfg: ClusterConfig, cache_dir: Path, required_cpus: float = 0) -> bool:
    """Start a private local Ray (temp dir under the cache, bound to 127.0.0.1, no token needed), or join
    `cfg.address` (token authentication as that cluster has it: RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or
    RAY_AUTH_TOKEN_PATH in the driver's environment).

    Returns True when this call connected (so the caller owns the shutdown)."""
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir / "torch_extensions"))
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_dir / "vllm"))   # here (benchmarks) and in its workers
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": cfg.log_to_driver, "include_dashboard": False,
                              "logging_level": logging.WARNING}
    if cfg.address:
        ray.init(address=cfg.address, runtime_env={"env_vars": worker_env()}, **kwargs)
        return True
    # The private Ray's workers inherit the raylet's environment, which is this process's: the settings set above
    # (WORKER_ENV, the cache paths, the accelerator) reach them without a runtime_env. One would only cost time:
    # Ray starts each worker of a job that has one through setup_worker.py, which imports Ray once more (about
    # 0.7 s of CPU per worker), and cannot give its actors the workers it started in advance.

    # The private Ray: nobody else can reach it, so it runs without a token. Ray binds to loopback only when it
    # believes it is not clustering (its macOS default); the flag is read by this process and by Ray's own.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray._private.ray_constants as ray_constants

    # only for this start: left set, a cluster this process joins or starts later (ray.cluster_utils, a
    # `rlframe doctor` subprocess) would resolve its nodes to loopback and never find its raylet
    saved = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"), ray_constants.ENABLE_RAY_CLUSTER
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    for key, value in LOCAL_RAYLET_ENV.items():
        os.environ.setdefault(key, value)
    temp_dir = Path(cfg.temp_dir) if cfg.temp_dir else cache_dir / "ray"
    temp_dir.mkdir(parents=True, exist_ok=True)
    # Ray's CPUs are logical: the roles take turns (generate, score, train), so a small
    # machine may host more requested CPUs than it has cores.
    num_cpus = cfg.num_cpus or max(os.cpu_count() or 1, int(required_cpus + 0.999))
    try:
        ray.init(num_cpus=num_cpus, _temp_dir=str(temp_dir.resolve()), **kwargs)
    finally:
        if saved[0] is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]
    return True


def shutdown_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()
