"""End to end through the driver: SFT then GRPO on Ray, both rollout backends, ZeRO-2 and ZeRO-3."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlframe.config import load_config
from rlframe.trainer.driver import Driver
from rlframe.tracking import read_metrics

pytestmark = pytest.mark.integration

SMALL = ["data.num_train=64", "data.num_eval=8", "trainer.sft.steps=4", "trainer.sft.batch_size=8",
         "trainer.sft.min_steps=0", "trainer.sft.eval_every=2", "trainer.sft.stop_threshold=2.0",
         "trainer.max_steps=2", "trainer.prompts_per_step=4", "algorithm.group_size=4",
         "rollout.max_new_tokens=48", "trainer.eval_every=2", "trainer.progress=false"]
GRPO_KEYS = {"step", "stage", "reward/total", "reward/format", "reward/accuracy", "reward/profile_similarity",
             "reward/profile_cosine_raw", "reward/format_std", "reward/failures/format", "reward/worker_restarts",
             "kl", "loss", "response_length", "timing/generate", "timing/reward_compute",
             "timing/ref", "timing/train", "timing/weight_sync", "weight_sync/seconds", "weight_sync/bytes"}
ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path: Path, *overrides: str) -> tuple[Path, list[dict]]:
    cfg = load_config([*SMALL, f"run.output_dir={tmp_path / 'run'}", *overrides])
    run_dir = Driver(cfg).run()
    return run_dir, read_metrics(run_dir / "metrics.jsonl")


def test_vllm_zero2_run_leaves_everything_in_the_run_folder(ray_session, tmp_path, caplog, vllm_in_this_process):
    caplog.set_level("INFO", logger="rlframe")
    run_dir, rows = run(tmp_path, "reward.stream_batch=8")
    sft = [r for r in rows if r["stage"] == "sft"]
    grpo = [r for r in rows if r["stage"] == "grpo"]
    assert [r["step"] for r in sft] == [1, 2, 3, 4] and [r["step"] for r in grpo] == [1, 2]
    assert sft[-1]["loss"] < sft[0]["loss"]
    # SFT evaluated through the generators every 2 steps; accuracy <= 1 never reaches 2.0
    assert [r["step"] for r in rows if r["stage"] == "sft_eval"] == [2, 4]
    for r in grpo:
        assert GRPO_KEYS <= r.keys(), GRPO_KEYS - r.keys()
        assert "timing/reward_wait" in r and "timing/reward" not in r   # rewards streamed during generation
        assert r["reward/failures/format"] == 0 and r["reward/worker_restarts"] == 0
        assert r["weight_sync/bytes"] > 2_000_000
        assert 0 < r["response_length"] <= 48
        assert r["kl"] >= 0
    # one version per sync: SFT evaluations at steps 2 and 4 (v1, v2), GRPO's first sync (v3), one per update
    assert [r["weight_sync/version"] for r in grpo] == [4, 5]
    syncs = [r for r in rows if r["stage"] == "weight_sync"]
    assert syncs and syncs[0]["weight_sync/probe_max_abs_diff"] < 1e-3
    assert all(r["weight_sync/shared_memory"] == 1 for r in syncs)   # one machine: the default path, and the log says so
    assert caplog.text.count("through shared memory, probe") == len(syncs), caplog.text[-2000:]
    evals = [r for r in rows if r["stage"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2] and "eval/accuracy" in evals[-1]  # baseline + end
    import yaml

    assert yaml.safe_load((run_dir / "config.yaml").read_text())["learner"]["zero_stage"] == 2
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    # the final policy loads with transformers and with vLLM, and both decode it identically
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlframe.rollout.engine import SamplingSettings
    from rlframe.rollout.hf_engine import HFEngine
    from rlframe.rollout.vllm_engine import VLLMEngine

    final = str(run_dir / "final")
    AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    prompt = tok("Preferred 1:", add_special_tokens=False)["input_ids"]
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=16)
    hf_out = HFEngine(final, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id).generate([prompt], greedy)
    v = VLLMEngine(final, max_model_len=256)
    assert v.generate([prompt], greedy)[0].token_ids == hf_out[0].token_ids
    del v
    check_eval(run_dir, tmp_path, caplog)


def check_eval(run_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`rlframe eval` (via the driver) with a num_history sweep; accuracy re-derived from the predictions."""
    import json

    from rlframe.tasks.preference.rewards import accuracy_reward

    cfg = load_config([*SMALL, f"model.init_from={run_dir / 'final'}", f"run.output_dir={tmp_path / 'eval'}",
                       "eval.num_history=[3,5]", "eval.max_new_tokens=32"])
    out = Driver(cfg).run("eval")
    result = json.loads((out / "eval.json").read_text())
    assert result["settings"]["repetition_penalty"] == 1.15 and result["settings"]["max_new_tokens"] == 32
    preds = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    for k in (3, 5):
        rows = [p for p in preds if p["num_history"] == k]
        assert len(rows) == 8                                     # data.num_eval
        acc = accuracy_reward([p["completion"] for p in rows], [p["answer"] for p in rows])
        assert result["num_history"][str(k)]["subsets"]["eval"]["accuracy"] == pytest.approx(sum(acc) / 8)
        assert set(result["num_history"][str(k)]["mean"]) == {"accuracy", "format_valid", "profile_similarity",
                                                              "profile_exact"}
    assert "| 3 | eval | 8 |" in (out / "eval.md").read_text()

    # eval.policies: two policies in one start-up, a perturbed copy first; after it, the trained policy (laid out
    # as the copy) is loaded into the running vLLM engine and decodes exactly as it did alone
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    with torch.no_grad():
        for i, prm in enumerate(other.parameters()):
            prm.add_(torch.randn(prm.shape, generator=torch.Generator().manual_seed(i)) * 0.5)
    other.save_pretrained(tmp_path / "perturbed")
    AutoTokenizer.from_pretrained(run_dir / "final").save_pretrained(tmp_path / "perturbed")
    cfg.eval.policies = [str(tmp_path / "perturbed"), str(run_dir / "final")]
    cfg.run.output_dir = str(tmp_path / "eval_both")
    caplog.clear()
    caplog.set_level("INFO", logger="rlframe")
    both = Driver(cfg).run("eval")
    assert caplog.text.count("loaded into the running generators") == 1
    assert json.loads((both / "policies.json").read_text()) == {"policy-0": cfg.eval.policies[0],
                                                                 "policy-1": cfg.eval.policies[1]}
    alone = json.loads((both / "policy-1" / "eval.json").read_text())
    assert alone["model"] == cfg.eval.policies[1] and alone["num_history"] == result["num_history"]
    preds = (out / "eval_predictions.jsonl").read_text()
    assert (both / "policy-0" / "eval_predictions.jsonl").read_text() != preds
    assert (both / "policy-1" / "eval_predictions.jsonl").read_text() == preds


