"""The packed forward gives the padded forward's log-probs and gradients, with each prompt computed once and rows
that share no prompt (SFT) packed padding-free."""
from __future__ import annotations

import pytest
import torch

from rlframe.data.batching import collate
from rlframe.models.logprobs import token_logprobs
from rlframe.models.shared_prefix import pack_shared_prefix, window_logits


def tiny_qwen2(attn: str) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      attn_implementation=attn)
    return Qwen2ForCausalLM(cfg).float()


# two prompts of different lengths, three completions each (one of a single token), one row with no completion,
# and a prompt that appears once (packed on its own)
PROMPTS = [[5, 6, 7], [5, 6, 7], [5, 6, 7], [9, 10, 11, 12, 13], [9, 10, 11, 12, 13], [9, 10, 11, 12, 13],
           [20, 21], [9, 10, 11, 12, 13]]
COMPS = [[30, 31, 32, 33], [34], [35, 36], [40, 41, 42, 43, 44, 45], [46, 47], [48, 49, 50], [51, 52, 53], []]


def padded_and_packed(model, batch):
    padded = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    packed = pack_shared_prefix(batch.input_ids, batch.attention_mask, batch.loss_mask)
    out = packed.gather(model(**packed.model_inputs(torch.float32)).logits)
    return padded, out, packed


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_log_probs_and_gradients_match_the_padded_forward(attn):
    model = tiny_qwen2(attn)
    batch = collate(PROMPTS, COMPS, pad_id=0)
    padded, packed_logits, packed = padded_and_packed(model, batch)
    # three groups of 10, 16 and 5 tokens: the 5 shares the 10's row; nothing is wider than the widest group
    assert packed.input_ids.shape == (2, 16)
    # each prompt once: 3 + 5 + 2 prompt tokens + every completion token, instead of every row's prompt again
    assert int((packed.input_ids != 0).sum()) <= 10 + sum(map(len, COMPS))
    same_logprobs_and_gradients(model, batch, PROMPTS, padded, packed_logits)


def same_logprobs_and_gradients(model, batch, prompts, padded, packed_logits):
    targets, mask = batch.input_ids[:, 1:], batch.loss_mask
    a, b = token_logprobs(padded, targets), token_logprobs(packed_logits, targets)
    assert torch.allclose(a * mask, b * mask, atol=1e-5), (a * mask - b * mask).abs().max()
    # the prompt's own positions are right too (their logits are the prompt's, computed once)
    prompt_pos = torch.zeros_like(mask)
    for i, p in enumerate(prompts):
        prompt_pos[i, : len(p) - 1] = 1
    assert torch.allclose(a * prompt_pos, b * prompt_pos, atol=1e-5)
    # gradients of a loss on the completion tokens agree parameter by parameter
    weights = torch.linspace(-1, 1, mask.numel()).view_as(mask)
    grads = []
    for logp in (a, b):
        model.zero_grad()
        (logp * mask * weights).sum().backward(retain_graph=True)
        grads.append([p.grad.clone() for p in model.parameters()])
    for ga, gb in zip(*grads):
        assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4), (ga - gb).abs().max()


def test_the_lm_head_runs_only_where_a_loss_column_reads():
    """`loss_start` and `logits_to_keep`: the learner's window of columns gives the full forward's logits there,
    packed and padded, while the LM head sees only the positions the window reads."""
    from rlframe.models.loading import takes_logits_to_keep

    model = tiny_qwen2("sdpa")
    assert takes_logits_to_keep(model) and not takes_logits_to_keep(torch.nn.Linear(2, 2))
    prompts, comps = [[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 9, 10], [11, 12, 13, 14], [11, 12, 13, 14]], \
        [[30, 31, 32], [33, 34], [35, 36, 37, 38], [39]]
    batch = collate(prompts, comps, pad_id=0)
    start = batch.loss_start()
    assert start == 3   # the shortest prompt's last position scores its first completion token
    padded, full, packed = padded_and_packed(model, batch)
    heads = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: heads.append(i[0].shape[1]))
    window, at = window_logits(model, batch, packed, torch.float32, keeps=True)
    assert at == start and torch.allclose(window, full[:, start:], atol=1e-5)
    # packed rows of 6 + 3 + 2 and 4 + 4 + 1 tokens: the head skips the prompts' first positions
    assert heads == [len(packed.kept(start))] and len(packed.kept(start)) < packed.input_ids.shape[1]
    padded_window, _ = window_logits(model, batch, None, torch.float32, keeps=True)
    assert heads[1] == batch.input_ids.shape[1] - start
    assert torch.allclose(padded_window, padded[:, start:], atol=1e-5)
    for layout in (packed, None):   # a model without logits_to_keep: every position, the same window
        heads.clear()
        every, _ = window_logits(model, batch, layout, torch.float32, keeps=False)
        assert heads[0] == (layout or batch).input_ids.shape[1]
        assert torch.allclose(every, window if layout else padded_window, atol=1e-5)
    hook.remove()
    mask = batch.loss_mask
    assert not mask[:, :start].any() and mask[:, start].any()   # nothing the loss reads is cut off
    assert batch.rows(slice(0, 0)).loss_start() == 0


