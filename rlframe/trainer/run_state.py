"""Where a run is: stage, step, each stage's sampler position, the weight version, and the driver's RNG.

Everything here is plain data with `state_dict` / `load_state_dict`, so that a checkpoint can hold it and a
resumed run sees the same next prompts as an uninterrupted one (no Ray, no DeepSpeed).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from rlframe.data.sampler import EpochSampler
from rlframe.rng import capture_rng, restore_rng


@dataclass
class RunState:
    stage: str = ""
    step: int = 0
    weight_version: int = 0
    samplers: dict[str, EpochSampler] = field(default_factory=dict)
    # stages finished, and the policy folder the next stage starts from ("" = the initial model)
    completed: list[str] = field(default_factory=list)
    policy: str = ""
    # trainer.max_staleness > 0: stage -> where its sampler was before the draws of batches generated ahead and
    # not trained yet (None: none drawn); a checkpoint saves that position, so a resumed run draws them again
    ahead: dict[str, Callable[[], dict | None]] = field(default_factory=dict)
    lock: Any = field(default_factory=threading.RLock, repr=False, compare=False)   # held by every draw ahead

    def sampler(self, stage: str, size: int, seed: int) -> EpochSampler:
        """The stage's sampler, created on first use (a restored one keeps its position)."""
        if stage not in self.samplers:
            self.samplers[stage] = EpochSampler(size, seed)
        return self.samplers[stage]

    def enter(self, stage: str) -> None:
        self.stage, self.step = stage, 0

    @property
    def epoch(self) -> int:
        s = self.samplers.get(self.stage)
        return s.epoch if s is not None else 0

    def state_dict(self) -> dict[str, Any]:
        with self.lock:
            pos = {k: (k in self.ahead and self.ahead[k]()) or s.state_dict() for k, s in self.samplers.items()}
        return {"stage": self.stage, "step": self.step, "weight_version": self.weight_version,
                "samplers": {k: {"size": s.size, "seed": s.seed, **pos[k]} for k, s in self.samplers.items()},
                "completed": list(self.completed), "policy": self.policy, "rng": capture_rng()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage, self.step, self.weight_version = state["stage"], state["step"], state["weight_version"]
        self.completed, self.policy = list(state.get("completed", [])), state.get("policy", "")
        self.samplers = {}
        for name, s in state["samplers"].items():
            sampler = EpochSampler(s["size"], s["seed"])
            sampler.load_state_dict(s)
            self.samplers[name] = sampler
        restore_rng(state["rng"])
