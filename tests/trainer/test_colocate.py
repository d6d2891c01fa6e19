"""cluster.colocate=true: the generators sleep while the learners use the shared GPUs and wake before they
generate or load weights. vLLM's sleep mode is CUDA-only (tests/integration/test_colocate_gpu.py, marked gpu),
so on CPU the config is refused, and the order of calls is checked here with the driver's real step
(rl_step -> Driver.rollout -> Driver.sync_weights) over recording stand-ins for the actors."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlframe.config import load_config
from rlframe.data.rollout_batch import Completion
from rlframe.errors import ConfigError
from rlframe.reward.scoring import Scores
from rlframe.rollout.engine import SamplingSettings
from rlframe.rollout.generator import RolloutWorker
from rlframe.trainer import rl
from rlframe.trainer.driver import Driver
from rlframe.trainer.run_state import RunState


class FakeEngine:
    """Stands in for vLLM, whose sleep mode needs CUDA: records the calls, returns one token per sample."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def generate(self, prompts, params):
        self.events.append("generate")
        return [Completion(i, [7, 2], [-0.1, -0.2], sample_index=k) for i in range(len(prompts)) for k in range(params.n)]

    def sleep(self) -> None:
        self.events.append("sleep")

    def wake(self) -> None:
        self.events.append("wake")


class Method:
    def __init__(self, fn):
        self.remote = fn


class Handle:
    """`actor.method.remote(...)` calls the object directly (the value stands for its ObjectRef)."""

    def __init__(self, obj):
        self.obj = obj

    def __getattr__(self, name):
        return Method(getattr(self.obj, name))


class Group:
    def __init__(self, name: str, objs: list) -> None:
        self.name, self.actors, self.asleep, self.infos = name, [Handle(o) for o in objs], False, []

    def __len__(self) -> int:
        return len(self.actors)

    def call(self, method, *args, **kwargs):
        return [getattr(a.obj, method)(*args, **kwargs) for a in self.actors]

    def run(self, method, *args, timeout=0.0, **kwargs):
        return self.call(method, *args, **kwargs)

    def wait(self, refs, *args, **kwargs):
        return list(refs)

    def kill(self) -> None:
        pass


def generator(events: list[str]) -> RolloutWorker:
    w = RolloutWorker.__new__(RolloutWorker)   # the real worker's methods around the stand-in engine
    w.engine, w.version, w.pid = FakeEngine(events), 0, 1
    w.tokenizer = SimpleNamespace(batch_decode=lambda ids, **_: ["<answer>1</answer>"] * len(ids))
    w.update_weights = lambda version, payload: (events.append("load weights"), setattr(w, "version", version))
    return w


def test_generators_sleep_around_the_learners_and_wake_before_generating_or_loading(tmp_path, monkeypatch):
    cfg = load_config(["reward.stream_batch=0", "trainer.eval_every=0", "trainer.prompts_per_step=2",
                       "algorithm.group_size=2", "reward.fns=[{name:format,weight:1.0}]", "trainer.loggers=[]",
                       f"run.output_dir={tmp_path}"])
    cfg.cluster.colocate = True   # validated configs refuse it on CPU (below); the driver's calls are the subject
    d = Driver(cfg)
    events: list[str] = []
    d.roles.groups["rollout"] = Group("rollout", [generator(events)])
    d.roles.groups["learner"] = Group("learner", [])   # their phase is learner_update, recorded below
    d.task = SimpleNamespace(train=[{"prompt": "p", "target": "1"}] * 4, eval=[])
    d.train_prompts, d.pad_id, d.stop_ids = [[5, 6]] * 4, 0, [2]
    d.rewarders = SimpleNamespace(submit=lambda samples: len(samples), gather=lambda tickets: Scores(
        components={"format": [1.0] * sum(tickets)}))
    d.tracker = SimpleNamespace(log=lambda row: None)
    d.probe_args = lambda: ()

    def sync(learners, generators, version, probe):
        generators.call("update_weights", version, None)
        return {}

    d.weights = SimpleNamespace(sync=sync)
    monkeypatch.setattr(rl, "learner_update", lambda *a, **k: events.append("learners") or {})
    sampler = RunState().sampler("grpo", 4, 0)
    params = SamplingSettings(n=2, temperature=1.0, max_new_tokens=4)
    for step in (1, 2):
        rl.rl_step(d, step, sampler, params)
    assert events == ["generate", "sleep", "learners", "wake", "load weights"] * 2

    d.cfg.cluster.colocate = False   # the default: no sleep and no wake calls at all
    events.clear()
    rl.rl_step(d, 3, sampler, params)
    assert events == ["generate", "learners", "load weights"]


def test_colocation_stays_refused_on_cpu():
    with pytest.raises(ConfigError, match=r"cluster.colocate=true: .*CUDA-only"):
        load_config(["cluster.colocate=true", "rollout=vllm"])
