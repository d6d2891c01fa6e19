"""PreferImg / PreferThinker loader: good records normalize, every broken kind fails naming file, line or index,
field and expectation; skip mode counts (fast tier: pure Python + PIL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from rlframe.config.validate import ConfigError
from rlframe.tasks.preference.preferimg import RecordError, load_preferimg
from rlframe.tasks.preference.vocab import DIMENSIONS

PREFER = {"Art Styles": "Cubism", "Color": "Teal", "Artistic Medium": "Watercolor", "Saturation": "Muted",
          "Detail": "Fine"}
NON_PREFER_STR = ('"Art Styles": "Baroque", "Color": "Pink", "Artistic Medium": "Mosaic", '
                  '"Saturation": "Vibrant", "Detail": "Rough"')
COT = ("<visual preference profile>...</visual preference profile>\n<think>...</think>\n"
       "<answer>Image B</answer>")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    img = tmp_path / "img"
    img.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(img / f"p{i}.png")
        Image.new("RGB", (8, 8), (0, 40 * i, 0)).save(img / f"n{i}.png")
    for name in ("a", "b"):
        Image.new("RGB", (8, 8), (0, 0, 99)).save(img / f"{name}.png")
    (img / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return tmp_path


def record(**over) -> dict:
    rec = {
        "user_id": "u1", "imageA": "img/a.png", "imageB": "img/b.png",
        "prefered_images": [f"img/p{i}.png" for i in range(4)],
        "non_prefered_images": [f"img/n{i}.png" for i in range(4)],
        "reference_prompt_list": [f"pos {i}" for i in range(4)] + [f"neg {i}" for i in range(4)],
        "prefer_attributes": dict(PREFER), "non_prefer_attributes": NON_PREFER_STR,
        "conversations": [{"from": "human", "value": "Which one?"}, {"from": "gpt", "value": "<answer>Image A</answer>"}],
        "extra_field": 7,
    }
    rec.update(over)
    return {k: v for k, v in rec.items() if v is not _DROP}


_DROP = object()


def write_jsonl(path: Path, recs: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))
    return path


def test_good_records_jsonl_and_json(root):
    recs = [record(), record(user_id=2, conversations=[{"value": "q"}, {"value": COT}],
                             prefer_attributes="Art Styles: Cubism, Color: Teal, ArtisticMedium: Watercolor, "
                                               "saturation: Muted, Detail: Fine")]
    for path in (write_jsonl(root / "d.jsonl", recs), root / "d.json"):
        if path.suffix == ".json":
            path.write_text(json.dumps(recs, indent=2))
        res = load_preferimg(path, num_history=2)
        assert res.skipped == 0 and len(res.records) == 2
        a, b = res.records
        # the paper's image order: preferred refs, non-preferred refs, Image A, Image B (absolute paths)
        assert a["images"] == [str(root / f"img/{n}.png") for n in ("p0", "p1", "n0", "n1", "a", "b")]
        assert a["prefered_images"] == ["img/p0.png", "img/p1.png"] and a["num_non_prefered"] == 2
        assert a["reference_prompt_list"] == ["pos 0", "pos 1", "neg 0", "neg 1"]  # kept aligned with the images
        assert a["prefer_attributes"] == PREFER == b["prefer_attributes"]
        assert list(a["non_prefer_attributes"]) == list(DIMENSIONS)
        assert a["non_prefer_attributes"]["Saturation"] == "Vibrant"
        assert a["answer"] == "Image A" and a["target"] is None and a["question"] == "Which one?"
        assert b["answer"] == "Image B" and b["target"] == COT and b["user_id"] == "2"
        assert a["extra_field"] == 7 and a["raw"] == recs[0]  # every original field survives
        assert res.summary().endswith("2 records loaded, 0 skipped")


def test_multi_preference_values_and_image_root(root, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("elsewhere")
    rec = record(prefer_attributes=dict(PREFER, Color=["Pink", "Teal"]))
    res = load_preferimg(write_jsonl(data_dir / "d.jsonl", [rec]), image_root=root)
    assert res.records[0]["prefer_attributes"]["Color"] == "Pink, Teal"
    assert len(res.records[0]["images"]) == 10
    with pytest.raises(RecordError, match=r"field 'prefered_images\[0\]': expected a readable image .* file not found"):
        load_preferimg(data_dir / "d.jsonl")  # wrong root: images are not next to the data file


BROKEN = [  # (name, record, field, what the message says was expected)
    ("missing field", record(imageB=_DROP), "'imageB'", "missing (required fields: user_id, imageA"),
    ("missing image", record(prefered_images=["img/p0.png", "img/nope.png"]), "'prefered_images[1]'",
     "expected a readable image at 'img/nope.png'"),
    ("undecodable image", record(imageA="img/broken.png"), "'imageA'", "cannot decode"),
    ("answer not A/B", record(conversations=[{"value": "q"}, {"value": "<answer>Image C</answer>"}]),
     "'conversations[-1].value'", "expected '<answer>Image A</answer>' or '<answer>Image B</answer>', got 'Image C'"),
    ("no answer tag", record(conversations=[{"value": "q"}, {"value": "Image A"}]), "'conversations[-1].value'",
     "no <answer> tag"),
    ("conversations shape", record(conversations=[{"value": "q"}]), "'conversations'", "at least two"),
    ("unknown key (dict)", record(prefer_attributes=dict(PREFER, Mood="calm")), "'prefer_attributes'",
     "unknown key 'Mood'"),
    ("unknown key (string)", record(non_prefer_attributes=NON_PREFER_STR + ', "Mood": "calm"'),
     "'non_prefer_attributes'", "unknown key 'Mood'"),
    ("missing dimension", record(prefer_attributes={k: v for k, v in PREFER.items() if k != "Detail"}),
     "'prefer_attributes'", "missing ['Detail']"),
    ("profile type", record(prefer_attributes=5), "'prefer_attributes'", "expected a dict or string"),
    ("references not a list", record(non_prefered_images="img/n0.png"), "'non_prefered_images'",
     "expected a non-empty list of image paths"),
    ("bad JSON line", '{"user_id": ', "'<json>'", "expected one JSON object per line"),
]


@pytest.mark.parametrize("name,bad,field,expected", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_record_named_jsonl(root, name, bad, field, expected):
    path = write_jsonl(root / "d.jsonl", [record(), bad])
    with pytest.raises(RecordError) as err:
        load_preferimg(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: line 2: field {field}: "), msg
    assert expected in msg, msg
    assert isinstance(err.value, ConfigError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("name,bad,field,expected", [b for b in BROKEN if not isinstance(b[1], str)],
                         ids=[b[0] for b in BROKEN if not isinstance(b[1], str)])
def test_broken_record_named_json(root, name, bad, field, expected):
    path = root / "d.json"
    path.write_text(json.dumps([record(), record(), bad], indent=1))
    with pytest.raises(RecordError) as err:
        load_preferimg(path)
    assert str(err.value).startswith(f"{path}: record index 2: field {field}: ") and expected in str(err.value)


def test_skip_mode_counts_and_reasons(root):
    recs = [record(), BROKEN[0][1], '{"oops', record(user_id="u2"), BROKEN[3][1]]
    res = load_preferimg(write_jsonl(root / "d.jsonl", recs), on_invalid="skip")
    assert [r["user_id"] for r in res.records] == ["u1", "u2"]
    assert res.skipped == 3 and len(res.reasons) == 3
    assert [r.split(": ")[1] for r in res.reasons] == ["line 2", "line 3", "line 5"]
    assert "2 records loaded, 3 skipped" in res.summary()


def test_verify_images_off_and_argument_errors(root):
    path = write_jsonl(root / "d.jsonl", [record(imageA="img/broken.png")])
    assert len(load_preferimg(path, verify_images=False).records) == 1  # existence only
    with pytest.raises(ConfigError, match="on_invalid='ignore'"):
        load_preferimg(path, on_invalid="ignore")
    with pytest.raises(RecordError, match="data file not found"):
        load_preferimg(root / "absent.jsonl")
    (root / "bad.json").write_text("[{,]")
    with pytest.raises(RecordError, match=r"bad.json: not valid JSON \(line 1"):
        load_preferimg(root / "bad.json")


def test_data_config_on_invalid_validated():
    from rlframe.config.schema import DataConfig, RLConfig
    from rlframe.config.validate import validate

    with pytest.raises(ConfigError, match="data.on_invalid='bogus': expected one of 'error', 'skip'"):
        validate(RLConfig(data=DataConfig(on_invalid="bogus", path="x.jsonl")))
