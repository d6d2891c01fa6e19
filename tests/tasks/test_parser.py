"""Tolerant parsing of completions: well-formed, partial and adversarial text (fast tier, pure Python)."""

from __future__ import annotations

import pytest

from rlframe.tasks.preference.parser import is_well_formed, parse_completion, parse_profile
from rlframe.tasks.preference.synthetic import render_target

PREFER = {"Art Styles": "Pixel Art", "Color": "Teal", "Artistic Medium": "Oil Paint", "Saturation": "Muted",
          "Detail": "Fine"}
NON_PREFER = {"Art Styles": "Baroque", "Color": "Pink", "Artistic Medium": "Mosaic", "Saturation": "Intense",
              "Detail": "Rough"}
IMG_A = dict(PREFER, Detail="Rough")
IMG_B = dict(NON_PREFER, Color="Lavender")
SCORES = {"Image A": [5, 5, 5, 5, 0], "Image B": [0, 2, 0, 0, 0]}


@pytest.fixture
def good() -> str:
    return render_target(PREFER, NON_PREFER, IMG_A, IMG_B, SCORES, "Image A")


def test_well_formed_reports_every_section(good):
    p = parse_completion(good)
    assert is_well_formed(good)
    assert p.found == ["preference profile", "non-preference profile", "think", "answer"]
    assert p.errors == [] and p.prefer == PREFER and p.non_prefer == NON_PREFER
    assert p.scores == SCORES and p.totals == {"Image A": 20, "Image B": 2} and p.answer == "Image A"


@pytest.mark.parametrize("key", ["ArtisticMedium", "Artistic Medium", "artistic medium", "artistic_medium",
                                 "Artistic-Medium", " Artistic  Medium "])
def test_medium_key_spellings(good, key):
    p = parse_completion(good.replace('"Artistic Medium"', f'"{key}"'))
    assert p.prefer == PREFER and p.non_prefer == NON_PREFER
    assert not [e for e in p.errors if "profile" in e]


def test_whitespace_quotes_and_tag_spelling(good):
    v = (good.replace('"Color": "Teal"', "\u201cColor\u201d :  \u201cTeal\u201d")   # typographic quotes
         .replace('"Detail": "Fine"', "'Detail':'Fine'")                          # single quotes
         .replace('"Saturation": "Muted"', "Saturation:   Muted")                 # no quotes
         .replace("<visual preference profile>", "< Visual_Preference  Profile >")
         .replace("</visual non-preference profile>", "</Visual Non-Preference Profile>")
         .replace("<think>", "<THINK>\n\n").replace("<answer>Image A</answer>", "<answer>\n image a.\n</answer>"))
    p = parse_completion(v)
    assert p.prefer == PREFER and p.non_prefer == NON_PREFER, p.errors
    assert p.scores == SCORES and p.answer == "Image A" and p.errors == []
    assert not is_well_formed(v)  # the strict format reward is unaffected by the tolerance


def test_think_dimension_headers_any_case(good):
    v = good.replace("3. Artistic Medium:", "3. artistic medium :").replace("1. Art Styles:", "1. ART STYLE:")
    assert parse_completion(v).scores == SCORES


def test_partial_completions(good):
    only_profiles = good[:good.index("<think>")]
    p = parse_completion(only_profiles)
    assert p.found == ["preference profile", "non-preference profile"]
    assert p.prefer == PREFER and p.answer is None
    assert "missing think" in p.errors and "missing answer" in p.errors
    # unclosed preference profile: read up to the next tag, reported as unclosed
    unclosed = good.replace("</visual preference profile>", "", 1)
    p = parse_completion(unclosed)
    assert p.prefer == PREFER and p.non_prefer == NON_PREFER
    assert "unclosed <visual preference profile>" in p.errors
    # a profile with two dimensions only
    short = good.replace('"Artistic Medium": "Oil Paint", "Saturation": "Muted", "Detail": "Fine"', "", 1)
    p = parse_completion(short)
    assert p.prefer == {"Art Styles": "Pixel Art", "Color": "Teal"}
    assert "preference profile lacks Artistic Medium, Saturation, Detail" in p.errors
    # think cut before the totals
    cut = good[:good.index("Totals:")]
    p = parse_completion(cut)
    assert p.scores == SCORES and p.totals == {"Image A": None, "Image B": None}
    assert "missing total of Image A" in p.errors and "unclosed <think>" in p.errors


def test_adversarial_completions(good):
    # unknown and repeated keys are reported, known ones kept
    p = parse_completion(good.replace('"Saturation": "Muted"', '"Hue": "Muted", "Color": "Red"', 1))
    assert p.prefer["Color"] == "Teal" and "Saturation" not in p.prefer
    assert "preference profile: unknown key 'Hue'" in p.errors
    assert "preference profile: repeated key 'Color'" in p.errors
    # out-of-range score is named
    p = parse_completion(good.replace("Image A Pixel Art(5)", "Image A Pixel Art(9)"))
    assert p.scores["Image A"][0] is None
    assert "score 9 of Image A on Art Styles is outside 0-5" in p.errors
    # the last answer counts; garbage answers are kept verbatim and reported
    assert parse_completion(good + "<answer>Image B</answer>").answer == "Image B"
    p = parse_completion(good.replace("<answer>Image A</answer>", "<answer>both</answer>"))
    assert p.answer == "both" and "unrecognised answer 'both'" in p.errors
    # tags inside a value, nested junk, unicode, huge input: never raises
    for junk in ["<<<>>>", "<answer>", "</think><think>", "\x00" * 10, "é" * 5000, good * 3,
                 "<visual preference profile>\"Art Styles\": \"<answer>Image A</answer>"]:
        parse_completion(junk)
    assert parse_completion(good * 2).answer == "Image A"


def test_parse_profile_flattened_string():
    prof, problems = parse_profile("Art Styles: Pixel Art, Color: Teal, ArtisticMedium: Oil Paint, "
                                   "saturation: Muted, DETAIL: Fine")
    assert prof == PREFER and problems == []
    prof, problems = parse_profile('"Color": "Pink, Teal", "Mood": "calm", "Detail": ""')
    assert prof == {"Color": "Pink, Teal"}
    assert problems == ["unknown key 'Mood'", "empty value for 'Detail'"]
