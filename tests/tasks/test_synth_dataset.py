"""Synthetic-user data set writer: PreferImg on-disk format that the loader reads back, user splits, CoT
targets that parse to the record's answer, byte-identical reruns, and the `rlframe data synth` CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from rlframe.tasks.preference import synth_cli
from rlframe.tasks.preference.preferimg import load_preferimg
from rlframe.tasks.preference.parser import is_well_formed, parse_completion
from rlframe.tasks.preference.synth_dataset import SPLITS, SynthConfig, draw_references, new_user, write_dataset
from rlframe.tasks.preference.vocab import DIMENSIONS

TINY = dict(num_users=8, samples_per_user=2, eval_samples_per_user=2, image_size=32, seed=3)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth")
    return root, write_dataset(root, SynthConfig(**TINY))


@pytest.fixture(scope="module")
def loaded(written) -> dict[str, list[dict]]:
    root, _ = written
    return {s: load_preferimg(root / f"{s}.jsonl", num_history=5).records for s in SPLITS}


def test_loader_reads_every_split(written, loaded):
    root, meta = written
    assert meta["counts"] == {s: len(loaded[s]) for s in SPLITS}
    # 8 users: 4 SP (3 seen, 1 unseen) and 4 MP (3 seen, 1 unseen)
    assert meta["counts"] == {"train": 12, "SP_ID": 6, "SP_OD": 2, "MP_ID": 6, "MP_OD": 2}
    assert meta["num_images"] == 8 * 10 + 2 * (12 + 16)
    for recs in loaded.values():
        for r in recs:
            assert len(r["images"]) == 12 and all(Path(p).is_file() for p in r["images"])
            assert len(r["reference_prompt_list"]) == 10


def test_user_splits(loaded):
    users = {s: {r["user_id"] for r in recs} for s, recs in loaded.items()}
    kinds = {s: {r["user_type"] for r in recs} for s, recs in loaded.items()}
    assert users["train"] == users["SP_ID"] | users["MP_ID"]             # ID = users seen in training
    assert not users["train"] & (users["SP_OD"] | users["MP_OD"])        # OD = never seen
    assert kinds == {"train": {"SP", "MP"}, "SP_ID": {"SP"}, "SP_OD": {"SP"}, "MP_ID": {"MP"}, "MP_OD": {"MP"}}
    train_ids = {r["id"] for r in loaded["train"]}
    assert not train_ids & {r["id"] for s in SPLITS[1:] for r in loaded[s]}
    train_cands = {r["imageA"] for r in loaded["train"]}
    assert not train_cands & {r["imageA"] for r in loaded["SP_ID"] + loaded["MP_ID"]}  # new candidates


def test_single_and_multi_preference_profiles(loaded):
    for s in SPLITS[1:]:
        for r in loaded[s]:
            multi = [d for d in DIMENSIONS if "," in r["prefer_attributes"][d]]
            assert (1 <= len(multi) <= 2) if s.startswith("MP") else not multi
            assert all("," not in v for v in r["non_prefer_attributes"].values())


def test_cot_target_parses_to_the_answer(loaded):
    for recs in loaded.values():
        for r in recs:
            assert r["target"] is not None and is_well_formed(r["target"])
            p = parse_completion(r["target"])
            assert p.errors == [] and p.answer == r["answer"]
            assert p.prefer == r["prefer_attributes"] and p.non_prefer == r["non_prefer_attributes"]
            assert p.scores == r["scores"] and p.totals == r["totals"]
            winner = max(r["totals"], key=r["totals"].get)
            assert winner == r["answer"] and r["totals"]["Image A"] != r["totals"]["Image B"]


def test_scores_follow_attribute_matches(loaded):
    for r in loaded["MP_OD"] + loaded["SP_ID"]:
        for img in ("Image A", "Image B"):
            attrs = r["imageA_attributes" if img == "Image A" else "imageB_attributes"]
            for k, d in enumerate(DIMENSIONS):
                liked = r["prefer_attributes"][d].split(", ")
                want = 5 if attrs[d] in liked else 0 if attrs[d] == r["non_prefer_attributes"][d] else 2
                assert r["scores"][img][k] == want


def test_references_reveal_the_profile():
    rng = random.Random(0)
    for multi in (False, True):
        for _ in range(50):
            liked, _ = new_user(rng, multi)
            refs = draw_references(rng, liked, 5, 0.8)
            for d in DIMENSIONS:
                col = [r[d] for r in refs]
                low = min(col.count(t) for t in liked[d])
                assert all(col.count(t) < low for t in set(col) - set(liked[d]))


def test_reproducible_byte_identical(written, tmp_path):
    root, _ = written
    again = tmp_path / "again"
    write_dataset(again, SynthConfig(**TINY))
    assert (again / "train.jsonl").read_bytes() == (root / "train.jsonl").read_bytes()
    assert _digest(again) == _digest(root)
    other = tmp_path / "other"
    write_dataset(other, SynthConfig(**dict(TINY, seed=4)))
    assert (other / "train.jsonl").read_bytes() != (root / "train.jsonl").read_bytes()


def test_json_format_and_bad_config(tmp_path):
    write_dataset(tmp_path, SynthConfig(**dict(TINY, format="json", num_users=4)))
    assert json.loads((tmp_path / "SP_OD.json").read_text())[0]["split"] == "SP_OD"
    assert len(load_preferimg(tmp_path / "train.json").records) == 4
    with pytest.raises(ValueError, match="num_history=1"):
        SynthConfig(num_history=1).check()


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rlframe data")
    synth_cli.add_arguments(parser)
    return synth_cli.run(parser.parse_args(argv))


def test_cli_writes_and_summarises(tmp_path, capsys):
    out = tmp_path / "ds"
    assert _cli(["synth", "--out", str(out), "--num-users", "4", "--samples-per-user", "1", "--seed", "1",
                 "--image-size", "32", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "wrote 10 samples" in text and "train       2 samples     2 users" in text
    assert json.loads((out / "meta.json").read_text())["config"]["image_size"] == 32
    assert _cli(["synth", "--out", str(out), "--no-progress"]) == 2  # refuses a non-empty folder
    assert "not empty" in capsys.readouterr().err
    assert _cli(["synth", "--out", str(tmp_path / "x"), "--num-history", "1", "--no-progress"]) == 2


def test_text_mode_is_the_same_draws_rendered_as_text(written, loaded):
    """generate_splits without a folder draws the same users and candidates and renders them as text."""
    from rlframe.tasks.preference.synth_dataset import generate_splits
    from rlframe.tasks.preference.synthetic import ASSISTANT_TAG

    text = generate_splits(SynthConfig(**TINY))
    for s in SPLITS:
        assert [r["id"] for r in text[s]] == [r["id"] for r in loaded[s]]
        for t, r in zip(text[s], loaded[s]):
            assert t["answer"] == r["answer"] and t["split"] == s
            assert t["imageA_attributes"] == r["imageA_attributes"]
            assert t["prompt"].endswith(ASSISTANT_TAG + "\n") and "<image>" not in t["prompt"]
            # every candidate term is in the text prompt, and the target is the record's chain of thought
            assert all(f"Image A {t['imageA_attributes'][d]}" in t["prompt"] for d in DIMENSIONS)
            assert t["target"] == r["conversations"][1]["value"]
            assert parse_completion(t["target"]).answer == t["answer"]


def test_text_task_with_splits_balances_the_subsets():
    from rlframe.config.schema import DataConfig
    from rlframe.tasks.registry import TASKS

    data = TASKS.get("preference_synthetic_splits").build(
        DataConfig(task="preference_synthetic_splits", num_train=200, num_eval=40, num_history=3), Path("."))
    assert len(data.train) == 200 and {r["split"] for r in data.train} == {"train"}
    assert Counter(r["split"] for r in data.eval) == {"SP_ID": 10, "SP_OD": 10, "MP_ID": 10, "MP_OD": 10}
    train_users = {r["user_id"] for r in data.train}
    assert all((r["user_id"] in train_users) == r["split"].endswith("_ID") for r in data.eval)
    # num_history liked + disliked references per dimension line, and the tokenizer round-trips targets
    line = data.eval[0]["prompt"].splitlines()[2]
    assert line.count(" liked ") + line.startswith("liked") == 3 and line.count("disliked ") == 3
    tok = data.tokenizer
    t = data.eval[-1]["target"]
    assert tok.decode(tok(t)["input_ids"]) == t


def test_image_task_evaluates_several_subset_files(written, tmp_path):
    """data.eval_path takes comma-separated files; records without `split` are named after their file."""
    from rlframe.config.schema import DataConfig
    from rlframe.tasks.registry import TASKS

    root, _ = written
    bare = tmp_path / "heldout_users.jsonl"    # the same records without their split field
    bare.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "split"}) + "\n"
                            for line in (root / "SP_OD.jsonl").read_text().splitlines()))
    for name in ("train", "SP_ID"):
        (tmp_path / f"{name}.jsonl").write_text((root / f"{name}.jsonl").read_text())
    cfg = DataConfig(task="preference_images", path=str(tmp_path / "train.jsonl"), image_root=str(root),
                     eval_path=f"{tmp_path / 'SP_ID.jsonl'}, {bare}", num_eval=100, image_size=32)
    data = TASKS.get("preference_images").build(cfg, tmp_path)
    assert Counter(r["split"] for r in data.eval) == {"SP_ID": 6, "heldout_users": 2}


def test_image_task_synthesizes_balanced_eval_subsets(tmp_path):
    from rlframe.config.schema import DataConfig
    from rlframe.tasks.registry import TASKS

    data = TASKS.get("preference_images").build(DataConfig(task="preference_images", num_train=32, num_eval=12,
                                                 image_size=28), tmp_path)
    assert len(data.train) == 32
    assert Counter(r["split"] for r in data.eval) == {"SP_ID": 3, "SP_OD": 3, "MP_ID": 3, "MP_OD": 3}
