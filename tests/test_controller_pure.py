"""Fast tests of the pure helpers of rlframe/controller.py (importing it imports ray but starts nothing)."""
from __future__ import annotations

import math

import pytest
import torch

from rlframe.controller import _pad_rows, lr_at


# ------------------------------------------------------------------------------------ lr_at
def test_linear_warmup_then_constant():
    # warm-up of 4 steps: base * (step + 1) / 4
    got = [lr_at(s, total=10, base=2.0, warmup=4, schedule="constant") for s in range(6)]
    assert got == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0])


def test_constant_schedule():
    assert [lr_at(s, 10, 3e-4, 0, "constant") for s in (0, 5, 9, 10, 50)] == [3e-4] * 5
    # min_ratio is ignored by the constant schedule
    assert lr_at(9, 10, 1.0, 0, "constant", min_ratio=0.1) == 1.0


def test_cosine_decays_to_min_ratio():
    base, total, mr = 1.0, 10, 0.1
    assert lr_at(0, total, base, 0, "cosine", mr) == pytest.approx(1.0)
    # half way: 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    assert lr_at(5, total, base, 0, "cosine", mr) == pytest.approx(0.55)
    # step 9: frac 0.9 -> 0.1 + 0.45 * (1 + cos(0.9 pi)) = 0.1 + 0.45 * 0.0489435 = 0.1220246
    assert lr_at(9, total, base, 0, "cosine", mr) == pytest.approx(0.1 + 0.45 * (1 + math.cos(0.9 * math.pi)))
    assert lr_at(9, total, base, 0, "cosine", mr) == pytest.approx(0.12202457, abs=1e-8)
    # the end (step == total) and beyond stay at min_ratio * base
    assert lr_at(10, total, base, 0, "cosine", mr) == pytest.approx(0.1)
    assert lr_at(15, total, base, 0, "cosine", mr) == pytest.approx(0.1)
    # scaled by base; default min_ratio 0 decays to 0
    assert lr_at(10, total, 3e-3, 0, "cosine", mr) == pytest.approx(3e-4)
    assert lr_at(10, total, 3e-3, 0, "cosine") == pytest.approx(0.0, abs=1e-15)
    vals = [lr_at(s, total, base, 0, "cosine", mr) for s in range(total + 1)]
    assert all(a > b for a, b in zip(vals, vals[1:]))                  # strictly decreasing


def test_cosine_after_warmup():
    # warmup 2, total 6 -> decay over 4 steps: step 2 -> frac 0 -> base; step 4 -> frac .5 -> 0.5 (mr 0)
    got = [lr_at(s, 6, 1.0, 2, "cosine") for s in range(7)]
    assert got == pytest.approx([0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0], abs=1e-12)
    # total <= warmup: constant base after the warm-up
    assert lr_at(5, 3, 1.0, 3, "cosine", 0.1) == 1.0


# ------------------------------------------------------------------------------------ _pad_rows
def test_pad_rows_places_values_at_mask_positions():
    like = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.float32)
    rows = [[-0.5, -1.5], [-1.0, -2.0, -3.0, -4.0], []]
    out = _pad_rows(rows, like)
    assert out.dtype == torch.float32 and out.shape == (3, 5)
    assert out.tolist() == [[0.0, 0.0, -0.5, -1.5, 0.0],
                            [0.0, -1.0, -2.0, -3.0, -4.0],
                            [0.0, 0.0, 0.0, 0.0, 0.0]]


def test_pad_rows_truncates_extra_values_and_leaves_missing_zero():
    like = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.float32)
    # row 0 has 3 values (e.g. log-probs of tokens after EOS) for 2 positions -> first 2 kept
    # row 1 has 1 value for 3 positions -> the other 2 stay 0
    out = _pad_rows([[-0.25, -0.75, -9.0], [-2.0]], like)
    assert out.tolist() == [[0.0, -0.25, -0.75, 0.0], [-2.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("overrides, expected", [
    ([], True),                                                       # SFT then GRPO
    (["trainer.stages=[sft]"], True),                                 # `rlframe sft` evaluates during SFT
    (["trainer.stages=[sft]", "trainer.sft.eval_every=0", "trainer.sft.stop_threshold=null"], False),
    (["trainer.stages=[grpo]"], True),
])
def test_generators_are_counted_whenever_they_are_started(overrides, expected):
    """The CPUs Ray is started with must cover every role the run starts (a 2-core `rlframe sft` with
    SFT evaluation once could not place its learners)."""
    from rlframe.config import load_config
    from rlframe.controller import Controller

    assert Controller(load_config(overrides)).needs_generators() is expected