def test_hf_zero3_rloo_without_reference_probes_every_sync(ray_session, tmp_path):
    """Also the end-to-end run of `algorithm=rloo` (no KL term, so no reference model), and of delta weight sync
    (weight_sync.delta) under ZeRO-3, each sync checked by the log-prob probe."""
    brevity = ROOT / "examples" / "rewards" / "batch_style.py"
    fns = ("reward.fns=[{name:format,weight:0.3},{name:accuracy,weight:1.0},"
           f"{{name:brevity,path:'{brevity}',weight:0.1,kwargs:{{budget:48}}}}]")
    run_dir, rows = run(tmp_path, "rollout=hf", "learner=zero3", "algorithm=rloo",
                        "weight_sync.probe_every=1", "weight_sync.delta=true", "trainer.eval_every=0",
                        "trainer.sft.stop_threshold=-1", "reward.stream_batch=0", fns)
    # any accuracy reaches -1: SFT stops at its first evaluation
    assert [r["step"] for r in rows if r["stage"] == "sft"] == [1, 2]
    assert [r["step"] for r in rows if r["stage"] == "sft_eval"] == [2]
    grpo = [r for r in rows if r["stage"] == "grpo"]
    assert len(grpo) == 2
    for r in grpo:
        assert "timing/reward" in r and "timing/reward_wait" not in r   # scored after generation
        # a user's reward from a file, logged beside the built-ins: brevity = 1 - tokens / 48
        assert r["reward/brevity"] == pytest.approx(1 - r["reward/brevity/num_tokens"] / 48, abs=1e-6)
        assert r["reward/brevity/num_tokens"] == pytest.approx(r["response_length"], abs=1e-6)
        assert r["kl"] == 0.0  # no frozen reference model was built
        assert r["weight_sync/probe_max_abs_diff"] < 1e-3  # verified on every sync
        # delta sync: a share of the words changed; what went out is at most the whole buckets and their headers
        assert 0.0 <= r["weight_sync/changed_fraction"] <= 1.0
        assert 8 <= r["weight_sync/sent_bytes"] <= r["weight_sync/bytes"] * 1.01 + 8 * 64
    assert (run_dir / "final" / "config.json").exists()
    import yaml

    algo = yaml.safe_load((run_dir / "config.yaml").read_text())["algorithm"]
    assert (algo["name"], algo["kl_coef"], algo["group_size"]) == ("rloo", 0.0, 4)
    # where every actor ran (one machine here) and what it printed; the learners of SFT and of GRPO both logged
    placed = json.loads((run_dir / "placement.json").read_text())
    assert sorted((e["role"], e["rank"]) for e in placed) == [("learner", 0), ("learner", 0), ("learner", 1),
                                                               ("learner", 1), ("reward", 0), ("rollout", 0)]
    assert len({e["node_id"] for e in placed}) == 1 and all(e["pid"] > 0 for e in placed)
    assert (run_dir / "logs" / "learner-1.log").read_text().count("=== learner 1: pid ") == 2
    assert {p.name for p in (run_dir / "logs").iterdir()} == {"learner-0.log", "learner-1.log", "reward-0.log",
                                                             "rollout-0.log"}
