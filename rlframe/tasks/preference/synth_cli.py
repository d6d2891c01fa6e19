"""`rlframe data synth`: write a synthetic-user PreferImg-format data set (images + JSONL) to a folder.

Imported by `rlframe --help`, so nothing heavy at module top: PIL, tqdm and the writer load in `run`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


HELP = "data tools: `rlframe data synth` writes a synthetic-user data set (images + JSONL)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`data` has sub-actions; `synth` is the first."""
    sub = parser.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    text = ("write a synthetic-user data set in the PreferImg/PreferThinker format: train, SP_ID, SP_OD, MP_ID, "
            "MP_OD records (JSONL or JSON), images/<user>/*.png and meta.json")
    p = sub.add_parser("synth", help=text, description=text)
    p.add_argument("--out", required=True, help="output folder (created; must be empty unless --force)")
    p.add_argument("--num-users", type=int, default=40, help="users in all (default 40)")
    p.add_argument("--samples-per-user", type=int, default=10, help="training samples per seen user (default 10)")
    p.add_argument("--eval-samples-per-user", type=int, default=2,
                   help="samples per user in its SP/MP _ID or _OD split (default 2)")
    p.add_argument("--unseen-fraction", type=float, default=0.25,
                   help="fraction of each kind of user kept out of training, the _OD users (default 0.25)")
    p.add_argument("--mp-fraction", type=float, default=0.5, help="fraction of multi-preference users (default 0.5)")
    p.add_argument("--num-history", type=int, default=5, help="liked and disliked references per user (default 5)")
    p.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--format", choices=["jsonl", "json"], default="jsonl", help="record file format (default jsonl)")
    p.add_argument("--seed", type=int, default=0, help="everything derives from it (default 0)")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    if args.data_action != "synth":  # pragma: no cover - argparse restricts the choices
        print(f"rlframe data: unknown action {args.data_action!r}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from rlframe.tasks.preference.synth_dataset import SynthConfig, write_dataset

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"rlframe data synth: {out} is not empty (use --force to write into it)", file=sys.stderr)
        return 2
    cfg = SynthConfig(num_users=args.num_users, samples_per_user=args.samples_per_user,
                      eval_samples_per_user=args.eval_samples_per_user, unseen_fraction=args.unseen_fraction,
                      mp_fraction=args.mp_fraction, num_history=args.num_history, image_size=args.image_size,
                      seed=args.seed, format=args.format)
    try:
        cfg.check()
    except ValueError as err:
        print(f"rlframe data synth: {err}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tqdm(total=cfg.num_users, unit="user", desc="synth", disable=args.no_progress) as bar:
        meta = write_dataset(out, cfg, on_user=bar.update)
    dt = time.perf_counter() - t0
    users = meta["users"]
    print(f"wrote {sum(meta['counts'].values())} samples, {meta['num_images']} images to {out} in {dt:.1f} s")
    for split, n in meta["counts"].items():
        print(f"  {split:<6} {n:>6} samples  {len(users[split]):>4} users  {out / f'{split}.{cfg.format}'}")
    return 0
