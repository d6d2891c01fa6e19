"""What every rollout backend provides, and the sample it returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Sequence

import torch

from rlframe.data.rollout_batch import Completion


@dataclass
class SamplingSettings:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 256
    repetition_penalty: float = 1.0
    seed: int | None = None


class Engine(Protocol):
    def generate_stream(self, prompts: Sequence[Sequence[int]], params: SamplingSettings) -> Iterator[list[Completion]]:
        """n completions per prompt, yielded a few whole groups at a time as they finish (any order)."""

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingSettings) -> list[Completion]:
        """n completions per prompt, grouped: all samples of prompt 0 first, then prompt 1, ..."""

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the weights in place (full, unsharded tensors, HF names)."""

    def probe_logprobs(self, token_ids: Sequence[int]) -> list[float]:
        """log p(token_t | tokens_<t) for t >= 1 at temperature 1 (for the weight-sync check)."""


def in_order(completions: Iterable[Completion]) -> list[Completion]:
    """Grouped by prompt, samples in their index order (what `Engine.generate` returns)."""
    return sorted(completions, key=lambda c: (c.prompt_index, c.sample_index))
