"""Dataclass schemas of the whole configuration.

Hydra composes `conf/` on top of `RLConfig` (registered as `rlframe_base`), so a wrong
type or an unknown key fails at composition time, naming the key.  `validate()` then
checks values (allowed choices, ranges, cross-field rules) before any actor starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from rlframe.config.algorithm import (AlgorithmConfig, DynamicSamplingConfig,  # noqa: F401 (re-exported)
                                      MismatchConfig, OverlongConfig)

#: rlframe's default system turn of chat-template prompts (data.system_prompt)
DEFAULT_SYSTEM_PROMPT = ("You are a visual preference assistant. From the images a user liked and disliked, infer "
                         "the user's preference profile, then score and compare the candidate images.")


@dataclass
class RunConfig:
    name: str = "rlframe"
    # Where the run writes; null = outputs/<name>-<timestamp>
    output_dir: Optional[str] = None
    seed: int = 0
    # Where caches live (tokenizer/model built from config, torch extensions); null = .cache
    cache_dir: Optional[str] = None
    # A folder every node mounts at the same path, holding the run folder (null = outputs/<name>-<timestamp>
    # under it): learners then write checkpoints there directly. Unset on a cluster, no shared filesystem is
    # assumed: the learners' files are streamed through Ray to the run folder on the driver's node
    storage: Optional[str] = None


@dataclass
class VisionTowerConfig:
    """The vision tower of a tiny vision-language model built from config (model.arch=qwen2_5_vl)."""
    depth: int = 2
    hidden_size: int = 64
    intermediate_size: int = 128
    num_heads: int = 2
    patch_size: int = 14
    spatial_merge_size: int = 2


@dataclass
class ModelConfig:
    # A Hugging Face model folder; null = build a tiny model from `arch` (random weights)
    path: Optional[str] = None
    # Start from this checkpoint instead (e.g. an SFT output); overrides `path`
    init_from: Optional[str] = None
    arch: str = "qwen2"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 2
    # null = hidden_size / num_heads; Qwen2 allows num_heads * head_dim != hidden_size
    head_dim: Optional[int] = None
    intermediate_size: int = 512
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    # qwen2_5_vl only: the vision tower
    vision: VisionTowerConfig = field(default_factory=VisionTowerConfig)


@dataclass
class DataConfig:
    task: str = "preference_synthetic"
    num_train: int = 4000
    num_eval: int = 256
    num_history: int = 5
    seed: int = 1234
    # PreferImg / PreferThinker records (JSON or JSONL); null = the task generates its data
    path: Optional[str] = None
    # held-out records in the same format; several files comma-separated, e.g. "SP_ID.jsonl,SP_OD.jsonl"
    # (a record without a `split` field is reported under its file's name); null = none
    eval_path: Optional[str] = None
    # without data.eval_path: hold out this fraction of data.path's records (shuffled by data.seed) for evaluation
    val_split_ratio: float = 0.0
    # image paths in the records are relative to this folder; null = the data file's folder
    image_root: Optional[str] = None
    # a bad record: error (stop, naming file, line, field) or skip (drop it, count and report it)
    on_invalid: str = "error"
    # decode every image once at load time (PIL verify); false = check that the files exist only
    verify_images: bool = True
    # image tasks: side in pixels of the synthesized images and of the images the policy sees
    # (resized to a multiple of patch_size * spatial_merge_size; 56 -> 4 tokens per image)
    image_size: int = 56
    # image tasks: Qwen2.5-VL dynamic resolution bounds in pixels (the paper: 3136 and 12845056);
    # null = the checkpoint's preprocessor_config.json, or data.image_size for a model built from config
    min_pixels: Optional[int] = None
    max_pixels: Optional[int] = None
    # the system turn of every prompt rendered with a checkpoint's chat template (TRL-style rewards see it
    # in `prompts`); null = no system turn
    system_prompt: Optional[str] = DEFAULT_SYSTEM_PROMPT
    # image tasks: the user turn, with {liked}, {disliked}, {image_a}, {image_b} where those images go;
    # null = each record's own question (its `conversations`), else rlframe's default layout
    question_template: Optional[str] = None


@dataclass
class VLLMConfig:
    gpu_memory_utilization: float = 0.5
    tensor_parallel_size: int = 1
    enforce_eager: bool = True
    # GiB of KV cache on CPU (VLLM_CPU_KVCACHE_SPACE)
    cpu_kv_cache_gb: int = 1
    max_model_len: int = 1024
    # tokens per KV-cache block (null: 64 on CPU, vLLM's own default on GPU). A prompt's G samples share only its
    # full blocks, so smaller blocks share more of a short prompt; vLLM-CPU needs a multiple of 32
    block_size: Optional[int] = None


@dataclass
class RolloutConfig:
    backend: str = "vllm"
    num_workers: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 256
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0
    # custom Ray resources each worker asks for, e.g. {node_learn: 1}: places the role on nodes started with them
    # (a mapping of name to amount; typed Any so that `key={name: 1}` replaces the value on the command line)
    resources: Any = None
    # roles naming the same pool share one placement group, bundle i holding actor i of each (null: its own)
    pool: Optional[str] = None
    # threads per generator (torch and vLLM-CPU's OpenMP pool); 0 = the node's cores shared among generators
    torch_threads: int = 1
    # a generator that dies is restarted (its engine reloads, then gets the current weights, verified) and its
    # share of the step generated again, at most this many times per generator over the run
    max_restarts: int = 2
    vllm: VLLMConfig = field(default_factory=VLLMConfig)


@dataclass
class RewardFnConfig:
    """One reward component. Where it comes from: a built-in by `name`, or `_target_`
    ("pkg.module:fn" or "pkg.module.fn"), or `path` (a .py file; the attribute is `function`, else `name`),
    or `url` (an `rlframe serve-reward` service)."""
    name: str = "format"
    weight: float = 1.0
    # built-ins and classes: constructor arguments; plain functions: extra keyword arguments of each call
    kwargs: Dict[str, Any] = field(default_factory=dict)
    _target_: Optional[str] = None
    path: Optional[str] = None
    function: Optional[str] = None
    url: Optional[str] = None
    # calling convention: auto (from the signature), batch, trl, openrlhf, verl
    style: str = "auto"
    # samples per call (0 = the whole batch a worker receives)
    batch_size: int = 0
    # seconds per call (0 = no limit); remote: per HTTP request
    timeout_s: float = 0.0
    # the record field given as OpenRLHF `labels` / veRL `ground_truth` (when no reward_model.ground_truth)
    label_key: str = "answer"
    # remote only: bearer token (or the env var RLFRAME_REWARD_TOKEN), retries with exponential backoff
    token: Optional[str] = field(default=None, repr=False)   # never in a repr, config.yaml or a log
    retries: int = 3
    backoff_s: float = 0.5


@dataclass
class RewardConfig:
    num_workers: int = 1
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0
    # custom Ray resources each worker asks for, e.g. {node_learn: 1}: places the role on nodes started with them
    # (a mapping of name to amount; typed Any so that `key={name: 1}` replaces the value on the command line)
    resources: Any = None
    # roles naming the same pool share one placement group, bundle i holding actor i of each (null: its own)
    pool: Optional[str] = None
    # threads for torch (the embedding model) inside each worker
    torch_threads: int = 1
    fns: List[RewardFnConfig] = field(default_factory=list)
    # raise: a failing reward stops the run (after the last checkpoint); fallback: use fallback_value
    on_error: str = "raise"
    fallback_value: float = 0.0
    # none: total = sum(weight * raw); batch: each component z-scored over the step's batch first
    normalize: str = "none"
    # completions are sent to the reward pool in chunks of at least this many samples while generation
    # runs (0 = score after generation)
    stream_batch: int = 32
    # a reward worker that dies is restarted (and its batch retried) up to this many times
    max_restarts: int = 3


@dataclass
class LoraConfig:   # learner.lora: peft LoRA adapters on the policy's linear layers; rank 0 = off (all of it trains)
    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: List[str] = field(default_factory=lambda: [f"{m}_proj" for m in "q k v o gate up down".split()])


@dataclass
class LearnerConfig:
    world_size: int = 2
    zero_stage: int = 2
    offload: bool = False
    lr: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    micro_batch_size: int = 16
    # tokens per micro-batch instead of micro_batch_size rows (veRL's use_dynamic_bsz + ppo_max_token_len_per_gpu):
    # rows of a similar length share a micro-batch, as many as fit (rows x the widest row, or the packed tokens of
    # whole GRPO groups under packing); a sequence longer than this is a micro-batch of its own. null: rows
    micro_batch_tokens: Optional[int] = None
    # micro-batches of the forward passes without gradients (the reference's and old log-probs, the critic's
    # values), in rows or tokens as above: larger than the update's, since no activations are kept (veRL's
    # log_prob_micro_batch_size_per_gpu, OpenRLHF's micro_rollout_batch_size). null, null: the update's own
    forward_micro_batch_size: Optional[int] = None
    forward_micro_batch_tokens: Optional[int] = None
    # "auto" = nccl when GPUs are used, gloo otherwise
    dist_backend: str = "auto"
    # gloo ranks on one machine: ZeRO-1/2's gradient all-reduce and parameter all-gather through a file in /dev/shm
    # instead of loopback sockets (learner/local_collectives.py); ranks on several machines stay on gloo's sockets
    shared_memory_collectives: bool = True
    num_cpus_per_worker: float = 1.0
    num_gpus_per_worker: float = 0.0
    # custom Ray resources each worker asks for, e.g. {node_learn: 1}: places the role on nodes started with them
    # (a mapping of name to amount; typed Any so that `key={name: 1}` replaces the value on the command line)
    resources: Any = None
    # roles naming the same pool share one placement group, bundle i holding actor i of each (null: its own)
    pool: Optional[str] = None
    torch_threads: int = 1
    # padding-free micro-batches (models/shared_prefix.py): the rows that share a prompt become one sequence, the
    # prompt computed once for all of its completions, and sequences (or single rows, as in SFT) share packed rows
    # with position ids and a block mask; Qwen2.5-VL rows too, each group's images once. Eager/SDPA attention (else
    # padded rows); SFT and the critic too
    packing: bool = True
    # torch.compile (inductor, dynamic shapes) the policy and reference forward, and so the backward: fused
    # elementwise ops. The first step pays the compile (about a minute on 2 CPU cores for a 19M model). On CPU in
    # bf16/fp16 the policy's attention also takes a matrix-multiply backward (rlframe/models/cpu_attention.py).
    # Tested with ZeRO-2 (tests/integration/test_learners.py); ZeRO-3 is DeepSpeed's compile support, untested here.
    compile: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class CriticConfig(LearnerConfig):
    """PPO's critic (algorithm.name=gae): its own DeepSpeed group, a value head on the policy's architecture."""
    world_size: int = 1
    lr: float = 1e-5
    micro_batch_size: int = 16
    num_cpus_per_worker: float = 0.5


@dataclass
class TimeoutsConfig:
    """Deadlines of the remote calls that can hang (seconds); `*_per_sample_s` scales with the call's samples."""
    startup_s: float = 900.0          # actor start-up: model loads, process group, engines
    generate_s: float = 300.0
    generate_per_sample_s: float = 2.0
    reward_s: float = 120.0
    reward_per_sample_s: float = 1.0
    train_s: float = 300.0            # reference pass + update (or an SFT step) on each learner rank
    train_per_sample_s: float = 5.0
    weight_sync_s: float = 600.0      # gather on the learners, load on the generators, probe
    checkpoint_s: float = 1800.0


