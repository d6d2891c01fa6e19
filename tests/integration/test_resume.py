"""A run that survives: SIGKILL mid-SFT, a learner rank killed mid-GRPO, then SIGTERM mid-GRPO, each followed by
`trainer.resume=auto`, ends with the same per-step losses and rewards as an uninterrupted run; no step is
logged twice.

One chain rather than a test per failure: every link starts a whole run (Ray, learners, generator, rewards),
which is most of its cost, and each resume starts from what the previous failure left.

Real processes: `rlframe train` runs as a subprocess and the test signals it by its own pid (SIGKILL leaves
its Ray processes behind, so the test then kills the descendants it recorded, and only those); the learner
rank is killed by its own pid, found among the run's descendants.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rlframe.tracking import read_metrics
from rlframe.trainer.checkpoint import listing

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
# rollout=hf: sampling draws from the generator process's torch RNG, which the checkpoint holds
RUN = ["rollout=hf", "data.num_train=64", "data.num_eval=8", "trainer.sft.steps=8", "trainer.sft.batch_size=8",
       "trainer.sft.eval_every=0", "trainer.sft.stop_threshold=null", "trainer.max_steps=6", "trainer.prompts_per_step=4", "algorithm.group_size=4",
       "rollout.max_new_tokens=24", "trainer.eval_every=0", "trainer.progress=false", "trainer.save_every=2",
       "trainer.keep_last=3", "trainer.loggers=[tensorboard]"]
# Why a tolerance at all: the resumed run reloads fp32 weights and AdamW moments bit for bit, but its learners
# are new processes whose gloo all-reduce may sum the two ranks' gradients in another order (last-bit
# differences). Measured: identical to the last bit (max difference 0.0) on 2 cores.
TOL = 1e-4


def start(run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "rlframe.cli", "train", *RUN, f"run.output_dir={run_dir}", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def last_step(run_dir: Path, stage: str) -> int:
    path = run_dir / "metrics.jsonl"
    return max((r["step"] for r in read_metrics(path) if r.get("stage") == stage), default=0) if path.exists() else 0


def wait_for_row(run_dir: Path, stage: str, step: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    """`step` must be past every row already in metrics.jsonl, or a stale row (a killed run's, not yet cut back by
    the resumed one) would answer before the new process has even installed its signal handlers."""
    path, t0 = run_dir / "metrics.jsonl", time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if path.exists() and any(r.get("stage") == stage and r.get("step", 0) >= step for r in read_metrics(path)):
            return
        time.sleep(0.2)
    raise AssertionError(f"no {stage} step {step} within {timeout} s")


def rows(run_dir: Path, stage: str) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["stage"] == stage]


def close(a: list[dict], b: list[dict], keys: tuple[str, ...]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for k in keys:
            assert abs(ra[k] - rb[k]) <= TOL, (ra["step"], k, ra[k], rb[k])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    rc, err = finish(start(run_dir))
    assert rc == 0, err[-3000:]
    return run_dir


def kill_family(proc: subprocess.Popen) -> None:
    """SIGKILL the run (no handler runs, nothing is cleaned up), then the Ray processes it started."""
    family = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait(timeout=60)
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def test_sigkill_sft_then_a_dead_learner_then_sigterm_grpo_resume_to_the_uninterrupted_numbers(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"

    # 1. SIGKILL mid-SFT: the last complete checkpoint survives; a half-written one is left as if killed writing
    proc = start(run_dir)
    wait_for_row(run_dir, "sft", 5, proc)
    kill_family(proc)
    complete, _ = listing(run_dir)
    assert json.loads((complete[-1] / "COMPLETE").read_text())["step"] in (4, 6)   # save_every=2
    (ckpts / ".tmp-0099-sft-step000006").mkdir()

    # 2. resume, then kill one learner rank mid-GRPO: the run stops naming the rank and its last checkpoint
    # (at row 2, not later: the step after it must not be checkpointed before the kill lands, or link 3 would
    # resume too close to the end to be stopped mid-GRPO)
    proc = start(run_dir, "trainer.resume=auto")
    wait_for_row(run_dir, "grpo", 2, proc)
    learners = [p for p in psutil.Process(proc.pid).children(recursive=True)
                if "LearnerWorker" in " ".join(p.cmdline()[:1])]
    assert len(learners) == 2
    learners[-1].send_signal(signal.SIGKILL)
    rc, err = finish(proc)
    assert rc == 1, err[-3000:]
    assert f"resuming from {complete[-1]}" in err and "skipping incomplete checkpoint" in err
    assert "learner rank " in err and " on node " in err and "died during" in err
    assert "last checkpoint: " in err and "checkpoints/" in err and "trainer.resume=auto" in err

    # 3. resume, then SIGTERM mid-GRPO: the step in flight finishes and is checkpointed, the message says how
    # to resume. It waits for a row past those link 2 left: only this process can write it.
    first_new = last_step(run_dir, "grpo") + 1
    assert first_new <= 4, f"link 2 got to step {first_new - 1}: too close to the end to stop mid-GRPO"
    proc = start(run_dir, "trainer.resume=auto")
    wait_for_row(run_dir, "grpo", first_new, proc)
    proc.send_signal(signal.SIGTERM)
    rc, err = finish(proc)
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    assert "resume with:" in err and "trainer.resume=auto" in err and f"run.output_dir={run_dir}" in err
    complete, incomplete = listing(run_dir)
    assert complete and not incomplete
    stopped = json.loads((complete[-1] / "COMPLETE").read_text())
    assert stopped["stage"] == "grpo" and first_new <= stopped["step"] < 6, stopped
    assert not (ckpts / ".tmp-0099-sft-step000006").exists()                    # cleaned by pruning

    # 4. resume to the end: the numbers of the run that was never interrupted
    rc, err = finish(start(run_dir, "trainer.resume=auto"))
    assert rc == 0, err[-3000:]
    assert f"resuming from {complete[-1]}" in err
    grpo = rows(run_dir, "grpo")
    assert [r["step"] for r in rows(run_dir, "sft")] == list(range(1, 9))
    assert [r["step"] for r in grpo] == [1, 2, 3, 4, 5, 6]                     # continued, nothing logged twice
    close(rows(uninterrupted, "sft"), rows(run_dir, "sft"), ("loss",))
    close(rows(uninterrupted, "grpo"), grpo, ("loss", "reward/total", "kl", "response_length"))
    # TensorBoard was rebuilt from the kept rows: each GRPO step has one loss event
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("grpo/loss")] == [1, 2, 3, 4, 5, 6]
    assert (run_dir / "final" / "config.json").exists()
