"""PPO with a critic and DAPO end to end through the driver (rollout=hf, no SFT, 2 small steps each): the critic
role is started, warms up, trains beside the actor, lands in every checkpoint and resumes exactly; DAPO's dynamic
sampling and overlong penalty are logged (with trainer.max_staleness=1: the next step's rounds generate ahead)."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from tests.integration.test_train_e2e import run

pytestmark = pytest.mark.integration
CHEAP = ["trainer.stages=[grpo]", "rollout=hf", "trainer.eval_every=0", "reward.stream_batch=0", "trainer.max_steps=2",
         "rollout.max_new_tokens=24", "trainer.prompts_per_step=2"]


# a reward that varies within groups from the first step (the random policy scores ~0 on the task's own), and is
# 0 for about half the prompts (groups that agree)
HALF = f"reward.fns=[{{name:half,path:'{Path(__file__).with_name('reward_fns.py')}',function:half_the_prompts}}]"


def test_ppo_with_a_critic(ray_session, tmp_path):
    # step 1 is the critic's warm-up (only the critic trains); 3 steps, a checkpoint after each. The passes without
    # gradients (reference, old log-probs, values) run over micro-batches of their own: a learner rank's 4 rows in
    # 3 + 1, the critic's 8 in 5 + 3, where each of the 2 updates per batch takes half of them
    ppo = ["algorithm=ppo", HALF, "algorithm.critic_warmup_steps=1", *CHEAP, "trainer.max_steps=3",
           "learner.forward_micro_batch_size=3", "critic.forward_micro_batch_size=5"]
    run_dir, rows = run(tmp_path, *ppo, "trainer.save_every=1", "trainer.keep_last=3")
    grpo = [r for r in rows if r["stage"] == "grpo"]
    assert [r["step"] for r in grpo] == [1, 2, 3]
    assert "actor/ratio_mean" not in grpo[0] and "actor/ratio_mean" in grpo[1]
    for r in grpo:
        for key in ("critic/loss", "critic/value_mean", "critic/clip_frac", "critic/grad_norm", "critic/explained_var",
                    "critic/returns_mean", "reward/kl_penalty", "timing/critic"):
            assert key in r and math.isfinite(r[key]), (key, r.get(key))
        assert 0.0 <= r["critic/clip_frac"] <= 1.0 and r["critic/grad_norm"] > 0 and r["critic/loss"] > 0
    # the head starts at zero (V = 0: explained variance 0); then it has moved toward the returns
    assert grpo[0]["critic/explained_var"] == 0.0 and grpo[1]["critic/explained_var"] != 0.0
    assert grpo[1]["critic/value_mean"] != 0.0
    # the actor moved in step 2: step 3's per-token KL penalty (k1, in the token rewards) is not 0
    assert grpo[1]["reward/kl_penalty"] == 0.0 and grpo[2]["reward/kl_penalty"] != 0.0
    # every checkpoint holds the critic's DeepSpeed state beside the policy learners'
    ckpts = sorted((run_dir / "checkpoints").iterdir())
    assert len(ckpts) == 3 and all((c / "critic").is_dir() and (c / "learner").is_dir() for c in ckpts)

    # resumed from step 1's checkpoint, steps 2 and 3 are the same steps: the critic continues from its saved
    # weights and optimizer (a fresh critic would have V = 0 and explained variance 0 again)
    again = tmp_path / "again"
    shutil.copytree(run_dir, again / "run")
    for c in ckpts[1:]:
        shutil.rmtree(again / "run" / "checkpoints" / c.name)
    _, resumed = run(again, *ppo, "trainer.resume=auto")
    resumed = [r for r in resumed if r["stage"] == "grpo"]
    assert [r["step"] for r in resumed] == [1, 2, 3]
    for a, b in zip(resumed[1:], grpo[1:]):
        for key in ("critic/value_mean", "critic/explained_var", "critic/loss", "loss", "reward/total"):
            assert a[key] == pytest.approx(b[key], abs=1e-4), (a["step"], key)


def test_dapo_dynamic_sampling_and_overlong_penalty(ray_session, tmp_path):
    # trainer.max_staleness=1: step 2's rounds (their prompts drawn on the background thread) generate while step 1
    # trains, with step 1's weights
    _, rows = run(tmp_path, "algorithm=dapo", HALF, "algorithm.dynamic_sampling.max_rounds=1",
                  "algorithm.overlong_penalty.cache_len=8", *CHEAP, "trainer.max_staleness=1")
    grpo = [r for r in rows if r["stage"] == "grpo"]
    assert [r["step"] for r in grpo] == [1, 2]
    for r in grpo:
        assert r["dapo/rounds"] in (1, 2) and 0 <= r["dapo/filled_groups"] <= 2
        assert -1.0 <= r["reward/overlong_penalty"] <= 0.0 and "kl" in r and "critic/loss" not in r
        assert r["mismatch/truncated_frac"] >= 0 and r["timing/wait_batch"] >= 0   # TIS corrects the stale batch
    assert [r["rollout/staleness_max"] for r in grpo] == [0, 1] and grpo[0]["timing/overlap"] > 0
    # groups were dropped and replaced, and the step trained on the kept ones (a ratio over unmasked tokens)
    assert sum(r["dapo/dropped_groups"] for r in grpo) > 0 and max(r["dapo/rounds"] for r in grpo) == 2
    assert all(r["actor/ratio_mean"] > 0 for r in grpo)
