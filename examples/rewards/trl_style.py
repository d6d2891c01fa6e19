"""A reward written for TRL's GRPOTrainer, used unmodified by rlframe.

TRL calls `fn(prompts, completions, **columns)`: every field of the data record arrives as a keyword
argument holding one value per sample (here `answer`).

    reward.fns=[{name: answer_match, path: examples/rewards/trl_style.py, weight: 1.0}]
"""
import re

ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.S)


def answer_match(prompts, completions, answer, **kwargs):
    scores = []
    for completion, truth in zip(completions, answer):
        found = ANSWER.findall(completion)
        scores.append(1.0 if found and found[-1].strip().lower() == truth.strip().lower() else 0.0)
    return scores
