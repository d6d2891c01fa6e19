"""The algorithm table on real Ray + DeepSpeed (gloo): mini-batch updates with the learner's own old log-probs
(the ratio and the clip act from the second update on, ZeRO-3 ranks in lockstep), the KL as a reward penalty,
and one algorithm config end to end through the driver."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlframe.config.schema import AlgorithmConfig, LearnerConfig
from rlframe.learner.learner import LearnerWorker
from tests.integration.test_learners import WORLD, fixed_batch
from tests.integration.test_train_e2e import run

pytestmark = pytest.mark.integration


def test_mini_batch_updates_clip_from_the_second_and_kl_in_reward(ray_session, start_role, tiny_model_dir):
    ray = ray_session
    cfg = LearnerConfig(world_size=WORLD, zero_stage=3, lr=1e-2, micro_batch_size=2, num_cpus_per_worker=0.5)
    group = start_role("learner", LearnerWorker, WORLD, [(r, WORLD, cfg, ".cache") for r in range(WORLD)],
                       per_rank_args=True)
    addr, port = ray.get(group.actors[0].master_address.remote())
    # 8 rows per rank, 2 updates of 4 rows = 2 micro-batches of 2 each (grad_accum 2: DeepSpeed's loss divisor)
    group.run("setup", addr, port, tiny_model_dir, "float32", 2, tiny_model_dir)
    batch = fixed_batch()
    batch.advantages = torch.tensor([1.0, -1.0] * 8)
    batch.sample_logp = torch.zeros_like(batch.loss_mask)
    shards = [batch.rows(r) for r in batch.balanced_split(WORLD)]
    algo = AlgorithmConfig(kl_coef=0.0, updates_per_batch=2)

    def step(lr: float, a: AlgorithmConfig) -> list[dict]:
        return ray.get(group.call_each("rl_step", [(sh, lr, a, 1.0) for sh in shards]))

    # lr 0: the old log-probs are the learner's own, so the ratio stays 1 on both updates
    for m in step(0.0, algo):
        assert m["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-5) and m["actor/clip_frac_high"] == 0.0
    # a big lr: the first update moves the policy, the second mini-batch's ratio is not 1 and the clip fires
    for m in step(0.05, algo):
        assert abs(m["actor/ratio_mean"] - 1.0) > 1e-3, m
        assert m["actor/clip_frac_low"] + m["actor/clip_frac_high"] > 0 and m["actor/approx_kl"] > 0
        assert m["actor/grad_norm"] > 0 and m["actor/entropy"] > 0 and m["timing/old_logp"] > 0
        assert 0 <= m["mismatch/truncated_frac"] <= 1 and m["logprob_abs_diff"] > 0
    # one update of 4 micro-batches on learners set up to accumulate 2: the loop sets DeepSpeed's boundary at the
    # update's last micro-batch, so it is one update (lr 0: nothing moves, ratio 1, a gradient on every rank)
    for m in step(0.0, AlgorithmConfig(kl_coef=0.0, updates_per_batch=1)):
        assert m["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-5) and m["actor/grad_norm"] > 0
    # KL as a reward penalty: score_batch returns each sequence's summed KL (the policy moved: > 0), then the
    # update runs on the kept log-probs with the driver's advantages
    kl_algo = AlgorithmConfig(kl_coef=0.1, kl_in="reward", updates_per_batch=2)
    scored = ray.get(group.call_each("score_batch", [(sh, kl_algo, 1.0) for sh in shards]))
    assert [len(s["kl_seq"]) for s in scored] == [8, 8] and all(k > 0 for s in scored for k in s["kl_seq"])
    adv = torch.tensor([0.5, -0.5] * 8)
    ms = ray.get(group.call_each("rl_step", [(None, 1e-3, kl_algo, 1.0, None, adv[i * 8:(i + 1) * 8])
                                             for i in range(WORLD)]))
    for m in ms:
        assert m["kl"] > 0 and torch.isfinite(torch.tensor(m["loss"]))


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_algorithm" / "my_algorithm.py"
CUSTOM = [f"algorithm.plugins=[{EXAMPLE}]", "algorithm.name=group_rank", "algorithm.policy_loss=cispo"]


@pytest.mark.parametrize("algo", ["reinforce_pp", "reinforce_pp_baseline", "gspo", "custom"])
def test_algorithm_configs_through_the_driver(ray_session, tmp_path, algo):
    # reinforce_pp: KL in the reward (score_batch first), 2 updates; gspo: its own 4 updates, sequence ratio;
    # custom: the example plugin's estimator (driver) and loss (imported by every learner)
    two = ["algorithm.updates_per_batch=2"]
    extra = {"gspo": [], "custom": CUSTOM + two}.get(algo, two)
    _, rows = run(tmp_path, *([] if algo == "custom" else [f"algorithm={algo}"]), *extra, "trainer.stages=[grpo]",
                  "rollout=hf", "trainer.eval_every=0", "reward.stream_batch=0", "trainer.max_steps=3")
    grpo = [r for r in rows if r["stage"] == "grpo"]
    assert [r["step"] for r in grpo] == [1, 2, 3]
    for r in grpo:
        keys = ["actor/ratio_mean", "actor/approx_kl", "actor/entropy", "actor/grad_norm", "mismatch/kl",
                "mismatch/truncated_frac", "timing/old_logp"]
        keys += ["actor/clip_frac"] if algo == "custom" else ["actor/clip_frac_low", "actor/clip_frac_high"]
        for key in keys:
            assert key in r, key
    # from the second mini-batch on the policy has moved: the ratio is not 1 in a step that updated
    assert any(abs(r["actor/ratio_mean"] - 1.0) > 1e-6 for r in grpo)
    if algo == "reinforce_pp":
        # the reward penalty (k1, summed per sequence): 0 while the policy is the reference, then not
        assert grpo[0]["reward/kl_penalty"] == 0.0 and grpo[-1]["reward/kl_penalty"] != 0.0
    else:
        assert "reward/kl_penalty" not in grpo[0]
