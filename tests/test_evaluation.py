"""Fast tests of rlframe/trainer/evaluation.py: per-subset metrics and the table, against hand-computed values."""
from __future__ import annotations

import pytest

from rlframe.tasks.preference.rewards import EVAL_METRICS
from rlframe.config import ConfigError
from rlframe.trainer.evaluation import check_policies, markdown_table, subset_metrics


def test_subset_metrics_against_a_known_answer_file():
    # four subsets, as in the paper; accuracy per subset known by construction
    truth = {"SP_ID": [1, 1, 1, 0], "SP_OD": [1, 0], "MP_ID": [0, 0, 1], "MP_OD": [1]}
    samples, acc, fmt, sim = [], [], [], []
    for split, hits in truth.items():
        for h in hits:
            samples.append({"split": split})
            acc.append(float(h))
            fmt.append(1.0)
            sim.append(0.5 if split.startswith("SP") else 0.9)
    out = subset_metrics(samples, {"accuracy": acc, "format": fmt, "profile_cosine_raw": sim, "total": acc,
                                   "profile_exact": [s / 2 for s in sim]}, EVAL_METRICS)
    assert out["subsets"]["SP_ID"] == {"n": 4, "accuracy": 0.75, "format_valid": 1.0, "profile_similarity": 0.5,
                                       "profile_exact": 0.25}
    assert out["subsets"]["MP_ID"]["accuracy"] == pytest.approx(1 / 3)
    # the mean is unweighted across subsets (not across samples: that would be 6/10)
    assert out["mean"]["accuracy"] == pytest.approx((0.75 + 0.5 + 1 / 3 + 1.0) / 4)
    assert out["mean"]["profile_similarity"] == pytest.approx(0.7)
    table = markdown_table({"5": out})
    assert "| 5 | SP_ID | 4 | 0.750 | 1.000 | 0.500 | 0.250 |" in table
    assert "| 5 | **mean** | 10 | **0.646** |" in table


def test_records_without_split_form_one_subset_and_missing_metrics_are_left_out():
    out = subset_metrics([{}, {"split": None}], {"accuracy": [1.0, 0.0]}, EVAL_METRICS)
    assert out == {"subsets": {"eval": {"n": 2, "accuracy": 0.5}}, "mean": {"accuracy": 0.5}}


def test_a_task_without_metric_names_reports_every_component_under_its_own_name():
    out = subset_metrics([{"split": "x"}, {"split": "y"}], {"exact": [1.0, 0.0], "length": [3.0, 5.0]})
    assert out["mean"] == {"exact": 0.5, "length": 4.0}


def _tokenizer(folder, words: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", *words])}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    tok.save_pretrained(folder)
    return tok


def test_eval_policies_with_another_tokenizer_are_refused_by_index(tmp_path):
    run = _tokenizer(tmp_path / "a", ["Image", "A", "B"])
    _tokenizer(tmp_path / "same", ["Image", "A", "B"])
    _tokenizer(tmp_path / "other", ["Image", "A", "C"])
    (tmp_path / "no_tokenizer").mkdir()            # a weights-only folder takes the run's tokenizer
    check_policies([str(tmp_path / "same"), str(tmp_path / "no_tokenizer")], run)
    with pytest.raises(ConfigError, match=r"eval.policies\[2\]=.*other.*tokenizer differs"):
        check_policies([str(tmp_path / "same"), str(tmp_path / "no_tokenizer"), str(tmp_path / "other")], run)
