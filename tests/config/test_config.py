"""Fast tests of rlframe/config (Hydra composition + validation) and the CLI, in-process (nothing starts)."""
from __future__ import annotations

import sys
import types

import pytest
import yaml

from rlframe.cli import main
from rlframe.config import ConfigError, RLConfig, compose, config_groups, load_config

GROUPS = ["model", "data", "rollout", "reward", "algorithm", "learner", "cluster", "trainer", "experiment"]


def test_default_config_loads_and_validates():
    cfg = load_config()
    assert isinstance(cfg, RLConfig)
    # values from conf/config.yaml and the default group options
    assert cfg.run.name == "preferthinker_tiny"
    assert cfg.learner.zero_stage == 2
    assert cfg.rollout.backend == "vllm"
    assert cfg.algorithm.name == "grpo"
    assert [(f.name, f.weight) for f in cfg.reward.fns] == [("format", 0.3), ("accuracy", 1.0),
                                                           ("profile_similarity", 0.7)]


def test_learner_zero3_group():
    cfg = load_config(["learner=zero3", "trainer.max_steps=7"])
    assert cfg.learner.zero_stage == 3
    assert cfg.trainer.max_steps == 7
    assert compose(["learner=zero1"]).learner.zero_stage == 1     # raw DictConfig, group picked


@pytest.mark.parametrize("override,key,allowed", [
    ("learner.zero_stage=4", "learner.zero_stage", "expected one of 1, 2, 3"),
    ("rollout.backend=foo", "rollout.backend", "expected one of 'vllm', 'hf'"),
    ("algorithm.group_size=1", "algorithm.group_size", "must be >= 2"),
    ("learner.micro_batch_tokens=0", "learner.micro_batch_tokens", "must be >= 1"),
    ("learner.forward_micro_batch_size=0", "learner.forward_micro_batch_size", "must be >= 1"),
    ("critic.forward_micro_batch_tokens=-5", "critic.forward_micro_batch_tokens", "must be >= 1"),
    ("rollout.vllm.block_size=48", "rollout.vllm.block_size", "expected a positive multiple of 32 (vLLM's CPU"),
    ("rollout.vllm.block_size=0", "rollout.vllm.block_size", "expected a positive multiple of 32"),
])
def test_invalid_values_name_key_and_allowed_values(override, key, allowed):
    with pytest.raises(ConfigError) as info:
        load_config([override])
    msg = str(info.value)
    assert key in msg
    assert allowed in msg


def test_vllm_block_size_follows_the_device_kernels():
    """vLLM's CUDA attention takes blocks of 16 tokens, its CPU kernel only multiples of 32."""
    assert load_config(["rollout.vllm.block_size=96"]).rollout.vllm.block_size == 96
    gpu = ["rollout.num_gpus_per_worker=1", "learner.num_gpus_per_worker=1"]
    assert load_config([*gpu, "rollout.vllm.block_size=16"]).rollout.vllm.block_size == 16
    with pytest.raises(ConfigError, match="rollout.vllm.block_size=16: expected a positive multiple of 32"):
        load_config(["rollout.vllm.block_size=16"])


def test_unknown_key_names_key():
    with pytest.raises(ConfigError) as info:
        load_config(["learner.bogus=1"])
    assert "learner.bogus" in str(info.value)


def test_wrong_type_names_key():
    with pytest.raises(ConfigError) as info:
        load_config(["learner.zero_stage=abc"])
    msg = str(info.value)
    assert "learner.zero_stage" in msg
    assert "abc" in msg


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_config(["learner.zero_stage=4", "rollout.backend=foo", "algorithm.group_size=1"])
    msg = str(info.value)
    for key in ("learner.zero_stage=4", "rollout.backend='foo'", "algorithm.group_size=1"):
        assert key in msg
    assert msg.count("\n  - ") == 3


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError)


def test_config_groups_lists_every_group_and_options():
    groups = config_groups()
    assert list(groups) == GROUPS
    assert groups["learner"] == ["zero1", "zero2", "zero3"]
    assert groups["rollout"] == ["hf", "vllm"]
    assert groups["algorithm"] == ["dapo", "dr_grpo", "grpo", "gspo", "ppo", "reinforce_pp", "reinforce_pp_baseline",
                                   "rloo"]


