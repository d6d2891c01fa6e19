"""Write a synthetic-user data set in the PreferImg / PreferThinker on-disk format (records + image files).

Users come in two kinds, as in the paper's benchmarks: *single-preference* (SP) users like exactly one term
per dimension (``synthetic.py``'s users); *multi-preference* (MP) users like two terms on one or two of the
dimensions (``"Color": "Pink, Teal"``). Each user has a fixed history of ``num_history`` liked and disliked
reference images, drawn so that every liked term is more frequent among the liked references than any other
term (the profile is recoverable from the pixels). Candidates are drawn as in ``synthetic.py``: one from each
profile, each showing a profile term with probability ``p_cand`` per dimension; a term in the liked set
scores 5, in the disliked set 0, otherwise 2; the answer is the higher total (ties redrawn).

Splits mirror SP_ID, SP_OD, MP_ID and MP_OD: *seen* users give the ``train`` samples and the ``*_ID`` eval
samples (new candidates), *unseen* users only appear in ``*_OD``. The assistant turn of ``conversations`` is
the template chain of thought (profiles, per-dimension 0-5 scores, totals, answer) for SFT. Everything
derives from one seed: the same configuration writes byte-identical records and images.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from .images import render_image
from .synthetic import _new_user, build_prompt, build_question, render_target
from .vocab import DIMENSIONS, SCORE_DISLIKED, SCORE_LIKED, SCORE_NEUTRAL, VOCAB

SPLITS = ("train", "SP_ID", "SP_OD", "MP_ID", "MP_OD")
FORMATS = ("jsonl", "json")
Profile = dict[str, tuple[str, ...]]  # dimension -> the terms of the profile on it (one for SP)


@dataclass
class SynthConfig:
    """What to write; every field is recorded in ``meta.json``."""
    num_users: int = 40
    samples_per_user: int = 10        # training samples per seen user
    eval_samples_per_user: int = 2    # samples per user in its SP/MP _ID or _OD split
    unseen_fraction: float = 0.25     # of each kind of user, never in train
    mp_fraction: float = 0.5          # multi-preference users
    num_history: int = 5
    image_size: int = 64
    seed: int = 0
    format: str = "jsonl"
    p_ref: float = 0.8
    p_cand: float = 0.7

    def check(self) -> None:
        problems = []
        if self.num_users < 1 or self.samples_per_user < 0 or self.eval_samples_per_user < 0:
            problems.append("num_users must be >= 1, samples_per_user and eval_samples_per_user >= 0")
        if not 0 <= self.unseen_fraction <= 1 or not 0 <= self.mp_fraction <= 1:
            problems.append("unseen_fraction and mp_fraction must be in [0, 1]")
        if self.num_history < 2:
            problems.append(f"num_history={self.num_history}: must be >= 2 (an MP user shows two liked terms)")
        if self.image_size < 16:
            problems.append(f"image_size={self.image_size}: must be >= 16")
        if self.format not in FORMATS:
            problems.append(f"format={self.format!r}: expected one of {FORMATS}")
        if problems:
            raise ValueError("; ".join(problems))


def as_text(profile: Profile) -> dict[str, str]:
    """A profile as the records store it: one string per dimension (``"Pink, Teal"`` for two terms)."""
    return {d: ", ".join(profile[d]) for d in DIMENSIONS}


def new_user(rng: random.Random, multi: bool) -> tuple[Profile, Profile]:
    """(liked, disliked) term sets; MP users like a second term on one or two dimensions."""
    prefer, non_prefer = _new_user(rng)
    liked = {d: (prefer[d],) for d in DIMENSIONS}
    if multi:
        for d in rng.sample(DIMENSIONS, rng.randint(1, 2)):
            extra = rng.choice([t for t in VOCAB[d] if t not in (prefer[d], non_prefer[d])])
            liked[d] = tuple(t for t in VOCAB[d] if t in (prefer[d], extra))  # vocabulary order
    return liked, {d: (non_prefer[d],) for d in DIMENSIONS}


def _draw(rng: random.Random, terms: tuple[str, ...], p: float, dim: str) -> str:
    return rng.choice(terms) if rng.random() < p else rng.choice([t for t in VOCAB[dim] if t not in terms])


def draw_references(rng: random.Random, profile: Profile, n: int, p_ref: float) -> list[dict[str, str]]:
    """``n`` reference items; on every dimension each profile term beats every other term in count."""
    refs: list[dict[str, str]] = [{} for _ in range(n)]
    for d in DIMENSIONS:
        while True:
            col = [_draw(rng, profile[d], p_ref, d) for _ in range(n)]
            low = min(col.count(t) for t in profile[d])
            if all(col.count(t) < low for t in set(col) - set(profile[d])):
                break
        for r, t in zip(refs, col):
            r[d] = t
    return refs


def score(item: dict[str, str], liked: Profile, disliked: Profile) -> list[int]:
    return [SCORE_LIKED if item[d] in liked[d] else SCORE_DISLIKED if item[d] in disliked[d] else SCORE_NEUTRAL
            for d in DIMENSIONS]


def reference_prompt(attrs: dict[str, str]) -> str:
    """The text-to-image prompt of an item (``reference_prompt_list``)."""
    return (f"{attrs['Art Styles']} picture in {attrs['Artistic Medium']}, {attrs['Color']} tones, "
            f"{attrs['Saturation']} saturation, {attrs['Detail']} detail")


def question(num_liked: int, num_disliked: int) -> str:
    """The user turn; ``<image>`` marks where each image goes, in the paper's order."""
    return (f"Images the user likes: {'<image>' * num_liked}\nImages the user dislikes: {'<image>' * num_disliked}\n"
            "Image A: <image>\nImage B: <image>\n"
            "Predict the user's visual preference and non-preference profiles (" + ", ".join(DIMENSIONS) + "), "
            "score Image A and Image B from 0 to 5 on each dimension, and answer which image the user prefers.")


