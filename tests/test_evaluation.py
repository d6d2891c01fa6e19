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


def _tiny(path, seed: int, **over) -> str:
    from rlframe.config.schema import ModelConfig
    from rlframe.models.tiny import build_tiny_model

    return str(build_tiny_model(ModelConfig(**over), 96, None, 2, 0, path, seed=seed))


def test_weight_layout_tells_when_a_policy_can_be_loaded_into_a_running_engine(tmp_path):
    """eval.policies: a policy is loaded into the generators' engine only when its layout is the last one's; then
    every weight is replaced, and the engine computes what the policy loaded afresh computes."""
    import shutil

    import torch
    from safetensors import safe_open

    from rlframe.models.loading import checkpoint_tensors, load_policy, weight_layout
    from rlframe.rollout.hf_engine import HFEngine

    a, b = _tiny(tmp_path / "a", seed=0), _tiny(tmp_path / "b", seed=1)
    assert weight_layout(a) == weight_layout(b) is not None            # other values, the same layout
    deeper = _tiny(tmp_path / "deeper", seed=0, num_layers=3)
    assert weight_layout(deeper) != weight_layout(a)                  # another config and more tensors
    half = tmp_path / "half"
    load_policy(a).to(torch.bfloat16).save_pretrained(half)
    assert weight_layout(half)["tensors"] != weight_layout(a)["tensors"]   # another dtype
    model = load_policy(a)   # the learners save the output embedding tied to the input one as a tensor of its own
    model.save_pretrained(tmp_path / "tied", state_dict={k: v.clone() for k, v in model.state_dict().items()})
    with safe_open(str(tmp_path / "tied" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" in f.keys()
    assert weight_layout(tmp_path / "tied") == weight_layout(a)
    shutil.copytree(a, tmp_path / "bin")
    for f in (tmp_path / "bin").glob("*.safetensors"):
        f.unlink()
    assert weight_layout(tmp_path / "bin") is None and weight_layout(tmp_path / "nowhere") is None

    engine = HFEngine(a, eos_token_id=2, pad_token_id=0)
    engine.load_weights(checkpoint_tensors(b))
    fresh = load_policy(b).state_dict()
    held = engine.model.state_dict()
    assert held.keys() == fresh.keys()
    for name, t in fresh.items():
        assert torch.equal(held[name], t), name
