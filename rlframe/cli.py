"""`rlframe` command line: subcommands taking Hydra overrides (`key=value`, `group=option`)."""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from typing import Sequence

USAGE_EPILOG = """\
Overrides use Hydra syntax:  rlframe train learner=zero3 trainer.max_steps=10 run.output_dir=/tmp/run
  group=option   pick an option of a config group (listed below)
  key=value      set any key of the resolved config (see --cfg job)
  +key=value     (Hydra) add a key; unknown keys are rejected by the schema
"""

COMMANDS = {
    "train": "SFT then GRPO (trainer.stages) on Ray with DeepSpeed learners and vLLM generators",
    "sft": "supervised fine-tuning only (cross-entropy on assistant tokens); saves a Hugging Face checkpoint",
    "eval": "greedy evaluation of model.path / model.init_from, or of each eval.policies folder, per held-out "
            "subset (eval.num_history sweeps); writes eval.json and eval.md",
}

# Other subcommands live in their own modules, each with `add_arguments(parser)`, `run(args) -> int` and a
# one-line `HELP` (heavy imports stay inside `run`, so `rlframe --help` stays fast). Tasks add theirs through
# the `rlframe.commands` entry points (rlframe's example task adds `rlframe data`).
TOOL_COMMANDS: dict[str, str] = {
    "serve-reward": "rlframe.reward.server",
    "bench": "rlframe.bench",
    "reward": "rlframe.reward.offline",
    "doctor": "rlframe.doctor",
}


def tool_commands() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {**TOOL_COMMANDS, **{ep.name: ep.value for ep in entry_points(group="rlframe.commands")}}


def _groups_help() -> str:
    from rlframe.config import config_groups

    lines = ["config groups (group=option):"]
    for group, options in config_groups().items():
        lines.append(f"  {group:<10} {', '.join(options) if options else '(none)'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rlframe", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Distributed RL training for (multimodal) language models: Ray + DeepSpeed ZeRO + vLLM.",
        epilog=USAGE_EPILOG + "\n" + _groups_help())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in COMMANDS.items():
        sp = sub.add_parser(name, help=text, description=text, epilog=USAGE_EPILOG + "\n" + _groups_help(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("overrides", nargs="*", help="Hydra overrides (key=value, group=option)")
        sp.add_argument("--cfg", choices=["job"], help="print the resolved configuration and exit")
        sp.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    for name, module in tool_commands().items():
        mod = _tool_module(module)
        sp = sub.add_parser(name, help=mod.HELP, description=mod.HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(_module=module)
        mod.add_arguments(sp)
    return p


def _tool_module(name: str):
    import importlib

    return importlib.import_module(name)


def _setup_logging(verbose: bool) -> None:
    from rlframe.config.secrets import ScrubFilter

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s [rlframe] %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    for handler in logging.getLogger().handlers:   # no token reaches a log line
        handler.addFilter(ScrubFilter())
    for noisy in ("ray", "deepspeed", "DeepSpeed", "vllm", "transformers", "torch", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra:   # overrides after options (`reward test --rollouts F key=value`) are still overrides
        if not hasattr(args, "overrides") or any("=" not in x or x.startswith("-") for x in extra):
            build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if not args.command:
        build_parser().print_help()
        return 2
    if getattr(args, "_module", None):
        _setup_logging(getattr(args, "verbose", False))
        return int(_tool_module(args._module).run(args) or 0)
    from rlframe.config import ConfigError, load_config, to_yaml

    overrides = list(args.overrides)
    if args.command == "sft":
        overrides.append("trainer.stages=[sft]")
    from rlframe.config.secrets import scrub

    try:   # printing a config never imports (runs) the user's reward files
        cfg = load_config(overrides, import_rewards=args.cfg != "job")
    except ConfigError as err:
        print(f"rlframe {args.command}: {scrub(str(err))}", file=sys.stderr)
        return 2
    if args.cfg == "job":
        print(to_yaml(cfg), end="")
        return 0
    if args.command == "eval" and cfg.eval.policies and not (cfg.model.init_from or cfg.model.path):
        cfg.model.init_from = cfg.eval.policies[0]   # its tokenizer and chat template render the prompts
    _setup_logging(args.verbose)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # say it, rather than let DeepSpeed warn
    from rlframe.errors import RewardError, RoleFailure, RunInterrupted
    from rlframe.trainer.driver import Driver

    try:
        run_dir = Driver(cfg).run("eval" if args.command == "eval" else "train")
    except ConfigError as err:
        print(f"rlframe {args.command}: {scrub(str(err))}", file=sys.stderr)
        return 2
    except RunInterrupted as err:
        keep = [o for o in args.overrides if not o.startswith(("trainer.resume=", "run.output_dir="))]
        again = " ".join(["rlframe", args.command, *map(shlex.quote, keep), "trainer.resume=auto",
                          f"run.output_dir={shlex.quote(err.run_dir)}"])
        print(f"rlframe {args.command}: {err}; last complete checkpoint: {err.checkpoint or '(none)'}\n"
              f"resume with:\n  {again}", file=sys.stderr)
        return 128 + int(err.signum)
    except RoleFailure as err:
        print(f"rlframe {args.command}: {scrub(str(err))}\nthe last complete checkpoint stands; continue with "
              f"trainer.resume=auto (and the same run.output_dir)", file=sys.stderr)
        return 1
    except RewardError as err:
        print(f"rlframe {args.command}: stopped by a reward failure: {scrub(str(err))}\n"
              f"(reward.on_error=fallback scores failing samples with reward.fallback_value instead)", file=sys.stderr)
        return 1
    print(f"run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
