"""Vocabulary of the text-rendered personalized-preference task.

Five visual dimensions, in the order the output format uses them, and a small term vocabulary per
dimension. The terms look like the paper's (PreferThinker, arXiv 2511.00609; its vocabulary has 288 terms)
but the vocabularies here are deliberately small and pairwise disjoint across dimensions: every term names
exactly one dimension, and the tokenizer gives each term a single whole token, which is what lets a tiny
model learn the task quickly (README: "why it learns").
"""

from __future__ import annotations

DIMENSIONS: tuple[str, ...] = ("Art Styles", "Color", "Artistic Medium", "Saturation", "Detail")

VOCAB: dict[str, tuple[str, ...]] = {
    "Art Styles": (
        "Cubism",
        "Pixel Art",
        "Impressionism",
        "Baroque",
        "Art Nouveau",
        "Surrealism",
        "Ukiyo-e",
        "Mesoamerican Art",
    ),
    "Color": ("Teal", "Pink", "Charcoal Gray", "Crimson", "Golden Yellow", "Lavender"),
    "Artistic Medium": ("Watercolor", "Oil Paint", "3D Modeling", "Pencil Sketch", "Coiling", "Mosaic"),
    "Saturation": ("Muted", "Intense", "Vibrant", "Pastel", "Desaturated", "Monochrome"),
    "Detail": ("Intricate", "Minimal", "Realistic", "Fine", "Rough", "Sketchy"),
}

#: Per-dimension scores of a candidate term: the liked term, the disliked term, anything else.
SCORE_LIKED = 5
SCORE_DISLIKED = 0
SCORE_NEUTRAL = 2

#: The short reason written after each score in the chain of thought ("liked style", "neutral color", ...).
REASONS: dict[int, str] = {SCORE_LIKED: "liked", SCORE_DISLIKED: "disliked", SCORE_NEUTRAL: "neutral"}
DIMENSION_WORDS: dict[str, str] = {"Art Styles": "style", "Color": "color", "Artistic Medium": "medium",
                                   "Saturation": "saturation", "Detail": "detail"}


def all_terms() -> list[str]:
    """Every term of every dimension, in dimension order."""
    return [t for d in DIMENSIONS for t in VOCAB[d]]


def term_dimension() -> dict[str, str]:
    """Map each term to its dimension (the vocabularies are disjoint)."""
    return {t: d for d in DIMENSIONS for t in VOCAB[d]}


def _check() -> None:
    terms = all_terms()
    if len(set(terms)) != len(terms):
        raise AssertionError("term vocabularies must be disjoint across dimensions")
    for d in DIMENSIONS:
        if len(VOCAB[d]) < 3:
            raise AssertionError(f"dimension {d!r} needs at least 3 terms (liked, disliked, neutral)")


_check()
