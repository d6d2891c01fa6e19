"""Weight sync: after a sync every generator's greedy output equals the learner's own greedy output."""
from __future__ import annotations

from dataclasses import replace

import pytest

from rlframe.config.schema import RolloutConfig, WeightSyncConfig
from rlframe.rollout.engine import SamplingSettings
from rlframe.rollout.generator import RolloutWorker
from rlframe.weight_sync.coordinator import WeightSync

from test_learners import fixed_batch, shards, start_learners

pytestmark = pytest.mark.integration
PROBE = [11, 12, 13, 14, 15, 16]


def test_sync_makes_generators_match_learner(ray_session, start_role, tiny_model_dir, tmp_path):
    ray = ray_session
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({f"t{i}": i for i in range(512)}, "t1")),
                                  eos_token="t2", pad_token="t0")
    tok.save_pretrained(tmp_path / "tok")
    gens = []
    for backend in ("vllm", "hf"):
        cfg = RolloutConfig(backend=backend)
        cfg.vllm.max_model_len = 256
        gens.append(start_role(f"rollout-{backend}", RolloutWorker, 1,
                               (tiny_model_dir, str(tmp_path / "tok"), cfg, "float32", 0, 2, 0)))
    learners = start_learners(ray, start_role, tiny_model_dir, 3, ref=False)
    batch = fixed_batch()
    for _ in range(4):  # move the learner's weights away from the generators'
        ray.get(learners.call_each("sft_step", [(sh, 2e-2) for sh in shards(batch)]))
    expected = learners.run("greedy_generate", PROBE, 16)[0]
    greedy = SamplingSettings(n=1, temperature=0.0, max_new_tokens=16)

    def generator_outputs():
        return [ray.get(g.actors[0].generate.remote([PROBE], greedy))[0].token_ids for g in gens]

    assert all(out != expected for out in generator_outputs())  # the check below can fail
    info = learners.run("gather_weights", 0.5, True)[0]
    results = ray.get([g.actors[0].update_weights.remote(7, info) for g in gens])
    assert [r.version for r in results] == [7, 7]
    assert all(r.bytes == info.bytes for r in results)
    assert generator_outputs() == [expected, expected]
    mine = learners.run("probe_logprobs", PROBE)[0]
    for g in gens:
        theirs = ray.get(g.actors[0].probe_logprobs.remote(PROBE))
        assert max(abs(a - b) for a, b in zip(mine, theirs)) < 1e-3

    # a transfer that does not hash to the learner's digest fails loudly
    with pytest.raises(ray.exceptions.RayTaskError, match="checksum mismatch"):
        ray.get(gens[1].actors[0].update_weights.remote(8, replace(info, digest="0" * 32)))

    # the tensor transport (weight_sync.transport=collective): ZeRO-3 gathers, learner rank 0 broadcasts
    for _ in range(2):
        ray.get(learners.call_each("sft_step", [(sh, 2e-2) for sh in shards(batch)]))
    expected = learners.run("greedy_generate", PROBE, 16, 2)[0]   # the generators stop at EOS (id 2)
    assert all(out != expected for out in generator_outputs())
    sync = WeightSync(WeightSyncConfig(transport="collective", bucket_mb=0.5), timeout_s=120)
    for g in gens:   # learner rank 0 is in one group at a time: a new source (a new group) per generator
        sync.new_source()
        stats = sync.sync(learners, g, 9, (PROBE,))
        assert stats["weight_sync/bytes"] == info.bytes and stats["weight_sync/probe_max_abs_diff"] < 1e-3
        assert stats["weight_sync/send_seconds"] > 0
        assert stats["weight_sync/shared_memory"] == 1   # one machine: the buckets went through /dev/shm
        assert stats["weight_sync/sharded"] == 1         # ZeRO-3: each rank wrote its own partitions there
    assert generator_outputs() == [expected, expected]
