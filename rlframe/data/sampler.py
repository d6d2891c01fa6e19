"""Epoch-shuffled index sampler whose position is part of the run state (pure)."""
from __future__ import annotations

import random


class EpochSampler:
    """Yields indices of a shuffled permutation, reshuffling at each epoch; no index repeats within an epoch."""

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError("cannot sample from an empty data set")
        self.size, self.seed = size, seed
        self.epoch, self.pos = 0, 0
        self._order = self._perm()

    def _perm(self) -> list[int]:
        order = list(range(self.size))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if self.pos == self.size:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._perm()
            k = min(n - len(out), self.size - self.pos)
            out.extend(self._order[self.pos: self.pos + k])
            self.pos += k
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._perm()
