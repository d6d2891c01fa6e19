"""Learner metrics merged over ranks: values averaged, timings the slowest rank's, rounded like the driver's."""
from __future__ import annotations

from rlframe.trainer.metrics import merge_ranks


def test_ranks_are_averaged_and_timings_are_the_slowest_ranks_rounded():
    merged = merge_ranks([{"loss": 1.0, "timing/backward": 0.649281914003, "timing/old_logp": 2.6e-06},
                          {"loss": 2.0, "timing/backward": 0.61, "timing/old_logp": 1.0e-06}])
    assert merged == {"loss": 1.5, "timing/backward": 0.6493, "timing/old_logp": 0.0}
