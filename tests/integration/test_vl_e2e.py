"""The image task end to end through the driver: a tiny Qwen2.5-VL, SFT then GRPO on Ray, transformers
rollouts with pixel inputs, DeepSpeed ZeRO-2 learners (gloo) with a frozen reference, verified weight sync."""
from __future__ import annotations

from pathlib import Path

import pytest

from rlframe.config import load_config
from rlframe.trainer.driver import Driver
from rlframe.tracking import read_metrics

pytestmark = pytest.mark.integration

TINY = ["experiment=preferthinker_tiny_vl", "data.num_train=32", "data.num_eval=2", "data.num_history=2",
        "trainer.sft.steps=6", "trainer.sft.batch_size=8", "trainer.sft.warmup_steps=1",
        "trainer.max_steps=2", "trainer.prompts_per_step=2", "algorithm.group_size=2",
        "rollout.max_new_tokens=16", "trainer.eval_every=2", "trainer.progress=false",
        "trainer.loggers=[]", "reward.stream_batch=0"]


def test_vl_sft_then_grpo_through_the_driver(ray_session, tmp_path: Path):
    """On a Qwen-layout checkpoint folder (ChatML template, two EOS ids, Qwen's preprocessor config); the
    model built from config runs in the next test."""
    from rlframe.tasks.preference.synthetic import generate_samples
    from tests.qwen_checkpoint import save_qwen_style

    ckpt = save_qwen_style(tmp_path / "qwen_vl", generate_samples(32, seed=0), vl=True)
    cfg = load_config([*TINY, "model=hf", f"model.path={ckpt}", "model.dtype=float32",
                       "model.gradient_checkpointing=false", "trainer.dump_rollouts=2",
                       f"run.output_dir={tmp_path / 'run'}", f"run.cache_dir={tmp_path / 'cache'}"])
    run_dir = Driver(cfg).run()
    import json

    for line in (run_dir / "rollouts" / "step-000002.jsonl").read_text().splitlines():
        d = json.loads(line)   # the chat template rendered the prompt, one image part per image
        assert d["prompt"].startswith("<|im_start|>system\n") and d["prompt"].count("<|vision_start|>") == 6
        assert [p["type"] for p in d["messages"][-1]["content"]].count("image") == 6
    rows = read_metrics(run_dir / "metrics.jsonl")
    sft = [r for r in rows if r["stage"] == "sft"]
    grpo = [r for r in rows if r["stage"] == "grpo"]
    assert [r["step"] for r in sft] == list(range(1, 7)) and [r["step"] for r in grpo] == [1, 2]
    assert sft[-1]["loss"] < sft[0]["loss"]
    for r in grpo:
        for key in ("reward/total", "reward/format", "reward/accuracy", "reward/profile_similarity", "kl", "loss",
                    "timing/generate", "timing/ref", "timing/train", "timing/weight_sync"):
            assert key in r, key
        assert 0 < r["response_length"] <= 16
        # the learner's log-probs of the sampled tokens (with the same pixels) match the sampler's
        assert r["logprob_abs_diff"] < 1e-3
        # probed on every sync with the first eval sample's prompt + images
        assert r["weight_sync/probe_max_abs_diff"] < 1e-3
    syncs = [r for r in rows if r["stage"] == "weight_sync"]
    assert syncs and syncs[0]["weight_sync/probe_max_abs_diff"] < 1e-3
    assert any(r["stage"] == "eval" and "eval/accuracy" in r for r in rows)

    # the final checkpoint is a Qwen2.5-VL that transformers loads, with the vision tokens in its tokenizer
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from rlframe.models.multimodal import IMAGE_PAD, batch_vision_kwargs
    from rlframe.data.batching import collate

    final = run_dir / "final"
    model = AutoModelForImageTextToText.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert tok.convert_tokens_to_ids(IMAGE_PAD) == model.config.image_token_id
    assert any(n.startswith("model.visual.") for n, _ in model.named_parameters())
    ctl = Driver(cfg)
    ctl.run_dir = tmp_path / "again"
    ctl.prepare()          # cached data set: reused, same prompts with images
    batch = collate(ctl.eval_prompts[:1], [[tok.eos_token_id]], tok.pad_token_id)
    with torch.no_grad():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    **batch_vision_kwargs(model.config, batch))
    assert torch.isfinite(out.logits).all()


def test_a_users_own_data_file_without_an_eval_file_trains_and_reports_skips(ray_session, tmp_path: Path):
    """`data.path` alone (no eval file) used to crash after SFT (the probe took an eval record); with
    data.val_split_ratio a held-out set is carved; skipped records reach the metrics."""
    from rlframe.cli import main

    synth = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(synth), "--num-users", "8", "--samples-per-user", "4",
                 "--num-history", "2", "--image-size", "56", "--no-progress"]) == 0
    lines = (synth / "train.jsonl").read_text().splitlines()
    (synth / "mine.jsonl").write_text("\n".join(lines + ['{"user_id": "broken"}']) + "\n")
    base = [o for o in TINY if not o.startswith(("data.num_eval", "trainer.eval_every"))]
    user = [f"data.path={synth / 'mine.jsonl'}", "data.on_invalid=skip", "trainer.sft.eval_every=0",
            "trainer.sft.stop_threshold=null"]
    run_dir = Driver(load_config([*base, *user, "trainer.eval_every=2", f"run.output_dir={tmp_path / 'a'}",
                                  f"run.cache_dir={tmp_path / 'cache'}"])).run()       # no held-out set at all
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows if r["stage"] == "grpo"] == [1, 2]
    assert not [r for r in rows if r["stage"] == "eval"]                                # skipped, with a note
    data = [r for r in rows if r["stage"] == "data"]
    assert data and data[0]["data/skipped_records"] == 1
    cfg = load_config([*base, *user, "data.val_split_ratio=0.25", "trainer.eval_every=2", "trainer.max_steps=2",
                       "trainer.stages=[grpo]", f"run.output_dir={tmp_path / 'b'}",
                       f"run.cache_dir={tmp_path / 'cache'}"])
    rows = read_metrics(Driver(cfg).run() / "metrics.jsonl")
    evals = [r for r in rows if r["stage"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2] and "eval/accuracy" in evals[-1]
    data = [r for r in rows if r["stage"] == "data"][0]
    assert data["data/eval_records"] >= 1 and data["data/train_records"] >= 3 * data["data/eval_records"] - 3
