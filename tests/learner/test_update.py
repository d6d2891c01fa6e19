"""The RL update loop (rlframe/learner/update.py) on a plain torch model: mini-batches, epochs, old log-probs,
the clip acting from the second update on, the KL placement (pure torch; no DeepSpeed, no Ray)."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from rlframe.config.schema import AlgorithmConfig, MismatchConfig
from rlframe.data.batching import TrainBatch, collate
from rlframe.learner.losses import agg_units
from rlframe.learner.update import (entropy, in_row_order, loss_scales, minibatches, needs_old_logprobs, regroup,
                                    run_updates, sequence_kl)
from rlframe.models.logprobs import window_logprobs

VOCAB = 11


class TinyLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(VOCAB, 8)
        self.out = torch.nn.Linear(8, VOCAB)

    def forward(self, mb: TrainBatch) -> tuple[torch.Tensor, int]:
        """The learner's contract: the logits of the columns from `loss_start` on, and that column."""
        start = mb.loss_start()
        return self.out(torch.tanh(self.emb(mb.input_ids)))[:, start:-1], start


@torch.no_grad()
def logprobs(forward, mbs: list[TrainBatch], temperature: float) -> list[torch.Tensor]:
    return [window_logprobs(*forward(mb), mb.input_ids, temperature) for mb in mbs]


class TorchEngine:
    """DeepSpeed's engine calls on a torch model: each loss divided by the configured `gas`, `step()` after each
    micro-batch updating at the boundary the caller set (set_gradient_accumulation_boundary)."""

    def __init__(self, model: torch.nn.Module, lr: float, gas: int) -> None:
        self.params = list(model.parameters())
        self.opt, self.gas = torch.optim.SGD(self.params, lr=lr), gas
        self.calls = {"backward": 0, "step": 0, "update": 0}
        self.norm: float | None = None
        self.boundary: bool | None = None

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        self.boundary = is_boundary

    def backward(self, loss: torch.Tensor) -> None:
        self.calls["backward"] += 1
        (loss / self.gas).backward()

    def step(self) -> None:
        self.calls["step"] += 1
        if self.boundary is None:
            raise AssertionError("the update loop sets the accumulation boundary before every micro-batch")
        if self.boundary:
            self.norm = float(torch.nn.utils.clip_grad_norm_(self.params, 1e9))
            self.opt.step()
            self.opt.zero_grad()
            self.calls["update"] += 1

    def get_global_grad_norm(self) -> float | None:
        return self.norm


