"""Fast tests of rlframe/reward/scoring.py: weighted totals, value checks, the error policy, normalising."""
from __future__ import annotations

import math

import pytest

from rlframe.config.schema import RewardFnConfig
from rlframe.reward.plugins import PluginReward, RewardError
from rlframe.reward.scoring import RewardSet, combine

SAMPLES = [{"id": "s0", "completion": "aa"}, {"id": "s1", "completion": "bbbb"}, {"id": "s2", "completion": ""}]


def length_fn(samples):
    return [float(len(s["completion"])) for s in samples]          # [2, 4, 0]


def flag_fn(samples):
    return [1 if s["completion"] else 0 for s in samples]          # ints are fine: [1, 1, 0]


def reward_set(*fns, on_error="raise", fallback=0.0):
    """fns: (name, weight, callable[, extra spec fields])"""
    specs = [RewardFnConfig(name=f[0], weight=f[1], **(f[3] if len(f) > 3 else {})) for f in fns]
    return RewardSet(specs, on_error, fallback, fns=[PluginReward(s, f[2]) for s, f in zip(specs, fns)])


def score(*fns, samples=SAMPLES, **kw):
    rs = reward_set(*fns, **kw)
    out = rs.score(samples)
    return out.components, combine(out.components, rs.specs), out


def test_weighted_total():
    comps, total, _ = score(("length", 0.5, length_fn), ("flag", 2.0, flag_fn))
    assert comps["length"] == [2.0, 4.0, 0.0]
    assert comps["flag"] == [1.0, 1.0, 0.0]
    assert all(isinstance(v, float) for v in comps["flag"])
    # total = 0.5 * length + 2 * flag = [1 + 2, 2 + 2, 0 + 0]
    assert total == [3.0, 4.0, 0.0]
    assert set(comps) == {"length", "flag"}


def test_dict_result_weights_own_key_and_logs_others():
    def sim(samples):
        return {"sim": [0.5, 1.0, 0.0], "sim/dim0": [10.0, 20.0, 30.0], "raw": [-1.0, -2.0, -3.0]}

    comps, total, _ = score(("sim", 0.7, sim), ("flag", 0.3, flag_fn))
    # total = 0.7 * sim + 0.3 * flag = [0.35 + 0.3, 0.7 + 0.3, 0]; the logged-only keys do not count
    assert total == pytest.approx([0.65, 1.0, 0.0], abs=1e-12)
    assert comps["sim/dim0"] == [10.0, 20.0, 30.0]
    assert comps["raw"] == [-1.0, -2.0, -3.0]


def test_batch_size_splits_calls_and_keeps_order():
    calls = []

    def fn(samples):
        calls.append([s["id"] for s in samples])
        return [float(s["id"][1:]) for s in samples]

    comps, _, _ = score(("idx", 1.0, fn, {"batch_size": 2}))
    assert calls == [["s0", "s1"], ["s2"]]
    assert comps["idx"] == [0.0, 1.0, 2.0]


def test_empty_fn_list_gives_zero_total():
    comps, total, _ = score()
    assert comps == {} and total == []


def test_wrong_length_raises_naming_function():
    with pytest.raises(RewardError, match=r"reward 'short' returned 2 values for 'short', expected 3"):
        score(("short", 1.0, lambda s: [1.0, 2.0]))
    with pytest.raises(RewardError, match=r"reward 'd' returned 1 values for 'd/x', expected 3"):
        score(("d", 1.0, lambda s: {"d": [0.0] * 3, "d/x": [1.0]}))


@pytest.mark.parametrize("bad,shown", [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf"),
                                       ("0.5", "'0.5'"), (None, "None")])
def test_non_finite_or_non_numeric_raises_naming_function_and_sample(bad, shown):
    def fn(samples):
        return [1.0 if s["id"] != "s1" else bad for s in samples]

    with pytest.raises(RewardError) as info:
        score(("judge", 1.0, fn))
    msg = str(info.value)
    assert "'judge'" in msg
    assert "'s1'" in msg                # the sample id of the bad value
    assert f"returned {shown} " in msg


