"""Parse and check completions of the personalized-preference task.

Output format (PreferThinker), in this order, nothing else outside the tags but whitespace::

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
``parse_completion`` is tolerant (whitespace, typographic, single or missing quotes, tag case and spacing,
``ArtisticMedium`` / ``artistic medium`` for ``Artistic Medium``, missing or unclosed sections): it lists the
sections it found in ``found`` and what was missing or malformed in ``errors``. The answer is read with the
paper's normalisation only (strip, trailing period, case), as the accuracy reward demands.
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
    """What a tolerant parse found (``found``: section names) and what was malformed (``errors``)."""
    prefer: dict | None = None
    non_prefer: dict | None = None
    scores: dict = field(default_factory=lambda: {k: [None] * len(DIMENSIONS) for k in IMAGES})
    totals: dict = field(default_factory=lambda: {k: None for k in IMAGES})
    answer: str | None = None
    errors: list = field(default_factory=list)
    #: the addends written in ``total_score=a1+...+a5=T`` (None when absent)
    total_terms: dict = field(default_factory=lambda: {k: None for k in IMAGES})
    #: sections present, in output order: "preference profile", "non-preference profile", "think", "answer"
    found: list = field(default_factory=list)


def _norm_key(k: str) -> str:
    return re.sub(r"[\s_\-]+", "", k).lower()


_KEYS = {_norm_key(d): d for d in DIMENSIONS}
_KEYS.update({"colour": "Color", "colors": "Color", "artstyle": "Art Styles", "style": "Art Styles",
              "styles": "Art Styles", "medium": "Artistic Medium", "details": "Detail"})


def canonical_dimension(key: str) -> str | None:
    """The dimension a written key names ("art_styles", "Colour", ...), or None."""
    return _KEYS.get(_norm_key(key))

# Keys, quoted values and the whitespace around the colon are bounded: an unbounded run re-scans the rest of the
# text from every start position (a 20 kB profile of plain words took 8 s; a key followed by 4,000 spaces, 7 s
# and 8x that many, 470 s: two `\s*` around an optional quote try every split). Found by tests/fuzz/.
_PAIR_RE = re.compile(
    r"""["']?\s{0,20}([A-Za-z][A-Za-z _\-]{0,40}?)\s{0,20}["']?\s{0,20}:\s{0,20}"""
    r"""(?:"([^"<>]{0,500})"|'([^'<>]{0,500})'|([^,"'<>\n]*))"""
)
# typographic quotes and odd spaces that models (and people) write for ASCII ones
_CLEAN = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
                        "\u2018": "'", "\u2019": "'", "`": "'", "\u00a0": " ", "\u2009": " ", "\u3000": " "})


def normalize_answer(s: str | None) -> str:
    """The paper's normalisation of an answer: strip, drop a trailing period, lowercase."""
    if s is None:
        return ""
    s = s.strip()
    if s.endswith("."):
        s = s[:-1]
    return s.strip().lower()


def _tag_re(words: str, close: bool) -> re.Pattern:
    """A tag with any case and any whitespace, ``_`` or ``-`` between its words: ``< Visual_Preference Profile>``."""
    body = r"[\s_\-]{0,10}".join(words.split())   # bounded runs: "<" then 30,000 spaces took 16 s (tests/fuzz/)
    return re.compile(rf"<\s{{0,10}}{'/' if close else ''}\s{{0,10}}{body}\s{{0,10}}>", re.IGNORECASE)


_SECTIONS = {name: (_tag_re(name, False), _tag_re(name, True))
             for name in ("visual preference profile", "visual non preference profile", "think", "answer")}
_ANY_TAG = re.compile(r"<\s{0,10}/?\s{0,10}(?:visual|think|answer)", re.IGNORECASE)


def _section(text: str, name: str, errors: list[str], last: bool = False) -> str | None:
    """The body of a section (the first one, or the ``last``); an unclosed one runs to the next tag."""
    opener, closer = _SECTIONS[name]
    opens = list(opener.finditer(text))
    if not opens:
        return None
    start = (opens[-1] if last else opens[0]).end()
    close = closer.search(text, start)
    if close is None:
        errors.append(f"unclosed <{name}>")
        k = _ANY_TAG.search(text, start)
        return text[start: k.start() if k else len(text)]
    return text[start: close.start()]