def batch(n: int = 8, seed: int = 0) -> TrainBatch:
    rng = random.Random(seed)
    b = collate([[1, rng.randrange(3, VOCAB)] for _ in range(n)],
                [[rng.randrange(3, VOCAB) for _ in range(rng.randrange(2, 5))] + [2] for _ in range(n)], 0, 2)
    b.advantages = torch.tensor([1.0, -1.0] * (n // 2))
    return b


def step(algo: AlgorithmConfig, lr: float, micro: int = 2, data: TrainBatch | None = None,
         ref: bool = False) -> tuple[dict[str, float], TorchEngine, list[int]]:
    """One RL step as the learner does it: mini-batches, ref and old passes, then the updates."""
    model = TinyLM()
    data = data or batch()
    minis = minibatches(data, algo.updates_per_batch, micro)
    engine = TorchEngine(model, lr, gas=len(minis[0]))
    forwards = []

    def forward(mb: TrainBatch) -> tuple[torch.Tensor, int]:
        forwards.append(len(mb))
        return model(mb)

    ref_model = TinyLM()
    with torch.no_grad():   # a reference that differs from the policy
        ref_model.out.bias.add_(torch.linspace(-1, 1, VOCAB))
    refs = [logprobs(ref_model, m, 1.0) if ref else [None] * len(m) for m in minis]
    olds = [logprobs(forward, m, 1.0) for m in minis] if needs_old_logprobs(algo, ref) else None
    return run_updates(engine, forward, minis, refs, olds, algo, 1.0), engine, forwards


def test_one_update_needs_no_old_pass_and_its_ratio_is_exactly_one():
    algo = AlgorithmConfig(kl_coef=0.0)
    m, engine, forwards = step(algo, lr=5.0)
    assert not needs_old_logprobs(algo, has_ref=False)
    assert forwards == [2, 2, 2, 2]                      # 8 rows in micro-batches of 2, each seen once
    assert engine.calls == {"backward": 4, "step": 4, "update": 1}
    assert m["actor/ratio_mean"] == 1.0 and m["actor/clip_frac_low"] == m["actor/clip_frac_high"] == 0.0
    assert m["actor/approx_kl"] == 0.0 and m["actor/grad_norm"] > 0 and m["actor/entropy"] > 0


def test_the_clip_fires_from_the_second_mini_batch():
    algo = AlgorithmConfig(kl_coef=0.0, updates_per_batch=2)
    m, engine, forwards = step(algo, lr=5.0)
    # old pass over the 4 micro-batches, then 2 updates of 2 micro-batches each (gas 2)
    assert forwards == [2] * 8
    assert engine.calls == {"backward": 4, "step": 4, "update": 2}
    # the second mini-batch sees a policy moved by the first update: ratio != 1, tokens clipped on both sides
    assert m["actor/ratio_mean"] != pytest.approx(1.0, abs=1e-3)
    assert m["actor/clip_frac_low"] > 0 and m["actor/clip_frac_high"] > 0 and m["actor/approx_kl"] > 0
    # with lr 0 nothing moves: the learner's own old log-probs give ratio 1 on every update
    still, _, _ = step(algo, lr=0.0)
    assert still["actor/ratio_mean"] == pytest.approx(1.0, abs=1e-6) and still["actor/clip_frac_high"] == 0.0


def test_epochs_pass_over_the_batch_again():
    algo = AlgorithmConfig(kl_coef=0.0, epochs=2)
    m, engine, forwards = step(algo, lr=5.0)
    assert needs_old_logprobs(algo, has_ref=False)
    assert forwards == [2] * 12 and engine.calls["update"] == 2
    assert m["actor/clip_frac_low"] + m["actor/clip_frac_high"] > 0


def test_clipped_tokens_receive_no_gradient_in_the_loop():
    # every advantage positive and an old policy far below the current one: all tokens clip high, no gradient
    data = batch()
    data.advantages = torch.ones(8)
    algo = AlgorithmConfig(kl_coef=0.0, updates_per_batch=2, mismatch=MismatchConfig(mode="none"))
    model = TinyLM()
    minis = minibatches(data, 2, 4)
    olds = [[lp - 1.0 for lp in logprobs(model, m, 1.0)] for m in minis]   # ratio e > 1.28 everywhere
    engine = TorchEngine(model, lr=1.0, gas=1)
    before = [p.detach().clone() for p in model.parameters()]
    m = run_updates(engine, model, minis, [[None]] * 2, olds, algo, 1.0)
    assert m["actor/clip_frac_high"] == 1.0 and m["actor/grad_norm"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_kl_in_reward_changes_the_rewards_not_the_loss():
    base = AlgorithmConfig(kl_coef=0.5, kl_estimator="k3", mismatch=MismatchConfig(mode="none"))
    in_loss, _, _ = step(base, lr=0.0, ref=True)
    in_reward, _, _ = step(replace(base, kl_in="reward"), lr=0.0, ref=True)
    no_kl, _, _ = step(replace(base, kl_coef=0.0), lr=0.0, ref=True)
    assert in_loss["kl"] > 0 and in_reward["kl"] == pytest.approx(in_loss["kl"])   # KL is logged either way
    assert in_reward["loss"] == pytest.approx(no_kl["loss"], abs=1e-7)               # ... but not in the loss
    assert in_loss["loss"] == pytest.approx(no_kl["loss"] + 0.5 * in_loss["kl"], rel=1e-4)
    # the reward penalty: each sequence's KL summed over its own tokens (k1 here: sum of logp - ref)
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -9.0], [-0.5, -1.0, -0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    assert sequence_kl(logp, ref, mask, "k1").tolist() == pytest.approx([0.5 - 1.0, 0.5])
    assert needs_old_logprobs(replace(base, kl_in="reward"), has_ref=True)
    assert not needs_old_logprobs(replace(base, kl_in="reward"), has_ref=False)


def test_tis_weights_the_loss_by_the_capped_ratio_to_the_generator():
    data = batch()
    model = TinyLM()
    own = torch.cat([lp for lp in logprobs(model, [data], 1.0)])
    algo = AlgorithmConfig(kl_coef=0.0, mismatch=MismatchConfig(mode="tis", tis_cap=2.0))
    # a generator that agrees: weight 1, the loss equals the uncorrected one
    data.sample_logp = own.clone()
    same, _, _ = step(algo, lr=0.0, micro=8, data=data)
    plain, _, _ = step(replace(algo, mismatch=MismatchConfig(mode="none")), lr=0.0, micro=8, data=data)
    assert same["loss"] == pytest.approx(plain["loss"], abs=1e-7) and same["mismatch/truncated_frac"] == 0.0
    assert same["logprob_abs_diff"] == 0.0 and same["mismatch/kl"] == 0.0
    # a generator 3x less likely on every token: every weight is capped at 2 -> twice the loss
    data.sample_logp = own - torch.log(torch.tensor(3.0))
    off, _, _ = step(algo, lr=0.0, micro=8, data=data)
    assert off["mismatch/truncated_frac"] == 1.0 and off["loss"] == pytest.approx(2 * plain["loss"], rel=1e-5)
    assert off["logprob_abs_diff"] == pytest.approx(1.0986123, abs=1e-5)            # log 3
    assert off["mismatch/kl"] == pytest.approx(3 - 1.0986123 - 1, abs=1e-5)        # e^d - d - 1, d = log 3


def test_entropy_hand_values():
    # uniform over 4 -> log 4; one-hot-ish (logits 0 and -inf) -> 0; temperature 2 flattens [0, log 3]
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, -1e9, -1e9, -1e9]], [[0.0, 2 * 1.0986123, -1e9, -1e9]] * 2])
    h = entropy(logits, temperature=1.0)
    assert h[0].tolist() == pytest.approx([1.3862944, 0.0], abs=1e-6)
    # T = 2: logits [0, log 3] -> p = [1/4, 3/4]: -(1/4 log 1/4 + 3/4 log 3/4) = 0.5623351
    assert entropy(logits[1:], temperature=2.0)[0, 0].item() == pytest.approx(0.5623351, abs=1e-6)