def test_exception_names_function_sample_and_exception():
    def fn(samples):
        for s in samples:
            if s["id"] == "s2":
                raise KeyError("answer")
        return [1.0] * len(samples)

    with pytest.raises(RewardError) as info:
        score(("judge", 1.0, fn))
    msg = str(info.value)
    assert "reward 'judge' raised on sample 's2': KeyError: 'answer'" in msg


def test_batch_level_failure_is_reported_as_the_batch():
    def fn(samples):
        if len(samples) > 1:
            raise MemoryError("batch too big")
        return [1.0]

    with pytest.raises(RewardError, match=r"raised on a batch of 3 samples \('s0' ... 's2'\): MemoryError"):
        score(("big", 1.0, fn))


def test_fallback_scores_only_the_failing_samples_and_counts_them():
    def fn(samples):
        if any(s["id"] == "s1" for s in samples):
            if len(samples) == 1:
                raise ValueError("cannot parse")
            raise ValueError("batch contains s1")
        return {"f": [2.0] * len(samples), "f/extra": [7.0] * len(samples)}

    comps, total, out = score(("f", 1.0, fn), ("flag", 1.0, flag_fn), on_error="fallback", fallback=-1.0)
    assert comps["f"] == [2.0, -1.0, 2.0]
    assert comps["f/extra"] == [7.0, -1.0, 7.0]
    assert out.failures == {"f": 1, "flag": 0}
    assert total == [3.0, 0.0, 2.0]
    assert any("'s1'" in e and "cannot parse" in e for e in out.errors)


def test_fallback_replaces_a_nan():
    comps, _, out = score(("n", 1.0, lambda s: [math.nan if x["id"] == "s0" else 1.0 for x in s]),
                          on_error="fallback")
    assert comps["n"] == [0.0, 1.0, 1.0] and out.failures == {"n": 1}


def test_timeout_fails_the_call_without_per_sample_retries():
    import time

    calls = []

    def slow(samples):
        calls.append(len(samples))
        time.sleep(3.0)
        return [1.0] * len(samples)

    t0 = time.perf_counter()
    with pytest.raises(RewardError, match=r"reward 'slow' timed out after 0.2 s"):
        score(("slow", 1.0, slow, {"timeout_s": 0.2}))
    assert time.perf_counter() - t0 < 2.5          # it did not wait for the 3 s call
    comps, _, out = score(("slow", 1.0, slow, {"timeout_s": 0.2}), on_error="fallback", fallback=0.5)
    assert comps["slow"] == [0.5, 0.5, 0.5] and out.failures == {"slow": 3}
    assert calls == [3, 3]              # one call each time: a timeout is not retried per sample


def test_normalize_batch_zscores_each_component():
    comps = {"a": [0.0, 1.0, 2.0], "b": [5.0, 5.0, 5.0]}
    specs = [RewardFnConfig(name="a", weight=2.0), RewardFnConfig(name="b", weight=1.0)]
    assert combine(comps, specs) == [5.0, 7.0, 9.0]
    z = math.sqrt(1.5)                  # (x - 1) / pstdev([0, 1, 2]) = (x - 1) / sqrt(2/3)
    assert combine(comps, specs, "batch") == pytest.approx([-2 * z, 0.0, 2 * z])
    with pytest.raises(ValueError, match="reward.normalize='group'"):
        combine(comps, specs, "group")


def test_numpy_scores_are_accepted():
    import numpy as np

    comps, total, _ = score(("np", 2.0, lambda s: np.array([0.5, 1.0], np.float32)),
                            samples=[{"id": "a"}, {"id": "b"}])
    assert comps["np"] == [0.5, 1.0] and total == [1.0, 2.0]


def test_mask_lists_the_samples_any_function_failed_on():
    def fn(samples):
        if any(s["id"] == "s1" for s in samples):
            raise ValueError("cannot parse")
        return [1.0] * len(samples)

    comps, _, out = score(("f", 1.0, fn), ("g", 1.0, lambda s: [math.nan if x["id"] == "s2" else 0.5 for x in s]),
                          on_error="mask", fallback=0.0)
    assert comps["f"] == [1.0, 0.0, 1.0] and out.failures == {"f": 1, "g": 1}
    assert out.failed == [1, 2]
