"""Checkpoint files: atomic writes, the newest complete one found, incomplete ones skipped, pruning; the
tracker cut back to a checkpoint's offset (pure: no Ray, no DeepSpeed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlframe.tracking import Tracker, read_metrics
from rlframe.trainer.checkpoint import (MARKER, checkpoint_problem, find_latest, listing, load_state,
                                        write_checkpoint)


def save_files(folder: Path) -> None:
    (folder / "learner").mkdir()
    (folder / "learner" / "weights.bin").write_bytes(b"x" * 10)


def test_written_atomically_found_newest_first_and_pruned(tmp_path):
    for step in (2, 4, 6):
        write_checkpoint(tmp_path, "grpo", step, save_files, {"step": step}, keep_last=2)
    complete, incomplete = listing(tmp_path)
    assert [p.name for p in complete] == ["0002-grpo-step000004", "0003-grpo-step000006"] and not incomplete
    latest = find_latest(tmp_path)
    assert latest == complete[-1] and load_state(latest) == {"step": 6}
    assert json.loads((latest / MARKER).read_text())["step"] == 6


def test_a_write_killed_midway_leaves_nothing_that_resumes(tmp_path, caplog):
    write_checkpoint(tmp_path, "sft", 2, save_files, {"step": 2}, keep_last=3)

    def crash(folder: Path) -> None:
        save_files(folder)
        raise KeyboardInterrupt   # as if the process died while writing

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, "sft", 4, crash, {"step": 4}, keep_last=3)
    half = tmp_path / "checkpoints" / "0005-sft-step000008"   # a renamed folder whose marker never came
    half.mkdir()
    assert find_latest(tmp_path).name == "0001-sft-step000002"
    assert "incomplete checkpoint" in caplog.text and "0005-sft-step000008" in caplog.text
    assert "no COMPLETE marker" in checkpoint_problem(half)
    assert "is not a folder" in checkpoint_problem(tmp_path / "nope")
    write_checkpoint(tmp_path, "sft", 4, save_files, {"step": 4}, keep_last=3)   # prunes the .tmp- leftover
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_tracker_resumes_at_the_checkpoint_offset_without_duplicate_steps(tmp_path):
    t = Tracker(tmp_path, [])
    for step in (1, 2):
        t.log({"step": step, "stage": "grpo", "loss": float(step)})
    offset = t.offset()
    t.log({"step": 3, "stage": "grpo", "loss": 3.0})   # logged after the checkpoint, then the run died
    t.close()
    t = Tracker(tmp_path, [], resume_at=offset)
    t.log({"step": 3, "stage": "grpo", "loss": 3.5})   # redone by the resumed run
    t.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(1, 1.0), (2, 2.0), (3, 3.5)]


def test_resume_settings_are_checked_before_anything_starts(tmp_path):
    from rlframe.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"trainer.resume='/nope': /nope is not a folder"):
        load_config(["trainer.resume=/nope"])
    with pytest.raises(ConfigError, match=r"trainer.resume=auto: needs run.output_dir"):
        load_config(["trainer.resume=auto"])
    (tmp_path / "half").mkdir()
    with pytest.raises(ConfigError, match=r"not a complete checkpoint"):
        load_config([f"trainer.resume={tmp_path / 'half'}"])
    with pytest.raises(ConfigError, match=r"trainer.keep_last=0: must be >= 1"):
        load_config(["trainer.keep_last=0"])


def test_a_signal_right_after_a_checkpoint_does_not_write_a_second_one(tmp_path):
    """After the stage-end checkpoint the learners are gone: check_stop must reuse it, not save again."""
    from types import SimpleNamespace

    from rlframe.errors import RunInterrupted
    from rlframe.trainer.run_state import RunState
    from rlframe.trainer.survival import RunGuard

    state = RunState(stage="grpo", step=6)
    d = SimpleNamespace(state=state, last_checkpoint="ckpt-6", run_dir=tmp_path)
    guard = RunGuard(d)
    guard.checkpoint = lambda *a: pytest.fail("wrote a second checkpoint")
    guard.stop_signal, guard._written = 15, ("grpo", 6)
    with pytest.raises(RunInterrupted) as info:
        guard.check_stop()
    assert info.value.checkpoint == "ckpt-6" and info.value.signum == 15
    state.step = 7                         # a later step: this one does need its checkpoint
    guard.checkpoint = lambda *a: "ckpt-7"
    with pytest.raises(RunInterrupted, match="signal 15") as info:
        guard.check_stop()
    assert info.value.checkpoint == "ckpt-7"


def test_a_run_resumed_mid_sft_starts_grpo_fresh_not_from_the_sft_checkpoint(tmp_path):
    """Found by the resume chain: the GRPO learners of a run resumed mid-SFT loaded the SFT checkpoint's learner
    state (the policy of SFT step 4, not the finished SFT policy), because the stage was compared with the run's
    current stage rather than the checkpoint's."""
    from types import SimpleNamespace

    from rlframe.trainer.run_state import RunState
    from rlframe.trainer.survival import RunGuard

    state = RunState(stage="sft", step=4)
    guard = RunGuard(SimpleNamespace(state=state, run_dir=tmp_path))
    guard.resumed = {"run": state.state_dict()}
    assert guard.resuming("sft") and not guard.resuming("grpo")
    state.completed.append("sft")
    state.enter("grpo")                    # the driver entering the next stage of the same process
    assert not guard.resuming("grpo") and not guard.resuming("sft")
    assert guard.restore_learners("grpo") == 0
