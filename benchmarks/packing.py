"""Packing: the learner's layout and rank split on GRPO batches whose completion lengths vary.

Batches are G=4 samples of --prompts prompts, random tokens, a log-normal completion length per prompt (median
--max-new-tokens / 4, +-25% within the group, capped), on the step_time benchmark's model (19M parameters).

1. Layout, in this process on one thread (one learner rank's micro-batch), interleaved per batch: forward and
   backward of a token-level loss with `padded` rows (learner.shared_prefix=false), `group_rows` (each group's
   prompt once, one group per row padded to the widest: the layout before rows were shared) and `packed` (groups
   sharing rows up to the widest group's width: the default). The log-probs of the three must agree.
2. Rank split, through two DeepSpeed ZeRO-2 learners (1 thread each, with the reference, lr 0 so every call sees
   the same weights), interleaved per batch: `rl_step` with the rows split contiguously (split_even) and by
   `balanced_split` (whole groups, as even in tokens as it can).

Read `layout[name].seconds`, `group_rows_over_packed` and `padded_over_packed` (medians of per-batch ratios;
above 1: packed is faster), `layout[name].row_tokens` (tokens computed, padding included), and
`split[name].seconds`, `split[name].tokens_max_over_mean`, `contiguous_over_balanced`.

    rlframe bench packing [--repeats 5] [--prompts 16] [--max-new-tokens 256] [--skip-split] [--quick]
"""
from __future__ import annotations

import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, emit, new_figure, save_plot, summarize  # noqa: E402

GROUP, WORLD = 4, 2


def parse(argv: list[str] | None = None):
    p = base_parser(__doc__)
    p.add_argument("--prompts", type=int, default=16, help="prompts per batch (G=4 samples each)")
    p.add_argument("--prompt-tokens", type=int, default=82)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("--skip-split", action="store_true", help="only the in-process layout comparison")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.prompts, args.max_new_tokens = 1, 4, 32
    return args


def make_batch(rng: random.Random, prompts: int, prompt_len: int, max_new: int, vocab: int):
    """A GRPO batch of random tokens: a log-normal completion length per prompt (median max_new / 4)."""
    from rlframe.data.batching import collate

    ps, cs = [], []
    for _ in range(prompts):
        prompt = [rng.randrange(3, vocab) for _ in range(prompt_len)]
        typical = min(max_new, max(4.0, rng.lognormvariate(0.0, 0.8) * max_new / 4))
        for _ in range(GROUP):
            ps.append(prompt)
            cs.append([rng.randrange(3, vocab) for _ in range(int(min(max_new, typical * rng.uniform(0.75, 1.25))))])
    return collate(ps, cs, pad_id=0)


def layouts(model, batch, dtype, first: int) -> dict[str, dict]:
    """Forward + backward of one micro-batch in each layout (starting with the `first`-th, so that no layout
    always runs first): seconds, tokens computed, the log-probs."""
    import torch

    from rlframe.models.logprobs import token_logprobs
    from rlframe.models.shared_prefix import pack_shared_prefix

    names = ["padded", "group_rows", "packed"]
    out = {}
    for name in names[first % 3:] + names[: first % 3]:
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        if name == "padded":
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
            row_tokens = batch.input_ids.numel()
        else:
            packed = pack_shared_prefix(batch.input_ids, batch.attention_mask, batch.loss_mask, name == "packed")
            logits = packed.gather(model(**packed.model_inputs(dtype)).logits)
            row_tokens = packed.input_ids.numel()
        logp = token_logprobs(logits, batch.input_ids[:, 1:], 1.0)
        mask = batch.loss_mask.to(logp.dtype)
        ((logp * mask).sum() / mask.sum()).backward()
        out[name] = {"seconds": time.perf_counter() - t0, "row_tokens": row_tokens, "logp": (logp * mask).detach()}
    return out