class Accumulate(TorchEngine):
    """DeepSpeed's backward (each loss / gas) without the optimizer: the gradient stays on the model."""

    def step(self) -> None:
        self.calls["step"] += 1


def update_gradient(data: TrainBatch, micro: int, agg: str, scaled: bool, world: int = 1,
                    over_ranks=lambda xs: xs, tokens: int | None = None, gas: int | None = None) -> torch.Tensor:
    algo = AlgorithmConfig(kl_coef=0.0, loss_agg=agg, mismatch=MismatchConfig(mode="none"))
    model = TinyLM()
    minis = minibatches(data, 1, micro, tokens=tokens)
    gas = gas or len(minis[0])   # DeepSpeed's configured divisor: a token budget's count may differ from it
    scales = loss_scales(minis, agg, gas, world, over_ranks) if scaled else None
    run_updates(Accumulate(model, 0.0, gas), model, minis, [[None] * len(minis[0])], None, algo, 1.0, 5, scales)
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"])
def test_the_update_is_the_mean_over_the_whole_update_whatever_the_micro_batches_and_ranks(agg):
    data = batch()   # completions of 3 to 5 tokens: micro-batches hold different numbers of tokens
    whole = update_gradient(data, 8, agg, scaled=True)
    for micro in (1, 2, 4):
        assert torch.allclose(update_gradient(data, micro, agg, scaled=True), whole, atol=1e-6), micro
    # two ranks of 2 and 6 rows, 2 micro-batches each; DeepSpeed averages their gradients
    shards = [data.rows(slice(0, 2)), data.rows(slice(2, 8))]
    total = sum(agg_units(agg, sh.loss_mask) for sh in shards)   # what the all-reduce returns
    ranks = [update_gradient(sh, m, agg, scaled=True, world=2, over_ranks=lambda xs: [total])
             for sh, m in zip(shards, (1, 3))]
    assert torch.allclose((ranks[0] + ranks[1]) / 2, whole, atol=1e-6)
    if agg == "token_mean":   # unscaled, the mean of micro-batch means: short completions weigh more
        assert not torch.allclose(update_gradient(data, 1, agg, scaled=False), whole, atol=1e-4)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_sum"])
