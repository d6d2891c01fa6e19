"""Start or join Ray (the placement of roles is cluster/roles.py)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ray

from rlframe.config.schema import ClusterConfig

log = logging.getLogger("rlframe")

# Inherited by every Ray worker process (the raylet copies the driver's environment).
WORKER_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "RAY_DEDUP_LOGS": "1",
    "PYTHONWARNINGS": "ignore",
    # Ray starts workers at niceness 15; on a machine shared with other jobs every actor (generator,
    # learners, reward) then gets a small fraction of a core beside any normal process. Read by the raylet.
    "RAY_worker_niceness": "0",
}


def init_ray(cfg: ClusterConfig, cache_dir: Path, required_cpus: float = 0) -> bool:
    """Start a private local Ray (temp dir under the cache), or join `cfg.address`.

    Returns True when this call connected (so the caller owns the shutdown)."""
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir / "torch_extensions"))
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # inherited by the learner actors
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": cfg.log_to_driver, "include_dashboard": False,
                              "logging_level": logging.WARNING}
    if cfg.address:
        ray.init(address=cfg.address, **kwargs)
        return True
    temp_dir = Path(cfg.temp_dir) if cfg.temp_dir else cache_dir / "ray"
    temp_dir.mkdir(parents=True, exist_ok=True)
    # Ray's CPUs are logical: the roles take turns (generate, score, train), so a small
    # machine may host more requested CPUs than it has cores.
    num_cpus = cfg.num_cpus or max(os.cpu_count() or 1, int(required_cpus + 0.999))
    ray.init(num_cpus=num_cpus, _temp_dir=str(temp_dir.resolve()), **kwargs)
    return True


def shutdown_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()
