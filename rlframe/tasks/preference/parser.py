"""Parse and check completions of the personalized-preference task.

Output format (SPEC.md section 1), in this order, nothing else outside the tags but whitespace::

    <visual preference profile>"Art Styles": "…", "Color": "…", "Artistic Medium": "…", "Saturation": "…", "Detail": "…"</visual preference profile>
    <visual non-preference profile>(same five keys)</visual non-preference profile>
    <think>1. Art Styles: likes Cubism, dislikes Baroque; Image A Cubism(5) - liked style; Image B Baroque(0) - disliked style.
    ... (one judgement per dimension, in order) ...
    Totals: Image A: total_score=5+2+5+0+5=17; Image B: total_score=0+2+0+2+5=9.</think>
    <answer>Image A</answer>

``is_well_formed`` is the strict full-match check (the format reward). Inside ``<think>`` each dimension's
judgement is ``[N.] <Dimension>: [free text]Image A[ free text](s) - reason; Image B[ free text](s) - reason``
with a score s in 0-5 (the free text lets the profile terms be restated and the candidate's term stand right
before its score; free text has no newline, tags or parentheses), then both totals
``Image A: total_score=a1+a2+a3+a4+a5=T`` (optionally after ``Totals:``), then optional free text.
``parse_completion`` is tolerant (whitespace, single or missing quotes, ``ArtisticMedium`` for
``Artistic Medium``, missing sections) and records what it could not find in ``errors``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .vocab import DIMENSIONS

IMAGES = ("Image A", "Image B")

PREF_OPEN, PREF_CLOSE = "<visual preference profile>", "</visual preference profile>"
NONPREF_OPEN, NONPREF_CLOSE = "<visual non-preference profile>", "</visual non-preference profile>"


# ------------------------------------------------------------------------------------------ strict format
def _profile_re() -> str:
    val = r'"[^"<>\n]+"'
    parts = [rf'"{re.escape(d)}"[ \t]*:[ \t]*{val}' for d in DIMENSIONS]
    return r"[ \t]*" + r"[ \t]*,[ \t]*".join(parts) + r"[ \t]*"


def _think_re() -> str:
    score = r"\([0-5]\)"
    free = r"[^()<>\n;]*"  # free text between "Image X" and its score (e.g. the candidate's term)
    reason = r"[^()<>\n;]*"
    lines = []
    lead = r"[^()<>\n]*?"  # free text before Image A (e.g. "likes Cubism, dislikes Baroque; ")
    for i, d in enumerate(DIMENSIONS):
        lines.append(
            rf"(?:{i + 1}\.\s*)?{re.escape(d)}[ \t]*:[ \t]*{lead}"
            rf"Image A{free}{score}{reason};[ \t]*Image B{free}{score}[^()<>\n]*"
        )
    total = r"total_score[ \t]*=[ \t]*[0-5](?:[ \t]*\+[ \t]*[0-5]){4}[ \t]*=[ \t]*\d{1,2}"
    totals = rf"(?:Totals[ \t]*:\s*)?Image A[ \t]*:[ \t]*{total}[ \t]*[;,]?\s*Image B[ \t]*:[ \t]*{total}[^<>]*"
    return r"\s*" + r"\s*".join(lines) + r"\s*" + totals


FORMAT_RE = re.compile(
    r"\s*" + re.escape(PREF_OPEN) + _profile_re() + re.escape(PREF_CLOSE)
    + r"\s*" + re.escape(NONPREF_OPEN) + _profile_re() + re.escape(NONPREF_CLOSE)
    + r"\s*<think>" + _think_re() + r"</think>"
    + r"\s*<answer>[ \t]*Image [AB][ \t]*</answer>\s*"
)


def is_well_formed(text: str) -> bool:
    """Full-match format check (the format reward)."""
    return FORMAT_RE.fullmatch(text) is not None


# ------------------------------------------------------------------------------------------ tolerant parse
@dataclass
class ParsedCompletion:
    prefer: dict | None = None
    non_prefer: dict | None = None
    scores: dict = field(default_factory=lambda: {k: [None] * len(DIMENSIONS) for k in IMAGES})
    totals: dict = field(default_factory=lambda: {k: None for k in IMAGES})
    answer: str | None = None
    errors: list = field(default_factory=list)
    #: the addends written in ``total_score=a1+...+a5=T`` (None when absent)
    total_terms: dict = field(default_factory=lambda: {k: None for k in IMAGES})


def _norm_key(k: str) -> str:
    return re.sub(r"[\s_\-]+", "", k).lower()


_KEYS = {_norm_key(d): d for d in DIMENSIONS}
_KEYS["colour"] = "Color"
_KEYS["artstyle"] = "Art Styles"
_KEYS["medium"] = "Artistic Medium"

_PAIR_RE = re.compile(
    r"""["']?\s*([A-Za-z][A-Za-z _\-]*?)\s*["']?\s*:\s*(?:"([^"<>]*)"|'([^'<>]*)'|([^,"'<>\n]*))"""
)


def normalize_answer(s: str | None) -> str:
    """SPEC normalisation of an answer: strip, drop a trailing period, lowercase."""
    if s is None:
        return ""
    s = s.strip()
    if s.endswith("."):
        s = s[:-1]
    return s.strip().lower()


def _section(text: str, open_tag: str, close_tag: str) -> str | None:
    i = text.find(open_tag)
    if i < 0:
        return None
    j = text.find(close_tag, i + len(open_tag))
    if j < 0:
        # unclosed: up to the next tag
        k = text.find("<", i + len(open_tag))
        return text[i + len(open_tag): k if k >= 0 else len(text)]
    return text[i + len(open_tag): j]


def _parse_profile(body: str) -> dict:
    out: dict[str, str] = {}
    for m in _PAIR_RE.finditer(body):
        key = _KEYS.get(_norm_key(m.group(1)))
        if key is None or key in out:
            continue
        val = next((g for g in m.group(2, 3, 4) if g is not None), "").strip()
        if val:
            out[key] = val
    return out


_DIM_HEAD = re.compile(r"(Art\s*Styles?|Colou?r|Artistic\s*Medium|Saturation|Detail)\s*:", re.IGNORECASE)
_IMG_SCORE = {k: re.compile(rf"{k}[^()<>;]*?\(\s*(\d+)\s*\)", re.IGNORECASE) for k in IMAGES}
_TOTAL = {k: re.compile(rf"{k}\s*:\s*total_score\s*=\s*([\d\s+]*?)\s*=\s*(\d+)", re.IGNORECASE) for k in IMAGES}


def parse_completion(text: str) -> ParsedCompletion:
    p = ParsedCompletion()
    body = _section(text, PREF_OPEN, PREF_CLOSE)
    if body is None:
        p.errors.append("missing preference profile")
    else:
        p.prefer = _parse_profile(body)
    body = _section(text, NONPREF_OPEN, NONPREF_CLOSE)
    if body is None:
        p.errors.append("missing non-preference profile")
    else:
        p.non_prefer = _parse_profile(body)
    for name, prof in (("preference", p.prefer), ("non-preference", p.non_prefer)):
        if prof is not None and len(prof) < len(DIMENSIONS):
            missing = [d for d in DIMENSIONS if d not in prof]
            p.errors.append(f"{name} profile lacks {', '.join(missing)}")

    think = _section(text, "<think>", "</think>")
    if think is None:
        p.errors.append("missing think")
    else:
        heads = [(m.start(), m.end(), _KEYS.get(_norm_key(m.group(1)))) for m in _DIM_HEAD.finditer(think)]
        tot = re.search(r"Totals\s*:|total_score", think, re.IGNORECASE)
        end_all = tot.start() if tot else len(think)
        seen = set()
        for idx, (s, e, dim) in enumerate(heads):
            if dim is None or dim in seen or s >= end_all:
                continue
            seen.add(dim)
            nxt = heads[idx + 1][0] if idx + 1 < len(heads) else len(think)
            seg = think[e:min(nxt, end_all)]
            di = DIMENSIONS.index(dim)
            for img in IMAGES:
                m = _IMG_SCORE[img].search(seg)
                if m:
                    v = int(m.group(1))
                    p.scores[img][di] = v if 0 <= v <= 5 else None
        for img in IMAGES:
            m = _TOTAL[img].search(think)
            if m:
                p.total_terms[img] = [int(x) for x in re.findall(r"\d+", m.group(1))] or None
                p.totals[img] = int(m.group(2))
            else:
                p.errors.append(f"missing total of {img}")
        if any(v is None for img in IMAGES for v in p.scores[img]):
            p.errors.append("missing per-dimension scores")

    i = text.rfind("<answer>")
    if i < 0:
        p.errors.append("missing answer")
    else:
        raw = text[i + len("<answer>"):]
        j = raw.find("</answer>")
        raw = raw[:j] if j >= 0 else raw
        n = normalize_answer(raw)
        canon = {"image a": "Image A", "image b": "Image B"}.get(n)
        if canon is None:
            p.errors.append(f"unrecognised answer {raw.strip()!r}")
            p.answer = raw.strip()
        else:
            p.answer = canon
    return p