@dataclass
class ClusterConfig:
    # null: start a local Ray; "auto": join the cluster this machine belongs to; or ray://host:port
    address: Optional[str] = None
    num_cpus: Optional[int] = None
    # PACK keeps roles close, SPREAD distributes them across nodes
    placement_strategy: str = "PACK"
    # GPU only: learners and generators share one pool (bundle i holds learner i and generator i: the same GPUs)
    colocate: bool = False
    # Ray's temp dir (null = <cache_dir>/ray)
    temp_dir: Optional[str] = None
    # Ray's own processes are quiet unless this is true
    log_to_driver: bool = False
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    # while waiting on actors, log every N seconds which have not answered yet
    heartbeat_s: float = 60.0


@dataclass
class SFTConfig:
    steps: int = 200
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20
    # cosine decay to this fraction of lr
    min_lr_ratio: float = 0.1
    # evaluate (greedy, held-out) every N steps after min_steps, through the generators (0 = never)
    eval_every: int = 0
    min_steps: int = 0
    # stop SFT early once this eval metric reaches the threshold (null = run all `steps`)
    stop_metric: str = "eval/accuracy"
    stop_threshold: Optional[float] = None


@dataclass
class TrainerConfig:
    # stages to run, in order, by `rlframe train`
    stages: List[str] = field(default_factory=lambda: ["sft", "grpo"])
    max_steps: int = 40
    prompts_per_step: int = 16
    # k > 0: the rollouts of the next k steps run while the learners train, with weights at most k versions old
    # (corrected by algorithm.mismatch); 0 = synchronous
    max_staleness: int = 0
    lr_schedule: str = "constant"
    eval_every: int = 0
    # a complete checkpoint (learner state, run state, policy) every N steps of a stage, and at its end
    save_every: int = 0
    # complete checkpoints kept in <run.output_dir>/checkpoints (the newest K)
    keep_last: int = 2
    # "never" (a new run), "auto" (the newest complete checkpoint in run.output_dir), or a checkpoint folder
    resume: str = "never"
    # after SIGTERM/SIGINT: seconds the current step may take before the run exits without a new checkpoint
    signal_grace_s: float = 120.0
    progress: bool = True
    # GRPO: write N samples per step (prompt, completion, reward components, advantage, weight version) to
    # <run folder>/rollouts/step-XXXXXX.jsonl; replay them with `rlframe reward test --rollouts FILE` (0 = off)
    dump_rollouts: int = 0
    # besides metrics.jsonl (always written): tensorboard, wandb
    loggers: List[str] = field(default_factory=lambda: ["tensorboard"])
    sft: SFTConfig = field(default_factory=SFTConfig)


