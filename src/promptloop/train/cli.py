"""Command line: `python -m promptloop.train CONFIG.yaml [key=value ...] [--resume] [--json]`.

`add_train_parser(subparsers)` mounts the same command as `promptloop train` in the main CLI; its
handler returns a result dict (the main CLI prints it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DESCRIPTION = "train a PromptLoop refinement policy with GRPO (frozen diffusion model)"


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("config", nargs="?", default=None, help="YAML config file (see configs/); omitted: the defaults")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, dotted for nested fields (e.g. grpo.beta=0.02 rewards.proxy=0.1)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    p.add_argument("--output-dir", default=None, help="shorthand for output_dir=...")
    p.add_argument("--print-config", action="store_true", help="print the resolved config (commented YAML) and exit")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of `promptloop train`: load the config, train, return a summary dict."""
    from promptloop.fs_errors import output_dir
    from promptloop.train.config import dump_yaml
    from promptloop.train.config_load import load_config
    from promptloop.validation import InputError

    overrides = list(args.overrides)
    config = args.config
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)  # only overrides were given
        config = None
    if args.output_dir is not None:
        if not args.output_dir.strip():
            raise InputError("--output-dir: the path is empty (give a folder, e.g. --output-dir runs/run1)")
        overrides.append(f"output_dir={args.output_dir}")
    cfg = load_config(config, overrides)  # parsed and validated before torch is imported (errors in < 1 s)
    if args.resume and not isinstance(cfg.resume, str):  # an explicit resume=PATH wins over --resume
        cfg = load_config(config, [*overrides, "resume=true"], quiet=True)  # its notes were printed above
    if args.print_config:
        print(dump_yaml(cfg))
        return {}
    output_dir(cfg.output_dir, "output_dir")
    from promptloop.train.trainer import train

    result = train(cfg)
    summary: dict[str, Any] = {
        "output_dir": str(result.output_dir),
        "steps": result.steps,
        "metrics": str(result.metrics_path),
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "policy": str(result.policy_path) if result.policy_path else None,
        "plot": str(result.plot_path) if result.plot_path else None,
    }
    if result.skipped_prompts:
        summary["skipped_prompts"] = result.skipped_prompts
    for key in ("reward/total/mean", "kl", "clip_fraction", "fallback_rate"):
        if key in result.metrics:
            summary[key] = result.metrics[key]
    if result.eval_metrics:
        summary.update({k: v for k, v in result.eval_metrics.items() if k.endswith("/mean")})
    return summary


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `train` subcommand to a main CLI's subparsers (handler: `args.func(args) -> dict`)."""
    p = subparsers.add_parser("train", help=DESCRIPTION, description=DESCRIPTION)
    _configure(p)
    p.set_defaults(func=cmd_train)
    return p


def build_parser() -> argparse.ArgumentParser:
    return _configure(argparse.ArgumentParser(prog="python -m promptloop.train", description=DESCRIPTION))


KNOWN_ERRORS = (("promptloop.validation", "InputError"), ("promptloop.rewards.registry", "UnknownRewardError"),
                ("promptloop.train.checkpoint", "CheckpointError"), ("promptloop.train.config", "ConfigError"),
                ("promptloop.train.data", "PromptFileError"), ("promptloop.train.trainer", "TrainError"),
                ("promptloop.world.backbone", "BackboneLoadError"), ("promptloop.integrity", "IntegrityError"),
                ("promptloop.hub", "HubError"),
                ("builtins", "FileNotFoundError"), ("builtins", "ValueError"))


def known_errors() -> tuple[type[BaseException], ...]:
    """Exceptions reported as one `error:` line (exit code 2) instead of a traceback (of the modules imported
    so far: looking them up imports nothing)."""
    from promptloop.cli_runner import loaded_errors

    return loaded_errors(KNOWN_ERRORS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m promptloop.train`; returns the exit code."""
    from promptloop.cli_runner import run_command
    from promptloop.fs_errors import check_argv
    from promptloop.validation import InputError

    try:
        check_argv(sys.argv[1:] if argv is None else argv)
    except InputError as e:
        print(f"promptloop train: error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    return run_command("promptloop train", lambda: cmd_train(args), known_errors, args.json,
                       interrupt_hint="resume with --resume")
