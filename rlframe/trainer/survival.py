"""Runs that survive: complete checkpoints of a live run, resuming from one, and SIGTERM/SIGINT handling.

The files themselves (atomic writes, finding the newest, pruning) are checkpoint.py's; this holds what needs
the driver's roles: every learner rank saving its DeepSpeed state, the generators' RNG, the run state.
"""
from __future__ import annotations

import _thread
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlframe.errors import RunInterrupted
from rlframe.trainer.checkpoint import find_latest, load_state, write_checkpoint

if TYPE_CHECKING:
    from rlframe.trainer.driver import Driver

log = logging.getLogger("rlframe")


class RunGuard:
    """The driver's checkpoints, its resume state (trainer.resume) and its signal handling."""

    def __init__(self, d: Driver) -> None:
        self.d = d
        # a resumed run: the checkpoint folder and what it saved
        self.resume_path: Path | None = None
        self.resumed: dict[str, Any] | None = None
        self.stop_signal: int | None = None
        self._grace: threading.Timer | None = None
        self._handlers: dict[int, Any] = {}
        self._written: tuple[str, int] | None = None   # (stage, step) of the last checkpoint written

    def checkpoint(self, state: dict[str, Any] | None = None) -> str:
        """A complete checkpoint of where the run is now (all learner ranks, policy, run state, RNG)."""
        gens = self.d.roles.get("rollout")
        saved = {"run": state or self.d.state.state_dict(), "metrics_offset": self.d.tracker.offset(),
                 "generator_rng": gens.wait(gens.call("rng_state"), "checkpoint", 60) if gens else None}

        def save(folder: Path) -> None:
            # every rank's files, into this run folder (streamed through Ray when no filesystem is shared)
            self.d.storage.save(self.d.learners, "save_checkpoint", folder / "learner", self.d.timeouts.checkpoint_s)
            if self.d.roles.get("critic"):   # PPO's critic: its weights and optimizer, so that resume is exact
                self.d.storage.save(self.d.roles["critic"], "save_checkpoint", folder / "critic",
                                    self.d.timeouts.checkpoint_s)
            self.d.save_policy(str(folder / "policy"))

        st = saved["run"]
        self._written = (st["stage"], st["step"])
        self.d.last_checkpoint = str(write_checkpoint(self.d.run_dir, st["stage"], st["step"], save, saved,
                                                      self.d.cfg.trainer.keep_last))
        return self.d.last_checkpoint

    def load_resume(self) -> None:
        """trainer.resume: restore the run state of the newest (or the given) complete checkpoint."""
        how = self.d.cfg.trainer.resume
        if how == "never":
            return
        path = find_latest(self.d.run_dir) if how == "auto" else Path(how)
        if path is None:
            log.info("trainer.resume=auto: no complete checkpoint in %s, starting from the beginning",
                     self.d.run_dir)
            return
        self.resumed, self.resume_path = load_state(path), path
        self.d.state.load_state_dict(self.resumed["run"])
        log.info("resuming from %s (stage %s, step %d; done: %s)", path, self.d.state.stage, self.d.state.step,
                 ", ".join(self.d.state.completed) or "-")

    def resuming(self, stage: str) -> bool:
        """Whether `stage` continues from the checkpoint (its learners then load their saved state): the checkpoint
        was written during `stage`. (Not `state.stage`: a run resumed mid-SFT enters GRPO afterwards, and its GRPO
        learners must start from the SFT policy, not from the SFT checkpoint's learner state.)"""
        return (self.resumed is not None and self.resumed["run"]["stage"] == stage
                and stage not in self.d.state.completed)

    def restore_learners(self, stage: str) -> int:
        """Load the checkpoint's learner state when resuming `stage`; the step to continue after."""
        if not self.resuming(stage):
            return 0
        self.d.learners.run("load_checkpoint", self.d.storage.ship(self.resume_path / "learner"),
                            timeout=self.d.timeouts.checkpoint_s)
        if self.d.roles.get("critic"):
            self.d.roles["critic"].run("load_checkpoint", self.d.storage.ship(self.resume_path / "critic"),
                                       timeout=self.d.timeouts.checkpoint_s)
        log.info("%s: learner state restored, continuing after step %d", stage, self.d.state.step)
        return self.d.state.step

    def restore_generator_rng(self) -> None:
        rng = (self.resumed or {}).get("generator_rng")
        if rng and len(rng) == len(self.d.generators):
            self.d.generators.wait(self.d.generators.call_each("set_rng_state", [(r,) for r in rng]), "resume", 60)

    def install(self) -> None:
        """SIGTERM/SIGINT: finish the step, checkpoint, stop; a second one (or the grace period) stops now."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, _frame: Any) -> None:
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum
            log.warning("%s received: finishing the current step (at most %.0f s), then writing a checkpoint; "
                        "send it again to stop at once", signal.Signals(signum).name,
                        self.d.cfg.trainer.signal_grace_s)
            self._grace = threading.Timer(self.d.cfg.trainer.signal_grace_s, self._grace_expired)
            self._grace.daemon = True
            self._grace.start()

        for sig in (signal.SIGTERM, signal.SIGINT):
            self._handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, on_signal)

    def _grace_expired(self) -> None:
        log.error("the step did not finish within trainer.signal_grace_s=%.0f s: abandoning it",
                  self.d.cfg.trainer.signal_grace_s)
        _thread.interrupt_main()

    def check_stop(self) -> None:
        """Between steps: after a signal, write a checkpoint (unless this step's is written) and stop the run."""
        if self.stop_signal is None:
            return
        if self._grace is not None:
            self._grace.cancel()
        here = (self.d.state.stage, self.d.state.step)
        path = self.d.last_checkpoint if self._written == here else self.checkpoint()
        raise RunInterrupted(self.stop_signal, path, str(self.d.run_dir))

    def uninstall(self) -> None:
        """Cancel the grace timer and put back the handlers that were there before the run."""
        if self._grace is not None:
            self._grace.cancel()
        if threading.current_thread() is threading.main_thread():
            for sig, handler in self._handlers.items():
                signal.signal(sig, handler)
