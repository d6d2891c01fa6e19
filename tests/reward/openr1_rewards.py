"""Reward functions written the way open-r1 / TRL training scripts write them (test fixtures)."""
import re


def accuracy_reward(completions, solution, **kwargs):
    contents = [completion[0]["content"] for completion in completions]
    return [1.0 if f"<answer>{sol}</answer>" in c else 0.0 for c, sol in zip(contents, solution)]


def format_reward(completions, **kwargs):
    pattern = r"^<think>.*?</think>\s*<answer>.*?</answer>$"
    return [1.0 if re.match(pattern, c[0]["content"], re.S) else 0.0 for c in completions]


def difficulty_weighted(completions, difficulty, **kwargs):
    """Reads a per-record column the user added to their data file."""
    return [float(d) * len(c[0]["content"]) for c, d in zip(completions, difficulty)]


def plain_len(completions, **kwargs):
    """Written for standard (non-chat) data: completions are strings."""
    return [float(len(c)) for c in completions]


def spy(prompts, completions, completion_ids, trainer_state, **kwargs):
    """Records exactly what it was called with."""
    spy.calls.append({"prompts": prompts, "completions": completions, "completion_ids": completion_ids,
                      "step": trainer_state.global_step, "columns": sorted(kwargs)})
    return [0.0] * len(completions)


spy.calls = []


def accuracy_or_skip(completions, solution, **kwargs):
    """As TRL's own accuracy_reward: None where the gold solution cannot be parsed (the sample is not scored)."""
    return [None if not sol else float(f"<answer>{sol}</answer>" in c[0]["content"])
            for c, sol in zip(completions, solution)]
