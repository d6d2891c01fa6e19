"""Fast tests of rlframe/data/batching.py and rlframe/data/sampler.py (pure)."""
from __future__ import annotations

import pytest
import torch

from rlframe.data.batching import balanced_split, collate, split_even, token_micro_batches, truncate_after_eos
from rlframe.data.sampler import EpochSampler

PAD, EOS = 0, 9


# ------------------------------------------------------------------------------------ truncate_after_eos
def test_truncate_after_eos():
    assert truncate_after_eos([5, 6, 9, 7, 9, 8], 9) == [5, 6, 9]      # first EOS kept, rest dropped
    assert truncate_after_eos([9, 1, 2], 9) == [9]
    assert truncate_after_eos([5, 6, 7], 9) == [5, 6, 7]               # no EOS: unchanged
    assert truncate_after_eos([5, 9, 7], None) == [5, 9, 7]            # no eos_id: unchanged
    assert truncate_after_eos((), 9) == []
    assert isinstance(truncate_after_eos((1, 2), 9), list)


# ------------------------------------------------------------------------------------ collate
def test_collate_shapes_padding_and_loss_mask():
    prompts = [[1, 2, 3], [4, 5]]
    completions = [[6, 9, 7, 7], [8, 8, 8]]   # row 0: EOS at index 1, then 2 tokens dropped
    out = collate(prompts, completions, pad_id=PAD, eos_id=EOS)
    # sequences: [1,2,3,6,9] (len 5) and [4,5,8,8,8] (len 5) -> L = 5, mask width L-1 = 4
    assert out.input_ids.tolist() == [[1, 2, 3, 6, 9], [4, 5, 8, 8, 8]]
    assert out.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    # position t scores token t+1: row 0 completion tokens sit at 3, 4 -> mask positions 2, 3
    # row 1 completion tokens at 2, 3, 4 -> mask positions 1, 2, 3
    assert out.loss_mask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    assert out.input_ids.dtype == torch.long
    assert out.attention_mask.dtype == torch.long
    assert out.loss_mask.dtype == torch.float32


def test_collate_right_pads_with_pad_id():
    prompts = [[1, 2], [3, 4, 5, 6]]
    completions = [[7], [8, 9, 10]]          # EOS 9 in row 1 -> [8, 9]; 10 dropped
    out = collate(prompts, completions, pad_id=-1, eos_id=EOS)
    # seq 0 = [1,2,7] (3), seq 1 = [3,4,5,6,8,9] (6) -> L = 6
    assert out.input_ids.tolist() == [[1, 2, 7, -1, -1, -1], [3, 4, 5, 6, 8, 9]]
    assert out.attention_mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]
    # row 0: token 7 at index 2 -> mask position 1; row 1: tokens at 4, 5 -> positions 3, 4
    assert out.loss_mask.tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 1, 1]]
    assert out.loss_mask.shape == (2, 5)
    # every masked position t predicts a completion token: input_ids[:, 1:][mask] are exactly them
    targets = out.input_ids[:, 1:][out.loss_mask.bool()]
    assert targets.tolist() == [7, 8, 9]


def test_collate_without_eos_id_keeps_everything_and_empty_completion():
    out = collate([[1, 2], [3]], [[9, 5], []], pad_id=PAD)
    # no eos_id: [1,2,9,5] (4) and [3] (1)
    assert out.input_ids.tolist() == [[1, 2, 9, 5], [3, 0, 0, 0]]
    # L = 4 -> mask width 3; row 0 completion at 2, 3 -> positions 1, 2; empty completion -> nothing
    assert out.loss_mask.tolist() == [[0, 1, 1], [0, 0, 0]]


def test_collate_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        collate([[1], [2]], [[3]], pad_id=PAD)