@dataclass
class WeightSyncConfig:
    # collective: tensor buckets broadcast over a gloo/NCCL group of learner rank 0 and the generators;
    # object_store: pickled buckets through Ray's object store; auto: the group, or the store if it cannot form;
    # cuda_ipc: colocated on GPUs (cluster.colocate=true), the generators load the learners' tensors in place
    # through CUDA IPC handles (vLLM's native weight transfer); GPU only
    transport: str = "auto"
    bucket_mb: float = 16.0
    # verify every sync with a checksum of the received tensors (cuda_ipc: each tensor's byte sum, on the GPU)
    checksum: bool = True
    # collective transport: send only the 2-byte words that changed since the last sync (index + value) when that
    # is under half a bucket; generators patch their copy, the checksum covers the full result. Costs learner
    # rank 0 one more host copy of the weights
    delta: bool = False
    # collective transport over gloo (CPU): when learner rank 0 and every generator share a machine, the buckets
    # go through one file in /dev/shm that the generators map, and the sockets carry only which bucket is ready
    # (ZeRO-3: every learner rank writes its partitions into it, nothing is gathered); false, or a generator that
    # cannot map the file: the bytes go through gloo's sockets. Not used by delta syncs
    shared_memory: bool = True
    # compare the generator's log-probs on a probe sequence with the learner's every N syncs (0 = never)
    probe_every: int = 0
    # largest |log-prob difference| allowed on the probe; null: by model.dtype (1e-3 float32, 0.5 bf16/fp16,
    # whose rounding alone put learner and vLLM up to 0.09 apart on the tiny default policy)
    probe_tolerance: Optional[float] = None


@dataclass
class EvalConfig:
    """`rlframe eval`: greedy decoding of the held-out sets, reported per subset."""
    # 0 = rollout.max_new_tokens
    max_new_tokens: int = 0
    repetition_penalty: float = 1.15
    # one evaluation per value: a sweep over the number of liked/disliked references (empty = data.num_history)
    num_history: List[int] = field(default_factory=list)
    # several model folders evaluated in one start-up (Ray, reward workers and data shared), each into
    # <run>/policy-<i>/; a text policy with the last one's config and tensors is loaded into the running
    # generators, any other restarts them; model.init_from defaults to the first (its tokenizer renders prompts)
    policies: List[str] = field(default_factory=list)


@dataclass
class RLConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
