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
