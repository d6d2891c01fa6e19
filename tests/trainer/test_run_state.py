"""The run state round-trips: step, stage, sampler positions, weight version and RNG (pure)."""
from __future__ import annotations

import pickle
import random

import numpy as np
import torch

from rlframe.trainer.run_state import RunState


def test_a_restored_state_continues_exactly_where_the_saved_one_was():
    state = RunState()
    state.enter("grpo")
    sampler = state.sampler("grpo", size=10, seed=3)
    sampler.take(7)
    sampler.take(6)              # into the second epoch
    state.step, state.weight_version = 4, 9
    saved = pickle.loads(pickle.dumps(state.state_dict()))   # what a checkpoint file would hold
    expected = (sampler.take(5), random.random(), float(np.random.rand()), torch.rand(2).tolist())

    random.seed(123)             # the process moves on (or a new one starts)
    restored = RunState()
    restored.load_state_dict(saved)
    assert (restored.stage, restored.step, restored.weight_version, restored.epoch) == ("grpo", 4, 9, 1)
    again = restored.sampler("grpo", size=10, seed=3)
    assert (again.take(5), random.random(), float(np.random.rand()), torch.rand(2).tolist()) == expected


def test_each_stage_keeps_its_own_sampler():
    state = RunState()
    a = state.sampler("sft", 5, 0)
    b = state.sampler("grpo", 5, 1)
    a.take(3)
    assert state.sampler("sft", 5, 0) is a and b.pos == 0
    state.enter("sft")
    assert state.epoch == 0 and state.step == 0


def test_a_run_resumed_exactly_at_an_epoch_boundary_trains_the_next_epoch():
    """veRL's failure mode: a checkpoint taken at the end of an epoch resumes into zero steps."""
    from rlframe.trainer.run_state import RunState

    whole, first = RunState(), RunState()
    for s in (whole, first):
        s.sampler("grpo", 8, seed=3).take(8)       # exactly one epoch: position 8 of 8
    saved = first.state_dict()
    resumed = RunState()
    resumed.load_state_dict(saved)
    nxt = resumed.sampler("grpo", 8, seed=3).take(8)
    assert nxt == whole.samplers["grpo"].take(8)   # the same next epoch, reshuffled, every index once
    assert sorted(nxt) == list(range(8)) and resumed.samplers["grpo"].epoch == 1
