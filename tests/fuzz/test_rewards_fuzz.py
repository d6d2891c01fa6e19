"""Property-based tests of every built-in reward: for any completion, finite values in the documented range.

The rewards are built the way a reward worker builds them (by name from the registry), and
profile_similarity uses the real all-MiniLM-L6-v2, loaded once for the module.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlframe.reward.registry import REWARDS
from test_parser_fuzz import IMG_A, IMG_B, NON_PREFER, PREFER, VALID, any_text

# name -> the components it returns and their range
RANGES = {"format": {"format": (0.0, 1.0)}, "accuracy": {"accuracy": (0.0, 1.0)},
          "score_consistency": {"score_consistency": (0.0, 1.0)},
          "profile_similarity": {"profile_similarity": (0.0, 1.0), "profile_cosine_raw": (0.0, 1.0),
                                 "profile_exact": (0.0, 1.0)}}
terms = st.one_of(st.sampled_from(["Cubism", "Teal", "Mosaic", "Rough", ""]), st.text(max_size=30))
profiles = st.one_of(st.fixed_dictionaries({}, optional={d: terms for d in PREFER}),
                     st.text(max_size=120))


@pytest.fixture(scope="module")
def rewards():
    return {name: REWARDS.get(name)() for name in RANGES}


def sample(completion: str, prefer=PREFER, non_prefer=NON_PREFER, answer="Image A") -> dict:
    return {"id": "s", "prompt": "p", "completion": completion, "completion_ids": [1, 2], "answer": answer,
            "prefer_attributes": prefer, "non_prefer_attributes": non_prefer, "image_a": IMG_A, "image_b": IMG_B,
            "scores": {"Image A": [5, 5, 5, 5, 0], "Image B": [0, 2, 0, 0, 5]}}


def check(rewards, samples: list[dict]) -> dict[str, list[float]]:
    out = {}
    for name, comps in RANGES.items():
        got = rewards[name](samples)
        got = got if isinstance(got, dict) else {name: got}
        for comp, (lo, hi) in comps.items():
            values = got[comp]
            assert len(values) == len(samples)
            for v in values:
                assert isinstance(v, float) and math.isfinite(v) and lo <= v <= hi, (name, comp, v)
            out[comp] = values
    return out


def test_the_valid_completion_scores_top_marks(rewards):
    out = check(rewards, [sample(VALID)])
    assert out["format"] == [1.0] and out["accuracy"] == [1.0] and out["profile_exact"] == [1.0]
    assert out["score_consistency"] == [1.0] and out["profile_similarity"] == [1.0]


@given(st.lists(any_text, min_size=1, max_size=4))
def test_any_completion_scores_in_range(rewards, texts):
    check(rewards, [sample(t) for t in texts])


@given(st.integers(min_value=0, max_value=len(VALID)), st.sampled_from(["Image A", "Image B", "image b."]))
def test_truncated_completions_score_in_range(rewards, cut, answer):
    out = check(rewards, [sample(VALID[:cut], answer=answer)])
    if cut < len(VALID) - len("</answer>"):
        assert out["format"] == [0.0] and out["accuracy"] == [0.0]


@given(profiles, profiles, any_text)
def test_any_ground_truth_profile_scores_in_range(rewards, prefer, non_prefer, text):
    check(rewards, [sample(VALID, prefer, non_prefer), sample(text, prefer, non_prefer)])