@dataclass
class _User:
    uid: str
    kind: str      # "SP" or "MP"
    seen: bool
    liked: Profile
    disliked: Profile


def _unseen(count: int, cfg: SynthConfig) -> int:
    """How many of ``count`` users of one kind are unseen (at least one, and at least one seen)."""
    return min(count - 1, max(1, round(count * cfg.unseen_fraction))) if cfg.unseen_fraction > 0 else 0


def seen_users(cfg: SynthConfig) -> int:
    """How many users have training samples."""
    n_mp = round(cfg.num_users * cfg.mp_fraction)
    return sum(max(0, count - _unseen(count, cfg)) for count in (cfg.num_users - n_mp, n_mp))


EVAL_SPLITS = tuple(s for s in SPLITS if s != "train")


def eval_samples_per_user(cfg: SynthConfig, num_eval: int) -> int:
    """Eval samples per user so that every subset (the unseen ones are the smallest) has num_eval / 4."""
    n_mp = round(cfg.num_users * cfg.mp_fraction)
    unseen = min(_unseen(count, cfg) for count in (cfg.num_users - n_mp, n_mp))
    return max(1, math.ceil(math.ceil(num_eval / len(EVAL_SPLITS)) / max(1, unseen)))


def balanced_eval(splits: dict[str, list[dict[str, Any]]], num_eval: int) -> list[dict[str, Any]]:
    """The first num_eval / 4 records of each subset, so that the unweighted mean over subsets is not
    dominated by noise in a small one."""
    per = math.ceil(num_eval / len(EVAL_SPLITS))
    return [r for s in EVAL_SPLITS for r in splits[s][:per]][:num_eval]


def _users(cfg: SynthConfig, rng: random.Random) -> list[_User]:
    n_mp = round(cfg.num_users * cfg.mp_fraction)
    users = []
    for kind, count in (("SP", cfg.num_users - n_mp), ("MP", n_mp)):
        n_unseen = _unseen(count, cfg)
        for i in range(count):
            liked, disliked = new_user(rng, kind == "MP")
            users.append(_User(f"{kind.lower()}_user_{i:04d}", kind, i < count - n_unseen, liked, disliked))
    return users