# ------------------------------------------------------------------------------------ CLI
def test_cli_cfg_job_prints_yaml_and_starts_nothing(capsys, monkeypatch):
    # a stand-in driver module: `--cfg job` must return before it is ever imported/used
    fake = types.ModuleType("rlframe.trainer.driver")

    def boom(*a, **k):
        raise AssertionError("Driver started")

    fake.Driver = boom
    monkeypatch.setitem(sys.modules, "rlframe.trainer.driver", fake)
    rc = main(["train", "--cfg", "job", "learner=zero3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "zero_stage" in out
    parsed = yaml.safe_load(out)
    assert parsed["learner"]["zero_stage"] == 3
    assert parsed["trainer"]["stages"] == ["sft", "grpo"]


def test_cli_sft_subcommand_restricts_stages(capsys):
    assert main(["sft", "--cfg", "job"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["stages"] == ["sft"]


def test_cli_invalid_override_returns_2_and_names_key(capsys):
    rc = main(["train", "learner.zero_stage=4"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "learner.zero_stage" in captured.err
    assert captured.out == ""


def test_cli_help_lists_config_groups(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "config groups" in out
    for group in GROUPS:
        assert f"  {group} " in out
    assert "zero1, zero2, zero3" in out


def test_cli_without_command_returns_2(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out.lower()


def test_explicit_head_dim_is_refused_for_vllm_but_allowed_for_hf():
    # measured: vLLM's Qwen2 ignores config.head_dim and then disagrees with transformers
    with pytest.raises(ConfigError, match=r"model.head_dim=64: vLLM's Qwen2 needs head_dim \* num_heads"):
        load_config(["model.head_dim=64", "model.num_heads=4", "model.num_kv_heads=4"])
    cfg = load_config(["model.head_dim=64", "model.num_heads=4", "model.num_kv_heads=4", "rollout=hf"])
    assert cfg.model.head_dim == 64


def test_paper_recipe_experiment_resolves_and_validates_here():
    from rlframe.config import load_config

    cfg = load_config(["experiment=preferthinker_qwen2_5_vl_7b"])
    assert cfg.run.name == "preferthinker_qwen2_5_vl_7b"          # the experiment overrides config.yaml
    assert (cfg.model.arch, cfg.model.dtype, cfg.model.gradient_checkpointing) == ("qwen2_5_vl", "bfloat16", True)
    assert cfg.learner.zero_stage == 3 and cfg.learner.lr == 1e-6 and cfg.learner.num_gpus_per_worker == 1
    a = cfg.algorithm
    assert (a.kl_coef, a.kl_estimator, a.eps_low, a.eps_high, a.loss_agg) == (0.04, "k3", 0.2, 0.28, "token_mean")
    assert cfg.rollout.max_new_tokens == 2048 and cfg.rollout.backend == "hf" and cfg.rollout.num_gpus_per_worker == 1
    assert (cfg.eval.max_new_tokens, cfg.eval.repetition_penalty) == (4096, 1.15)
    assert cfg.data.task == "preference_images" and cfg.trainer.stages == ["sft", "grpo"]


@pytest.mark.parametrize("overrides,message", [
    (["algorithm=ppo", "algorithm.gamma=1.5"], "algorithm.gamma=1.5: must be in [0.0, 1.0]"),
    (["algorithm=ppo", "algorithm.lam=-0.1"], "algorithm.lam=-0.1: must be in [0.0, 1.0]"),
    (["algorithm=ppo", "algorithm.value_clip=0"], "algorithm.value_clip=0.0: must be > 0"),
    (["algorithm.critic_warmup_steps=2"], "algorithm.critic_warmup_steps=2: there is no critic"),
    (["algorithm=ppo", "critic.world_size=3"], "critic.world_size=3: trainer.prompts_per_step*algorithm.group_size"),
    (["algorithm=ppo", "critic.zero_stage=4"], "critic.zero_stage=4: expected one of 1, 2, 3"),
    (["algorithm=dapo", "algorithm.dynamic_sampling.max_rounds=-1"], "algorithm.dynamic_sampling.max_rounds=-1"),
    (["algorithm=dapo", "algorithm.overlong_penalty.cache_len=200"],
     "algorithm.overlong_penalty.expected_len=-72 (rollout.max_new_tokens - cache_len)"),
    (["algorithm=dapo", "algorithm.overlong_penalty.expected_len=128"], "must be in [1, rollout.max_new_tokens=128)"),
])
def test_ppo_and_dapo_keys_are_validated_by_name(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(overrides)
    assert message in str(info.value)


def test_ppo_and_dapo_configs_set_their_values():
    ppo = load_config(["algorithm=ppo"])
    assert ppo.algorithm.name == "gae" and ppo.algorithm.value_clip == 0.2 and ppo.algorithm.kl_in == "reward"
    assert ppo.critic.world_size == 1 and ppo.critic.lr == 1e-3      # conf/config.yaml: the tiny model's rate
    assert load_config(["algorithm=ppo", "algorithm.group_size=1"]).algorithm.group_size == 1   # no group needed
    dapo = load_config(["algorithm=dapo"]).algorithm
    assert (dapo.eps_low, dapo.eps_high, dapo.kl_coef, dapo.loss_agg) == (0.2, 0.28, 0.0, "token_mean")
    assert dapo.dynamic_sampling.enabled and dapo.overlong_penalty.enabled and dapo.overlong_penalty.cache_len == 32


def test_probe_tolerance_follows_the_model_dtype_unless_set():
    from rlframe.weight_sync.coordinator import WeightSync

    for dtype, want in (("float32", 1e-3), ("bfloat16", 0.5), ("float16", 0.5)):
        cfg = load_config([f"model.dtype={dtype}"])
        assert cfg.weight_sync.probe_tolerance is None
        assert WeightSync(cfg.weight_sync, dtype=cfg.model.dtype).tolerance == want
    cfg = load_config(["model.dtype=bfloat16", "weight_sync.probe_tolerance=0.02"])
    assert WeightSync(cfg.weight_sync, dtype=cfg.model.dtype).tolerance == 0.02
    with pytest.raises(ConfigError, match=r"weight_sync.probe_tolerance=0.0: expected a number > 0"):
        load_config(["weight_sync.probe_tolerance=0"])


def test_eval_policies_must_be_model_folders(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    cfg = load_config([f"eval.policies=[{tmp_path / 'model'}]"])
    assert cfg.eval.policies == [str(tmp_path / "model")]
    with pytest.raises(ConfigError, match=r"eval.policies\[1\]=.*nowhere.*not a Hugging Face model folder"):
        load_config([f"eval.policies=[{tmp_path / 'model'},{tmp_path / 'nowhere'}]"])