def test_token_budget_micro_batches_give_the_same_update(agg):
    data = batch(16, seed=3)
    whole = update_gradient(data, 16, agg, scaled=True)
    counts = set()
    for tokens in (8, 20, 40, 200):
        minis = minibatches(data, 1, 16, tokens=tokens)
        counts.add(len(minis[0]))
        assert all(len(mb) == 1 or mb.attention_mask.numel() <= tokens for mb in minis[0])   # rows x widest row
        assert torch.allclose(update_gradient(data, 16, agg, scaled=True, tokens=tokens, gas=2), whole, atol=1e-6)
    assert len(counts) == 4                       # four budgets, four micro-batch counts, one gradient


def test_token_micro_batches_regroup_rows_and_results_come_back_in_row_order():
    data = batch(12, seed=5)
    minis = minibatches(data, 2, 12, tokens=12)
    assert [mb.index.tolist() for mb in minis[0]] != [list(range(6))]   # rows regrouped by length
    assert sorted(torch.cat([mb.index for m in minis for mb in m]).tolist()) == list(range(12))
    for m, sl in zip(minis, (slice(0, 6), slice(6, 12))):   # each update keeps its own rows
        assert sorted(i for mb in m for i in mb.index.tolist()) == list(range(12))[sl]
    # a per-row result computed in micro-batch order lands on its row
    lengths = torch.cat([mb.attention_mask.sum(1) for m in minis for mb in m])
    assert torch.equal(in_row_order(minis, lengths), data.attention_mask.sum(1))
    # a rank that agreed to more micro-batches than the budget needs splits its fullest ones
    more = minibatches(data, 2, 12, tokens=12, agree=lambda counts: [c + 2 for c in counts])
    assert [len(m) for m in more] == [len(m) + 2 for m in minis]


@pytest.mark.parametrize("rows, tokens", [(16, None), (3, None), (5, 30)])
def test_a_no_grad_pass_over_its_own_micro_batches_gives_the_updates_own(rows, tokens):
    """learner.forward_micro_batch_*: log-probs computed over other micro-batches (all rows at once, 3 rows, a
    token budget) and regrouped are exactly what each of the update's micro-batches would have computed."""
    data = batch(16, seed=7)
    model = TinyLM()
    minis = minibatches(data, 2, 3, tokens=12)                 # the update's: 2 updates, by a 12-token budget
    own = [logprobs(model, m, 1.0) for m in minis]
    parts = minibatches(data, 1, rows, tokens=tokens)[0]
    assert [len(p) for p in parts] != [len(mb) for m in minis for mb in m]
    got = regroup(minis, parts, logprobs(model, parts, 1.0))
    for om, gm, m in zip(own, got, minis):
        for o, g, mb in zip(om, gm, m):
            assert g.shape == o.shape and torch.allclose(g * mb.loss_mask, o * mb.loss_mask, atol=1e-6)


def test_packed_token_micro_batches_keep_each_prompt_group_whole():
    prompts = [[1, 3, 4]] * 4 + [[1, 5]] * 4 + [[1, 6, 7, 8]] * 4
    data = collate(prompts, [[3 + i % 5] * (1 + i % 4) + [2] for i in range(12)], 0, 2)
    minis = minibatches(data, 1, 12, tokens=16, packed=True)
    assert len(minis[0]) > 1 and sorted(i for mb in minis[0] for i in mb.index.tolist()) == list(range(12))
    for mb in minis[0]:   # whole groups: each prompt in a micro-batch with all 4 of its rows
        members = [tuple(prompts[i]) for i in mb.index.tolist()]
        assert all(members.count(p) == 4 for p in members), members
    # more micro-batches than groups (another rank's count): single rows
    assert len(minibatches(data, 1, 12, tokens=16, packed=True, agree=lambda c: [6])[0]) == 6
