"""Fast tests of DAPO's reward-side pieces (rlframe/trainer/dapo.py): the soft overlong penalty, the group
filter, and dynamic sampling's refill loop against a fake driver (no Ray)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlframe.config.schema import AlgorithmConfig
from rlframe.data.rollout_batch import Completion, RolloutBatch
from rlframe.reward.scoring import Scores
from rlframe.rollout.engine import SamplingSettings
from rlframe.trainer.dapo import collect_batch, informative_groups, overlong_penalty
from rlframe.trainer.metrics import Timer

G = 2


def test_soft_overlong_penalty():
    # expected 16, cache 8: 0 up to 16 tokens, linear to -1 at 24, -1 beyond
    assert overlong_penalty([0, 10, 16, 17, 20, 24, 40], 16, 8) == pytest.approx([0, 0, 0, -0.125, -0.5, -1, -1])
    assert overlong_penalty([20, 100], 16, 8, factor=0.5) == pytest.approx([-0.25, -0.5])


def test_informative_groups_drop_groups_whose_rewards_all_agree():
    rewards = [1, 1, 1, 1,  1, 0, 1, 1,  0.5, 0.5, 0.5, 0.5,  0, 0.25, 0, 0]
    assert informative_groups(rewards, 4) == [1, 3]
    assert informative_groups(rewards, 4, masked=[3]) == [1]   # a masked group carries no signal either
    assert informative_groups([0.0, 0.0], 2) == []


class FakeDriver:
    """What collect_batch uses of the Driver: records agree (all rewards 1) when their `agree` field says so;
    completion i of a prompt has 4 + 4 * i tokens."""

    def __init__(self, max_rounds: int, overlong: bool = False) -> None:
        algo = AlgorithmConfig(group_size=G)
        algo.dynamic_sampling.enabled, algo.dynamic_sampling.max_rounds = True, max_rounds
        algo.overlong_penalty.enabled, algo.overlong_penalty.cache_len = overlong, 4
        self.cfg = SimpleNamespace(algorithm=algo, trainer=SimpleNamespace(prompts_per_step=4),
                                   reward=SimpleNamespace(stream_batch=0))
        self.task = SimpleNamespace(train=[{"id": i, "agree": i % 2 == 0} for i in range(40)])
        self.train_prompts = [[1, i] for i in range(40)]
        self.rounds: list[int] = []

    def rollout(self, batch: RolloutBatch, params: SamplingSettings, timer: Timer, stream: int = 0) -> Scores:
        self.rounds.append(len(batch.prompts))
        batch.add([Completion(p, [5] * (4 + 4 * s), [], sample_index=s) for p in range(len(batch.prompts))
                   for s in range(G)])
        batch.rewards = [1.0 if batch.record(i)["agree"] else float(i % G) for i in range(len(batch))]
        batch.components = {"accuracy": list(batch.rewards)}
        return Scores(failures={"accuracy": 1}, seconds=0.5)


class Sampler:
    def __init__(self) -> None:
        self.pos = 0

    def take(self, n: int) -> list[int]:
        self.pos += n
        return list(range(self.pos - n, self.pos))


PARAMS = SamplingSettings(n=G, max_new_tokens=8)


def test_dynamic_sampling_refills_until_the_batch_is_full():
    d = FakeDriver(max_rounds=3)
    batch, scores, m = collect_batch(d, 1, Sampler(), PARAMS, Timer())
    # round 1: prompts 0-3, the even ones agree (dropped); 2 of 4 kept, so the refill asks for 2 / (2/4) = 4
    assert d.rounds == [4, 4]
    assert [r["id"] for r in batch.records] == [1, 3, 5, 7] and len(batch) == 8 and not batch.excluded
    assert m == {"dapo/rounds": 2, "dapo/dropped_groups": 4, "dapo/filled_groups": 0}
    assert batch.rewards == [0.0, 1.0] * 4 and batch.components["accuracy"] == batch.rewards
    assert scores.failures == {"accuracy": 2} and scores.seconds == 1.0
    assert all(c is not None for c in batch.done())


def test_dynamic_sampling_out_of_rounds_fills_with_dropped_groups_outside_the_loss():
    d = FakeDriver(max_rounds=0)
    batch, _, m = collect_batch(d, 1, Sampler(), PARAMS, Timer())
    assert d.rounds == [4] and m == {"dapo/rounds": 1, "dapo/dropped_groups": 2, "dapo/filled_groups": 2}
    assert [r["id"] for r in batch.records] == [1, 3, 0, 2] and batch.excluded == {2, 3}
    train = batch.train_batch(pad_id=0, eos_id=None)
    assert train.loss_mask[:4].sum() > 0 and train.loss_mask[4:].sum() == 0


def test_overlong_penalty_is_a_reward_component_before_the_filter():
    d = FakeDriver(max_rounds=0, overlong=True)
    d.cfg.algorithm.dynamic_sampling.enabled = False
    batch, _, m = collect_batch(d, 1, Sampler(), PARAMS, Timer())
    # max_new_tokens 8, cache 4: expected 4; completions of 4 and 8 tokens -> 0 and -1
    assert m == {} and batch.components["overlong_penalty"] == [0.0, -1.0] * 4
    assert batch.rewards[:4] == [1.0, 0.0, 0.0, 0.0]   # (1, 1) + (0, -1); (0, 1) + (0, -1)
    # the filter sees the penalised rewards: now the even prompts carry a signal and the odd ones agree
    d.cfg.algorithm.dynamic_sampling.enabled = True
    batch, _, m = collect_batch(d, 1, Sampler(), PARAMS, Timer())
    assert [r["id"] for r in batch.records] == [0, 2, 1, 3] and batch.excluded == {2, 3}
