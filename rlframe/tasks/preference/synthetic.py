"""Synthetic users and text-rendered samples of the personalized-preference task.

A user has a *preference* profile and a *non-preference* profile: one term per dimension each, and the two
differ on every dimension. The user's liked reference items are drawn from the preference profile and the
disliked ones from the non-preference profile: on each dimension a reference shows its profile's term with
probability ``p_ref`` and another term of that dimension otherwise, resampled until the profile's term is the
strict majority of the references on that dimension (so the profile is always recoverable by a vote).
Two candidates are drawn, one from each profile, each showing its source profile's term with probability
``p_cand`` per dimension; their order (Image A / Image B) is random. A candidate scores 5 on a dimension
when its term is the liked one, 0 when it is the disliked one and 2 otherwise; its total is the sum (0-25)
and the answer is the candidate with the higher total (ties are resampled).

Rendering (designed so that a tiny model learns the task quickly; README, "why it learns"): the user turn has
one line per dimension listing the term of every liked and disliked reference image and of both candidates
(``Color: liked Teal liked Teal liked Pink ... disliked Crimson ...; Image A Teal; Image B Pink``). The target
completion is the chain of thought in the PreferThinker output format; each think line restates the dimension's liked
and disliked term, then writes each candidate's term right before its score::

    1. Art Styles: likes Cubism, dislikes Baroque; Image A Cubism(5) - liked style; Image B Baroque(0) - disliked style.

With the tokenizer's combined whole tokens (``" liked Cubism"``, ``"; Image A Cubism"``, ``" likes Cubism"``,
``"(5) - liked style"``, ...) every step of that line is a lookup by token content instead of by position,
prompts have a fixed length (82 tokens for ``num_history=5``) and targets too (98 tokens).
"""

from __future__ import annotations

import random
from collections import Counter

from .vocab import DIMENSION_WORDS, DIMENSIONS, REASONS, SCORE_DISLIKED, SCORE_LIKED, SCORE_NEUTRAL, VOCAB

USER_TAG = "<|user|>"
ASSISTANT_TAG = "<|assistant|>"
IMAGES = ("Image A", "Image B")

INSTRUCTION = "Which image does the user prefer?"


# ----------------------------------------------------------------------------------------------- rendering
def render_item(attrs: dict[str, str]) -> str:
    """One image as text (its five attribute terms in dimension order, comma-separated), e.g. for
    ``reference_prompt_list``."""
    return ", ".join(attrs[d] for d in DIMENSIONS)


def render_profile(profile: dict[str, str]) -> str:
    """The profile body of the output format: ``"Art Styles": "Cubism", "Color": "Teal", ...``."""
    return ", ".join(f'"{d}": "{profile[d]}"' for d in DIMENSIONS)


def flatten_profile(profile: dict[str, str]) -> str:
    """The profile as the similarity reward embeds it: ``Art Styles: Cubism, Color: Teal, ...``."""
    return ", ".join(f"{d}: {profile.get(d, '')}" for d in DIMENSIONS)


def build_question(liked: list[dict[str, str]], disliked: list[dict[str, str]],
                   image_a: dict[str, str], image_b: dict[str, str]) -> str:
    """The user turn: one line per dimension with the terms of every liked and disliked reference image
    (in reference order) and of the two candidates, e.g.
    ``Color: liked Teal liked Teal liked Pink disliked Crimson disliked Crimson ...; Image A Teal; Image B Pink``.
    """
    lines = [INSTRUCTION]
    for d in DIMENSIONS:
        refs = [f"liked {r[d]}" for r in liked] + [f"disliked {r[d]}" for r in disliked]
        lines.append(f"{d}: " + " ".join(refs) + f"; Image A {image_a[d]}; Image B {image_b[d]}")
    return "\n".join(lines)


def build_prompt(question: str) -> str:
    """The full text the policy sees; it ends where the assistant's answer starts."""
    return f"{USER_TAG}\n{question}\n{ASSISTANT_TAG}\n"


def score_item(item: dict[str, str], prefer: dict[str, str], non_prefer: dict[str, str]) -> list[int]:
    out = []
    for d in DIMENSIONS:
        if item[d] == prefer[d]:
            out.append(SCORE_LIKED)
        elif item[d] == non_prefer[d]:
            out.append(SCORE_DISLIKED)
        else:
            out.append(SCORE_NEUTRAL)
    return out


def reason(score: int, dimension: str) -> str:
    """The reason written after a score, e.g. ``liked style`` or ``neutral color``."""
    return f"{REASONS[score]} {DIMENSION_WORDS[dimension]}"


def render_think_line(i: int, dimension: str, prefer: dict[str, str], non_prefer: dict[str, str],
                      image_a: dict[str, str], image_b: dict[str, str], sa: int, sb: int) -> str:
    d = dimension
    return (f"{i + 1}. {d}: likes {prefer[d]}, dislikes {non_prefer[d]}; "
            f"Image A {image_a[d]}({sa}) - {reason(sa, d)}; Image B {image_b[d]}({sb}) - {reason(sb, d)}.")


