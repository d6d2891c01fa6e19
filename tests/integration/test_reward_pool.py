"""The reward pool on real Ray: batches over workers, restarts, error reporting, a failing reward in a
run, and `rlframe serve-reward` as a process."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from rlframe.config.schema import RewardConfig, RewardFnConfig
from rlframe.reward.plugins import RewardError

pytestmark = pytest.mark.integration
FNS = str(Path(__file__).with_name("reward_fns.py"))
SAMPLES = [{"id": f"s{i}", "prompt": "p", "completion": "ab" * i} for i in range(6)]


def pool(*fns: RewardFnConfig, **cfg):
    """The reward role as a run starts it: rlframe's role-map entry, then the pool over its actors."""
    from rlframe.cluster.roles import Roles
    from rlframe.config.schema import RLConfig
    from rlframe.reward.pool import RewardPool
    from rlframe.trainer.roles import ROLES

    rc = RewardConfig(fns=list(fns), **cfg)
    roles = Roles({"reward": ROLES["reward"]}, RLConfig(reward=rc))
    p = RewardPool(roles.start("reward", (list(rc.fns), rc.torch_threads, rc.on_error, rc.fallback_value)), rc)
    p.stop = roles.stop_all
    p.wait_ready()
    return p


def test_batches_spread_over_workers_in_order(ray_session):
    p = pool(RewardFnConfig(name="which_pid", path=FNS), RewardFnConfig(name="format", weight=0.5), num_workers=2)
    try:
        first = p.submit(SAMPLES[:4])
        second = p.submit(SAMPLES[4:])
        out = p.gather([first, second])
        assert len(set(out.components["which_pid/pid"][:4])) == 2     # 4 samples went to both workers
        assert out.components["format"] == [0.0] * 6                   # not the output format
        assert out.failures == {"which_pid": 0, "format": 0} and out.restarts == 0
        assert out.seconds > 0
    finally:
        p.stop()


def test_a_worker_that_dies_is_restarted_and_its_batch_retried(ray_session, tmp_path):
    marker = tmp_path / "died"
    p = pool(RewardFnConfig(name="die_once", path=FNS, kwargs={"marker": str(marker)}), max_restarts=2)
    try:
        out = p.score(SAMPLES)
        assert marker.exists()                                           # it did die once
        assert out.components["die_once"] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        assert out.restarts == 1
    finally:
        p.stop()


def test_a_worker_that_keeps_dying_is_reported(ray_session):
    p = pool(RewardFnConfig(name="always_die", path=FNS), max_restarts=1)
    try:
        with pytest.raises(RewardError, match=r"reward worker 0 died 2 times on a batch of 6 samples"):
            p.score(SAMPLES)
    finally:
        p.stop()


def test_errors_name_function_and_sample_and_fallback_counts(ray_session):
    p = pool(RewardFnConfig(name="fails_on_c", path=FNS))
    try:
        with pytest.raises(RewardError, match=r"reward 'fails_on_c' raised on sample 's1': ValueError: cannot score 'ac'"):
            p.score([{**s, "completion": s["completion"].replace("b", "c")} for s in SAMPLES])
    finally:
        p.stop()
    p = pool(RewardFnConfig(name="fails_on_c", path=FNS), on_error="fallback", fallback_value=-1.0)
    try:
        out = p.score([{"id": "x", "completion": "abc"}, {"id": "y", "completion": "ab"}])
        assert out.components["fails_on_c"] == [-1.0, 1.0] and out.failures == {"fails_on_c": 1}
    finally:
        p.stop()
    p = pool(RewardFnConfig(name="fails_on_c", path=FNS), on_error="mask", num_workers=2)
    try:   # two batches on two workers: the failing sample's index is the merged one
        out = p.gather([p.submit([{"id": "y", "completion": "ab"}]), p.submit([{"id": "x", "completion": "abc"}])])
        assert out.failed == [1] and out.failures == {"fails_on_c": 1}
    finally:
        p.stop()


def test_a_reward_failing_mid_run_stops_it_after_a_checkpoint(ray_session, tmp_path, tiny_model_dir):
    from rlframe.config import load_config
    from rlframe.trainer.driver import Driver

    cfg = load_config([
        "trainer.stages=[grpo]", "data.num_train=32", "data.num_eval=4", "trainer.max_steps=3",
        "trainer.prompts_per_step=4", "algorithm.group_size=2", "rollout.max_new_tokens=8", "trainer.eval_every=0",
        "trainer.progress=false", "algorithm.kl_coef=0", f"run.output_dir={tmp_path / 'run'}",
        f"reward.fns=[{{name:judge,path:'{FNS}',function:FailsFromSecondCall}}]"])
    with pytest.raises(RewardError, match=r"reward 'judge' raised on .*ConnectionError: judge service unavailable"):
        Driver(cfg).run()
    # a complete checkpoint of the state after step 1 (the failing step 2 never updated the learners)
    ckpt = tmp_path / "run" / "checkpoints" / "0001-grpo-step000001"
    assert (ckpt / "COMPLETE").exists() and (ckpt / "policy" / "config.json").exists()
    assert (ckpt / "learner" / "state").is_dir()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["stage"] == "grpo"] == [1]


def test_serve_reward_process(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlframe.cli", "serve-reward", "--port", "0", "--token", "tok",
         "reward.fns=[{name:format,weight:0.3},{name:accuracy,weight:1.0}]"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving rewards ['format', 'accuracy'] at http://127.0.0.1:" in line, proc.stderr.read()
        url = line.split(" at ")[1].split()[0]
        body = json.dumps({"samples": [{"id": "a", "completion": "<answer>Image A</answer>", "answer": "Image A"},
                                       {"id": "b", "completion": "<answer>Image A</answer>", "answer": "Image B"}]})
        req = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"Authorization": "Bearer tok", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            out = json.loads(resp.read())
        assert out["components"]["accuracy"] == [1.0, 0.0] and out["components"]["format"] == [0.0, 0.0]
        assert out["total"] == [1.0, 0.0] and out["failures"] == {"format": 0, "accuracy": 0}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_reward_on_error_mask_takes_failed_groups_out_of_the_loss(ray_session, tmp_path):
    from rlframe.config import load_config
    from rlframe.trainer.driver import Driver

    cfg = load_config([
        "trainer.stages=[grpo]", "data.num_train=32", "data.num_eval=4", "trainer.max_steps=2",
        "trainer.prompts_per_step=4", "algorithm.group_size=2", "rollout.max_new_tokens=8", "trainer.eval_every=0",
        "trainer.progress=false", "algorithm.kl_coef=0", f"run.output_dir={tmp_path / 'run'}", "reward.on_error=mask",
        f"reward.fns=[{{name:judge,path:'{FNS}',function:FailsFromSecondCall}}]"])
    Driver(cfg).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, second = [r for r in rows if r["stage"] == "grpo"]
    assert "reward/masked_samples" not in first
    assert second["reward/masked_samples"] == 8 and second["reward/masked_groups"] == 4
    assert second["loss"] == 0.0 and second["actor/grad_norm"] == 0.0    # nothing left to learn from at step 2
