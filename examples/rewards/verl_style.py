"""A veRL / EasyR1 `compute_score`, used unmodified by rlframe (called once per sample).

`ground_truth` is the record's `reward_model.ground_truth` when it has one, else its `label_key` field
("answer"); `extra_info` is the whole record. A dict result must hold "score"; other keys are logged.

    reward.fns=[{name: verl_answer, path: examples/rewards/verl_style.py, function: compute_score}]
"""
import re


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    found = re.findall(r"<answer>\s*(.*?)\s*</answer>", solution_str, re.S)
    correct = bool(found) and found[-1] == ground_truth
    has_think = "<think>" in solution_str and "</think>" in solution_str
    return {"score": 1.0 if correct else 0.0, "has_think": float(has_think)}
