"""Dataclass schemas of the `algorithm` section: estimator, policy loss, clip, KL, updates per batch,
mismatch correction, DAPO's dynamic sampling and overlong penalty (imported by schema.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class MismatchConfig:
    """Correction for the generator's sampling log-probs differing from the learner's (old) ones."""
    # tis: token weights min(pi_old / pi_gen, tis_cap); mis: drop sequences whose ratio (geometric mean of the
    # token ratios) is outside [mis_low, mis_high]; none: no correction (the gap is still logged)
    mode: str = "tis"
    tis_cap: float = 2.0
    mis_low: float = 0.5
    mis_high: float = 2.0


@dataclass
class DynamicSamplingConfig:
    """DAPO: groups whose rewards all agree (no learning signal) are dropped and new prompts generated."""
    enabled: bool = False
    # extra generation rounds per step at most; a batch still short after them is filled with dropped groups
    # that stay out of the loss
    max_rounds: int = 2


@dataclass
class OverlongConfig:
    """DAPO's soft overlong penalty, added to the reward: 0 up to expected_len completion tokens, then falling
    linearly to -factor at expected_len + cache_len, -factor beyond."""
    enabled: bool = False
    # null = rollout.max_new_tokens - cache_len (the paper: 16384 of 20480)
    expected_len: Optional[int] = None
    cache_len: int = 32
    factor: float = 1.0


@dataclass
class AlgorithmConfig:
    # the advantage estimator: grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, gae (PPO with a critic:
    # starts the critic role, section `critic`), or a plugin's name
    name: str = "grpo"
    group_size: int = 8
    # the policy loss: ppo (token ratio), gspo (sequence ratio), or a plugin's name
    policy_loss: str = "ppo"
    eps_low: float = 0.2
    eps_high: float = 0.28
    # dual clip: for negative advantages the loss is at most c * |A| (null = off; c > 1)
    dual_clip_c: Optional[float] = None
    kl_coef: float = 0.04
    # k1, k2, k3, k3_clamped (k3 capped at 10: the low-variance KL)
    kl_estimator: str = "k3"
    # loss: kl_coef * KL(pi || ref) in the loss; reward: minus kl_coef * (summed KL of the sampled sequence) in
    # the reward, before the advantages. No reference model is loaded when kl_coef is 0
    kl_in: str = "loss"
    # "token_mean": average over all valid tokens of the micro-batch
    loss_agg: str = "token_mean"
    adv_eps: float = 1e-4
    # each step's batch is split into this many mini-batches, one optimizer update each; old log-probs are
    # computed once before the first, so the ratio and the clip act from the second update on
    updates_per_batch: int = 1
    # passes over the step's batch (each pass makes updates_per_batch updates, mini-batches in the same order)
    epochs: int = 1
    mismatch: MismatchConfig = field(default_factory=MismatchConfig)
    # gae only: discount and GAE lambda over completion tokens; the critic's value clip (null = none); steps at
    # the start of the RL stage in which only the critic trains
    gamma: float = 1.0
    lam: float = 0.95
    value_clip: Optional[float] = None
    critic_warmup_steps: int = 0
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    overlong_penalty: OverlongConfig = field(default_factory=OverlongConfig)
    # modules (pkg.module) or .py files imported on the driver and the learners before names are looked up,
    # so that their @ADVANTAGE_ESTIMATORS.register / @POLICY_LOSSES.register entries exist
    plugins: List[str] = field(default_factory=list)