def render_target(prefer: dict[str, str], non_prefer: dict[str, str], image_a: dict[str, str],
                  image_b: dict[str, str], scores: dict[str, list[int]], answer: str) -> str:
    """The full chain-of-thought completion in the PreferThinker output format (no EOS).

    Each think line restates the liked and disliked term of its dimension, then each candidate's term right
    before its score: ``1. Art Styles: likes Cubism, dislikes Baroque; Image A Cubism(5) - liked style;
    Image B Baroque(0) - disliked style.``
    """
    think = [render_think_line(i, d, prefer, non_prefer, image_a, image_b, scores["Image A"][i],
                               scores["Image B"][i]) for i, d in enumerate(DIMENSIONS)]
    ta, tb = sum(scores["Image A"]), sum(scores["Image B"])
    think.append(
        "Totals: Image A: total_score=" + "+".join(map(str, scores["Image A"])) + f"={ta}; "
        "Image B: total_score=" + "+".join(map(str, scores["Image B"])) + f"={tb}."
    )
    return (
        f"<visual preference profile>{render_profile(prefer)}</visual preference profile>\n"
        f"<visual non-preference profile>{render_profile(non_prefer)}</visual non-preference profile>\n"
        "<think>" + "\n".join(think) + "</think>\n"
        f"<answer>{answer}</answer>"
    )


# ---------------------------------------------------------------------------------------------- generation
def _new_user(rng: random.Random) -> tuple[dict[str, str], dict[str, str]]:
    prefer, non_prefer = {}, {}
    for d in DIMENSIONS:
        p, n = rng.sample(VOCAB[d], 2)
        prefer[d], non_prefer[d] = p, n
    return prefer, non_prefer


def _draw_item(rng: random.Random, profile: dict[str, str], p_match: float) -> dict[str, str]:
    item = {}
    for d in DIMENSIONS:
        if rng.random() < p_match:
            item[d] = profile[d]
        else:
            item[d] = rng.choice([t for t in VOCAB[d] if t != profile[d]])
    return item


def _draw_references(rng: random.Random, profile: dict[str, str], n: int, p_ref: float) -> list[dict[str, str]]:
    refs = [_draw_item(rng, profile, p_ref) for _ in range(n)]
    # Resample each dimension until the profile's term is the strict mode over the references.
    for d in DIMENSIONS:
        while True:
            counts = Counter(r[d] for r in refs)
            top = counts[profile[d]]
            if all(c < top for t, c in counts.items() if t != profile[d]):
                break
            for r in refs:
                r[d] = profile[d] if rng.random() < p_ref else rng.choice(
                    [t for t in VOCAB[d] if t != profile[d]])
    return refs


def generate_samples(num_samples: int, seed: int, num_history: int = 5, num_users: int | None = None, *,
                     p_ref: float = 0.8, p_cand: float = 0.7) -> list[dict]:
    """Generate ``num_samples`` samples, reproducibly from ``seed``.

    ``num_history`` liked and ``num_history`` disliked reference items per sample. With ``num_users`` the
    samples are drawn from a fixed pool of that many users (seen users, each with new references and
    candidates per sample); without it every sample has a fresh user.
    """
    if num_samples < 0 or num_history < 1:
        raise ValueError("num_samples must be >= 0 and num_history >= 1")
    rng = random.Random(seed)
    pool = None
    if num_users is not None:
        if num_users < 1:
            raise ValueError("num_users must be >= 1")
        pool = [_new_user(rng) for _ in range(num_users)]
    samples = []
    for i in range(num_samples):
        if pool is None:
            uid = f"user-{seed}-{i}"
            prefer, non_prefer = _new_user(rng)
        else:
            u = rng.randrange(len(pool))
            uid = f"user-{seed}-{u}"
            prefer, non_prefer = pool[u]
        liked = _draw_references(rng, prefer, num_history, p_ref)
        disliked = _draw_references(rng, non_prefer, num_history, p_ref)
        while True:
            good = _draw_item(rng, prefer, p_cand)
            bad = _draw_item(rng, non_prefer, p_cand)
            if sum(score_item(good, prefer, non_prefer)) != sum(score_item(bad, prefer, non_prefer)):
                break
        if rng.random() < 0.5:
            image_a, image_b = good, bad
        else:
            image_a, image_b = bad, good
        scores = {"Image A": score_item(image_a, prefer, non_prefer),
                  "Image B": score_item(image_b, prefer, non_prefer)}
        totals = {k: sum(v) for k, v in scores.items()}
        answer = "Image A" if totals["Image A"] > totals["Image B"] else "Image B"
        question = build_question(liked, disliked, image_a, image_b)
        samples.append({
            "id": f"syn-{seed}-{i}",
            "user_id": uid,
            "prompt": build_prompt(question),
            "target": render_target(prefer, non_prefer, image_a, image_b, scores, answer),
            "answer": answer,
            "prefer_attributes": dict(prefer),
            "non_prefer_attributes": dict(non_prefer),
            "scores": scores,
            "totals": totals,
            "imageA_attributes": image_a,
            "imageB_attributes": image_b,
            "prefered_references": liked,
            "non_prefered_references": disliked,
            "reference_prompt_list": [render_item(r) for r in liked + disliked],
            "question": question,
            "conversations": [{"from": "human", "value": question},
                              {"from": "gpt", "value": f"<answer>{answer}</answer>"}],
        })
    return samples
