"""DeepSpeed ZeRO-2 and ZeRO-3 learners: 2 gloo ranks in Ray actors, SFT and GRPO updates, full-weight gathers."""
from __future__ import annotations

import random

import pytest
import torch

from rlframe.cluster.roles import ActorGroup
from rlframe.config.schema import AlgorithmConfig, LearnerConfig
from rlframe.data.batching import TrainBatch, collate
from rlframe.learner.learner import LearnerWorker
from rlframe.weight_sync.buckets import Digest

pytestmark = pytest.mark.integration
WORLD = 2


def start_learners(ray, start_role, model_dir: str, stage: int, ref: bool, lr: float = 1e-2,
                   compile: bool = False, micro_batch_tokens: int | None = None,
                   forward_micro_batch_tokens: int | None = None, dtype: str = "float32") -> ActorGroup:
    cfg = LearnerConfig(world_size=WORLD, zero_stage=stage, lr=lr, micro_batch_size=4, num_cpus_per_worker=0.5,
                        compile=compile, micro_batch_tokens=micro_batch_tokens,
                        forward_micro_batch_tokens=forward_micro_batch_tokens)
    group = start_role("learner", LearnerWorker, WORLD, [(r, WORLD, cfg, ".cache") for r in range(WORLD)],
                       per_rank_args=True)
    addr, port = ray.get(group.actors[0].master_address.remote())
    infos = group.run("setup", addr, port, model_dir, dtype, 2, model_dir if ref else None)
    assert [i["backend"] for i in infos] == ["gloo", "gloo"]
    group.setup_infos = infos
    return group


def fixed_batch(n: int = 16, seed: int = 0) -> TrainBatch:
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, 500) for _ in range(rng.randrange(4, 9))] for _ in range(n)]
    comps = [[rng.randrange(3, 500) for _ in range(rng.randrange(3, 7))] + [2, 77, 78] for _ in range(n)]
    return collate(prompts, comps, pad_id=0, eos_id=2)


def shards(batch: TrainBatch) -> list[TrainBatch]:
    return [batch.rows(r) for r in batch.balanced_split(WORLD)]


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_learners_train_and_gather(ray_session, start_role, tiny_model_dir, tmp_path, stage):
    ray = ray_session
    group = start_learners(ray, start_role, tiny_model_dir, stage, ref=True)
    batch = fixed_batch()
    # SFT on a fixed batch: the loss must fall
    losses = []
    for _ in range(6):
        ms = ray.get(group.call_each("sft_step", [(sh, 1e-2) for sh in shards(batch)]))
        losses.append(sum(m["loss"] for m in ms) / WORLD)
    assert losses[-1] < losses[0] - 0.5, losses

    # RL: one call per rank does the reference pass and the update; positive advantages on half the
    # batch; KL to the frozen reference (the SFT steps moved the policy away from it) is > 0
    batch.advantages = torch.tensor([1.0, -1.0] * 8)
    batch.sample_logp = torch.zeros_like(batch.loss_mask)
    algo = AlgorithmConfig(kl_coef=0.04)
    ms = ray.get(group.call_each("rl_step", [(sh, 1e-3, algo, 1.0) for sh in shards(batch)]))
    for m in ms:
        assert m["kl"] > 0 and torch.isfinite(torch.tensor(m["loss"]))
        assert m["actor/grad_norm"] > 0 and m["timing/ref"] > 0 and m["timing/train"] > 0
    # two ranks on one machine: ZeRO-2's gradient all-reduce and parameter all-gather went through /dev/shm (and
    # the checks below, the grad norms of two splits and the checkpoint round trip, ran through it); ZeRO-3's
    # collectives stay on gloo
    assert [i["collectives"] for i in group.setup_infos] == ["shared memory" if stage == 2 else "gloo"] * WORLD
    assert [m.get("learner/shm_collectives", 0) >= 2 for m in ms] == [stage == 2] * WORLD, ms

    # the update's gradient is the mean over every rank's tokens, not the mean of the ranks' means: the short
    # completions on one rank and the long ones on the other give the global norm of an interleaved split
    # (lr 0: the weights stay where they are between the calls)
    order = torch.argsort(batch.loss_mask.sum(1)).tolist()
    splits = {"by_length": [order[:8], order[8:]], "interleaved": [order[0::2], order[1::2]]}
    norms = {}
    for name, (a, b) in splits.items():
        assert batch.rows(a).loss_mask.sum() != batch.rows(b).loss_mask.sum() or name == "interleaved"
        rl = ray.get(group.call_each("rl_step", [(batch.rows(ix), 0.0, algo, 1.0) for ix in (a, b)]))
        sft = ray.get(group.call_each("sft_step", [(batch.rows(ix), 0.0) for ix in (a, b)]))
        norms[name] = (rl[0]["actor/grad_norm"], sft[0]["grad_norm"])
    assert norms["by_length"] == pytest.approx(norms["interleaved"], rel=1e-4), norms

    # full weights: gathered (ZeRO-3 included), hashed, equal to what save_hf writes
    out = group.run("gather_weights", 0.05, True)
    assert out[1] is None
    info = out[0]
    buckets = ray.get(info.refs)
    assert len(buckets) > 1  # 0.05 MB buckets split the 2.6 MB model
    named = [nt for b in buckets for nt in b]
    digest = Digest()
    digest.update(named)
    assert digest.hexdigest() == info.digest
    assert info.bytes == sum(t.numel() * t.element_size() for _, t in named)
    from transformers import AutoModelForCausalLM

    ref_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    shapes = {n: tuple(t.shape) for n, t in ref_model.state_dict().items()}
    assert {n: tuple(t.shape) for n, t in named} == shapes  # full, unsharded, tied alias included
    group.run("save_hf", str(tmp_path / "saved"))
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").state_dict()
    for n, t in named:
        assert torch.equal(saved[n], t), n
    assert not torch.equal(saved["model.norm.weight"], ref_model.state_dict()["model.norm.weight"]) or \
        not torch.equal(saved["model.embed_tokens.weight"], ref_model.state_dict()["model.embed_tokens.weight"])

    # DeepSpeed checkpoint round trip (this ZeRO stage): a step after loading equals the step after saving,
    # loss and resulting weights alike, so the optimizer state came back too
    group.run("save_checkpoint", str(tmp_path / "ckpt"))

    def one_step() -> tuple[float, str]:
        loss = ray.get(group.call_each("sft_step", [(sh, 1e-2) for sh in shards(fixed_batch(seed=1))]))[0]["loss"]
        return loss, group.run("gather_weights", 1.0, True)[0].digest

    after_save = one_step()
    one_step()                                       # move on, then go back
    group.run("load_checkpoint", str(tmp_path / "ckpt"))
    assert one_step() == after_save


