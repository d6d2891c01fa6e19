"""What flows between the roles in one step, typed, growing phase by phase (pure: torch only).

    generators -> Completion (token ids, sampling log-probs, weight version)
    driver     -> RolloutBatch: completions placed in their slot (prompt i's G samples at i*G .. i*G+G-1,
                  so order holds by construction, whatever order streams deliver them in), then reward
                  components and totals, then advantages
    learners   <- TrainBatch: padded tensors (inputs, completion mask, advantages, sampling log-probs,
                  images); each rank adds its reference / old log-probs itself
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch

from rlframe.data.batching import TrainBatch, collate


@dataclass
class Completion:
    prompt_index: int
    token_ids: list[int]
    # log-prob of each sampled token under the sampling distribution (after temperature)
    logprobs: list[float]
    text: str = ""
    finish_reason: str = ""
    # which of the prompt's n samples (streams may return groups out of order)
    sample_index: int = 0
    # the generator's weight version that sampled it
    weight_version: int = 0


@dataclass
class RolloutBatch:
    """One step's prompts and their G samples each, in slot order; the driver fills it phase by phase."""
    records: list[dict[str, Any]]                 # one data record per prompt
    prompts: list[list[int]]                      # prompt token ids (Prompt with images for VLMs)
    group_size: int
    completions: list[Completion | None] = field(default_factory=list)
    components: dict[str, list[float]] = field(default_factory=dict)
    rewards: list[float] = field(default_factory=list)
    advantages: torch.Tensor | None = None
    # slots whose rewards failed (reward.on_error=mask): their whole group is left out of the loss
    masked: set[int] = field(default_factory=set)
    # the training step (reward functions see it as `global_step`, TRL's trainer_state.global_step)
    step: int = 0
    # groups only there to fill the batch (DAPO's dynamic sampling ran out of rounds): out of the loss
    excluded: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.completions:
            self.completions = [None] * (len(self.prompts) * self.group_size)

    def __len__(self) -> int:
        return len(self.completions)

    def add(self, completions: Iterable[Completion]) -> list[int]:
        """Place completions in their slots; returns the slots (a slot filled twice is an error)."""
        slots = []
        for c in completions:
            if not 0 <= c.sample_index < self.group_size or not 0 <= c.prompt_index < len(self.prompts):
                raise ValueError(f"completion (prompt {c.prompt_index}, sample {c.sample_index}) is outside a batch "
                                 f"of {len(self.prompts)} prompts x {self.group_size}")
            slot = c.prompt_index * self.group_size + c.sample_index
            if self.completions[slot] is not None:
                raise ValueError(f"completion (prompt {c.prompt_index}, sample {c.sample_index}) arrived twice")
            self.completions[slot] = c
            slots.append(slot)
        return slots

    def extend(self, other: RolloutBatch, groups: Sequence[int], excluded: bool = False) -> None:
        """Append `other`'s groups, scored (completions, components, totals, masked slots): DAPO's dynamic
        sampling assembles a step's batch from several rounds this way."""
        g = self.group_size
        for k in groups:
            base, src = len(self), range(k * g, (k + 1) * g)
            if excluded:
                self.excluded.add(len(self.prompts))
            self.records.append(other.records[k])
            self.prompts.append(other.prompts[k])
            self.completions += [other.completions[s] for s in src]
            for name, values in other.components.items():
                self.components.setdefault(name, [0.0] * base).extend(values[s] for s in src)
            self.rewards += [other.rewards[s] for s in src]
            self.masked |= {base + s - k * g for s in other.masked if s in src}

    def done(self) -> list[Completion]:
        """Every completion, in slot order (raises if one is missing)."""
        missing = [i for i, c in enumerate(self.completions) if c is None]
        if missing:
            raise ValueError(f"{len(missing)} of {len(self)} samples never arrived (first slot {missing[0]})")
        return self.completions  # type: ignore[return-value]

    def record(self, slot: int) -> dict[str, Any]:
        return self.records[slot // self.group_size]

    def reward_samples(self, slots: Sequence[int]) -> list[dict[str, Any]]:
        """What a reward function sees: the data record, the completion text and ids, the step."""
        return [{**self.record(s), "completion": self.completions[s].text,
                 "completion_ids": self.completions[s].token_ids, "global_step": self.step} for s in slots]

    def set_scores(self, slots: Sequence[int], components: dict[str, list[float]], fill: float = 0.0) -> None:
        """Components of `slots` (in that order); a component some chunks lack reads `fill` there."""
        for name, values in components.items():
            column = self.components.setdefault(name, [fill] * len(self))
            for s, v in zip(slots, values, strict=True):
                column[s] = v

    def train_batch(self, pad_id: int, eos_id: int | Sequence[int] | None) -> TrainBatch:
        """The learners' tensors: prompt + completion per slot, the advantages and the sampling log-probs."""
        comps = self.done()
        batch = collate([self.prompts[i // self.group_size] for i in range(len(self))],
                        [c.token_ids for c in comps], pad_id, eos_id)
        batch.advantages = self.advantages
        batch.sample_logp = place_rows([c.logprobs for c in comps], batch.loss_mask)
        for g in set(self.masked_groups()) | self.excluded:
            batch.loss_mask[g * self.group_size: (g + 1) * self.group_size] = 0
        return batch

    def dump_rows(self, n: int) -> list[dict[str, Any]]:
        """`n` samples spread over the groups, each a reward sample (so `rlframe reward test` can replay it)
        plus what the step made of it: reward components, total, advantage, weight version, finish reason."""
        slots = sorted({round(i * len(self) / n) for i in range(n)}) if 0 < n < len(self) else range(len(self))
        rows = []
        for s, sample in zip(slots, self.reward_samples(slots)):
            c = self.completions[s]
            sample.update(step=self.step, sample_index=c.sample_index, weight_version=c.weight_version,
                          finish_reason=c.finish_reason,
                          rewards={k: None if v[s] != v[s] else v[s] for k, v in self.components.items()},
                          reward=self.rewards[s] if self.rewards else None,
                          advantage=_advantage(self.advantages, s),
                          masked=s in self.masked)
            rows.append(sample)
        return rows

    def masked_groups(self) -> list[int]:
        """Groups with a masked sample: their group-relative advantages would compare against a fake value."""
        return sorted({s // self.group_size for s in self.masked})


def _advantage(advantages: torch.Tensor | None, slot: int) -> float | None:
    """A sample's advantage; token-level ones (GAE): the first completion token's (the whole response's)."""
    if advantages is None:
        return None
    a = advantages[slot]
    return float(a) if a.ndim == 0 else float(a[a.nonzero()[0, 0]]) if a.any() else 0.0


def place_rows(rows: Sequence[Sequence[float]], mask: torch.Tensor) -> torch.Tensor:
    """Each row's per-token values at its target positions (the 1s of `mask`) in a tensor like `mask`."""
    out = torch.zeros_like(mask)
    for i, row in enumerate(rows):
        pos = mask[i].nonzero().flatten()
        k = min(len(row), len(pos))
        out[i, pos[:k]] = torch.tensor(list(row[:k]), dtype=out.dtype)
    return out