def test_a_completion_never_sees_another_completion():
    model = tiny_qwen2("sdpa")
    batch = collate(PROMPTS[:3], COMPS[:3], pad_id=0)
    _, before, _ = padded_and_packed(model, batch)
    changed = [list(c) for c in COMPS[:3]]
    changed[0] = [60, 61, 62, 63]                              # another first completion, same length
    batch2 = collate(PROMPTS[:3], changed, pad_id=0)
    _, after, _ = padded_and_packed(model, batch2)
    assert torch.allclose(before[1:], after[1:], atol=1e-6)    # the other rows' logits did not move
    assert not torch.allclose(before[0], after[0])


# SFT-like rows: every prompt its own, lengths 11, 4, 5 and 5
SFT_PROMPTS = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11]]
SFT_ANSWERS = [[20, 21, 22, 23, 24, 25, 26, 27], [28, 29], [30], [31, 32, 33]]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_rows_without_a_shared_prompt_are_packed_padding_free(attn):
    model = tiny_qwen2(attn)
    batch = collate(SFT_PROMPTS, SFT_ANSWERS, pad_id=0)
    padded, packed_logits, packed = padded_and_packed(model, batch)
    # the 11-token row alone, the two 5-token rows together, the 4-token row: 3 rows of 11 instead of 4
    assert packed.input_ids.shape == (3, 11)
    assert packed.position_ids[1].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0]   # restarting per sequence
    same_logprobs_and_gradients(model, batch, SFT_PROMPTS, padded, packed_logits)
    # a sequence never sees the one packed beside it: changing the first leaves the second's logits alone
    other = collate([*SFT_PROMPTS[:2], [6, 7, 8, 44], SFT_PROMPTS[3]], SFT_ANSWERS, pad_id=0)
    assert pack_shared_prefix(other.input_ids, other.attention_mask, other.loss_mask).row.tolist() == \
        packed.row.tolist()                                  # the same layout, the third row's last prompt token new
    _, after, _ = padded_and_packed(model, other)
    untouched = [0, 1, 3]                                    # the fourth shares the third's packed row
    assert torch.allclose(packed_logits[untouched], after[untouched], atol=1e-6)
    assert not torch.allclose(packed_logits[2, 3], after[2, 3])


def test_nothing_saved_falls_back_to_padded_rows():
    # no shared prompt, and no two rows fit beside each other within the widest (3, 3, 4 tokens)
    batch = collate([[1, 2], [3, 4], [1, 2, 3]], [[5], [6], [7]], pad_id=0)
    assert pack_shared_prefix(batch.input_ids, batch.attention_mask, batch.loss_mask) is None


def test_the_critic_values_match_the_padded_forward(tmp_path):
    from rlframe.learner.critic import ValueModel

    tiny_qwen2("sdpa").save_pretrained(tmp_path)
    critic = ValueModel(str(tmp_path), torch.float32)
    torch.nn.init.normal_(critic.value_head.weight)           # a head that is not zero, so values differ by row
    batch = collate(PROMPTS, COMPS, pad_id=0)
    padded = critic(batch.input_ids, batch.attention_mask)[:, :-1]
    packed = pack_shared_prefix(batch.input_ids, batch.attention_mask, batch.loss_mask)
    out = packed.gather(critic(**packed.model_inputs(torch.float32)))
    mask = batch.loss_mask
    assert torch.allclose(padded * mask, out * mask, atol=1e-5)
    assert (padded * mask).abs().sum() > 0
