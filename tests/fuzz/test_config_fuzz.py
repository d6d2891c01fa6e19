"""Property-based test of the config: any command line of overrides either starts a run or stops with a
message naming what is wrong (exit 2), never a traceback and never with Ray or the driver started."""
from __future__ import annotations

import dataclasses
import sys
import types
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlframe.cli import main
from rlframe.config.schema import RLConfig


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out += leaf_keys(t, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


KEYS = leaf_keys(RLConfig)
values = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(repr),
                   st.sampled_from(["true", "false", "null", "[]", "{}", "[1,2]", "'x'", "vllm", "grpo", "1e400",
                                    "${oops}", "[{name: format}]", "???", "-0", "inf"]),
                   st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12))
overrides = st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), values),
                               st.builds(lambda k, v: f"{k}={v}", st.text(max_size=10), values),
                               st.sampled_from(["learner=zero3", "rollout=hf", "algorithm=rloo", "model=nope",
                                                "+trainer.extra=1", "~trainer", "experiment=preferthinker_tiny_vl"])),
                     max_size=4)


@pytest.fixture
def ray_inits(monkeypatch) -> list[tuple]:
    """Every ray.init call. (Ray may already be up in this process: a pytest-xdist worker runs integration tests
    before this one, so `ray.is_initialized()` alone would not say whether the CLI started it.)"""
    import ray

    calls: list[tuple] = []
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: calls.append((args, kwargs)))
    return calls


@pytest.fixture
def no_driver(monkeypatch):
    started: list[object] = []
    fake = types.ModuleType("rlframe.trainer.driver")

    class Driver:
        def __init__(self, cfg):
            started.append(cfg)

        def run(self, mode="train"):
            return "/nowhere"

    fake.Driver = Driver
    monkeypatch.setitem(sys.modules, "rlframe.trainer.driver", fake)
    return started


@settings(max_examples=max(20, settings.default.max_examples // 4))   # each example composes the config
@given(overrides)
def test_any_overrides_start_a_run_or_stop_with_a_named_error(no_driver, ray_inits, capsys, argv):
    import ray

    no_driver.clear()
    ray_up = ray.is_initialized()
    try:
        rc = main(["train", *argv])
    except SystemExit as stop:   # argparse: an argument that starts with "-" is an unknown option
        rc = stop.code
    err = capsys.readouterr().err
    assert rc in (0, 2), (rc, err)
    if rc == 2:
        assert not no_driver, "an invalid config reached the driver"
        assert err.startswith(("rlframe train: ", "usage: rlframe")) and "Traceback" not in err, err
    else:
        assert len(no_driver) == 1
    assert not ray_inits and ray.is_initialized() == ray_up
