"""Real failures: a generator that hangs is reported within its deadline, naming it; a generator killed mid-run
is restarted and resynced; SIGTERM during a step that cannot finish abandons it. (A learner rank killed
mid-run is one link of the chain in test_resume.py.)"""
from __future__ import annotations

import dataclasses
import signal
import sys
import time

import psutil
import pytest
import ray.cloudpickle

from rlframe.config import load_config
from rlframe.errors import RoleTimeout
from rlframe.rollout.generator import RolloutWorker
from rlframe.tracking import read_metrics
from rlframe.trainer.driver import Driver
from rlframe.trainer.roles import ROLES
from test_resume import finish, rows, start, wait_for_row

pytestmark = pytest.mark.integration


class HangingRolloutWorker(RolloutWorker):
    """Test-only: a generator whose generation never returns (the real call, made to hang)."""

    def generate(self, *args, **kwargs):
        time.sleep(3600)


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the actor process cannot import this file


def test_a_hanging_generator_is_reported_within_its_deadline_naming_it(ray_session, tmp_path, caplog):
    # rollout=hf: the generator hangs whatever its backend; an HF engine starts in a fraction of vLLM's time
    cfg = load_config(["trainer.stages=[grpo]", "rollout=hf", "data.num_train=16", "data.num_eval=4",
                       "trainer.max_steps=2",
                       "trainer.prompts_per_step=4", "algorithm.group_size=2", "rollout.max_new_tokens=8",
                       "trainer.eval_every=0", "trainer.progress=false", "reward.stream_batch=0",
                       "cluster.timeouts.generate_s=6", "cluster.timeouts.generate_per_sample_s=0",
                       "cluster.heartbeat_s=2", f"run.output_dir={tmp_path / 'run'}"])
    d = Driver(cfg)
    d.roles.map = {**d.roles.map, "rollout": dataclasses.replace(ROLES["rollout"], actor_cls=HangingRolloutWorker)}
    with pytest.raises(RoleTimeout) as info:
        d.run()
    msg = str(info.value)
    assert msg.startswith("rollout rank 0 on node ") and "no answer to generate after" in msg
    waited = float(msg.split("after ")[1].split(" s")[0])
    assert 6 <= waited < 9, msg                                    # reported at its deadline, not later
    assert "deadline 6 s, cluster.timeouts.generate_s" in msg
    assert "generate: waiting" in caplog.text                      # the heartbeat named it before that
    assert not [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["stage"] == "grpo"]


def test_a_generator_killed_mid_run_is_restarted_resynced_and_the_run_finishes(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, "trainer.stages=[grpo]", "trainer.save_every=0")
    wait_for_row(run_dir, "grpo", 2, proc)
    generators = [p for p in psutil.Process(proc.pid).children(recursive=True)
                  if "RolloutWorker" in " ".join(p.cmdline()[:1])]
    assert len(generators) == 1
    generators[0].send_signal(signal.SIGKILL)
    rc, err = finish(proc)
    assert rc == 0, err[-3000:]
    assert "restart 1 of 2; syncing the current weights" in err
    grpo = rows(run_dir, "grpo")
    assert [r["step"] for r in grpo] == [1, 2, 3, 4, 5, 6]          # every step completed
    assert grpo[-1]["rollout/restarts"] == 1 and grpo[0]["rollout/restarts"] == 0
    # the restarted engine got the current weights, checked by checksum and by the log-prob probe (logged with
    # the step's sync if it died between steps, as a weight_sync row if it died while generating)
    probed = [r for r in read_metrics(run_dir / "metrics.jsonl")
              if r["stage"] in ("grpo", "weight_sync") and r["step"] >= 2 and "weight_sync/probe_max_abs_diff" in r]
    assert probed and probed[0]["weight_sync/probe_max_abs_diff"] < 1e-3


@pytest.mark.parametrize("second_signal", [False, True])
def test_sigterm_during_a_hung_step_abandons_it(ray_session, tmp_path, second_signal):
    """The step in flight cannot finish (its generator hangs): after trainer.signal_grace_s the run stops
    without a new checkpoint; a second signal stops it at once."""
    import os
    import threading

    from rlframe.errors import RunInterrupted

    grace = 30.0 if second_signal else 3.0
    # rollout=hf: the generator hangs whatever its backend; an HF engine starts in a fraction of vLLM's time
    cfg = load_config(["trainer.stages=[grpo]", "rollout=hf", "data.num_train=16", "data.num_eval=4",
                       "trainer.max_steps=2",
                       "trainer.prompts_per_step=4", "algorithm.group_size=2", "rollout.max_new_tokens=8",
                       "trainer.eval_every=0", "trainer.progress=false", "reward.stream_batch=0",
                       "cluster.timeouts.generate_s=300", "cluster.heartbeat_s=1", f"trainer.signal_grace_s={grace}",
                       f"run.output_dir={tmp_path / 'run'}"])
    d = Driver(cfg)
    d.roles.map = {**d.roles.map, "rollout": dataclasses.replace(ROLES["rollout"], actor_cls=HangingRolloutWorker)}
    sent: list[float] = []

    def signal_when_generating() -> None:   # the first sync is logged right before step 1 generates
        metrics = tmp_path / "run" / "metrics.jsonl"
        while not (metrics.exists() and "weight_sync" in metrics.read_text()):
            time.sleep(0.2)
        time.sleep(1.0)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)
        if second_signal:
            time.sleep(1.0)
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_when_generating, daemon=True).start()
    with pytest.raises(RunInterrupted) as info:
        d.run()
    stopped = time.monotonic() - sent[-1]
    assert info.value.signum == signal.SIGTERM and info.value.checkpoint is None
    assert "abandoned" in str(info.value)
    assert stopped < (3.0 if second_signal else grace + 3.0), stopped
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or not callable(signal.getsignal(signal.SIGTERM)) \
        or signal.getsignal(signal.SIGTERM).__name__ != "on_signal"       # the run's handlers are gone
