"""Streaming rollouts: whole groups come back from every generator as they finish, nothing lost or split."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from rlframe.config.schema import ClusterConfig, RolloutConfig
from rlframe.data.rollout_batch import RolloutBatch
from rlframe.trainer.driver import Driver
from rlframe.rollout.engine import SamplingSettings
from rlframe.rollout.generator import RolloutWorker

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_stream_from_two_generators_yields_whole_groups(ray_session, start_role, tiny_model_dir, tmp_path, backend):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({f"t{i}": i for i in range(512)}, "t1")),
                                  eos_token="t2", pad_token="t0")
    tok.save_pretrained(tmp_path / "tok")
    cfg = RolloutConfig(backend=backend, torch_threads=1)
    cfg.vllm.max_model_len = 256
    group = start_role("rollout", RolloutWorker, 2, (tiny_model_dir, str(tmp_path / "tok"), cfg, "float32", 0, 2, 0))
    prompts = [[10 + i, 20 + i, 30 + i] for i in range(6)]
    params = SamplingSettings(n=3, temperature=1.0, max_new_tokens=12)
    driver = SimpleNamespace(generators=group, generate_deadline=lambda samples: 600.0,
                             cfg=SimpleNamespace(cluster=ClusterConfig()))   # what generate_stream reads
    chunks = list(Driver.generate_stream(driver, prompts, params))
    comps = [c for chunk in chunks for c in chunk]
    assert Counter(c.prompt_index for c in comps) == {i: 3 for i in range(6)}   # every sample, once
    for chunk in chunks:                                   # a chunk never splits a group
        counts = Counter(c.prompt_index for c in chunk)
        assert set(counts.values()) == {3}
    # the rollout batch places every sample in its slot, whatever order the groups arrived in
    batch = RolloutBatch([{"id": i} for i in range(6)], prompts, 3)
    for chunk in chunks:
        batch.add(chunk)
    assert [(c.prompt_index, c.sample_index) for c in batch.done()] == [(i, k) for i in range(6) for k in range(3)]
    assert all(0 < len(c.token_ids) <= 12 and len(c.logprobs) == len(c.token_ids) for c in comps)
