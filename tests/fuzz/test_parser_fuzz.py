"""Property-based tests of the completion parser: RL policies write anything, so the parser must read any text
without raising, in linear time, and say what was malformed (fast tier; HYPOTHESIS_PROFILE=large for more)."""
from __future__ import annotations

import time

from hypothesis import example, given
from hypothesis import strategies as st

from rlframe.tasks.preference.parser import IMAGES, is_well_formed, parse_completion
from rlframe.tasks.preference.synthetic import render_target
from rlframe.tasks.preference.vocab import DIMENSIONS

PREFER = {"Art Styles": "Cubism", "Color": "Teal", "Artistic Medium": "Watercolor", "Saturation": "Muted",
          "Detail": "Intricate"}
NON_PREFER = {"Art Styles": "Baroque", "Color": "Pink", "Artistic Medium": "Mosaic", "Saturation": "Vibrant",
              "Detail": "Rough"}
IMG_A = {**PREFER, "Detail": "Rough"}
IMG_B = {**NON_PREFER, "Color": "Crimson"}
VALID = render_target(PREFER, NON_PREFER, IMG_A, IMG_B, {"Image A": [5, 5, 5, 5, 0], "Image B": [0, 2, 0, 0, 5]},
                      "Image A")
SECTIONS = {"preference profile", "non-preference profile", "think", "answer"}

# the grammar's own pieces, so random soup often gets deep into the parser
PIECES = ["<visual preference profile>", "</visual preference profile>", "<visual non-preference profile>",
          "</visual non-preference profile>", "<think>", "</think>", "<answer>", "</answer>", "< Think >",
          "Image A", "Image B", "image_a", "(5)", "(0)", "(9)", "( 3 )", ";", ":", ",", '"', "'", "\u201c", " ",
          "\n", "\t", "total_score=", "Totals:", "+", "=", "5+5+5+5+0=20", *DIMENSIONS, "Colour", "likes",
          "dislikes", "Cubism", "1.", "\u00a0", "\u3000"]
soup = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=60).map("".join)
any_text = st.one_of(st.text(max_size=400), soup, st.binary(max_size=200).map(lambda b: b.decode("latin-1")))


def check_parse(text: str) -> None:
    p = parse_completion(text)
    assert all(isinstance(e, str) and e for e in p.errors)
    assert set(p.found) <= SECTIONS and len(set(p.found)) == len(p.found)
    for img in IMAGES:
        assert len(p.scores[img]) == len(DIMENSIONS)
        assert all(v is None or 0 <= v <= 5 for v in p.scores[img])
    assert p.answer is None or isinstance(p.answer, str)
    if is_well_formed(text):   # the strict format implies a complete, clean tolerant parse
        assert p.errors == [], p.errors
        assert p.answer in IMAGES and set(p.found) == SECTIONS
    elif p.answer not in IMAGES or len(p.found) < len(SECTIONS):
        assert p.errors, "something is missing but no error says what"


def test_the_valid_completion_parses_clean():
    assert is_well_formed(VALID)
    p = parse_completion(VALID)
    assert p.errors == [] and p.answer == "Image A" and p.prefer == PREFER and p.non_prefer == NON_PREFER


@given(any_text)
@example("")
@example("<answer>")
@example("<visual preference profile>" + "a b " * 50)
def test_any_text_parses_without_raising(text):
    check_parse(text)


@given(st.integers(min_value=0, max_value=len(VALID)))
def test_every_truncation_reports_what_is_missing(cut):
    text = VALID[:cut]
    check_parse(text)
    if cut < len(VALID.rstrip()):
        assert not is_well_formed(text)


@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.text(min_size=1, max_size=8))
def test_any_insertion_into_a_valid_completion(at, junk):
    check_parse(VALID[:at] + junk + VALID[at:])


def cpu_seconds(small: str, large: str) -> tuple[float, float]:
    """CPU time of this thread parsing each text, the best of five, measured alternately: CPU time does not
    count the time another process holds the core, and alternating lets load hit both sides alike."""
    best = [float("inf"), float("inf")]
    for _ in range(5):
        for i, text in enumerate((small, large)):
            t0 = time.thread_time()
            parse_completion(text)
            is_well_formed(text)
            best[i] = min(best[i], time.thread_time() - t0)
    return best[0], best[1]


chunks = st.lists(st.sampled_from(PIECES + ["a", "b c", "x"]), min_size=1, max_size=10).map("".join)
prefixes = st.lists(st.sampled_from(PIECES), max_size=6).map("".join)


@given(prefixes, chunks)
@example("<visual preference profile>", "a b c ")            # was quadratic: 8 s for 20 kB (_PAIR_RE)
@example("<think>Color: ", "Image A: total_score=1+ ")       # was quadratic (_TOTAL)
@example("<think>Color: ", "Image A x")                      # unbounded lazy run before a score (_IMG_SCORE)
def test_parse_time_is_linear_in_the_length(prefix, chunk):
    """A prefix and a chunk repeated 8x more times must cost about 8x, not 64x: no pattern rescans the text
    from every position (the bound allows 3x noise over linear, and a floor for timer resolution)."""
    k = max(1, 4_000 // len(chunk))
    t_small, t_large = cpu_seconds(prefix + chunk * k, prefix + chunk * 8 * k)
    assert t_large <= 24 * max(t_small, 1e-3), (prefix, chunk, t_small, t_large)
    assert t_large < 2.0


def test_huge_and_unicode_heavy_inputs():
    for text in ("\U0001F600" * 200_000, VALID * 200, "\u0301" * 100_000 + VALID, "<think>" * 50_000,
                 "Image A (5); " * 20_000):
        t0 = time.perf_counter()
        check_parse(text)
        assert time.perf_counter() - t0 < 5.0, text[:40]
