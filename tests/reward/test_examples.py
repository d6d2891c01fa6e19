"""Every example in examples/rewards/ runs, loaded exactly as its docstring's config line says."""
from __future__ import annotations

from pathlib import Path

import pytest

from rlframe.config.schema import RewardFnConfig
from rlframe.reward.plugins import PluginReward
from rlframe.config.schema import DataConfig
from rlframe.tasks.preference.synthetic import generate_samples
from rlframe.tasks.preference.task import with_messages

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rewards"


@pytest.fixture(scope="module")
def samples():
    """Three records with their target completion (correct), a wrong answer, and no answer at all."""
    recs = with_messages(generate_samples(3, seed=7), DataConfig())   # conversational, as the task builds them
    wrong = {"Image A": "Image B", "Image B": "Image A"}
    texts = [recs[0]["target"], recs[1]["target"].replace(f"<answer>{recs[1]['answer']}</answer>",
                                                          f"<answer>{wrong[recs[1]['answer']]}</answer>"),
             "I cannot tell."]
    return [{**r, "completion": t, "completion_ids": list(range(10 * (i + 1)))} for i, (r, t) in enumerate(zip(recs, texts))]


def load(file: str, **spec) -> PluginReward:
    return PluginReward(RewardFnConfig(path=str(EXAMPLES / file), **spec))


def test_every_example_is_tested():
    assert {p.name for p in EXAMPLES.glob("*.py")} == {
        "trl_style.py", "openrlhf_style.py", "verl_style.py", "batch_style.py", "async_style.py", "class_style.py"}


def test_trl_style(samples):
    r = load("trl_style.py", name="answer_match")
    assert r.style == "trl" and r(samples) == {"answer_match": [1.0, 0.0, 0.0]}
    assert load("trl_style.py", name="think_format")(samples) == {"think_format": [1.0, 1.0, 0.0]}


def test_openrlhf_style(samples):
    r = load("openrlhf_style.py", name="openrlhf_answer", function="reward_func")
    out = r(samples)
    assert r.style == "openrlhf"
    assert out["openrlhf_answer"] == [1.0, 0.0, 0.0] and out["openrlhf_answer/scores"] == [1.0, 0.0, 0.0]
    assert out["openrlhf_answer/response_chars"] == [float(len(s["completion"])) for s in samples]


def test_verl_style(samples):
    r = load("verl_style.py", name="verl_answer", function="compute_score")
    assert r.style == "verl"
    assert r(samples) == {"verl_answer": [1.0, 0.0, 0.0], "verl_answer/has_think": [1.0, 1.0, 0.0]}


def test_batch_style(samples):
    r = load("batch_style.py", name="brevity", kwargs={"budget": 40})
    assert r(samples) == {"brevity": [0.75, 0.5, 0.25], "brevity/num_tokens": [10.0, 20.0, 30.0]}


def test_async_style(samples):
    r = load("async_style.py", name="async_judge", function="compute_score", timeout_s=10)
    assert r.is_async and r(samples) == {"async_judge": [1.0, 0.0, 0.0]}


@pytest.mark.slow
def test_class_style_loads_its_model_once(samples):
    r = load("class_style.py", name="profile_cosine", function="ProfileCosine")
    out = r(samples)["profile_cosine"]
    assert out[0] > 0.99          # the target's profile is the ground truth
    assert out[1] > 0.99          # (only the answer was changed)
    assert out[2] == 0.0          # no profile predicted
    model = r.fn.model
    r(samples[:1])
    assert r.fn.model is model


@pytest.mark.slow
def test_profile_similarity_mixes_text_and_an_image_term(samples, tmp_path):
    """r_predict = w_text * s_text + w_img * s_img, with s_img from a user's function (the extension point)."""
    from rlframe.tasks.preference.task import ProfileSimilarity

    (tmp_path / "img_sim.py").write_text("def s_img(samples):\n    return [0.25 * (i + 1) for i in range(len(samples))]\n")
    plain = ProfileSimilarity()(samples)["profile_similarity"]
    mixed = ProfileSimilarity(w_text=0.6, w_img=0.4, image_similarity=f"{tmp_path / 'img_sim.py'}:s_img")(samples)
    assert mixed["profile_similarity/text"] == plain
    assert mixed["profile_similarity/image"] == [0.25, 0.5, 0.75]
    assert mixed["profile_similarity"] == pytest.approx([0.6 * t + 0.4 * i for t, i in zip(plain, [0.25, 0.5, 0.75])])
    with pytest.raises(ValueError, match="w_img > 0 needs kwargs.image_similarity"):
        ProfileSimilarity(w_img=0.5)
