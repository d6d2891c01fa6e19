"""The policy update of one RL step (pure torch): mini-batches, epochs, old log-probs, mismatch weights, the loss.

Independent of DeepSpeed so that it can be tested with a plain torch model: `engine` is anything with
DeepSpeed's engine calls (`set_gradient_accumulation_boundary(last)` before each micro-batch, `backward(loss)`,
`step()` after every micro-batch, which updates at the boundary, and `get_global_grad_norm()`). The boundary is
the last micro-batch of each mini-batch, so an update need not hold DeepSpeed's configured accumulation count
(token budgets vary it). Every rank runs the same number of forward, backward and step calls (same mini-batch
and micro-batch counts), which keeps ZeRO-3's collectives in lockstep.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

import torch
import torch.nn.functional as F

from rlframe.config.schema import AlgorithmConfig
from rlframe.data.batching import TrainBatch, split_even, token_micro_batches
from rlframe.learner.losses import KL_ESTIMATORS, agg_units, masked_mean, mismatch_weights, policy_loss, value_loss
from rlframe.models.logprobs import window_logprobs
from rlframe.models.shared_prefix import prompt_groups

# micro-batch -> (logits [B, L-1-start, V] of the columns start.., start): column t scores token t+1; the columns
# before `start` (TrainBatch.loss_start) are prompt on every row, so their logits are not computed
Forward = Callable[[TrainBatch], tuple[torch.Tensor, int]]
SumOverRanks = Callable[[list[float]], list[float]]   # element-wise sum over the data-parallel ranks


def loss_scales(minis: list[list[TrainBatch]], agg: str, gas: int, world: int,
                over_ranks: SumOverRanks = lambda xs: xs) -> list[list[float]]:
    """A factor per micro-batch loss so that each update's gradient is the mean over the whole update.

    DeepSpeed divides every micro-batch loss by its accumulation steps (`gas`) and averages gradients over the
    ranks, so without these factors `token_mean` would weight a token by 1 / (its own micro-batch's tokens):
    tokens of short completions count more when micro-batches or ranks hold fewer tokens. With them a token
    weighs 1 / (the update's tokens over every rank), as in DAPO, TRL and veRL, whatever the micro-batch size
    or the split. `over_ranks` sums the per-update unit counts over the ranks (one all-reduce)."""
    local = [[agg_units(agg, mb.loss_mask) for mb in mini] for mini in minis]
    totals = over_ranks([sum(units) for units in local])
    return [[u * gas * world / total if total > 0 else 0.0 for u in units] for units, total in zip(local, totals)]


def updates(algo: AlgorithmConfig) -> int:
    """Optimizer updates per RL step."""
    return algo.updates_per_batch * algo.epochs


def needs_old_logprobs(algo: AlgorithmConfig, has_ref: bool) -> bool:
    """A separate no-grad pass for pi_old only when it differs from the first update's own forward (more than one
    update), or when the driver needs it before the update (KL as a reward penalty)."""
    return updates(algo) > 1 or (algo.kl_in == "reward" and has_ref and algo.kl_coef > 0)


def minibatches(batch: TrainBatch, parts: int, micro: int, device: torch.device | str = "cpu",
                tokens: int | None = None, packed: bool = False,
                agree: Callable[[list[int]], list[int]] = lambda counts: counts) -> list[list[TrainBatch]]:
    """`parts` contiguous row slices (one optimizer update each), each cut into micro-batches of `micro` rows, or
    with `tokens` into micro-batches of at most that many tokens (`token_micro_batches`; GRPO groups kept whole
    when `packed`, the shared-prefix forward). `agree` takes this rank's micro-batch count per update and returns
    the largest over the ranks. Every micro-batch carries `index`, its rows' positions in `batch` (`in_row_order`)."""
    whole = replace(batch, index=torch.arange(len(batch)))
    minis = [whole.rows(sl) for sl in split_even(len(batch), parts)]
    if tokens is None:
        return [m.micro_batches(micro, device) for m in minis]
    layouts = [_units(m, packed) for m in minis]
    counts = [int(c) for c in agree([len(token_micro_batches(u, w, tokens, packed)) for u, w, _ in layouts])]
    out = []
    for m, (units, widths, lengths), count in zip(minis, layouts, counts):
        ok = count <= len(units)   # else another rank needs more micro-batches than this one has groups: rows
        plan = token_micro_batches(units if ok else [[r] for r in range(len(m))], widths if ok else lengths, tokens,
                                   packed and ok, count)
        out.append([m.rows(rows).trimmed(device) for rows in plan])
    return out


def _units(batch: TrainBatch, packed: bool) -> tuple[list[list[int]], list[int], list[int]]:
    """The rows that stay in one micro-batch and their tokens: prompt groups when `packed`, else single rows."""
    if not packed:
        lengths = batch.attention_mask.sum(1).tolist()
        return [[r] for r in range(len(batch))], lengths, lengths
    images = None if batch.pixel_values is None else (batch.pixel_values, batch.image_grid_thw)
    groups, widths, lengths = prompt_groups(batch.input_ids, batch.attention_mask, batch.loss_mask, images)
    return [rows for _, rows in groups], widths, lengths


def in_row_order(minis: list[list[TrainBatch]], values: torch.Tensor) -> torch.Tensor:
    """Per-row results stacked in micro-batch order ([rows, ...]) back in the rank batch's row order."""
    out = torch.empty_like(values)
    out[torch.cat([mb.index.cpu() for mini in minis for mb in mini])] = values
    return out


def regroup(minis: list[list[TrainBatch]], parts: list[TrainBatch], values: list[torch.Tensor]
            ) -> list[list[torch.Tensor]]:
    """Per-token results of a no-grad pass that ran over other micro-batches (`parts`, `values[i]` [b_i, w_i-1]),
    laid out as the update's micro-batches (`minis`): each row found by its `index`, cut to its micro-batch's
    width. Both must come from `minibatches` of the same rank batch."""
    width = max(v.shape[1] for v in values)
    rows = values[0].new_zeros(sum(len(p) for p in parts), width)
    for part, v in zip(parts, values):
        rows[part.index.to(rows.device)] = F.pad(v, (0, width - v.shape[1]))
    return [[rows[mb.index.to(rows.device), : mb.input_ids.shape[1] - 1] for mb in mini] for mini in minis]


@torch.no_grad()
def entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-position entropy of softmax(logits / T) ([B, T]); one row at a time, so that the temporaries stay
    one sequence's size, not the micro-batch's [B, T, vocab]."""
    out = []
    for row in logits:
        z = row.float() / temperature
        out.append(torch.logsumexp(z, -1) - (torch.softmax(z, -1) * z).sum(-1))
    return torch.stack(out)


def sequence_kl(logp: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, estimator: str) -> torch.Tensor:
    """Each sequence's KL to the reference, summed over its tokens ([B]): the reward penalty of kl_in=reward."""
    return (KL_ESTIMATORS[estimator](logp, ref) * mask.to(logp.dtype)).sum(-1)


def pad_rows(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """Micro-batch tensors [b_i, w_i] (each trimmed to its own width) back as one [sum b_i, width] on the CPU."""
    return torch.cat([F.pad(x.detach().float().cpu(), (0, width - x.shape[1])) for x in parts])


def token_kl(minis: list[list[TrainBatch]], olds: list[list[torch.Tensor]], refs: list[list[torch.Tensor]],
             estimator: str, width: int) -> torch.Tensor:
    """Each completion token's KL to the reference ([rows, width], 0 off the mask): GAE's per-token penalty."""
    kl = [KL_ESTIMATORS[estimator](o, r) * mb.loss_mask for mm, om, rm in zip(minis, olds, refs)
          for mb, o, r in zip(mm, om, rm)]
    return in_row_order(minis, pad_rows(kl, width))


def run_critic_updates(engine: Any, values: Forward, minis: list[list[TrainBatch]], olds: list[list[torch.Tensor]],
                       returns: list[list[torch.Tensor]], algo: AlgorithmConfig,
                       scales: list[list[float]] | None = None) -> dict[str, float]:
    """The critic's share of a step: the actor's schedule (epochs x mini-batches, one update each) on the value
    loss against the GAE returns, clipped around the values the advantages came from (`olds`)."""
    sums: dict[str, float] = {}
    grad_norms, count = [], 0
    for _ in range(algo.epochs):
        for i, mini in enumerate(minis):
            for j, mb in enumerate(mini):
                engine.set_gradient_accumulation_boundary(j == len(mini) - 1)
                loss, m = value_loss(values(mb), olds[i][j], returns[i][j], mb.loss_mask, algo.value_clip)
                engine.backward(loss * scales[i][j] if scales is not None else loss)
                engine.step()
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            grad_norms.append(float(engine.get_global_grad_norm() or 0.0))
    out = {f"critic/{k}": v / max(count, 1) for k, v in sums.items()}
    out["critic/grad_norm"] = sum(grad_norms) / max(len(grad_norms), 1)
    return out


def _key(k: str) -> str:
    return k if k in ("loss", "kl", "logprob_abs_diff") or "/" in k else f"actor/{k}"


def run_updates(engine: Any, forward: Forward, minis: list[list[TrainBatch]], refs: list[list[torch.Tensor | None]],
                olds: list[list[torch.Tensor]] | None, algo: AlgorithmConfig, temperature: float,
                norm_len: int | None = None, scales: list[list[float]] | None = None) -> dict[str, float]:
    """algo.epochs passes over the mini-batches, one optimizer update per mini-batch. Without `olds` (a single
    update) the ratio's denominator is the forward itself, detached: ratio 1, the clip cannot fire, and the
    gradient is the plain policy gradient. `scales` (loss_scales) make each update's loss the mean over the
    update rather than over each micro-batch. Returns metrics averaged over every micro-batch of every update
    (the logged loss is each micro-batch's own mean)."""
    sums: dict[str, float] = {}
    grad_norms, count = [], 0
    clock = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    mm = algo.mismatch
    for _ in range(algo.epochs):
        for i, mini in enumerate(minis):
            for j, mb in enumerate(mini):
                engine.set_gradient_accumulation_boundary(j == len(mini) - 1)
                t0 = time.perf_counter()
                logits, start = forward(mb)
                logp = window_logprobs(logits, start, mb.input_ids, temperature)
                old = olds[i][j] if olds is not None else logp.detach()
                weights, m = None, {}
                if mb.sample_logp is not None:   # the generator's log-probs: the behaviour policy
                    weights, m = mismatch_weights(old, mb.sample_logp, mb.loss_mask, mm.mode, mm.tis_cap,
                                                  mm.mis_low, mm.mis_high)
                loss, lm = policy_loss(logp, old, mb.advantages, mb.loss_mask, algo.eps_low, algo.eps_high,
                                       ref_logp=refs[i][j], kl_coef=algo.kl_coef if algo.kl_in == "loss" else 0.0,
                                       kl_estimator=algo.kl_estimator, agg=algo.loss_agg, norm_len=norm_len,
                                       loss_fn=algo.policy_loss, dual_clip_c=algo.dual_clip_c, weights=weights)
                t1 = time.perf_counter()
                engine.backward(loss * scales[i][j] if scales is not None else loss)
                t2 = time.perf_counter()
                engine.step()
                t3 = time.perf_counter()
                clock["forward"] += t1 - t0
                clock["backward"] += t2 - t1
                clock["optimizer"] += t3 - t2
                m.update(lm)
                m["entropy"] = masked_mean(entropy(logits, temperature), mb.loss_mask[:, start:].to(logp.dtype)).item()
                for k, v in m.items():
                    sums[_key(k)] = sums.get(_key(k), 0.0) + float(v)
                count += 1
            grad_norms.append(float(engine.get_global_grad_norm() or 0.0))
    out = {k: v / max(count, 1) for k, v in sums.items()}
    out["actor/grad_norm"] = sum(grad_norms) / max(len(grad_norms), 1)
    out.update({f"timing/{k}": v for k, v in clock.items()})
    return out
