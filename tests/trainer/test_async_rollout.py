"""trainer.max_staleness=k: batches generated ahead on a background thread (pure: stand-ins for the actors).

The order of the calls, the staleness bookkeeping, the bound, what a checkpoint saves while batches are drawn
ahead, and a generator lost mid-batch; then the driver's real step (rl_step -> Prefetcher -> Driver.rollout ->
Driver.sync_weights) over recording actors, as in test_colocate.py.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from rlframe.config import load_config
from rlframe.data.rollout_batch import Completion, RolloutBatch
from rlframe.errors import ConfigError, RewardError, RoleDied
from rlframe.reward.scoring import Scores
from rlframe.rollout.engine import SamplingSettings
from rlframe.trainer import rl
from rlframe.trainer.async_rollout import GeneratorLost, Prefetcher, covered
from rlframe.trainer.driver import Driver
from rlframe.trainer.metrics import Timer
from rlframe.trainer.run_state import RunState
from tests.trainer.test_colocate import FakeEngine, Group, generator

PARAMS = SamplingSettings(n=2, temperature=1.0, max_new_tokens=4)


class Gen:
    """A generator's weight version, bumped by the weight syncs of the test."""

    def __init__(self) -> None:
        self.version = 1


def fake_driver(max_steps: int = 4) -> SimpleNamespace:
    state = RunState()
    state.enter("grpo")
    state.weight_version = 1
    d = SimpleNamespace(state=state, cfg=SimpleNamespace(trainer=SimpleNamespace(max_steps=max_steps)),
                        recovered=[], generators=None)

    def recover(why: str) -> None:
        d.recovered.append(why)
        state.weight_version += 1
    d.recover_generators = recover
    return d


def collector(gen: Gen, log: list, fail: dict | None = None):
    """A `collect_batch` stand-in: draws 2 prompts, makes their completions with the generator's version."""
    def collect(d, step, draws, params, timer, floor, on_lost):
        idx = draws.take(2)
        log.append((step, floor, idx, gen.version))
        if fail and fail.get(step):
            exc = fail.pop(step)
            on_lost("generator died") if exc is GeneratorLost else (_ for _ in ()).throw(exc("bad reward"))
        batch = RolloutBatch([{}] * 2, [[1]] * 2, 1, step=step)
        batch.add([Completion(i, [3], [-0.5], weight_version=gen.version) for i in range(2)])
        timer.add("generate", 0.01)
        return batch, Scores(), {"idx": idx}
    return collect


def test_batches_are_queued_k_ahead_in_order_and_their_staleness_is_logged():
    d, gen, log = fake_driver(max_steps=4), Gen(), []
    sampler = d.state.sampler("grpo", 100, 0)
    ahead = Prefetcher(d, sampler, PARAMS, 2, collect=collector(gen, log))
    stale = []
    for step in range(1, 5):
        timer = Timer()
        _, _, m = ahead.take(step, timer)
        stale.append(m["rollout/staleness_max"])
        assert {"timing/generate", "timing/wait_batch"} <= timer.metrics().keys()
        ahead.drain()
        d.state.weight_version += 1   # the step's weight sync
        gen.version = d.state.weight_version
    ahead.close()
    # steps 1..3 queued at step 1 with v1, step 4 at step 2 with v2; never past max_steps
    assert [(s, f) for s, f, _, _ in log] == [(1, 1), (2, 1), (3, 1), (4, 2)]
    assert [i for _, _, i, _ in log] == [sampler._perm()[i: i + 2] for i in (0, 2, 4, 6)]
    assert stale == [0, 1, 2, 2]


def test_a_checkpoint_saves_the_sampler_before_the_batches_drawn_ahead():
    d, gen, log = fake_driver(max_steps=3), Gen(), []
    sampler = d.state.sampler("grpo", 100, 0)
    ahead = Prefetcher(d, sampler, PARAMS, 1, collect=collector(gen, log))
    ahead.take(1, Timer())
    ahead.drain()                          # batch 2 drew its prompts (4 drawn in all)
    assert sampler.pos == 4
    saved = d.state.state_dict()
    assert saved["samplers"]["grpo"]["pos"] == 2   # before batch 2: a resumed run draws it again
    restored = RunState()
    restored.load_state_dict(saved)
    assert restored.sampler("grpo", 100, 0).take(2) == log[1][2]
    ahead.take(2, Timer())
    ahead.take(3, Timer())
    ahead.close()
    assert d.state.state_dict()["samplers"]["grpo"]["pos"] == 6 == sampler.pos   # nothing ahead any more


def test_a_lost_generator_drops_the_queue_rewinds_the_sampler_and_regenerates():
    d, gen, log = fake_driver(max_steps=3), Gen(), []
    d.generators = SimpleNamespace(call=lambda m: [], wait=lambda *a, **k: (_ for _ in ()).throw(RoleDied("x")))
    ahead = Prefetcher(d, d.state.sampler("grpo", 100, 0), PARAMS, 1,
                       collect=collector(gen, log, fail={2: GeneratorLost}))
    ahead.take(1, Timer())
    _, _, m = ahead.take(2, Timer())
    ahead.close()
    assert d.recovered == ["generator died"]
    # step 2 again, with the same prompts, queued from the version after the recovery sync (v2)
    twice = [(f, idx) for s, f, idx, _ in log if s == 2]
    assert [f for f, _ in twice] == [1, 2] and twice[0][1] == twice[1][1] == m["idx"]


