"""No shared filesystem assumed: the run folder lives on the driver's node, and files cross nodes through Ray.

When a run joins a cluster (`cluster.address`) and `run.storage` names no folder every node shares:
- outputs (DeepSpeed checkpoints, Hugging Face policies): every learner rank writes into a node-local scratch
  folder (`$RLFRAME_SCRATCH`, else the system temp dir); the driver pulls the files in chunks through the object
  store into `<dest>.tmp-ship` on its node and renames it into place (atomic), then the scratch is removed;
- inputs from the run folder (tokenizer, built model, SFT policy, a checkpoint's learner state): the driver puts
  them in the object store in chunks (`Shipped`); the actor writes them into its scratch, loads, then removes them;
- any other path an actor is handed (`model.path`, a reward file) is checked to exist on the actor's node.
With `run.storage` (the run folder inside it) or a private single-machine Ray, paths are used as they are.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

log = logging.getLogger("rlframe")
CHUNK = 16 * 2**20       # bytes per object-store chunk (the test cluster's nodes have 150 MiB object stores)
WINDOW = 4               # chunks in flight per file while pulling
SCRATCH_ENV = "RLFRAME_SCRATCH"
_LOCAL: dict[str, str] = {}   # actor side: a shipped folder's path on the driver -> its copy here


@dataclass
class Shipped:
    """A file or folder of the driver's node in object-store chunks: relative path ("" for a file) -> refs."""
    path: str
    files: dict[str, list[Any]] = field(default_factory=dict)
    nbytes: int = 0


def node_ip() -> str:
    return ray.util.get_node_ip_address() if ray.is_initialized() else "localhost"


def say(msg: str) -> None:
    """A line in the actor's own log (gathered into <run>/logs/<role>-<rank>.log)."""
    print(f"[rlframe] {msg}", file=sys.stderr, flush=True)


def scratch(kind: str) -> Path:
    root = os.environ.get(SCRATCH_ENV) or None
    if root:
        Path(root).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"rlframe-{kind}-", dir=root))


def put_files(path: Path) -> Shipped:
    """Driver side: `path` (file or folder) into the object store."""
    files = [("", path)] if path.is_file() else sorted((str(p.relative_to(path)), p) for p in path.rglob("*")
                                                       if p.is_file())
    out = Shipped(str(path))
    for rel, p in files:
        refs = []
        with p.open("rb") as f:
            while True:
                data = f.read(CHUNK)
                if not data and refs:
                    break
                refs.append(ray.put(data))
                out.nbytes += len(data)
                if len(data) < CHUNK:
                    break
        out.files[rel] = refs
    return out


def localize(item: str | Shipped | None, what: str) -> str | None:
    """Actor side: a shipped file or folder written into this node's scratch (that path returned); a plain path
    checked to exist on this node, with an error naming it and the node."""
    if item is None or isinstance(item, str):
        if item is not None and not Path(item).exists():
            raise FileNotFoundError(f"{what} {item}: not found on node {node_ip()} (no shared filesystem is "
                                    f"assumed: put it at this path on every node, or set run.storage)")
        return item
    if item.path in _LOCAL:
        return _LOCAL[item.path]
    dest = scratch("in")
    for rel, refs in item.files.items():
        target = dest / (rel or Path(item.path).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as f:
            for ref in refs:
                f.write(ray.get(ref))
    local = _LOCAL[item.path] = str(dest / Path(item.path).name if "" in item.files else dest)
    say(f"{what}: {item.path} shipped from the driver's node ({item.nbytes / 1e6:.2f} MB) to {local} "
        f"on node {node_ip()}")
    return local


def release(*paths: str | None) -> None:
    """Actor side: remove the scratch copies `localize` made (once loaded they are not needed)."""
    for src, local in list(_LOCAL.items()):
        if local in paths:
            shutil.rmtree(Path(local) if Path(local).is_dir() else Path(local).parent, ignore_errors=True)
            del _LOCAL[src]


def _save_into_scratch(actor: Any, method: str) -> tuple[str, list[tuple[str, int]]]:
    """On a learner rank: `method(folder)` into a fresh scratch folder; the files written (relative path, size)."""
    folder = scratch("out")
    getattr(actor, method)(str(folder))
    files = [(str(p.relative_to(folder)), p.stat().st_size) for p in sorted(folder.rglob("*")) if p.is_file()]
    say(f"{method}: {sum(s for _, s in files) / 1e6:.2f} MB written to {folder} on node {node_ip()} for the driver")
    return str(folder), files


def _read(_actor: Any, folder: str, rel: str, offset: int) -> bytes:
    with (Path(folder) / rel).open("rb") as f:
        f.seek(offset)
        return f.read(CHUNK)


def _remove(_actor: Any, folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


class RunStorage:
    """The driver's side: what actors are handed, and where the learners' files end up."""

    def __init__(self, cfg: Any, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.shipping = bool(cfg.cluster.address) and not cfg.run.storage
        self._shipped: dict[str, Shipped] = {}   # kept for the run: restarted actors localize them again

    def ship(self, path: str | Path | None) -> str | Shipped | None:
        """What an actor gets for `path`: a run-folder file in chunks when shipping, else the path (checked there)."""
        if path is None:
            return None
        p = Path(path).resolve()
        if not self.shipping or not p.is_relative_to(self.run_dir):
            return str(p)
        if str(p) not in self._shipped:
            self._shipped[str(p)] = put_files(p)
        return self._shipped[str(p)]

    def save(self, group: Any, method: str, dest: str | Path, timeout: float) -> None:
        """`method(folder)` on every rank of `group` (all must call: collectives), its files in `dest` here."""
        if not self.shipping:
            group.run(method, str(dest), timeout=timeout)
            return
        dest = Path(dest)
        outs = group.wait([a.__ray_call__.remote(_save_into_scratch, method) for a in group.actors], method, timeout)
        tmp = dest.with_name(f"{dest.name}.tmp-ship")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        total = 0
        for actor, (folder, files) in zip(group.actors, outs):
            for rel, size in files:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                offsets, pending = deque(range(0, size, CHUNK)), deque()
                with (tmp / rel).open("wb") as f:
                    while offsets or pending:
                        while offsets and len(pending) < WINDOW:
                            pending.append(actor.__ray_call__.remote(_read, folder, rel, offsets.popleft()))
                        f.write(ray.get(pending.popleft(), timeout=timeout))
                total += size
            ray.get(actor.__ray_call__.remote(_remove, folder), timeout=timeout)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        log.info("%s: %.2f MB from %d %s rank(s) shipped through Ray to %s", method, total / 1e6, len(outs),
                 group.name, dest)


def probe_node(marker: str | None) -> str | None:
    """On one node (`rlframe doctor`): run.storage's marker visible (a shared folder), or the shipping scratch folder
    writable; None when fine, else why not."""
    if marker is not None:
        return None if Path(marker).is_file() else f"{marker} not visible (run.storage is not shared with this node)"
    root = os.environ.get(SCRATCH_ENV) or tempfile.gettempdir()
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=root).close()
    except OSError as err:
        return f"scratch folder {root} (${SCRATCH_ENV}) not writable: {err}"
    return None
