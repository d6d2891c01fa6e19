"""TRL's calling convention as TRL applies it: open-r1-style signatures are recognised, chat data gets message
lists, plain data strings, every record field (extra ones too) arrives as a column, with the step."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlframe.config.schema import DataConfig, RewardFnConfig
from rlframe.data.rollout_batch import Completion, RolloutBatch
from rlframe.reward.plugins import PluginReward, RewardError, detect_style
from rlframe.tasks.preference.vocab import DIMENSIONS
from tests.reward import openr1_rewards as fns  # noqa: E402  (signatures only)

HERE = str(Path(__file__).with_name("openr1_rewards.py"))
GOOD = "<think>A wins on color</think> <answer>Image A</answer>"
BAD = "Image A, probably"


def reward(name: str, **spec) -> PluginReward:
    return PluginReward(RewardFnConfig(name=name, path=HERE, **spec))


def spied(samples: list[dict], **spec) -> dict:
    """What the `spy` function (loaded from the file, as a run loads it) was called with."""
    r = reward("spy", **spec)
    r(samples)
    return r.fn.calls[-1]


def batch(records: list[dict], texts: list[str], step: int = 3) -> list[dict]:
    rb = RolloutBatch(records, [[1, 2]] * len(records), 1, step=step)
    rb.add(Completion(i, [7] * (i + 1), [0.0] * (i + 1), text=t) for i, t in enumerate(texts))
    return rb.reward_samples(range(len(records)))


def chat_record(solution: str, **extra) -> dict:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which image?"}]
    return {"id": f"r-{solution}", "prompt": "<|im_start|>user\nWhich image?", "messages": msgs,
            "solution": solution, **extra}


@pytest.mark.parametrize("fn", [fns.accuracy_reward, fns.format_reward, fns.difficulty_weighted, fns.plain_len])
def test_open_r1_signatures_are_trl_style(fn):
    assert detect_style(fn) == "trl"


def test_chat_data_gets_message_lists_and_columns():
    samples = batch([chat_record("Image A", difficulty=2), chat_record("Image B", difficulty=1)], [GOOD, GOOD])
    assert reward("accuracy_reward")(samples) == {"accuracy_reward": [1.0, 0.0]}
    assert reward("format_reward")(samples) == {"format_reward": [1.0, 1.0]}
    assert reward("difficulty_weighted")(samples) == {"difficulty_weighted": [2.0 * len(GOOD), 1.0 * len(GOOD)]}
    call = spied(samples)
    assert call["prompts"][0] == samples[0]["messages"]
    assert call["completions"][1] == [{"role": "assistant", "content": GOOD}]
    assert call["completion_ids"] == [[7], [7, 7]] and call["step"] == 3
    assert {"solution", "difficulty", "id"} <= set(call["columns"])
    assert not {"prompt", "completion", "messages", "global_step"} & set(call["columns"])


def test_plain_data_gets_strings_and_styles_force_either_form():
    plain = [{"id": "p0", "prompt": "Q: which?", "solution": "Image A"}]
    samples = batch(plain, [BAD])
    assert reward("plain_len")(samples) == {"plain_len": [float(len(BAD))]}
    call = spied(samples)
    assert call["prompts"] == ["Q: which?"] and call["completions"] == [BAD]
    # an open-r1 function on plain data fails the TRL way (strings are not message lists) ...
    with pytest.raises(TypeError, match="string indices"):
        reward("accuracy_reward")(samples)
    # ... unless the form is forced; and chat data can be forced to strings
    forced = reward("accuracy_reward", style="trl_conversational")(batch(plain, [GOOD]))
    assert forced == {"accuracy_reward": [1.0]}
    chat = batch([chat_record("Image A")], [GOOD])
    assert reward("plain_len", style="trl_standard")(chat) == {"plain_len": [float(len(GOOD))]}
    assert spied(chat, style="trl_standard")["prompts"] == [chat[0]["prompt"]]


def test_preference_images_records_are_conversational_with_extra_fields(tmp_path):
    """A user's own PreferImg file with an extra field: open-r1 rewards see messages and the field."""
    from PIL import Image

    from rlframe.tasks.registry import TASKS

    for name in ("p0", "n0", "a", "b"):
        Image.new("RGB", (56, 56), (len(name) * 60, 10, 10)).save(tmp_path / f"{name}.png")
    rec = {"user_id": "u1", "imageA": "a.png", "imageB": "b.png", "prefered_images": ["p0.png"],
           "non_prefered_images": ["n0.png"], "prefer_attributes": dict(zip(DIMENSIONS, "ABCDE")),
           "non_prefer_attributes": dict(zip(DIMENSIONS, "FGHIJ")),
           "conversations": [{"value": "<image><image>Which? <image><image>"}, {"value": "<answer>Image B</answer>"}],
           "difficulty": 3}
    (tmp_path / "mine.jsonl").write_text("\n".join(json.dumps({**rec, "id": f"m{i}"}) for i in range(3)) + "\n")
    task = TASKS.get("preference_images").build(
        DataConfig(task="preference_images", path=str(tmp_path / "mine.jsonl"), num_history=1), tmp_path / "cache")
    samples = batch(task.train[:2], [GOOD, "<think>x</think><answer>Image B</answer>"])
    out = reward("difficulty_weighted")(samples)["difficulty_weighted"]
    assert out == [3.0 * len(GOOD), 3.0 * len("<think>x</think><answer>Image B</answer>")]
    call = spied(samples)
    user = call["prompts"][0][-1]
    assert user["role"] == "user" and [p["type"] for p in user["content"]].count("image") == 4
    assert {"answer", "difficulty", "images", "user_id"} <= set(call["columns"])


