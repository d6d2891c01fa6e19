"""Property-based tests of the PreferImg loader on randomly mutated records: every record is either loaded
correctly or rejected naming the file, the line and the field, never a traceback; skip counts are exact."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from rlframe.tasks.preference.preferimg import REQUIRED, RecordError, load_preferimg
from rlframe.tasks.preference.vocab import DIMENSIONS

PREFER = {"Art Styles": "Cubism", "Color": "Teal", "Artistic Medium": "Watercolor", "Saturation": "Muted",
          "Detail": "Fine"}
NON_PREFER = '"Art Styles": "Baroque", "Color": "Pink", "Artistic Medium": "Mosaic", "Saturation": "Vibrant", ' \
             '"Detail": "Rough"'
FIELDS = [*REQUIRED, "reference_prompt_list", "id"]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=20), lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
paths = st.one_of(st.sampled_from(["img/a.png", "img/missing.png", "img/broken.png", "img/", "/", "../x.png",
                                   "img/a.png\x00", "x" * 5000, "", "img/p0.png"]), st.text(max_size=20))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preferimg")
    img = root / "img"
    img.mkdir()
    for name in ("a", "b", "p0", "p1", "n0", "n1"):
        Image.new("RGB", (8, 8), (len(name) * 30, 0, 0)).save(img / f"{name}.png")
    (img / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root


def good() -> dict:
    return {"user_id": "u1", "imageA": "img/a.png", "imageB": "img/b.png",
            "prefered_images": ["img/p0.png", "img/p1.png"], "non_prefered_images": ["img/n0.png", "img/n1.png"],
            "reference_prompt_list": ["a", "b", "c", "d"], "prefer_attributes": dict(PREFER),
            "non_prefer_attributes": NON_PREFER,
            "conversations": [{"from": "human", "value": "Which?"}, {"from": "gpt", "value": "<answer>Image B</answer>"}]}


@st.composite
def mutated(draw) -> dict:
    rec = good()
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        op = draw(st.sampled_from(["drop", "extra", "value", "path", "list", "huge", "profile", "answer"]))
        key = draw(st.sampled_from(FIELDS))
        if op == "drop":
            rec.pop(key, None)
        elif op == "extra":
            rec[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
        elif op == "value":
            rec[key] = draw(json_values)
        elif op == "path":
            rec[draw(st.sampled_from(["imageA", "imageB"]))] = draw(paths)
        elif op == "list":
            rec[draw(st.sampled_from(["prefered_images", "non_prefered_images"]))] = draw(st.lists(paths, max_size=3))
        elif op == "huge":
            rec["prefered_images"] = ["img/p0.png"] * 20_000
        elif op == "profile":
            rec["prefer_attributes"] = draw(st.dictionaries(st.sampled_from([*DIMENSIONS, "colour", "Mood", ""]),
                                                            json_values, max_size=6))
        else:
            rec["conversations"] = [{"value": "q"}, {"value": draw(st.text(max_size=40))}]
    return rec


lines = st.one_of(mutated().map(lambda r: json.dumps(r).encode()),
                  st.builds(lambda r, cut: json.dumps(r).encode()[:cut], mutated(), st.integers(0, 400)),
                  st.builds(lambda r, junk: json.dumps(r).encode() + junk, mutated(),
                            st.sampled_from([b"\xff", b"\xc3", b"}", b"\x00"])),
                  st.just(b"[" * 5_000), st.just(b'{"user_id": ' + b"9" * 5000 + b"}"))


def load_one(root: Path, line: bytes, name: str) -> dict | None:
    path = root / f"{name}.jsonl"
    path.write_bytes(line + b"\n")
    try:
        return load_preferimg(path, verify_images=True).records[0]
    except RecordError as err:
        msg = str(err)
        assert msg.startswith(f"{path}: line 1: ") or msg.startswith(f"{path}: "), msg
        assert re.search(r"field '[^']+'", msg) or "JSON" in msg or "UTF-8" in msg or "no records" in msg, msg
        return None


@given(lines)
def test_each_record_loads_or_is_named(root, line):
    rec = load_one(root, line, "one")
    if rec is not None:   # loaded correctly: every normalized field has its promised shape
        assert rec["answer"] in ("Image A", "Image B")
        assert list(rec["prefer_attributes"]) == list(DIMENSIONS)
        assert all(isinstance(v, str) and v for v in rec["prefer_attributes"].values())
        assert all(Path(p).is_file() for p in rec["images"])
        assert len(rec["images"]) == rec["num_prefered"] + rec["num_non_prefered"] + 2


@given(st.lists(lines, min_size=1, max_size=6))
def test_skip_counts_are_exact(root, many):
    expected_bad = sum(load_one(root, line, "single") is None for line in many)
    path = root / "many.jsonl"
    path.write_bytes(b"\n".join(many) + b"\n")
    nonblank = sum(1 for line in b"\n".join(many).split(b"\n") if line.strip())
    if nonblank == 0:
        with pytest.raises(RecordError, match="no records"):
            load_preferimg(path, on_invalid="skip")
        return
    if nonblank == 1 and path.read_bytes().lstrip().startswith(b"[") and expected_bad:
        with pytest.raises(RecordError, match="JSON"):   # one line that opens a list: read as one JSON document
            load_preferimg(path, on_invalid="skip")
        return
    result = load_preferimg(path, on_invalid="skip")
    assert result.skipped == len(result.reasons)
    if nonblank == len(many):   # (a line that is itself blank or holds a newline changes the count)
        assert result.skipped == expected_bad and len(result.records) == len(many) - expected_bad
    for reason in result.reasons:
        assert reason.startswith(f"{path}: line ")
