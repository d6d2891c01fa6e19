"""Packing: the learner's layout and rank split on GRPO batches whose completion lengths vary.

Batches are G=4 samples of --prompts prompts, random tokens, a log-normal completion length per prompt (median
--max-new-tokens / 4, +-25% within the group, capped), on the step_time benchmark's model (19M parameters).

1. Layout, in this process on one thread (one learner rank's micro-batch), interleaved per batch: forward and
   backward of a token-level loss with `padded` rows (learner.packing=false), `group_rows` (each group's
   prompt once, one group per row padded to the widest: the layout before rows were shared) and `packed` (groups
   sharing rows up to the widest group's width: the default). The log-probs of the three must agree.
2. Rank split, through two DeepSpeed ZeRO-2 learners (1 thread each, with the reference, lr 0 so every call sees
   the same weights), interleaved per batch: `rl_step` with the rows split contiguously (split_even) and by
   `balanced_split` (whole groups, as even in tokens as it can).

3. Micro-batches, in this process like 1., one rank's rows in micro-batches of --micro-batch rows taken in order
   (learner.micro_batch_size) or by a token budget (learner.micro_batch_tokens) set to the largest of those
   micro-batches' tokens (no micro-batch bigger, so no more memory), with padded rows and with the shared-prefix
   forward: forward and backward of every micro-batch.
4. SFT rows, in this process like 1.: rows that share no prompt (each its own prompt, a log-normal answer length),
   one rank's share in micro-batches of --micro-batch rows, `padded` against `packed` (padding-free: short rows
   share a packed row up to the micro-batch's longest; learner.packing): forward and backward of the SFT loss.
5. The no-grad pass, in this process like 1.: the reference log-probs of one rank's GRPO rows (packed) over the
   update's micro-batches of --small-micro-batch rows (`update`) against one forward micro-batch of all the rows,
   regrouped to the update's (`own`: learner.forward_micro_batch_size). The log-probs must agree.
6. Qwen2.5-VL rows, in this process: the image task's prompts (G=4 random completions each) on the tiny VL policy,
   forward and backward padded against packed (each group's prompt and images once, learner.packing).
7. The logits window, in this process: one packed group (a prompt and its G completions), forward and backward with
   the LM head on every position and the log-probs over every column (`every`, the learner before 2026-12-06)
   against the learner's window (`window`: the LM head only on the positions that the columns from the first
   completion token on read, `logits_to_keep`), with the step_time model's vocabulary and with Qwen2.5's (151,936).

Read `layout[name].seconds`, `group_rows_over_packed` and `padded_over_packed` (medians of per-batch ratios;
above 1: packed is faster), `layout[name].row_tokens` (tokens computed, padding included),
`split[name].seconds`, `split[name].tokens_max_over_mean`, `contiguous_over_balanced`, and
`micro[forward][rows|tokens]` with `micro_rows_over_tokens[forward]`, `sft[padded|packed]` with
`sft_padded_over_packed` and `sft_loss_max_abs_diff`, and `no_grad[update|own]` with `no_grad_update_over_own` and
`no_grad_logprob_max_abs_diff`, and `vl[padded|packed]` with `vl_padded_over_packed`, `vl_vision_patches` (pixel
rows through the vision tower), `vl_row_tokens` and `vl_logprob_max_abs_diff`, and `window[vocabulary][every|window]`
(seconds, `head_positions`: positions the LM head ran on, `loss_columns`: [*, vocabulary] rows the loss read) with
`every_over_window[vocabulary]` and `window_logprob_max_abs_diff`.

    rlframe bench packing [--repeats 5] [--prompts 16] [--max-new-tokens 256] [--micro-batch 8]
                          [--small-micro-batch 2] [--skip-split]
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
QWEN_VOCAB = 151_936   # Qwen2.5's vocabulary (7.)


def parse(argv: list[str] | None = None):
    p = base_parser(__doc__)
    p.add_argument("--prompts", type=int, default=16, help="prompts per batch (G=4 samples each)")
    p.add_argument("--prompt-tokens", type=int, default=82)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("--micro-batch", type=int, default=8, help="rows per micro-batch of the count-based side (3.)")
    p.add_argument("--small-micro-batch", type=int, default=2,
                   help="rows per micro-batch of the update in 5. (small, as a large model's recipe sets it)")
    p.add_argument("--skip-split", action="store_true", help="only the in-process comparisons (1., 3., 4. and 5.)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.prompts, args.max_new_tokens, args.micro_batch, args.small_micro_batch = 1, 4, 32, 2, 1
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


def logits_of(model, mb, dtype, packed: bool) -> tuple[object, int]:
    """Logits [b, w-1, V] of a micro-batch, packed (the learner's layout, padded where packing saves nothing) or
    padded, and the tokens the forward computed."""
    from rlframe.models.shared_prefix import pack_shared_prefix

    layout = pack_shared_prefix(mb.input_ids, mb.attention_mask, mb.loss_mask) if packed else None
    if layout is not None:
        return layout.gather(model(**layout.model_inputs(dtype)).logits), layout.input_ids.numel()
    return model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits[:, :-1], mb.input_ids.numel()


def make_sft_batch(rng: random.Random, rows: int, prompt_len: int, max_new: int, vocab: int):
    """SFT rows of random tokens: each its own prompt (+-25% around prompt_len), a log-normal answer length."""
    from rlframe.data.batching import collate

    ps = [[rng.randrange(3, vocab) for _ in range(int(prompt_len * rng.uniform(0.75, 1.25)))] for _ in range(rows)]
    lengths = [int(min(max_new, max(4.0, rng.lognormvariate(0.0, 0.8) * max_new / 4))) for _ in range(rows)]
    cs = [[rng.randrange(3, vocab) for _ in range(n)] for n in lengths]
    return collate(ps, cs, pad_id=0)


def sft_rows(model, batch, dtype, rows: int, first: int) -> dict[str, dict]:
    """4.: the SFT loss's forward + backward of one rank's rows in micro-batches of `rows`, padded and packed."""
    from rlframe.learner.losses import sft_loss

    out = {}
    for name in ("padded", "packed") if first % 2 == 0 else ("packed", "padded"):
        model.zero_grad(set_to_none=True)
        t0, computed, losses = time.perf_counter(), 0, []
        for mb in batch.micro_batches(rows):
            logits, tokens = logits_of(model, mb, dtype, name == "packed")
            computed += tokens
            loss = sft_loss(logits, mb.input_ids[:, 1:], mb.loss_mask)
            loss.backward()
            losses.append(loss.item())
        out[name] = {"seconds": time.perf_counter() - t0, "row_tokens": computed, "losses": losses}
    return out


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


def micro_batching(model, batch, dtype, rows: int, first: int) -> dict[str, dict[str, dict]]:
    """3.: forward + backward of every micro-batch of one rank's rows, by count and by a token budget that makes
    no micro-batch bigger than the largest counted one, with padded rows and with the shared-prefix forward."""
    from rlframe.learner.update import minibatches
    from rlframe.models.logprobs import token_logprobs
    from rlframe.models.shared_prefix import pack_shared_prefix

    def cost(mb, packed: bool) -> int:
        layout = pack_shared_prefix(mb.input_ids, mb.attention_mask, mb.loss_mask) if packed else None
        return (layout or mb).input_ids.numel()

    runs = [(f, way) for f in ("padded", "packed") for way in ("rows", "tokens")]
    out: dict[str, dict[str, dict]] = {"padded": {}, "packed": {}}
    for forward, way in runs[first % 4:] + runs[: first % 4]:
        packed = forward == "packed"
        mbs = batch.micro_batches(rows)
        if way == "tokens":
            mbs = minibatches(batch, 1, rows, tokens=max(cost(mb, packed) for mb in mbs), packed=packed)[0]
        model.zero_grad(set_to_none=True)
        t0, computed = time.perf_counter(), 0
        for mb in mbs:
            logits, tokens = logits_of(model, mb, dtype, packed)
            computed += tokens
            mask = mb.loss_mask.to(logits.dtype)
            ((token_logprobs(logits, mb.input_ids[:, 1:], 1.0) * mask).sum() / mask.sum()).backward()
        out[forward][way] = {"seconds": time.perf_counter() - t0, "micro_batches": len(mbs), "row_tokens": computed}
    return out


def no_grad_passes(model, batch, dtype, rows: int, first: int) -> dict[str, dict]:
    """5.: a reference pass (no gradients, packed) over one rank's rows in the update's micro-batches of `rows`
    rows, and over one forward micro-batch of all of them regrouped to the update's (forward_micro_batch_size)."""
    import torch

    from rlframe.learner.update import minibatches, pad_rows, regroup
    from rlframe.models.logprobs import token_logprobs

    def logp(mb):
        return token_logprobs(logits_of(model, mb, dtype, True)[0], mb.input_ids[:, 1:], 1.0)

    out = {}
    for name in ("update", "own") if first % 2 == 0 else ("own", "update"):
        t0 = time.perf_counter()
        with torch.no_grad():
            minis = minibatches(batch, 1, rows)
            parts = minis[0] if name == "update" else minibatches(batch, 1, len(batch))[0]
            values = [logp(mb) for mb in parts]
            values = [values] if name == "update" else regroup(minis, parts, values)
        out[name] = {"seconds": time.perf_counter() - t0, "forward_calls": len(parts),
                     "logp": pad_rows([v * mb.loss_mask for v, mb in zip(values[0], minis[0])],
                                      batch.loss_mask.shape[1])}
    return out


def vl_rows(args, rng: random.Random, repeats: int) -> list[dict]:
    """6.: Qwen2.5-VL GRPO rows (the image task's prompts, data.num_history liked and disliked references plus
    images A and B, G=4 random completions each) on the tiny VL policy: forward + backward padded against packed
    (each group's prompt and images once), interleaved; seconds and the pictures' patch rows that went through
    the vision tower."""
    import torch

    from _workload import OUT
    from rlframe.config.schema import DataConfig, ModelConfig
    from rlframe.data.batching import collate
    from rlframe.models.loading import load_policy
    from rlframe.models.logprobs import token_logprobs
    from rlframe.models.multimodal import batch_vision_kwargs, vision_special_ids
    from rlframe.models.shared_prefix import pack_micro_batch
    from rlframe.models.tiny import build_tiny_model
    from rlframe.tasks.preference.vl_task import token_ids
    from rlframe.tasks.registry import TASKS

    task = TASKS.get("preference_images").build(DataConfig(task="preference_images", num_train=args.prompts,
                                                           num_eval=2, verify_images=False), OUT / "packing" / "vl")
    tok = task.tokenizer
    prompts = task.vision.attach(task.train, [tok(r["prompt"], add_special_tokens=False)["input_ids"]
                                              for r in task.train], tok)
    path = build_tiny_model(ModelConfig(arch="qwen2_5_vl"), len(tok), None, tok.eos_token_id, tok.pad_token_id,
                            OUT / "packing" / "vl_model", vision_token_ids=token_ids(tok))
    model = load_policy(str(path))
    words = [t for t in range(100, len(tok)) if t not in set(vision_special_ids(model.config))]
    out = []
    for i in range(repeats + 1):
        rows = [p for p in prompts[: args.prompts // WORLD] for _ in range(GROUP)]
        batch = collate(rows, [[rng.choice(words) for _ in range(rng.randrange(8, max(9, args.max_new_tokens // 4)))]
                               for _ in rows], tok.pad_token_id, tok.eos_token_id)
        res = {}
        for name in ("padded", "packed") if i % 2 == 0 else ("packed", "padded"):
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            packed = pack_micro_batch(model, batch) if name == "packed" else None
            if packed is None:
                kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                          **batch_vision_kwargs(model.config, batch)}
                logits = model(**kwargs).logits[:, :-1]
            else:
                kwargs = packed.model_inputs(torch.float32)
                logits = packed.gather(model(**kwargs).logits)
            mask = batch.loss_mask.to(logits.dtype)
            logp = token_logprobs(logits, batch.input_ids[:, 1:], 1.0)
            ((logp * mask).sum() / mask.sum()).backward()
            res[name] = {"seconds": time.perf_counter() - t0, "vision_patches": int(kwargs["pixel_values"].shape[0]),
                         "row_tokens": kwargs["input_ids"].numel(), "logp": (logp * mask).detach()}
        if i:
            out.append({"padded": res["padded"]["seconds"], "packed": res["packed"]["seconds"],
                        "vision_patches": {n: r["vision_patches"] for n, r in res.items()},
                        "row_tokens": {n: r["row_tokens"] for n, r in res.items()},
                        "logprob_max_abs_diff": float((res["padded"]["logp"] - res["packed"]["logp"]).abs().max()),
                        "load_avg_1m": round(os.getloadavg()[0], 2)})
            print(f"[packing] VL rows batch {i}: padded {out[-1]['padded']:.2f} s, packed {out[-1]['packed']:.2f} s "
                  f"(vision patches {out[-1]['vision_patches']}, tokens {out[-1]['row_tokens']})", file=sys.stderr,
                  flush=True)
    return out


def logits_window(models: dict[int, object], batch, dtype, first: int) -> dict[int, dict[str, dict]]:
    """7.: forward + backward of one packed group per vocabulary size, the LM head on every position and the
    log-probs over every column (`every`: the learner before 2026-12-06) against the learner's window (`window`:
    `window_logits`, the LM head only where a column from `loss_start` on reads); seconds, the positions the LM
    head ran on and the [*, vocabulary] logits the loss read (the padded layout's columns)."""
    import torch.nn.functional as F

    from rlframe.models.logprobs import token_logprobs
    from rlframe.models.shared_prefix import pack_shared_prefix, window_logits

    packed = pack_shared_prefix(batch.input_ids, batch.attention_mask, batch.loss_mask)
    names = ["every", "window"]
    out: dict[int, dict[str, dict]] = {}
    for vocab, model in models.items():
        out[vocab] = {}
        for name in names[first % 2:] + names[: first % 2]:
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            if name == "every":
                full = model(**packed.model_inputs(dtype)).logits
                (logits, start), head = (packed.gather(full), 0), full.shape[0] * full.shape[1]
            else:
                logits, start = window_logits(model, batch, packed, dtype, keeps=True)
                head = packed.input_ids.shape[0] * len(packed.kept(start))
            logp = token_logprobs(logits, batch.input_ids[:, 1 + start:], 1.0)
            mask = batch.loss_mask[:, start:].to(logp.dtype)
            ((logp * mask).sum() / mask.sum()).backward()
            out[vocab][name] = {"seconds": time.perf_counter() - t0, "head_positions": head,
                                "loss_columns": logits.shape[0] * logits.shape[1],
                                "logp": F.pad((logp * mask).detach().float(), (start, 0))}
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
    micro: dict[str, dict[str, list[dict]]] = {"padded": {"rows": [], "tokens": []},
                                                "packed": {"rows": [], "tokens": []}}
    sft: dict[str, list[dict]] = {"padded": [], "packed": []}
    no_grad: dict[str, list[dict]] = {"update": [], "own": []}
    worst = sft_worst = no_grad_worst = 0.0
    for i in range(args.repeats + 1):   # the first batch warms up and is not counted
        batch = make_batch(rng, args.prompts // WORLD, args.prompt_tokens, args.max_new_tokens, vocab)
        res = layouts(model, batch, DTYPES[args.dtype], i)
        rows_sft = sft_rows(model, make_sft_batch(rng, rows // WORLD, args.prompt_tokens, args.max_new_tokens, vocab),
                            DTYPES[args.dtype], args.micro_batch, i)
        sft_worst = max(sft_worst, *(abs(a - b) for a, b in zip(rows_sft["padded"]["losses"],
                                                                 rows_sft["packed"]["losses"])))
        passes = no_grad_passes(model, batch, DTYPES[args.dtype], args.small_micro_batch, i)
        no_grad_worst = max(no_grad_worst, float((passes["update"]["logp"] - passes["own"]["logp"]).abs().max()))
        if i:
            for n, r in passes.items():
                no_grad[n].append({"seconds": r["seconds"], "forward_calls": r["forward_calls"],
                                   "load_avg_1m": round(os.getloadavg()[0], 2)})
            print(f"[packing] no-grad pass batch {i}: " + ", ".join(
                f"{n} micro-batches {r['seconds']:.2f} s ({r['forward_calls']} forward calls)"
                for n, r in passes.items()), file=sys.stderr, flush=True)
            for n, r in rows_sft.items():
                sft[n].append({"seconds": r["seconds"], "row_tokens": r["row_tokens"],
                               "load_avg_1m": round(os.getloadavg()[0], 2)})
            print(f"[packing] SFT rows batch {i}: " + ", ".join(
                f"{n} {r['seconds']:.2f} s ({r['row_tokens']} tokens)" for n, r in rows_sft.items()),
                file=sys.stderr, flush=True)
        for forward, ways in micro_batching(model, batch, DTYPES[args.dtype], args.micro_batch, i).items():
            for way, r in ways.items():
                if i:
                    micro[forward][way].append({**r, "load_avg_1m": round(os.getloadavg()[0], 2)})
        worst = max(worst, max(float((res[n]["logp"] - res["padded"]["logp"]).abs().max()) for n in res))
        if i:
            for n, r in res.items():
                lay[n].append({"seconds": r["seconds"], "row_tokens": r["row_tokens"],
                               "load_avg_1m": round(os.getloadavg()[0], 2)})
            print(f"[packing] layout batch {i}: " + ", ".join(f"{n} {res[n]['seconds']:.2f} s ({res[n]['row_tokens']} "
                                                            f"tokens)" for n in lay), file=sys.stderr, flush=True)
            print(f"[packing] micro-batches batch {i}: " + ", ".join(
                f"{f} by {w} {rs[-1]['seconds']:.2f} s ({rs[-1]['micro_batches']} of them, "
                f"{rs[-1]['row_tokens']} tokens)" for f, ways in micro.items() for w, rs in ways.items()),
                file=sys.stderr, flush=True)
    del model
    vl = vl_rows(args, rng, args.repeats)

    # 7. the logits window: one packed group, the step_time model's vocabulary and Qwen2.5's
    from transformers import AutoConfig, AutoModelForCausalLM

    big = AutoConfig.from_pretrained(model_dir)
    big.vocab_size = 4096 if args.quick else QWEN_VOCAB
    torch.manual_seed(0)
    vocabs = {vocab: load_policy(str(model_dir), DTYPES[args.dtype]),
              big.vocab_size: AutoModelForCausalLM.from_config(big).to(DTYPES[args.dtype])}
    window: dict[int, dict[str, list[dict]]] = {v: {"every": [], "window": []} for v in vocabs}
    window_worst = 0.0
    for i in range(args.repeats + 1):   # the first group warms up and is not counted
        group = make_batch(rng, 1, args.prompt_tokens, args.max_new_tokens, vocab)
        for v, res in logits_window(vocabs, group, DTYPES[args.dtype], i).items():
            window_worst = max(window_worst, float((res["every"]["logp"] - res["window"]["logp"]).abs().max()))
            if i:
                for n, r in res.items():
                    window[v][n].append({k: x for k, x in r.items() if k != "logp"}
                                        | {"load_avg_1m": round(os.getloadavg()[0], 2)})
                print(f"[packing] logits window, vocabulary {v}, group {i}: " + ", ".join(
                    f"{n} {r['seconds']:.2f} s (LM head on {r['head_positions']} positions, the loss reads "
                    f"{r['loss_columns']})" for n, r in res.items()), file=sys.stderr, flush=True)
    del vocabs

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
                   "micro_batch": args.micro_batch,
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
        "micro": {f: {w: {"seconds": summarize(r["seconds"] for r in rs),
                          "micro_batches": summarize(r["micro_batches"] for r in rs),
                          "row_tokens": summarize(r["row_tokens"] for r in rs),
                          "load_avg_1m": [r["load_avg_1m"] for r in rs]} for w, rs in ways.items()}
                  for f, ways in micro.items()},
        "micro_rows_over_tokens": {f: pairs(ways["rows"], ways["tokens"]) for f, ways in micro.items()},
        "sft": {n: {"seconds": summarize(r["seconds"] for r in rs),
                    "row_tokens": summarize(r["row_tokens"] for r in rs),
                    "load_avg_1m": [r["load_avg_1m"] for r in rs]} for n, rs in sft.items()},
        "sft_padded_over_packed": pairs(sft["padded"], sft["packed"]),
        "sft_loss_max_abs_diff": sft_worst,
        "no_grad": {n: {"seconds": summarize(r["seconds"] for r in rs),
                        "forward_calls": summarize(r["forward_calls"] for r in rs),
                        "load_avg_1m": [r["load_avg_1m"] for r in rs]} for n, rs in no_grad.items()},
        "no_grad_update_over_own": pairs(no_grad["update"], no_grad["own"]),
        "no_grad_logprob_max_abs_diff": no_grad_worst,
        "vl": {n: summarize(r[n] for r in vl) for n in ("padded", "packed")},
        "vl_padded_over_packed": statistics.median(r["padded"] / r["packed"] for r in vl),
        "vl_vision_patches": vl[0]["vision_patches"], "vl_row_tokens": vl[0]["row_tokens"],
        "vl_logprob_max_abs_diff": max(r["logprob_max_abs_diff"] for r in vl),
        "vl_load_avg_1m": [r["load_avg_1m"] for r in vl],
        "window": {str(v): {n: {"seconds": summarize(r["seconds"] for r in rs),
                                "head_positions": rs[0]["head_positions"], "loss_columns": rs[0]["loss_columns"],
                                "load_avg_1m": [r["load_avg_1m"] for r in rs]} for n, rs in ways.items()}
                   for v, ways in window.items()},
        "every_over_window": {str(v): pairs(ways["every"], ways["window"]) for v, ways in window.items()},
        "window_logprob_max_abs_diff": window_worst,
        "peak_rss_mb": mem.report(),
    }
    ratios = {"group_rows / packed forward+backward time (median of pairs)": record["group_rows_over_packed"],
              "padded / packed forward+backward time (median of pairs)": record["padded_over_packed"]}
    for f in micro:
        ratios[f"{f} forward: micro-batches by rows / by tokens, time (median of pairs)"] = \
            record["micro_rows_over_tokens"][f]
    ratios["SFT rows: padded / packed forward+backward time (median of pairs)"] = record["sft_padded_over_packed"]
    ratios["no-grad pass: the update's micro-batches / its own, time (median of pairs)"] = \
        record["no_grad_update_over_own"]
    ratios["Qwen2.5-VL rows: padded / packed forward+backward time (median of pairs)"] = record["vl_padded_over_packed"]
    for v, r in record["every_over_window"].items():
        ratios[f"one group, vocabulary {v}: LM head on every position / the loss's window, time (median of pairs)"] = r
    if record["contiguous_over_balanced"] is not None:
        ratios["contiguous / balanced learner update time (median of pairs)"] = record["contiguous_over_balanced"]
    med = {n: record["layout"][n]["seconds"]["median"] for n in lay}
    record["headline"] = {
        "figures": f"{nparams / 1e6:.1f}M params, {args.prompts // WORLD} groups of {GROUP} per rank, completions up "
                   f"to {args.max_new_tokens} tokens: forward+backward " + ", ".join(f"{n} {s:.2f} s" for n, s in
                                                                                     med.items()),
        "ratios": ratios, "target": "> 1 (packed faster than one group per row)",
        "target_met": bool((record["group_rows_over_packed"] or 0) > 1.0)}
    fig, axes = new_figure(ncols=5, width=5.0)
    axes[0].boxplot([[r["seconds"] for r in lay[n]] for n in lay], tick_labels=list(lay))
    axes[0].set_ylabel("seconds, forward + backward (one rank's micro-batch)")
    axes[0].set_title("layout")
    if split["contiguous"]:
        axes[1].boxplot([[r["seconds"] for r in split[n]] for n in split], tick_labels=list(split))
        axes[1].set_ylabel("seconds per learner update (2 ranks)")
        axes[1].set_title("rank split")
    labels = [(f, w) for f in micro for w in micro[f]]
    axes[2].boxplot([[r["seconds"] for r in micro[f][w]] for f, w in labels], tick_labels=[f"{f}\nby {w}"
                                                                                        for f, w in labels])
    axes[2].set_ylabel("seconds, forward + backward (one rank's rows)")
    axes[2].set_title(f"micro-batches: {args.micro_batch} rows or a token budget")
    axes[3].boxplot([[r["seconds"] for r in sft[n]] for n in sft], tick_labels=list(sft))
    axes[3].set_ylabel("seconds, forward + backward (one rank's SFT rows)")
    axes[3].set_title(f"SFT rows, micro-batches of {args.micro_batch}")
    axes[4].boxplot([[r["seconds"] for r in no_grad[n]] for n in no_grad],
                    tick_labels=[f"{args.small_micro_batch}-row micro-batches", "one of all rows"])
    axes[4].set_ylabel("seconds, reference pass (one rank's rows)")
    axes[4].set_title("no-grad pass: the update's micro-batches or its own")
    save_plot(fig, "packing", args)
    emit("packing", record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
