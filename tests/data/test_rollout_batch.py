"""The typed rollout batch: slots by construction, scores placed by slot, learner tensors (pure)."""
from __future__ import annotations

import pytest
import torch

from rlframe.data.batching import TrainBatch, collate
from rlframe.data.rollout_batch import Completion, RolloutBatch, place_rows


def comp(p: int, k: int, ids: list[int], text: str = "") -> Completion:
    return Completion(p, ids, [-0.1 * (j + 1) for j in range(len(ids))], text=text or f"p{p}s{k}", sample_index=k)


def test_completions_land_in_their_slots_whatever_the_arrival_order():
    batch = RolloutBatch([{"id": "a"}, {"id": "b"}], [[5, 6], [7]], group_size=2)
    assert batch.add([comp(1, 1, [9]), comp(1, 0, [8])]) == [3, 2]
    with pytest.raises(ValueError, match="1 of 4 samples never arrived|2 of 4 samples never arrived"):
        batch.done()
    assert batch.add([comp(0, 1, [4]), comp(0, 0, [3])]) == [1, 0]
    assert [c.text for c in batch.done()] == ["p0s0", "p0s1", "p1s0", "p1s1"]
    with pytest.raises(ValueError, match=r"\(prompt 0, sample 0\) arrived twice"):
        batch.add([comp(0, 0, [3])])
    with pytest.raises(ValueError, match="outside a batch of 2 prompts x 2"):
        batch.add([comp(0, 2, [3])])
    samples = batch.reward_samples([3, 0])
    assert [(s["id"], s["completion"], s["completion_ids"]) for s in samples] == [("b", "p1s1", [9]),
                                                                                 ("a", "p0s0", [3])]


def test_scores_are_placed_by_slot_and_a_missing_component_reads_fill():
    batch = RolloutBatch([{}, {}], [[1], [2]], group_size=2)
    batch.add([comp(i, k, [3]) for i in range(2) for k in range(2)])
    batch.set_scores([2, 3], {"acc": [1.0, 0.0], "fmt": [0.5, 0.5]}, fill=-1.0)
    batch.set_scores([1, 0], {"acc": [0.25, 0.75]}, fill=-1.0)
    assert batch.components == {"acc": [0.75, 0.25, 1.0, 0.0], "fmt": [-1.0, -1.0, 0.5, 0.5]}
    with pytest.raises(ValueError):          # values and slots must have the same length
        batch.set_scores([0], {"acc": [1.0, 2.0]})


def test_train_batch_repeats_each_prompt_for_its_group_and_places_sampling_logprobs():
    batch = RolloutBatch([{}, {}], [[10, 11], [12]], group_size=2)
    batch.add([comp(1, 0, [20, 2]), comp(0, 1, [21, 22, 2, 99]), comp(0, 0, [23]), comp(1, 1, [24])])
    batch.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    tb = batch.train_batch(pad_id=0, eos_id=2)
    assert tb.input_ids.tolist() == [[10, 11, 23, 0, 0], [10, 11, 21, 22, 2], [12, 20, 2, 0, 0], [12, 24, 0, 0, 0]]
    # tokens after EOS are cut (99), and each row's sampling log-probs sit on its completion's positions
    assert tb.loss_mask.tolist() == [[0, 1, 0, 0], [0, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]
    assert tb.sample_logp[1].tolist() == pytest.approx([0.0, -0.1, -0.2, -0.3])
    assert tb.advantages is batch.advantages


def test_rank_splits_and_micro_batches_keep_rows_together_and_trim_padding():
    tb = collate([[1, 2, 3], [4], [5, 6], [7]], [[8], [9, 9, 9, 9], [10], [11]], pad_id=0)
    tb.advantages = torch.arange(4.0)
    # tokens per row 4, 5, 3, 2: the two longest rows go to different ranks, two rows each
    ranks = tb.balanced_split(2)
    assert ranks == [[1, 3], [0, 2]]
    halves = [tb.rows(r) for r in ranks]
    assert [len(h) for h in halves] == [2, 2] and halves[1].advantages.tolist() == [0.0, 2.0]
    mbs = halves[1].micro_batches(1)
    assert [m.input_ids.shape[1] for m in mbs] == [4, 3]            # each trimmed to its own length
    assert [m.loss_mask.shape[1] for m in mbs] == [3, 2]
    assert isinstance(mbs[0], TrainBatch) and mbs[0].sample_logp is None


def testplace_rows_places_values_at_mask_positions():
    like = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.float32)
    rows = [[-0.5, -1.5], [-1.0, -2.0, -3.0, -4.0], []]
    out = place_rows(rows, like)
    assert out.dtype == torch.float32 and out.shape == (3, 5)
    assert out.tolist() == [[0.0, 0.0, -0.5, -1.5, 0.0],
                            [0.0, -1.0, -2.0, -3.0, -4.0],
                            [0.0, 0.0, 0.0, 0.0, 0.0]]


def testplace_rows_truncates_extra_values_and_leaves_missing_zero():
    like = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.float32)
    # row 0 has 3 values (e.g. log-probs of tokens after EOS) for 2 positions -> first 2 kept
    # row 1 has 1 value for 3 positions -> the other 2 stay 0
    out = place_rows([[-0.25, -0.75, -9.0], [-2.0]], like)
    assert out.tolist() == [[0.0, -0.25, -0.75, 0.0], [-2.0, 0.0, 0.0, 0.0]]




def test_masked_samples_take_their_whole_group_out_of_the_loss():
    batch = RolloutBatch([{}, {}], [[10, 11], [12]], group_size=2)
    batch.add([comp(i, k, [20 + i, 2]) for i in range(2) for k in range(2)])
    batch.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    batch.masked = {3}                           # the reward failed on prompt 1, sample 1
    tb = batch.train_batch(pad_id=0, eos_id=2)
    assert batch.masked_groups() == [1]
    assert tb.loss_mask[:2].sum() > 0 and tb.loss_mask[2:].sum() == 0
