"""One test per bug the property-based tests found, named after it (each failed before its fix)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from rlframe.tasks.preference.parser import parse_completion
from rlframe.tasks.preference.preferimg import RecordError, load_preferimg
from test_preferimg_fuzz import good


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    for name in ("a", "b", "p0", "p1", "n0", "n1"):
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / f"{name}.png")
    return tmp_path


def write(root: Path, *lines: bytes) -> Path:
    path = root / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def ok() -> bytes:
    return json.dumps(good()).encode()


def test_parser_profile_of_plain_words_is_linear_not_quadratic():
    """A 20 kB profile of plain words took 8 s (_PAIR_RE rescanned the rest of the text from every start)."""
    t0 = time.perf_counter()
    parse_completion("<visual preference profile>" + "word " * 4_000)
    assert time.perf_counter() - t0 < 1.0


def test_parser_total_with_endless_addends_is_linear():
    """Repeated unfinished totals cost quadratic time (_TOTAL): 8x the text took 64x, now about 8x."""
    from test_parser_fuzz import cpu_seconds

    chunk = "Image A: total_score=1+ "
    small, large = cpu_seconds("<think>" + chunk * 500, "<think>" + chunk * 4_000)
    assert large <= 24 * max(small, 2e-4), (small, large)


def test_parser_totals_word_inside_a_reason_does_not_end_the_scores():
    """Found by test_any_insertion_into_a_valid_completion: 'TOTALS:' written inside the Color line's reason
    (still the strict format) made the tolerant parser stop reading scores there."""
    from test_parser_fuzz import VALID

    from rlframe.tasks.preference.parser import is_well_formed

    at = VALID.index("- neutral color.") + 2
    text = VALID[:at] + "TOTALS:" + VALID[at:]
    assert is_well_formed(text)
    p = parse_completion(text)
    assert p.errors == [] and p.scores == parse_completion(VALID).scores


def test_parser_image_without_a_score_is_linear():
    """"Image A" never followed by "(score)" in a dimension's line cost quadratic time (_IMG_SCORE)."""
    from test_parser_fuzz import cpu_seconds

    small, large = cpu_seconds("<think>Color: " + "Image A x" * 500, "<think>Color: " + "Image A x" * 4_000)
    assert large <= 24 * max(small, 2e-4), (small, large)


def test_loader_non_utf8_line_is_a_bad_record_not_a_traceback(root):
    path = write(root, ok(), ok() + b"\xff", ok())
    with pytest.raises(RecordError, match=r"line 2: field '<json>': expected UTF-8 text"):
        load_preferimg(path)
    assert load_preferimg(path, on_invalid="skip").skipped == 1


def test_loader_json_nested_past_the_recursion_limit(root):
    path = write(root, ok(), b"[" * 5_000)
    with pytest.raises(RecordError, match=r"line 2: .*RecursionError"):
        load_preferimg(path)


def test_loader_integer_longer_than_python_converts(root):
    path = write(root, b'{"user_id": ' + b"9" * 5_000 + b"}")
    with pytest.raises(RecordError, match=r"line 1: .*not usable JSON"):
        load_preferimg(path)


def test_loader_nul_byte_in_an_image_path(root):
    path = write(root, json.dumps({**good(), "imageA": "img/a.png\x00"}).encode())
    with pytest.raises(RecordError, match=r"line 1: field 'imageA': expected an image path"):
        load_preferimg(path)


def test_loader_empty_file_is_an_error_not_an_empty_data_set(root):
    with pytest.raises(RecordError, match="no records"):
        load_preferimg(write(root, b"", b"  "))


def test_loader_jsonl_whose_first_line_is_a_broken_list(root):
    """A JSONL file whose first line starts with '[' was read as one JSON document and failed as a whole."""
    result = load_preferimg(write(root, b"[1, 2", ok()), on_invalid="skip")
    assert result.skipped == 1 and len(result.records) == 1


@pytest.mark.parametrize("override", ["=0", "trainer.max_steps=${oops}"])
def test_config_override_hydra_rejects_with_a_plain_exception(override, capsys):
    """`rlframe train =0` ended in a ValueError traceback from Hydra; now a named config error (exit 2)."""
    from rlframe.cli import main

    assert main(["train", "--cfg", "job", override]) == 2
    assert capsys.readouterr().err.startswith("rlframe train: invalid configuration")


@pytest.mark.parametrize("text", ["image_a<visual preference profile>SaturationColor" + "\u3000" * 32_000,
                                  "<" + " " * 32_000])
def test_parser_long_whitespace_after_a_key_or_a_bracket_is_linear(text):
    """A key then 32,000 (ideographic) spaces took 470 s (two `\\s*` around an optional quote in _PAIR_RE);
    "<" then 32,000 spaces took 16 s (the tag patterns): both found by the linear-time property."""
    t0 = time.perf_counter()
    parse_completion(text)
    assert time.perf_counter() - t0 < 1.0
