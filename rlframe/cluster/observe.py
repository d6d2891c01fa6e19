"""What the run folder records about its actors: where each one runs (`placement.json`, written as actors come
up) and what each one printed (`logs/<role>-<rank>.log`, gathered when a role stops).

An actor's stdout and stderr are the files its Ray worker writes on its own node; the driver reads them there
when that node is its own, and otherwise asks the actor for them through Ray, so no shared filesystem is needed.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import ray

log = logging.getLogger("rlframe")
LOG_WAIT_S = 5.0          # a hung actor (it still runs a call) leaves its log behind rather than block the stop
_lock = threading.Lock()


def whoami(_actor: Any) -> dict[str, Any]:
    """On an actor: its node, pid and the files its stdout and stderr go to."""
    ctx = ray.get_runtime_context()
    outs = []
    for fd in (1, 2):
        try:
            outs.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            outs.append(None)
    return {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
            "actor_id": ctx.get_actor_id(), "output": outs}


def read_output(_actor: Any, paths: list[str | None]) -> str:
    """On an actor: the text of its stdout and stderr files (the same file once)."""
    seen, text = set(), []
    for p in paths:
        if p and p not in seen and os.path.isfile(p):
            seen.add(p)
            text.append(Path(p).read_text(errors="replace"))
    return "".join(text)


class Observer:
    """placement.json and logs/ of one run folder."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.placed: dict[str, dict[str, Any]] = {}   # actor id -> its entry

    def watch(self, role: str, actors: list[Any], resources: dict[str, float], pool: str) -> list[Any]:
        """Ask every new actor where it runs; its entry is written once it answers (after its constructor)."""
        refs = [a.__ray_call__.remote(whoami) for a in actors]
        for rank, ref in enumerate(refs):
            ref.future().add_done_callback(lambda f, rank=rank: self._placed(f, role, rank, resources, pool))
        return refs

    def _placed(self, future: Any, role: str, rank: int, resources: dict[str, float], pool: str) -> None:
        if future.exception() is not None:   # died while starting: the error reaches the driver elsewhere
            return
        info = future.result()
        with _lock:
            self.placed[info["actor_id"]] = {"role": role, "rank": rank, **{k: v for k, v in info.items()
                                                                           if k != "output"},
                                             "resources": resources, "pool": pool}
            entries = sorted(self.placed.values(), key=lambda e: (e["role"], e["rank"]))
            tmp = self.run_dir / ".placement.json.tmp"
            tmp.write_text(json.dumps(entries, indent=1))
            tmp.replace(self.run_dir / "placement.json")

    def gather(self, role: str, actors: list[Any], infos: list[Any]) -> None:
        """Append each actor's stdout/stderr to logs/<role>-<rank>.log (before the actors are killed)."""
        if not ray.is_initialized() or not actors:
            return
        here = ray.get_runtime_context().get_node_id()
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        ready, _ = ray.wait(infos, num_returns=len(infos), timeout=LOG_WAIT_S) if infos else ([], [])
        asks = {}
        for rank, (actor, ref) in enumerate(zip(actors, infos)):
            try:
                info = ray.get(ref) if ref in ready else None
            except ray.exceptions.RayError:
                info = None
            if info is None:
                continue
            if info["node_id"] == here:
                asks[rank] = (info, read_output(None, info["output"]))
            else:
                asks[rank] = (info, actor.__ray_call__.remote(read_output, info["output"]))
        for rank, (info, text) in asks.items():
            if not isinstance(text, str):
                try:
                    text = ray.get(text, timeout=LOG_WAIT_S)
                except (ray.exceptions.RayError, TimeoutError) as err:
                    text = f"(not gathered: {type(err).__name__}; Ray keeps it at {info['output']})\n"
            with (self.run_dir / "logs" / f"{role}-{rank}.log").open("a") as f:
                f.write(f"=== {role} {rank}: pid {info['pid']} on node {info['node_ip']} ({info['node_id']})\n{text}")
