"""A reward written for OpenRLHF's `--remote_rm_url reward.py`, used unmodified by rlframe.

OpenRLHF calls `reward_func(queries, prompts, labels)`: queries are prompt + response, labels the
record's label field (rlframe: `label_key`, default "answer"). It returns a dict with "rewards",
optional "scores" and "extra_logs" (rlframe logs both).

    reward.fns=[{name: openrlhf_answer, path: examples/rewards/openrlhf_style.py, function: reward_func}]
"""
import re

import torch


def reward_func(queries, prompts, labels):
    rewards, lengths = [], []
    for query, prompt, label in zip(queries, prompts, labels):
        response = query[len(prompt):]
        found = re.findall(r"<answer>\s*(.*?)\s*</answer>", response, re.S)
        rewards.append(1.0 if found and found[-1] == label else 0.0)
        lengths.append(float(len(response)))
    rewards = torch.tensor(rewards)
    return {"rewards": rewards, "scores": rewards, "extra_logs": {"response_chars": torch.tensor(lengths)}}