def test_without_a_reference_there_is_no_kl_term(ray_session, start_role, tiny_model_dir):
    ray = ray_session
    group = start_learners(ray, start_role, tiny_model_dir, 2, ref=False)
    batch = fixed_batch(16)   # 8 rows per rank = 2 micro-batches of 4: one update (grad_accum 2)
    batch.advantages = torch.tensor([1.0, -1.0] * 8)
    batch.sample_logp = torch.zeros_like(batch.loss_mask)
    ms = ray.get(group.call_each("rl_step", [(sh, 1e-3, AlgorithmConfig(kl_coef=0.04), 1.0) for sh in shards(batch)]))
    assert [m["kl"] for m in ms] == [0.0, 0.0] and all(m["loss"] != 0 for m in ms)


def test_token_budget_micro_batches_on_zero3_ranks(ray_session, start_role, tiny_model_dir):
    """learner.micro_batch_tokens: rows regrouped by length into micro-batches of at most 48 tokens. Ranks whose
    rows need different counts agree on the largest (ZeRO-3 gathers parameters in every forward: a rank with
    fewer would hang the others), the update is the same whatever the split, and per-row results come back in
    the rows' order."""
    ray = ray_session
    group = start_learners(ray, start_role, tiny_model_dir, 3, ref=True, micro_batch_tokens=48)
    rng = random.Random(0)   # rows of 10 to 37 tokens: 1 to 4 rows per micro-batch
    batch = collate([[rng.randrange(3, 500) for _ in range(rng.randrange(4, 9))] for _ in range(16)],
                    [[rng.randrange(3, 500) for _ in range(2 + 2 * i)] + [2] for i in range(16)], pad_id=0, eos_id=2)
    batch.advantages = torch.tensor([1.0, -1.0] * 8)
    batch.sample_logp = torch.zeros_like(batch.loss_mask)
    ray.get(group.call_each("sft_step", [(sh, 1e-2) for sh in shards(batch)]))   # away from the reference
    order = torch.argsort(batch.attention_mask.sum(1)).tolist()
    splits = {"by_length": [order[:8], order[8:]], "interleaved": [order[0::2], order[1::2]]}
    algo, norms = AlgorithmConfig(kl_coef=0.04), {}
    for name, (a, b) in splits.items():   # by length: 4 micro-batches of the short rows, 8 of the long ones
        rl = ray.get(group.call_each("rl_step", [(batch.rows(ix), 0.0, algo, 1.0) for ix in (a, b)]))
        sft = ray.get(group.call_each("sft_step", [(batch.rows(ix), 0.0) for ix in (a, b)]))
        norms[name] = (rl[0]["actor/grad_norm"], sft[0]["grad_norm"])
        assert rl[0]["kl"] > 0 and norms[name][0] > 0
    assert norms["by_length"] == pytest.approx(norms["interleaved"], rel=1e-4), norms
    # KL as a reward penalty: each row's KL lands on its row, whatever micro-batch the budget put it in
    kl_algo = AlgorithmConfig(kl_coef=0.1, kl_in="reward")
    a, b = splits["interleaved"]
    forward = ray.get(group.call_each("score_batch", [(batch.rows(ix), kl_algo, 1.0) for ix in (a, b)]))
    backward = ray.get(group.call_each("score_batch", [(batch.rows(ix[::-1]), kl_algo, 1.0) for ix in (a, b)]))
    for f, r in zip(forward, backward):
        assert len(set(f["kl_seq"])) == 8 and r["kl_seq"] == pytest.approx(f["kl_seq"][::-1], rel=1e-5)


