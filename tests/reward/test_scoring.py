"""Fast tests of rlframe/reward/scoring.py with small fake batch functions (stand-ins for user rewards)."""
from __future__ import annotations

import math

import pytest

from rlframe.config.schema import RewardFnConfig
from rlframe.reward.scoring import run_reward_fns

SAMPLES = [{"id": "s0", "completion": "aa"}, {"id": "s1", "completion": "bbbb"}, {"id": "s2", "completion": ""}]


def length_fn(samples):
    return [float(len(s["completion"])) for s in samples]          # [2, 4, 0]


def flag_fn(samples):
    return [1 if s["completion"] else 0 for s in samples]          # ints are fine: [1, 1, 0]


def test_weighted_total():
    out = run_reward_fns([(RewardFnConfig(name="length", weight=0.5), length_fn),
                          (RewardFnConfig(name="flag", weight=2.0), flag_fn)], SAMPLES)
    assert out["length"] == [2.0, 4.0, 0.0]
    assert out["flag"] == [1.0, 1.0, 0.0]
    assert all(isinstance(v, float) for v in out["flag"])
    # total = 0.5 * length + 2 * flag = [1 + 2, 2 + 2, 0 + 0]
    assert out["total"] == [3.0, 4.0, 0.0]
    assert set(out) == {"length", "flag", "total"}


def test_dict_result_weights_own_key_and_logs_others():
    def sim(samples):
        return {"sim": [0.5, 1.0, 0.0], "sim/dim0": [10.0, 20.0, 30.0], "sim/dim1": [-1.0, -2.0, -3.0]}

    out = run_reward_fns([(RewardFnConfig(name="sim", weight=0.7), sim),
                          (RewardFnConfig(name="flag", weight=0.3), flag_fn)], SAMPLES)
    # total = 0.7 * sim + 0.3 * flag = [0.35 + 0.3, 0.7 + 0.3, 0]; the logged-only keys do not count
    assert out["total"] == pytest.approx([0.65, 1.0, 0.0], abs=1e-12)
    assert out["sim/dim0"] == [10.0, 20.0, 30.0]
    assert out["sim/dim1"] == [-1.0, -2.0, -3.0]
    assert out["sim"] == [0.5, 1.0, 0.0]


def test_empty_fn_list_gives_zero_total():
    assert run_reward_fns([], SAMPLES) == {"total": [0.0, 0.0, 0.0]}


def test_wrong_length_raises_naming_function():
    with pytest.raises(ValueError, match=r"reward 'short' returned 2 values for 'short', expected 3"):
        run_reward_fns([(RewardFnConfig(name="short"), lambda s: [1.0, 2.0])], SAMPLES)
    # a logged key of the wrong length is also caught
    with pytest.raises(ValueError, match=r"reward 'd' returned 1 values for 'd/x', expected 3"):
        run_reward_fns([(RewardFnConfig(name="d"), lambda s: {"d": [0.0] * 3, "d/x": [1.0]})], SAMPLES)


@pytest.mark.parametrize("bad,shown", [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf"),
                                       ("0.5", "'0.5'"), (None, "None")])
def test_non_finite_or_non_numeric_raises_naming_function_and_sample(bad, shown):
    def fn(samples):
        return [1.0, bad, 0.0]

    with pytest.raises(ValueError) as info:
        run_reward_fns([(RewardFnConfig(name="judge"), fn)], SAMPLES)
    msg = str(info.value)
    assert "'judge'" in msg
    assert "'s1'" in msg                # the sample id of the bad value
    assert f"returned {shown} " in msg


def test_bad_value_without_id_names_index():
    with pytest.raises(ValueError, match="on sample 1"):
        run_reward_fns([(RewardFnConfig(name="x"), lambda s: [0.0, math.nan])], [{}, {}])


def test_dict_lacking_own_name_raises():
    with pytest.raises(ValueError, match=r"reward 'sim' returned keys \['other'\], which lack its own name"):
        run_reward_fns([(RewardFnConfig(name="sim"), lambda s: {"other": [0.0, 0.0, 0.0]})], SAMPLES)


def test_numpy_scores_are_accepted():
    import numpy as np

    out = run_reward_fns([(RewardFnConfig(name="np", weight=2.0), lambda s: np.array([0.5, 1.0], np.float32))],
                         [{"id": "a"}, {"id": "b"}])
    assert out["np"] == [0.5, 1.0] and out["total"] == [1.0, 2.0]
