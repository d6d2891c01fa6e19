"""The learning-rate schedule (pure: rlframe/trainer/schedule.py)."""
from __future__ import annotations

import math

import pytest

from rlframe.trainer.schedule import lr_at


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


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        lr_at(0, 10, 1.0, 0, "linear")
