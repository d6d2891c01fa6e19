"""Configuration rules of vision-language policies (no Ray)."""
from __future__ import annotations

import pytest

from rlframe.config import ConfigError, load_config


def test_vl_experiment_composes_with_the_hf_rollout_and_the_image_task():
    cfg = load_config(["experiment=preferthinker_tiny_vl"])
    assert (cfg.model.arch, cfg.rollout.backend, cfg.data.task) == ("qwen2_5_vl", "hf", "preference_images")
    assert cfg.model.vision.patch_size == 14 and cfg.model.vision.spatial_merge_size == 2


def test_vllm_with_a_vlm_is_refused_before_anything_starts_gpus_or_not():
    # the vLLM engine does not pass images yet: accepted, it would fail after SFT with NotImplementedError
    for extra in ([], ["rollout.num_gpus_per_worker=1"]):
        with pytest.raises(ConfigError, match="rollout.backend=vllm with a vision-language policy: .* use rollout=hf"):
            load_config(["experiment=preferthinker_tiny_vl", "rollout=vllm", *extra])


def test_image_task_needs_a_vlm_and_a_vlm_needs_images():
    # which tasks have images is the task's own declaration (register_task(..., vision=True)), not a name in the core
    with pytest.raises(ConfigError, match="data.task=preference_images: the policy must be a vision-language model"):
        load_config(["data.task=preference_images", "rollout=hf"])
    with pytest.raises(ConfigError, match="has no images; use a task with images \\(data.task=preference_images\\)"):
        load_config(["model.arch=qwen2_5_vl", "rollout=hf"])
    with pytest.raises(ConfigError, match="data.image_size=20: must be >= "):
        load_config(["experiment=preferthinker_tiny_vl", "data.image_size=20"])
    with pytest.raises(ConfigError, match="model.vision.hidden_size=65: must be divisible"):
        load_config(["experiment=preferthinker_tiny_vl", "model.vision.hidden_size=65"])
