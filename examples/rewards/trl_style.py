"""Rewards written for TRL's GRPOTrainer (the open-r1 way), used unmodified by rlframe.

TRL calls every reward function by keyword: `prompts`, `completions`, `completion_ids`, `trainer_state` and
every column of the data record (here `answer`), one value per sample; `**kwargs` takes the rest. The
preference tasks are conversational (their records carry chat messages), so, as in TRL, each completion is a
message list and the text is `completion[0]["content"]`.

    reward.fns=[{name: answer_match, path: examples/rewards/trl_style.py, weight: 1.0},
                {name: think_format, path: examples/rewards/trl_style.py, weight: 0.2}]
"""
import re

ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.S)
THINK_THEN_ANSWER = re.compile(r"<think>.*?</think>.*?<answer>.*?</answer>\s*$", re.S)


def answer_match(completions, answer, **kwargs):
    """1 when the last <answer> names the record's answer."""
    scores = []
    for completion, truth in zip(completions, answer):
        found = ANSWER.findall(completion[0]["content"])
        scores.append(1.0 if found and found[-1].strip().lower() == truth.strip().lower() else 0.0)
    return scores


def think_format(completions, **kwargs):
    """1 when the completion reasons in <think> and ends with an <answer>."""
    return [1.0 if THINK_THEN_ANSWER.search(c[0]["content"]) else 0.0 for c in completions]
