"""A Qwen-layout checkpoint end to end: its generation_config's EOS ids end generation in both engines, and
GRPO runs on it with chat-template prompts, rollout dumps that `rlframe reward test` replays exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlframe.config import load_config
from rlframe.data.chat import stop_token_ids
from rlframe.reward.offline import read_samples
from rlframe.reward.scoring import RewardSet
from rlframe.rollout.engine import SamplingSettings
from rlframe.tasks.preference.synthetic import generate_samples
from rlframe.tracking import read_metrics
from rlframe.trainer.driver import Driver
from tests.qwen_checkpoint import ENDOFTEXT, IM_END, save_qwen_style

pytestmark = pytest.mark.integration


def chain_model(folder: Path, chain: list[int]) -> None:
    """Rewrite the checkpoint so that greedy decoding walks `chain`: with the blocks' outputs zeroed the
    hidden state is the current token's (normalised) embedding, and lm_head row chain[i+1] points at
    chain[i]'s embedding (random 128-d embeddings are near-orthogonal, so that row wins by a wide margin)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = torch.randn_like(model.model.embed_tokens.weight)
        model.model.embed_tokens.weight.copy_(emb)
        head = torch.zeros_like(emb)
        for a, b in zip(chain, chain[1:]):
            head[b] = 50.0 * emb[a] / emb[a].norm()
        model.lm_head.weight = torch.nn.Parameter(head)
    model.config.tie_word_embeddings = False
    model.save_pretrained(folder, safe_serialization=True)


def test_generation_config_eos_ids_end_generation(tmp_path, vllm_in_this_process):
    from transformers import AutoTokenizer

    from rlframe.rollout.hf_engine import HFEngine
    from rlframe.rollout.vllm_engine import VLLMEngine

    folder = save_qwen_style(tmp_path / "ckpt", generate_samples(32, seed=0))
    tok = AutoTokenizer.from_pretrained(folder)
    im_end, eot = tok.convert_tokens_to_ids([IM_END, ENDOFTEXT])
    a, b, c = tok.convert_tokens_to_ids(["<answer>", "Image A", "</answer>"])
    chain_model(folder, [a, b, c, im_end, eot, a])
    stops = stop_token_ids(folder, tok)
    assert stops == [im_end, eot]
    prompt, greedy = [eot, a], SamplingSettings(n=1, temperature=0.0, max_new_tokens=8)
    hf = HFEngine(str(folder), eos_token_id=stops, pad_token_id=eot).generate([prompt], greedy)[0]
    assert hf.token_ids == [b, c, im_end] and hf.finish_reason == "stop"
    # the tokenizer's EOS alone would not end the turn where the template does
    tok_eos_only = HFEngine(str(folder), eos_token_id=eot, pad_token_id=eot).generate([prompt], greedy)[0]
    assert tok_eos_only.token_ids == [b, c, im_end, eot]
    v = VLLMEngine(str(folder), max_model_len=64, stop_token_ids=stops).generate([prompt], greedy)[0]
    assert v.token_ids == [b, c, im_end] and v.finish_reason == "stop"
    assert tok.decode(v.token_ids) == "Image A</answer><|im_end|>"


SMALL = ["data.num_train=32", "data.num_eval=4", "trainer.sft.steps=3", "trainer.sft.batch_size=8",
         "trainer.sft.min_steps=0", "trainer.sft.eval_every=0", "trainer.sft.stop_threshold=null", "trainer.max_steps=2", "trainer.prompts_per_step=4",
         "algorithm.group_size=2", "rollout.max_new_tokens=24", "trainer.eval_every=0", "trainer.progress=false",
         "trainer.loggers=[]", "trainer.dump_rollouts=4", "weight_sync.probe_every=1"]


def test_grpo_on_a_chat_checkpoint_with_rollout_dumps(ray_session, tmp_path):
    folder = save_qwen_style(tmp_path / "ckpt", generate_samples(32, seed=0))
    cfg = load_config([*SMALL, "model=hf", f"model.path={folder}", "model.gradient_checkpointing=false", "model.dtype=float32",
                       f"run.output_dir={tmp_path / 'run'}", f"run.cache_dir={tmp_path / 'cache'}"])
    run_dir = Driver(cfg).run()
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows if r["stage"] == "grpo"] == [1, 2]
    assert all(r["weight_sync/probe_max_abs_diff"] < 1e-3 for r in rows if "weight_sync/probe_max_abs_diff" in r)
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(run_dir / "final")   # the policy keeps the checkpoint's conventions
    assert saved.chat_template and saved.eos_token == IM_END
    for step in (1, 2):
        path = run_dir / "rollouts" / f"step-{step:06d}.jsonl"
        dumped = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(dumped) == 4 and {d["step"] for d in dumped} == {step}
        for d in dumped:
            assert d["prompt"].startswith("<|im_start|>system\n") and d["prompt"].endswith("<|im_start|>assistant\n")
            assert d["messages"][0]["role"] == "system" and isinstance(d["advantage"], float)
            assert set(d["rewards"]) >= {"format", "accuracy", "profile_similarity"}
            assert d["weight_version"] >= 1 and len(d["completion_ids"]) <= 24
        # replayed offline, the rewards are the run's, sample by sample
        samples = read_samples([str(path)], "completion")
        scores = RewardSet(list(cfg.reward.fns)).score(samples)
        for name in ("format", "accuracy", "profile_similarity"):
            assert scores.components[name] == pytest.approx([d["rewards"][name] for d in dumped], abs=1e-6)