def test_no_grad_passes_over_their_own_micro_batches_on_zero3_ranks(ray_session, start_role, tiny_model_dir):
    """learner.forward_micro_batch_tokens: the reference and old log-prob passes run over micro-batches of their
    own, and the ranks, whose rows need different counts, agree on one (ZeRO-3 gathers parameters in every
    forward). Each row's KL penalty and the update's gradient are those of the update's own micro-batches."""
    ray = ray_session
    rng = random.Random(1)   # rows of 10 to 37 tokens
    batch = collate([[rng.randrange(3, 500) for _ in range(rng.randrange(4, 9))] for _ in range(16)],
                    [[rng.randrange(3, 500) for _ in range(2 + 2 * i)] + [2] for i in range(16)], pad_id=0, eos_id=2)
    batch.advantages = torch.tensor([1.0, -1.0] * 8)
    batch.sample_logp = torch.zeros_like(batch.loss_mask)
    order = torch.argsort(batch.attention_mask.sum(1)).tolist()
    ranks = [order[:8], order[8:]]   # by length: a 96-token budget needs 2 micro-batches of short rows, 4 of long
    algo = AlgorithmConfig(kl_coef=0.1, kl_in="reward", updates_per_batch=2)   # old log-probs, KL per row
    runs = []
    for budget in (None, 96):
        group = start_learners(ray, start_role, tiny_model_dir, 3, ref=True, forward_micro_batch_tokens=budget)
        ray.get(group.call_each("sft_step", [(batch.rows(ix), 1e-2) for ix in ranks]))   # away from the reference
        scored = ray.get(group.call_each("score_batch", [(batch.rows(ix), algo, 1.0) for ix in ranks]))
        rl = ray.get(group.call_each("rl_step", [(None, 0.0, algo, 1.0, None, batch.advantages[ix]) for ix in ranks]))
        runs.append(([k for s in scored for k in s["kl_seq"]], rl[0]["actor/grad_norm"]))
        group.kill()
    (kl, norm), (kl_own, norm_own) = runs
    assert len(set(kl)) == 16 and min(kl) > 0
    assert kl_own == pytest.approx(kl, rel=1e-5) and norm_own == pytest.approx(norm, rel=1e-4)


def test_sft_rows_packed_padding_free_give_the_padded_gradient(ray_session, start_role, tiny_model_dir):
    """learner.packing (the default) on SFT rows that share no prompt: a rank's short rows share a packed row
    beside its longest, and the gradient over both ranks is the padded forward's, computed here in one process."""
    from transformers import AutoModelForCausalLM

    from rlframe.learner.losses import sft_loss
    from rlframe.models.shared_prefix import pack_shared_prefix

    ray = ray_session
    group = start_learners(ray, start_role, tiny_model_dir, 2, ref=False, lr=0.0)
    rng = random.Random(3)
    widths = [30, 9, 10, 11, 28, 12, 8, 7]   # per rank: one long row and three that fit beside it
    prompts = [[rng.randrange(3, 500) for _ in range(4 + i % 3)] for i in range(len(widths))]
    batch = collate(prompts, [[rng.randrange(3, 500) for _ in range(w - len(p))] for w, p in zip(widths, prompts)],
                    pad_id=0)
    ranks = [[0, 1, 2, 3], [4, 5, 6, 7]]
    for ix in ranks:   # one micro-batch of 4 rows per rank, packed into 2 rows
        mb = batch.rows(ix).trimmed()
        assert pack_shared_prefix(mb.input_ids, mb.attention_mask, mb.loss_mask).input_ids.shape[0] == 2
    got = ray.get(group.call_each("sft_step", [(batch.rows(ix), 0.0) for ix in ranks]))

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    sft_loss(logits, batch.input_ids[:, 1:], batch.loss_mask).backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
    assert got[0]["grad_norm"] == pytest.approx(float(norm), rel=1e-4)
    assert got[0]["tokens"] + got[1]["tokens"] == float(batch.loss_mask.sum())