def main() -> int:
    args = parse()
    import torch
    from _workload import OUT, RoleMemory, build_model, prepare, start_ray, stop_ray

    from rlframe.config.schema import AlgorithmConfig
    from rlframe.data.batching import split_even
    from rlframe.models.loading import DTYPES, load_policy

    ctl = prepare("packing/prep", ["trainer.stages=[grpo]", "data.num_train=16", f"model.dtype={args.dtype}",
                                   f"learner.world_size={WORLD}", "learner.zero_stage=2"])
    dims = (128, 2, 512) if args.quick else (384, 8, 1536)   # the step_time benchmark's model
    model_dir, nparams = build_model(OUT / "packing" / "model", len(ctl.tokenizer), *dims, ctl.tokenizer)
    vocab, rows = len(ctl.tokenizer), args.prompts * GROUP

    # 1. the layout, one rank's share of each batch, in this process
    torch.set_num_threads(1)
    model = load_policy(str(model_dir), DTYPES[args.dtype])
    rng = random.Random(0)
    lay: dict[str, list[dict]] = {"padded": [], "group_rows": [], "packed": []}
    worst = 0.0
    for i in range(args.repeats + 1):   # the first batch warms up and is not counted
        batch = make_batch(rng, args.prompts // WORLD, args.prompt_tokens, args.max_new_tokens, vocab)
        res = layouts(model, batch, DTYPES[args.dtype], i)
        worst = max(worst, max(float((res[n]["logp"] - res["padded"]["logp"]).abs().max()) for n in res))
        if i:
            for n, r in res.items():
                lay[n].append({"seconds": r["seconds"], "row_tokens": r["row_tokens"],
                               "load_avg_1m": round(os.getloadavg()[0], 2)})
            print(f"[packing] layout batch {i}: " + ", ".join(f"{n} {res[n]['seconds']:.2f} s ({res[n]['row_tokens']} "
                                                            f"tokens)" for n in lay), file=sys.stderr, flush=True)
    del model

    # 2. the rank split, through real learners
    split: dict[str, list[dict]] = {"contiguous": [], "balanced": []}
    with RoleMemory() as mem:
        if not args.skip_split:
            start_ray(ctl, cpus=WORLD * ctl.cfg.learner.num_cpus_per_worker + 1)
            try:
                ctl.start_learners(str(model_dir), str(model_dir), rows // WORLD)
                learners, algo = ctl.learners, AlgorithmConfig(kl_coef=0.04)
                for i in range(args.repeats + 1):
                    batch = make_batch(rng, args.prompts, args.prompt_tokens, args.max_new_tokens, vocab)
                    batch.advantages = torch.randn(rows, generator=torch.Generator().manual_seed(i))
                    tokens = batch.attention_mask.sum(1)
                    ways = {"contiguous": [list(range(sl.start, sl.stop)) for sl in split_even(rows, WORLD)],
                            "balanced": batch.balanced_split(WORLD, GROUP)}
                    for name, ranks in ways.items():
                        load = os.getloadavg()[0]
                        t0 = time.perf_counter()
                        learners.wait(learners.call_each("rl_step", [(batch.rows(r), 0.0, algo, 1.0) for r in ranks]),
                                      "rl_step", 3600, "train_s")
                        per_rank = [float(tokens[r].sum()) for r in ranks]
                        if i:
                            split[name].append({"seconds": time.perf_counter() - t0, "load_avg_1m": round(load, 2),
                                                "tokens_max_over_mean": max(per_rank) * WORLD / sum(per_rank)})
                    if i:
                        print(f"[packing] split batch {i}: " + ", ".join(
                            f"{n} {s[-1]['seconds']:.2f} s (tokens max/mean {s[-1]['tokens_max_over_mean']:.3f})"
                            for n, s in split.items()), file=sys.stderr, flush=True)
            finally:
                stop_ray(ctl)

    def pairs(a: list[dict], b: list[dict]) -> float | None:
        return statistics.median(x["seconds"] / y["seconds"] for x, y in zip(a, b)) if a and b else None

    record = {
        "config": {"params": nparams, "prompts": args.prompts, "group_size": GROUP, "world_size": WORLD,
                   "zero_stage": 2, "dtype": args.dtype, "prompt_tokens": args.prompt_tokens,
                   "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "quick": args.quick},
        "layout": {n: {"seconds": summarize(r["seconds"] for r in rs),
                       "row_tokens": summarize(r["row_tokens"] for r in rs),
                       "load_avg_1m": [r["load_avg_1m"] for r in rs]} for n, rs in lay.items()},
        "logprob_max_abs_diff_vs_padded": worst,
        "group_rows_over_packed": pairs(lay["group_rows"], lay["packed"]),
        "padded_over_packed": pairs(lay["padded"], lay["packed"]),
        "split": {n: {"seconds": summarize(r["seconds"] for r in rs),
                      "tokens_max_over_mean": summarize(r["tokens_max_over_mean"] for r in rs),
                      "load_avg_1m": [r["load_avg_1m"] for r in rs]} for n, rs in split.items()},
        "contiguous_over_balanced": pairs(split["contiguous"], split["balanced"]),
        "peak_rss_mb": mem.report(),
    }
    ratios = {"group_rows / packed forward+backward time (median of pairs)": record["group_rows_over_packed"],
              "padded / packed forward+backward time (median of pairs)": record["padded_over_packed"]}
    if record["contiguous_over_balanced"] is not None:
        ratios["contiguous / balanced learner update time (median of pairs)"] = record["contiguous_over_balanced"]
    med = {n: record["layout"][n]["seconds"]["median"] for n in lay}
    record["headline"] = {
        "figures": f"{nparams / 1e6:.1f}M params, {args.prompts // WORLD} groups of {GROUP} per rank, completions up "
                   f"to {args.max_new_tokens} tokens: forward+backward " + ", ".join(f"{n} {s:.2f} s" for n, s in
                                                                                     med.items()),
        "ratios": ratios, "target": "> 1 (packed faster than one group per row)",
        "target_met": bool((record["group_rows_over_packed"] or 0) > 1.0)}
    fig, axes = new_figure(ncols=2, width=5.5)
    axes[0].boxplot([[r["seconds"] for r in lay[n]] for n in lay], tick_labels=list(lay))
    axes[0].set_ylabel("seconds, forward + backward (one rank's micro-batch)")
    axes[0].set_title("layout")
    if split["contiguous"]:
        axes[1].boxplot([[r["seconds"] for r in split[n]] for n in split], tick_labels=list(split))
        axes[1].set_ylabel("seconds per learner update (2 ranks)")
        axes[1].set_title("rank split")
    save_plot(fig, "packing", args)
    emit("packing", record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