# ------------------------------------------------------------------------------------ split_even
def test_split_even():
    slices = split_even(10, 3)
    assert [s.stop - s.start for s in slices] == [4, 3, 3]
    assert [(s.start, s.stop) for s in slices] == [(0, 4), (4, 7), (7, 10)]   # contiguous, cover 0..10
    assert [(s.start, s.stop) for s in split_even(8, 4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert [(s.start, s.stop) for s in split_even(2, 3)] == [(0, 1), (1, 2), (2, 2)]
    items = list(range(11))
    assert sum((items[s] for s in split_even(11, 4)), []) == items


def test_balanced_split_evens_tokens_keeps_groups_and_row_counts():
    # 4 groups of 2 rows; groups of 10, 10, 2 and 2 tokens per row: a contiguous split puts 40 against 8 tokens
    costs = [10, 10, 10, 10, 2, 2, 2, 2]
    parts = balanced_split(costs, 2, unit=2)
    assert parts == [[0, 1, 4, 5], [2, 3, 6, 7]]                     # whole groups, 24 tokens each
    # row by row when the groups do not divide evenly over the parts (3 groups, 2 ranks): rows stay 3 + 3
    parts = balanced_split([9, 9, 1, 1, 5, 5], 2, unit=2)
    assert sorted(len(p) for p in parts) == [3, 3] and sorted(sum(parts, [])) == list(range(6))
    assert sorted(sum([9, 9, 1, 1, 5, 5][i] for i in p) for p in parts) == [15, 15]
    # random costs: every row exactly once, row counts as split_even's, the spread no worse than contiguous
    gen = torch.Generator().manual_seed(0)
    for n, k in [(64, 2), (30, 4), (7, 3)]:
        costs = torch.randint(1, 200, (n,), generator=gen).tolist()
        parts = balanced_split(costs, k)
        assert sorted(sum(parts, [])) == list(range(n))
        assert [len(p) for p in parts] == [s.stop - s.start for s in split_even(n, k)]
        loads = [sum(costs[i] for i in p) for p in parts]
        contiguous = [sum(costs[s]) for s in split_even(n, k)]
        assert max(loads) - min(loads) <= max(max(contiguous) - min(contiguous), max(costs))


def test_packed_groups_are_balanced_by_what_the_packed_forward_computes():
    """Under learner.packing a group's prompt is computed once: a long prompt with short completions costs less
    than its rows' summed tokens say, and the ranks are balanced by the packed cost."""
    shapes = [(60, 1), (2, 30), (2, 28), (10, 10)]   # 4 groups of 4 rows: (prompt, completion) tokens
    prompts = [[3 + g] * p for g, (p, _) in enumerate(shapes) for _ in range(4)]
    data = collate(prompts, [[50] * c for _, c in shapes for _ in range(4)], pad_id=0)
    costs = data.token_costs(4, packed=True)
    assert [sum(costs[4 * g: 4 * g + 4]) for g in range(4)] == [p + 4 * c for p, c in shapes]   # 64, 122, 114, 50
    assert data.token_costs(4) == data.attention_mask.sum(1).tolist()
    packed = [sum(costs[4 * g] * 4 for g in range(4) if 4 * g in rows) for rows in data.balanced_split(2, 4, True)]
    summed = [sum(costs[4 * g] * 4 for g in range(4) if 4 * g in rows) for rows in data.balanced_split(2, 4)]
    assert max(packed) / min(packed) < 1.05 < max(summed) / min(summed)   # 178 vs 172 packed; 236 vs 114 summed


def test_token_micro_batches_fill_a_budget_longest_first_and_meet_an_agreed_count():
    # padded rows: a micro-batch costs rows x its widest row; 9+9 fill 18, 8+4 cost 16, 3+2 cost 6
    widths = [3, 9, 4, 8, 2, 9]
    rows = [[i] for i in range(6)]
    assert token_micro_batches(rows, widths, 18, packed=False) == [[1, 5], [3, 2], [0, 4]]
    # another rank needs 4: the costliest micro-batch (18 tokens) is split
    assert token_micro_batches(rows, widths, 18, packed=False, count=4) == [[1], [5], [3, 2], [0, 4]]
    # a row wider than the budget is a micro-batch of its own
    assert token_micro_batches(rows, widths, 5, packed=False)[:2] == [[1], [5]]
    with pytest.raises(ValueError, match="7 micro-batches asked of 6 units"):
        token_micro_batches(rows, widths, 18, packed=False, count=7)
    # packed GRPO groups stay whole and cost their packed rows (never wider than the widest group) x that width:
    # 20 with 12 is 2 rows of 20 (40 tokens), 12 with 7 is 2 rows of 12 (24)
    groups = [[0, 1], [2, 3], [4, 5]]
    assert token_micro_batches(groups, [20, 7, 12], 24, packed=True) == [[0, 1], [4, 5, 2, 3]]
    assert token_micro_batches(groups, [20, 7, 12], 23, packed=True) == [[0, 1], [4, 5], [2, 3]]
    # 8 and 7 share the second row under 20: 40 tokens for all three
    assert token_micro_batches(groups, [20, 8, 7], 40, packed=True) == [[0, 1, 2, 3, 4, 5]]
    # random widths: every row once, within the budget unless alone, never fewer micro-batches than asked
    gen = torch.Generator().manual_seed(0)
    for n, budget in [(40, 64), (17, 30), (5, 1000)]:
        widths = torch.randint(1, 40, (n,), generator=gen).tolist()
        chunks = token_micro_batches([[i] for i in range(n)], widths, budget, packed=False)
        assert sorted(sum(chunks, [])) == list(range(n))
        assert all(len(c) == 1 or len(c) * max(widths[i] for i in c) <= budget for c in chunks)
        assert len(token_micro_batches([[i] for i in range(n)], widths, budget, False, count=n)) == n


# ------------------------------------------------------------------------------------ EpochSampler
def test_epoch_sampler_permutations_reproducible_and_reshuffled():
    s = EpochSampler(7, seed=3)
    e0, e1, e2 = s.take(7), s.take(7), s.take(7)
    for e in (e0, e1, e2):
        assert sorted(e) == list(range(7))          # a permutation: no repeats within an epoch
    assert len({tuple(e0), tuple(e1), tuple(e2)}) == 3   # reshuffled each epoch
    assert s.state_dict() == {"epoch": 2, "pos": 7}
    again = EpochSampler(7, seed=3)
    assert again.take(21) == e0 + e1 + e2           # same seed -> same stream (take sizes do not matter)
    other = EpochSampler(7, seed=4)
    assert other.take(7) != e0


def test_epoch_sampler_takes_across_epoch_boundary():
    s = EpochSampler(5, seed=0)
    first = s.take(3)
    second = s.take(4)                              # 2 from epoch 0, 2 from epoch 1
    ref = EpochSampler(5, seed=0).take(10)
    assert first + second == ref[:7]
    assert sorted(first + second[:2]) == list(range(5))
    assert s.state_dict() == {"epoch": 1, "pos": 2}


def test_epoch_sampler_state_dict_resumes_exactly():
    s = EpochSampler(6, seed=11)
    s.take(4)
    s.take(5)                                       # epoch 1, pos 3
    state = s.state_dict()
    assert state == {"epoch": 1, "pos": 3}
    expected = s.take(10)
    resumed = EpochSampler(6, seed=11)
    resumed.take(2)                                 # its own position is overwritten
    resumed.load_state_dict(dict(state))
    assert resumed.take(10) == expected
    assert resumed.state_dict() == s.state_dict() == {"epoch": 3, "pos": 1}


def test_epoch_sampler_rejects_empty():
    with pytest.raises(ValueError):
        EpochSampler(0, seed=0)


def test_collate_rejects_an_empty_prompt():
    with pytest.raises(ValueError, match="at least one token"):
        collate([[]], [[5, 6, 7]], pad_id=0)
