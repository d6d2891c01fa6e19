"""The text-rendered personalized-preference task (PreferThinker's predict-then-assess format).

Pure Python: no Ray, DeepSpeed or vLLM. See ``synthetic`` (data), ``tokenizer``, ``parser`` and ``rewards``.
"""

from .parser import FORMAT_RE, ParsedCompletion, is_well_formed, normalize_answer, parse_completion
from .rewards import (
    C0,
    accuracy_reward,
    calibrate_c0,
    format_reward,
    make_embedder,
    profile_similarity,
    score_consistency_reward,
)
from .synthetic import flatten_profile, generate_samples, render_profile
from .tokenizer import build_tokenizer
from .vocab import DIMENSIONS, VOCAB

__all__ = [
    "C0",
    "DIMENSIONS",
    "FORMAT_RE",
    "VOCAB",
    "ParsedCompletion",
    "accuracy_reward",
    "build_tokenizer",
    "calibrate_c0",
    "flatten_profile",
    "format_reward",
    "generate_samples",
    "is_well_formed",
    "make_embedder",
    "normalize_answer",
    "parse_completion",
    "profile_similarity",
    "render_profile",
    "score_consistency_reward",
]
