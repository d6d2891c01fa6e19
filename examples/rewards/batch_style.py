"""rlframe's own batch style: a list of sample dicts in, one dict of named components per sample out.

Each sample holds every field of its data record plus "prompt", "completion" and "completion_ids".
The component named like the reward (`brevity`) is weighted into the total; the others are logged.

    reward.fns=[{name: brevity, path: examples/rewards/batch_style.py, weight: 0.1, kwargs: {budget: 96}}]
"""


def brevity(samples, budget=128):
    out = []
    for s in samples:
        n = len(s["completion_ids"])
        out.append({"brevity": max(0.0, 1.0 - n / budget), "num_tokens": float(n)})
    return out