def parse_profile(body: str) -> tuple[dict[str, str], list[str]]:
    """Tolerant read of a profile (output format or ``Art Styles: X, Color: Y``): the dimensions found and
    a list of problems (unknown keys, repeated keys, empty values)."""
    out: dict[str, str] = {}
    problems: list[str] = []
    for m in _PAIR_RE.finditer(body.translate(_CLEAN)):
        raw_key = m.group(1).strip()
        key = canonical_dimension(raw_key)
        val = next((g for g in m.group(2, 3, 4) if g is not None), "").strip()
        if key is None:
            problems.append(f"unknown key {raw_key!r}")
        elif key in out:
            problems.append(f"repeated key {raw_key!r}")
        elif not val:
            problems.append(f"empty value for {key!r}")
        else:
            out[key] = val
    return out, problems


def _parse_profile(body: str) -> dict:
    return parse_profile(body)[0]


_DIM_HEAD = re.compile(r"(Art\s*Styles?|Colou?r|Artistic\s*Medium|Saturation|Detail)\s*:", re.IGNORECASE)
# bounded runs for the same reason as _PAIR_RE (linear time on any input)
_IMG_SCORE = {k: re.compile(rf"{k.replace(' ', r'[ _]{0,4}')}[^()<>;]{{0,200}}?\(\s{{0,10}}(\d{{1,3}})\s{{0,10}}\)",
                            re.IGNORECASE) for k in IMAGES}
_TOTAL = {k: re.compile(rf"{k.replace(' ', r'[ _]{0,4}')}\s{{0,10}}:\s{{0,10}}total_score\s{{0,10}}=\s{{0,10}}"
                        rf"([\d\s+]{{0,80}}?)\s{{0,10}}=\s{{0,10}}(\d{{1,4}})", re.IGNORECASE) for k in IMAGES}


_TOTALS_MARK = re.compile(r"Totals\s{0,10}:|total_score", re.IGNORECASE)


def _parse_think(think: str, p: ParsedCompletion) -> None:
    heads = [(m.start(), m.end(), canonical_dimension(m.group(1))) for m in _DIM_HEAD.finditer(think)]
    # the totals start after the last dimension line: "Totals:" inside a line's free text ends nothing
    last_head = heads[-1][0] if heads else -1
    tot = next((m for m in _TOTALS_MARK.finditer(think) if m.start() > last_head), None)
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
            if not m:
                continue
            v = int(m.group(1))
            if 0 <= v <= 5:
                p.scores[img][di] = v
            else:
                p.errors.append(f"score {v} of {img} on {dim} is outside 0-5")
    for img in IMAGES:
        m = _TOTAL[img].search(think)
        if m:
            p.total_terms[img] = [int(x) for x in re.findall(r"\d+", m.group(1))] or None
            p.totals[img] = int(m.group(2))
        else:
            p.errors.append(f"missing total of {img}")
    missing = [f"{img} on {d}" for img in IMAGES for d, v in zip(DIMENSIONS, p.scores[img]) if v is None]
    if missing:
        p.errors.append("missing per-dimension scores: " + ", ".join(missing))


def parse_completion(text: str) -> ParsedCompletion:
    """Tolerant parse: reads whatever it can, never raises; ``errors`` says what was missing or malformed."""
    p = ParsedCompletion()
    text = (text or "").translate(_CLEAN)
    for attr, name, label in (("prefer", "visual preference profile", "preference"),
                              ("non_prefer", "visual non preference profile", "non-preference")):
        body = _section(text, name, p.errors)
        if body is None:
            p.errors.append(f"missing {label} profile")
            continue
        p.found.append(f"{label} profile")
        prof, problems = parse_profile(body)
        setattr(p, attr, prof)
        p.errors += [f"{label} profile: {x}" for x in problems]
        if len(prof) < len(DIMENSIONS):
            p.errors.append(f"{label} profile lacks {', '.join(d for d in DIMENSIONS if d not in prof)}")

    think = _section(text, "think", p.errors)
    if think is None:
        p.errors.append("missing think")
    else:
        p.found.append("think")
        _parse_think(think, p)

    raw = _section(text, "answer", p.errors, last=True)
    if raw is None:
        p.errors.append("missing answer")
    else:
        p.found.append("answer")
        canon = {"image a": "Image A", "image b": "Image B"}.get(normalize_answer(raw))  # paper's normalisation only
        if canon is None:
            p.errors.append(f"unrecognised answer {raw.strip()!r}")
            p.answer = raw.strip()
        else:
            p.answer = canon
    return p