def test_none_is_trls_not_scored_left_out_of_totals_and_means_and_a_sample_nobody_scores_leaves_the_loss():
    from rlframe.reward.scoring import RewardSet, Scores, combine, json_safe, unscorable
    from rlframe.trainer.evaluation import subset_metrics
    from rlframe.trainer.metrics import reward_metrics

    records = [chat_record("Image A"), chat_record(""), chat_record("Image B")]   # the second's gold: unparseable
    samples = batch(records, [GOOD, GOOD, BAD])
    specs = [RewardFnConfig(name="accuracy_or_skip", path=HERE, weight=1.0),
             RewardFnConfig(name="format_reward", path=HERE, weight=0.5)]
    comps = RewardSet(specs).score(samples).components
    acc = comps["accuracy_or_skip"]
    assert acc[0] == 1.0 and acc[1] != acc[1] and acc[2] == 0.0
    assert combine(comps, specs) == [1.5, 0.5, 0.0]                # the skip adds nothing; format still counts
    # z-scores over the scored values: accuracy [1, skip, 0] -> [1, skip, -1]; format [1, 1, 0] -> [.71, .71, -1.41]
    assert combine(comps, specs, "batch") == pytest.approx([1 + 0.5 ** 1.5, 0.5 ** 1.5, -1 - 2 ** 0.5 / 2])
    assert unscorable(comps, specs) == [] and unscorable(comps, specs[:1]) == [1]
    assert json_safe(comps)["accuracy_or_skip"] == [1.0, None, 0.0]
    assert subset_metrics(records, comps)["mean"] == {"accuracy_or_skip": 0.5, "format_reward": 2 / 3}

    rb = RolloutBatch(records, [[1, 2]] * 3, 1)
    rb.add(Completion(i, [7], [0.0], text=t) for i, t in enumerate([GOOD, GOOD, BAD]))
    rb.set_scores([0, 1, 2], comps)
    rb.masked = set(unscorable(rb.components, specs[:1]))
    rb.rewards = combine(rb.components, specs[:1])
    m = reward_metrics(rb, Scores(comps))
    assert m["reward/accuracy_or_skip"] == 0.5 and m["reward/skipped/accuracy_or_skip"] == 1
    assert m["reward/masked_samples"] == 1 and rb.masked_groups() == [1]
    assert rb.dump_rows(3)[1]["rewards"]["accuracy_or_skip"] is None   # JSON null in the rollout dump
    # None is TRL's convention only: another style returning it is an error that says so
    with pytest.raises(RewardError, match=r"returned None for 'b' on sample 'r-Image A'.*TRL's convention"):
        PluginReward(RewardFnConfig(name="b"), obj=lambda samples: [None] * len(samples))(samples)