def grpo_batch(groups: int = 4, g: int = 4, seed: int = 0) -> TrainBatch:
    """Groups of G rows sharing a prompt (so the shared-prefix forward packs them), random advantages."""
    rng = random.Random(seed)
    prompts, comps = [], []
    for _ in range(groups):
        prompt = [rng.randrange(3, 500) for _ in range(rng.randrange(5, 9))]
        for _ in range(g):
            prompts.append(prompt)
            comps.append([rng.randrange(3, 500) for _ in range(rng.randrange(3, 7))] + [2])
    batch = collate(prompts, comps, pad_id=0, eos_id=2)
    batch.advantages = torch.tensor([rng.uniform(-1, 1) for _ in prompts])
    batch.sample_logp = torch.zeros_like(batch.loss_mask)
    return batch


def test_compiled_learners_match_the_eager_ones(ray_session, start_role, tiny_model_dir):
    """learner.compile=true: the policy and reference forwards run compiled (so does the backward, through which
    DeepSpeed's gradient hooks fire), and SFT and GRPO steps give the eager learners' losses, KL and weights."""
    ray = ray_session

    def compiled_graphs(worker) -> tuple[bool, int]:   # runs in the actor (a closure: pickled by value)
        from torch._dynamo.utils import counters

        return bool(worker.engine.is_compiled), int(counters["stats"]["unique_graphs"])

    runs = {}
    for compiled in (False, True):
        group = start_learners(ray, start_role, tiny_model_dir, 2, ref=True, compile=compiled)
        sft = [ray.get(group.call_each("sft_step", [(sh, 1e-2) for sh in shards(fixed_batch(seed=i))]))[0]["loss"]
               for i in range(2)]
        rl = ray.get(group.call_each("rl_step", [(sh, 1e-2, AlgorithmConfig(kl_coef=0.04), 1.0)
                                                 for sh in shards(grpo_batch())]))
        info = group.run("gather_weights", 1.0, True)[0]
        weights = dict(nt for b in ray.get(info.refs) for nt in b)
        graphs = ray.get([a.__ray_call__.remote(compiled_graphs) for a in group.actors])
        runs[compiled] = sft, [(m["loss"], m["kl"], m["actor/grad_norm"]) for m in rl], weights, graphs
    (sft0, rl0, w0, eager), (sft1, rl1, w1, compiled) = runs[False], runs[True]
    assert eager == [(False, 0)] * WORLD
    assert all(on and n >= 2 for on, n in compiled), compiled   # at least the policy's and the reference's
    assert sft1 == pytest.approx(sft0, rel=1e-4)
    assert [m for r in rl1 for m in r] == pytest.approx([m for r in rl0 for m in r], rel=1e-3, abs=1e-6)
    assert rl0[0][1] > 0 and rl0[0][2] > 0
    for name, t in w0.items():
        # Adam turns float32 rounding differences into up to ~3% of a step's update (lr 1e-2) on a few elements
        torch.testing.assert_close(w1[name], t, rtol=0, atol=5e-4, msg=name)


def test_compiled_bf16_learners_take_the_cpu_attention_and_match_the_eager_ones(ray_session, start_role,
                                                                                tiny_model_dir):
    """On CPU, compiled bf16 learners switch the policy to rlframe's attention (matrix-multiply backward) and keep the
    packed layout; a GRPO step gives the eager bf16 learners' loss, KL and gradient norm within bf16 rounding."""
    from rlframe.models.cpu_attention import NAME

    ray = ray_session
    runs = {}
    for compiled in (False, True):
        group = start_learners(ray, start_role, tiny_model_dir, 2, ref=True, compile=compiled, dtype="bfloat16")
        rl = ray.get(group.call_each("rl_step", [(sh, 1e-2, AlgorithmConfig(kl_coef=0.04), 1.0)
                                                 for sh in shards(grpo_batch())]))
        packs = ray.get([a.__ray_call__.remote(lambda w: w._packs()) for a in group.actors])
        runs[compiled] = [i["attention"] for i in group.setup_infos], packs, rl
    assert runs[False][:2] == (["sdpa", "sdpa"], [True, True])
    assert runs[True][:2] == ([NAME, NAME], [True, True])
    for eager, compiled in zip(runs[False][2], runs[True][2]):
        assert compiled["timing/backward"] > 0 and compiled["timing/forward"] > 0
        assert compiled["loss"] == pytest.approx(eager["loss"], rel=0.02)
        assert compiled["actor/grad_norm"] == pytest.approx(eager["actor/grad_norm"], rel=0.05)
        assert eager["actor/grad_norm"] > 1e-3 and abs(compiled["kl"] - eager["kl"]) < 1e-5