def test_errors_reach_the_main_thread_and_the_bound_is_enforced():
    d, gen, log = fake_driver(max_steps=3), Gen(), []
    ahead = Prefetcher(d, d.state.sampler("grpo", 100, 0), PARAMS, 1, collect=collector(gen, log, {2: RewardError}))
    ahead.take(1, Timer())
    with pytest.raises(RewardError, match="bad reward"):
        ahead.take(2, Timer())
    ahead.close()
    d, gen = fake_driver(max_steps=3), Gen()
    ahead = Prefetcher(d, d.state.sampler("grpo", 100, 0), PARAMS, 1, collect=collector(gen, []))
    ahead.take(1, Timer())
    ahead.drain()
    d.state.weight_version = 3            # two syncs since batch 2 was generated with v1: 2 > k
    with pytest.raises(RuntimeError, match="2 weight versions old, more than trainer.max_staleness=1"):
        ahead.take(2, Timer())
    ahead.close()


def test_overlap_is_the_covered_part_of_the_update():
    assert covered([[0.0, 2.0], [3.0, None], [None, None]], 1.0, 5.0) == pytest.approx(1.0 + 2.0)
    assert covered([[0.0, 0.5]], 1.0, 5.0) == 0.0


def test_config_refuses_negative_staleness_and_colocation():
    with pytest.raises(ConfigError, match=r"trainer.max_staleness=-1: must be >= 0"):
        load_config(["trainer.max_staleness=-1"])
    with pytest.raises(ConfigError, match=r"trainer.max_staleness=1 with cluster.colocate=true"):
        load_config(["trainer.max_staleness=1", "cluster.colocate=true"])


def real_driver(tmp_path, events: list[str], **over) -> Driver:
    cfg = load_config(["reward.stream_batch=0", "trainer.eval_every=0", "trainer.prompts_per_step=2",
                       "algorithm.group_size=2", "reward.fns=[{name:format,weight:1.0}]", "trainer.loggers=[]",
                       "trainer.max_staleness=1", "trainer.max_steps=3", f"run.output_dir={tmp_path}"])
    d = Driver(cfg)
    gen = generator(events)
    gen.version, engine = 1, FakeEngine([])
    gen.engine.generate = lambda prompts, params: (events.append(f"generate v{gen.version}"), engine.generate(prompts,
                                                                                                             params))[1]
    d.roles.groups["rollout"] = Group("rollout", [gen])
    d.roles.groups["learner"] = Group("learner", [])
    d.task = SimpleNamespace(train=[{"prompt": "p", "target": "1"}] * 8, eval=[])
    d.train_prompts, d.pad_id, d.stop_ids = [[5, 6]] * 8, 0, [2]
    d.rewarders = SimpleNamespace(submit=lambda samples: len(samples), gather=lambda tickets: Scores(
        components={"format": [1.0] * sum(tickets)}))
    d.rows = []
    d.tracker = SimpleNamespace(log=d.rows.append)
    d.probe_args = lambda: ()
    d.state.weight_version = 1

    def sync(learners, generators, version, probe):
        generators.call("update_weights", version, None)
        return {}
    d.weights = SimpleNamespace(sync=sync)
    return d


def test_the_driver_step_trains_while_the_next_batch_generates(tmp_path, monkeypatch):
    events: list[str] = []
    d = real_driver(tmp_path, events)

    def update(d_, batch, lr, params, step):
        t0 = time.monotonic()   # the next step's batch generates while the learners run
        while step < 3 and sum(e.startswith("generate") for e in events) < step + 1 and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        events.append("learners")
        return {}
    monkeypatch.setattr(rl, "learner_update", update)
    sampler = d.state.sampler("grpo", 8, 0)
    ahead = Prefetcher(d, sampler, PARAMS, 1)
    try:
        for step in (1, 2, 3):
            rl.rl_step(d, step, sampler, PARAMS, ahead)
    finally:
        ahead.close()
    assert events == ["generate v1", "generate v1", "learners", "load weights",
                      "generate v2", "learners", "load weights", "learners", "load weights"]
    rows = [r for r in d.rows if r.get("stage") == "grpo"]
    assert [r["rollout/staleness_max"] for r in rows] == [0, 1, 1]
    assert all("timing/overlap" in r and "timing/wait_batch" in r for r in rows)
    # a completion below the floor (a restarted generator: version 0) goes to on_lost, never into a batch
    d.roles.groups["rollout"].actors[0].obj.version = 0
    batch = RolloutBatch([{"prompt": "p"}], [[5, 6]], 2)
    with pytest.raises(GeneratorLost, match="stale weights"):
        d.rollout(batch, PARAMS, floor=3, on_lost=lambda why: (_ for _ in ()).throw(GeneratorLost(why)))
