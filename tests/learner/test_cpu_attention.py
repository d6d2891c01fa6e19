"""The compiled-bf16 CPU attention (flash forward, matrix-multiply backward) gives SDPA's outputs and gradients, takes
the packed layout's 4-D mask, and leaves every case it does not serve to transformers' SDPA."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from rlframe.data.batching import collate
from rlframe.learner.learner import LearnerWorker
from rlframe.models import cpu_attention
from rlframe.models.cpu_attention import FlashForwardMatmulBackward, additive_mask, use_cpu_sdpa
from rlframe.models.shared_prefix import pack_shared_prefix

from tests.learner.test_shared_prefix import COMPS, PROMPTS, tiny_qwen2


def qkv(b=2, h=3, length=40, d=16, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, length, d, generator=g).to(dtype).requires_grad_() for _ in range(3)]


def grads(fn, tensors, weight):
    for t in tensors:
        t.grad = None
    out = fn(*tensors)
    (out.float() * weight).sum().backward()
    return out.detach().float(), [t.grad.float().clone() for t in tensors]


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("kind", ["causal", "bool", "additive"])
def test_gradients_match_sdpa_as_closely_as_sdpa_matches_float32(kind):
    q, k, v = qkv()
    length = q.shape[2]
    allowed = torch.ones(length, length, dtype=torch.bool).tril()
    allowed[20:, 5:20] = False   # a second sequence in the row: sees the first 5 tokens and itself
    given = {"causal": None, "bool": allowed[None, None], "additive": torch.zeros(length, length).masked_fill(
        ~allowed, float("-inf"))[None, None]}[kind]   # -inf, as a user's own mask may hold
    keep = allowed if kind != "causal" else torch.ones(length, length, dtype=torch.bool).tril()
    mask = additive_mask(given, True, length, length, q)
    assert torch.isfinite(mask).all()
    weight = torch.randn(q.shape, generator=torch.Generator().manual_seed(1))

    def ours(q, k, v):
        return FlashForwardMatmulBackward.apply(q, k, v, mask, q.shape[-1] ** -0.5)

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep[None, None])

    o1, g1 = grads(ours, [q, k, v], weight)
    o2, g2 = grads(sdpa, [q, k, v], weight)
    full = [t.detach().float().requires_grad_() for t in (q, k, v)]
    o3, g3 = grads(sdpa, full, weight)
    assert torch.equal(o1, o2)   # the same forward kernel
    for ours_g, sdpa_g, exact in zip(g1, g2, g3):
        assert rel(ours_g, exact) < 1.5 * rel(sdpa_g, exact) + 1e-3, (rel(ours_g, exact), rel(sdpa_g, exact))
        assert rel(ours_g, exact) < 0.02


def packed_batch():
    batch = collate(PROMPTS, COMPS, pad_id=0)
    return batch, pack_shared_prefix(batch.input_ids, batch.attention_mask, batch.loss_mask)


def test_a_switched_model_gives_the_sdpa_models_logits_and_gradients_packed_and_padded(monkeypatch):
    """Through transformers (grouped-query heads, the packed layout's additive 4-D mask, a padded batch's mask built
    by transformers), with the backward really ours: a float32 SDPA model is the exact reference."""
    sdpa = tiny_qwen2("sdpa").to(torch.bfloat16)
    ours = copy.deepcopy(sdpa)
    assert use_cpu_sdpa(ours) and ours.config._attn_implementation == cpu_attention.NAME
    exact = copy.deepcopy(sdpa).float()
    calls = []
    real = FlashForwardMatmulBackward.backward
    monkeypatch.setattr(FlashForwardMatmulBackward, "backward", staticmethod(lambda ctx, g: calls.append(1) or
                                                                              real(ctx, g)))
    batch, packed = packed_batch()
    for inputs in ({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, packed.model_inputs):
        out = {}
        for name, model in (("ours", ours), ("sdpa", sdpa), ("exact", exact)):
            kwargs = inputs(model.dtype) if callable(inputs) else inputs
            model.zero_grad()
            logits = model(**kwargs).logits
            keep = (kwargs["attention_mask"] if kwargs["attention_mask"].ndim == 2 else
                    (kwargs["input_ids"] != 0)).unsqueeze(-1)   # no loss on padding, as in training
            (logits.float().pow(2) * keep).mean().backward()
            out[name] = logits.float().detach(), [p.grad.float() for p in model.parameters()]
        torch.testing.assert_close(out["ours"][0], out["sdpa"][0])
        worst = max(rel(a, e) for a, e in zip(out["ours"][1], out["exact"][1]))
        baseline = max(rel(a, e) for a, e in zip(out["sdpa"][1], out["exact"][1]))
        assert worst < 1.5 * baseline + 1e-3, (worst, baseline)
    assert len(calls) == 2 * ours.config.num_hidden_layers   # one per layer and forward: no silent fallback


def test_every_case_it_does_not_serve_goes_to_sdpa(monkeypatch):
    model = tiny_qwen2("sdpa").to(torch.bfloat16)
    use_cpu_sdpa(model)
    used = []
    monkeypatch.setattr(FlashForwardMatmulBackward, "apply", lambda *a: used.append(1) or
                        F.scaled_dot_product_attention(a[0], a[1], a[2], attn_mask=a[3]))
    batch, packed = packed_batch()
    with torch.no_grad():   # the reference and old-log-prob passes
        model(**packed.model_inputs(torch.bfloat16))
    model.float()(**packed.model_inputs(torch.float32))   # float32: the multiplies would not be faster
    monkeypatch.setattr(cpu_attention, "MAX_SCORES", 10)   # scores too many for the backward's memory
    model.to(torch.bfloat16)(**packed.model_inputs(torch.bfloat16))
    assert used == []
    monkeypatch.setattr(cpu_attention, "MAX_SCORES", 2 ** 26)
    model(**packed.model_inputs(torch.bfloat16))
    assert len(used) == model.config.num_hidden_layers


def test_dropout_and_a_position_bias_go_to_sdpa(monkeypatch):
    import transformers.integrations.sdpa_attention as sdpa

    served, fell = [], []
    monkeypatch.setattr(FlashForwardMatmulBackward, "apply", lambda *a: served.append(1) or a[0])
    monkeypatch.setattr(sdpa, "sdpa_attention_forward", lambda *a, **kw: fell.append(kw) or ("sdpa", None))
    module = SimpleNamespace(num_key_value_groups=1, is_causal=True)
    q, k, v = qkv()
    assert cpu_attention.cpu_sdpa_attention(module, q, k, v, None, dropout=0.1)[0] == "sdpa"
    assert cpu_attention.cpu_sdpa_attention(module, q, k, v, None, position_bias=torch.zeros(1))[0] == "sdpa"
    assert served == [] and fell[0]["dropout"] == 0.1 and fell[1]["position_bias"] is not None
    out, _ = cpu_attention.cpu_sdpa_attention(module, q, k, v, None)   # neither: served here
    assert served == [1] and len(fell) == 2 and out.shape == (2, 40, 3, 16)


def test_the_learner_keeps_the_packed_layout_with_it():
    """learner.packing chooses the packed forward by attention implementation: this one takes its 4-D mask (when it
    did not, the micro-batches silently went back to padded rows and the step got slower)."""
    model = tiny_qwen2("sdpa")
    worker = LearnerWorker.__new__(LearnerWorker)
    worker.cfg, worker.engine = SimpleNamespace(packing=True), SimpleNamespace(module=model)
    assert worker._packs()
    use_cpu_sdpa(model)
    assert worker._packs()
    worker.cfg.packing = False
    assert not worker._packs()


@pytest.mark.slow
def test_compiled_it_matches_sdpa_with_dynamic_shapes(tmp_path, monkeypatch):
    """How the learners run it (learner.compile=true: inductor, dynamic shapes), over two packed widths."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    sdpa = tiny_qwen2("sdpa").to(torch.bfloat16)
    ours = copy.deepcopy(sdpa)
    use_cpu_sdpa(ours)
    exact = copy.deepcopy(sdpa).float()
    compiled = torch.compile(ours, dynamic=True)
    for cut in (0, 2):   # a second call with shorter completions: another width, the same compiled graph
        batch = collate(PROMPTS, [c[: max(len(c) - cut, 0)] for c in COMPS], pad_id=0)
        packed = pack_shared_prefix(batch.input_ids, batch.attention_mask, batch.loss_mask)
        out, kernels = {}, {}
        for name, model, fn in (("ours", ours, compiled), ("sdpa", sdpa, sdpa), ("exact", exact, exact)):
            model.zero_grad()
            with torch.profiler.profile() as prof:
                logits = fn(**packed.model_inputs(model.dtype)).logits
                (logits.float().pow(2) * (packed.input_ids != 0).unsqueeze(-1)).mean().backward()
            out[name] = logits.float().detach(), [p.grad.float() for p in model.parameters()]
            kernels[name] = {e.key for e in prof.key_averages()}
        flash_backward = "aten::_scaled_dot_product_flash_attention_for_cpu_backward"
        assert flash_backward in kernels["sdpa"] and flash_backward not in kernels["ours"]
        torch.testing.assert_close(out["ours"][0], out["sdpa"][0], atol=0.05, rtol=0.02)   # fused bf16 rounding
        worst = max(rel(a, e) for a, e in zip(out["ours"][1], out["exact"][1]))
        baseline = max(rel(a, e) for a, e in zip(out["sdpa"][1], out["exact"][1]))
        assert worst < 1.5 * baseline + 1e-3, (worst, baseline)
