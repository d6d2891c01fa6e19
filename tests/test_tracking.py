"""metrics.jsonl round trip and the learning summary (pure)."""
from __future__ import annotations

import math

import pytest

from rlframe.tracking import Tracker, format_summary, read_metrics, summarize


def _rows(totals, acc=None):
    rows = [{"step": i + 1, "stage": "grpo", "reward/total": t, "reward/accuracy": (acc or totals)[i]}
            for i, t in enumerate(totals)]
    return [{"step": 1, "stage": "sft", "loss": 1.0}] + rows


def test_summary_margin_and_pooled_noise():
    # first window [1, 3] (mean 2), last window [5, 7] (mean 6): margin 4
    # pooled std: sqrt(((1-2)^2 + (3-2)^2 + (5-6)^2 + (7-6)^2) / (4 - 2)) = sqrt(2)
    s = summarize(_rows([1.0, 3.0, 5.0, 7.0]), window=2)
    assert s["margin"] == 4.0
    assert s["noise"] == pytest.approx(math.sqrt(2), abs=1e-4)
    assert s["margin_over_noise"] == pytest.approx(4 / math.sqrt(2), abs=0.01)
    assert s["reward/accuracy"] == {"first": 2.0, "last": 6.0, "change": 4.0}
    assert "margin +4.000" in format_summary(s)


def test_summary_needs_enough_steps_and_reads_eval_rows():
    assert "margin" not in summarize(_rows([1.0, 2.0, 3.0]))
    rows = _rows([0.0] * 6) + [{"step": 0, "stage": "eval", "eval/accuracy": 0.5},
                               {"step": 6, "stage": "eval", "eval/accuracy": 0.75}]
    s = summarize(rows, window=3)
    assert s["eval"]["eval/accuracy"] == {"before": 0.5, "after": 0.75}
    assert s["noise"] == 0.0


def test_tracker_writes_jsonl_and_tensorboard(tmp_path):
    t = Tracker(tmp_path, ["jsonl", "tensorboard"])
    t.log({"step": 1, "stage": "grpo", "reward/total": 0.5, "flag": True, "note": "x"})
    t.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"step": 1, "stage": "grpo", "reward/total": 0.5, "flag": True, "note": "x"}]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
