"""Errors every layer raises and the CLI turns into a one-line message (imports nothing)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration or input problem, with every offending key, file, line or field named in the message."""


class RewardError(RuntimeError):
    """A reward function failed or returned something unusable; names the function and the sample."""


class WeightSyncError(RuntimeError):
    """A generator received, or serves, weights that differ from the learner's."""


class RewardTimeout(RewardError):
    """A reward call ran past its `timeout_s`."""


class RewardShapeError(RewardError):
    """A reward result of the wrong length or form: a property of the whole call, not of one sample."""


class RunInterrupted(RuntimeError):
    """SIGTERM/SIGINT stopped the run; `checkpoint` is the complete checkpoint to resume from (or None)."""

    def __init__(self, signum: int, checkpoint: str | None, run_dir: str, note: str = "") -> None:
        super().__init__(f"stopped by signal {signum}{note}")
        self.signum, self.checkpoint, self.run_dir = signum, checkpoint, run_dir


class RoleFailure(RuntimeError):
    """An actor of a role died or missed its deadline; the message names the role, rank, node and phase."""


class RoleTimeout(RoleFailure):
    pass


class RoleDied(RoleFailure):
    pass


class RoleRestarting(RoleDied):
    """The actor died and Ray is restarting it (calls fail until its constructor has run again)."""