class _Writer:
    """Draws each sample's candidates; with ``root`` it also renders and saves every image, without it the
    records carry the text rendering instead (the same users and draws either way: the image seeds are drawn
    in both modes)."""

    def __init__(self, root: Path | None, cfg: SynthConfig, rng: random.Random) -> None:
        self.root, self.cfg, self.rng = root, cfg, rng

    def image(self, rel: str, attrs: dict[str, str]) -> str:
        seed = self.rng.randrange(1 << 31)
        if self.root is not None:
            render_image(attrs, seed, self.cfg.image_size).save(self.root / rel, format="PNG")
        return rel

    def sample(self, u: _User, refs: tuple[list, list], rel_refs: tuple[list, list], name: str,
               split: str) -> dict[str, Any]:
        rng, cfg = self.rng, self.cfg
        while True:
            good = {d: _draw(rng, u.liked[d], cfg.p_cand, d) for d in DIMENSIONS}
            bad = {d: _draw(rng, u.disliked[d], cfg.p_cand, d) for d in DIMENSIONS}
            if sum(score(good, u.liked, u.disliked)) != sum(score(bad, u.liked, u.disliked)):
                break
        a, b = (good, bad) if rng.random() < 0.5 else (bad, good)
        scores = {"Image A": score(a, u.liked, u.disliked), "Image B": score(b, u.liked, u.disliked)}
        totals = {k: sum(v) for k, v in scores.items()}
        answer = "Image A" if totals["Image A"] > totals["Image B"] else "Image B"
        prefer, non_prefer = as_text(u.liked), as_text(u.disliked)
        target = render_target(prefer, non_prefer, a, b, scores, answer)
        rec = {
            "id": f"{u.uid}-{name}", "user_id": u.uid, "user_type": u.kind, "split": split,
            "imageA": self.image(f"images/{u.uid}/{name}_A.png", a),
            "imageB": self.image(f"images/{u.uid}/{name}_B.png", b),
            "prefered_images": rel_refs[0], "non_prefered_images": rel_refs[1],
            "reference_prompt_list": [reference_prompt(r) for r in refs[0] + refs[1]],
            "prefer_attributes": prefer, "non_prefer_attributes": non_prefer,
            "conversations": [
                {"from": "human", "value": question(len(refs[0]), len(refs[1]))},
                {"from": "gpt", "value": target}],
            "scores": scores, "totals": totals, "imageA_attributes": a, "imageB_attributes": b,
        }
        if self.root is None:   # the text rendering of synthetic.py, over these users
            text_q = build_question(refs[0], refs[1], a, b)
            rec.update(question=text_q, prompt=build_prompt(text_q), target=target, answer=answer)
        return rec


def generate_splits(cfg: SynthConfig, root: Path | None = None,
                    on_user: Callable[[], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The records of every split; images are written under ``root`` when given, else each record holds the
    text rendering (``prompt``, ``target``, ``answer``) of the text task."""
    cfg.check()
    rng = random.Random(cfg.seed)
    users = _users(cfg, rng)
    w = _Writer(root, cfg, rng)
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for u in users:
        if root is not None:
            (root / "images" / u.uid).mkdir(parents=True, exist_ok=True)
        refs = (draw_references(rng, u.liked, cfg.num_history, cfg.p_ref),
                draw_references(rng, u.disliked, cfg.num_history, cfg.p_ref))
        rel = ([w.image(f"images/{u.uid}/pos_{i}.png", r) for i, r in enumerate(refs[0])],
               [w.image(f"images/{u.uid}/neg_{i}.png", r) for i, r in enumerate(refs[1])])
        if u.seen:
            splits["train"] += [w.sample(u, refs, rel, f"train_{j}", "train") for j in range(cfg.samples_per_user)]
        split = f"{u.kind}_{'ID' if u.seen else 'OD'}"
        splits[split] += [w.sample(u, refs, rel, f"eval_{j}", split) for j in range(cfg.eval_samples_per_user)]
        if on_user is not None:
            on_user()
    return splits


def write_dataset(out_dir: str | Path, cfg: SynthConfig,
                  on_user: Callable[[], None] | None = None) -> dict[str, Any]:
    """Write ``<split>.<format>`` files, ``images/<user>/*.png`` and ``meta.json`` under ``out_dir``;
    return the summary that ``meta.json`` holds (configuration, counts per split, users per split)."""
    root = Path(out_dir)
    splits = generate_splits(cfg, root, on_user)
    for name, recs in splits.items():
        path = root / f"{name}.{cfg.format}"
        if cfg.format == "jsonl":
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
        else:
            text = json.dumps(recs, ensure_ascii=False, indent=1) + "\n"
        path.write_text(text, encoding="utf-8")
    meta = {
        "format": "PreferImg/PreferThinker records; image paths relative to this folder",
        "config": asdict(cfg),
        "counts": {s: len(r) for s, r in splits.items()},
        "users": {s: sorted({r["user_id"] for r in recs}) for s, recs in splits.items()},
        "num_images": len({p for recs in splits.values() for r in recs
                           for p in (r["imageA"], r["imageB"], *r["prefered_images"], *r["non_prefered_images"])}),
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta
