"""Start or join Ray, place each role with a placement group, and fan calls out to actor groups."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

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


class ActorGroup:
    """A role's actors, placed by one placement group; `call` fans a method out to all."""

    def __init__(self, name: str, actor_cls: Any, count: int, num_cpus: float, num_gpus: float,
                 strategy: str, args: Sequence[Any] = (), per_rank_args: bool = False,
                 kwargs: dict | None = None, actor_options: dict | None = None) -> None:
        self.name = name
        bundle = {"CPU": num_cpus} if num_cpus else {}
        if num_gpus:
            bundle["GPU"] = num_gpus
        self.pg = placement_group([dict(bundle) or {"CPU": 0.01} for _ in range(count)], strategy=strategy)
        ready, _ = ray.wait([self.pg.ready()], timeout=120)
        if not ready:
            remove_placement_group(self.pg)
            raise RuntimeError(
                f"could not place {count} x {bundle} for the {name} role within 120 s: the cluster has "
                f"{ray.available_resources()}; lower {name}.num_workers / num_cpus_per_worker / "
                f"num_gpus_per_worker or add nodes")
        self.actors = []
        for i in range(count):
            opts = dict(num_cpus=num_cpus, num_gpus=num_gpus, **(actor_options or {}),
                        scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i))
            a = args[i] if per_rank_args else args
            self.actors.append(ray.remote(actor_cls).options(**opts).remote(*a, **(kwargs or {})))

    def __len__(self) -> int:
        return len(self.actors)

    def call(self, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def call_each(self, method: str, per_actor_args: Sequence[Sequence[Any]], **kwargs: Any) -> list[ray.ObjectRef]:
        return [getattr(a, method).remote(*args, **kwargs) for a, args in zip(self.actors, per_actor_args)]

    def run(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        return ray.get(self.call(method, *args, **kwargs))

    def kill(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
        remove_placement_group(self.pg)
