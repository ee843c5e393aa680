"""The `promptloop` command. Thin: it parses arguments, calls the library and prints.

Bad input ends with one line `promptloop: error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from promptloop.cli_args import (
    GUIDANCE,
    SAMPLING_STEPS,
    SEED,
    OneLineParser,
    UsageError,
    gpu_list,
    non_negative_int,
    positive_float,
    positive_int,
)
from promptloop.cli_eval import add_eval_parser
from promptloop.cli_runner import run_command
from promptloop.cli_world import add_world_parser, world_arg
from promptloop.validation import limit_arg

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.eval.pipeline_compare import parse_reward_kwargs, parse_rewards
    from promptloop.generate import GenerateRequest, generate

    if (args.query is None) == (args.prompts is None):
        raise UsageError("give a QUERY or --prompts FILE (one of the two)")
    rewards = list(args.reward or [])
    req = GenerateRequest(query=args.query, refine=args.refine, mode=args.mode, seed=args.seed, num_images=args.num_images,
                          steps=args.steps, guidance=args.guidance, negative_prompt=args.negative_prompt,
                          pipeline=args.pipeline, policy=args.policy, device=args.device, dtype=args.dtype, out=args.out,
                          prompts=args.prompts, rewards=rewards,
                          reward_kwargs=parse_reward_kwargs(args.reward_kwargs, parse_rewards(rewards)))
    record = generate(req)
    if "warning" in record:
        print(f"promptloop: warning: {record.pop('warning')}", file=sys.stderr)
    if args.prompts is not None:
        if not args.json:
            means = record.get("reward_means")
            print(f"wrote {record['n']} prompts' images to {args.out}/prompt_NNNN/ and {args.out}/record.json"
                  + (f" (mean rewards {json.dumps(means)})" if means else ""))
            return {}
        return record
    if not args.json:
        for s in record["samples"]:
            extra = "" if s["alignment"] is None else f"  (alignment {s['alignment']:.2f})"
            if "rewards" in s:
                extra += f"  (reward {s['rewards']['total']:.3f})"
            print(f"{s['image']}: {s['final_prompt']}{extra}")
        print(f"wrote {args.out}/record.json and {args.out}/trajectory.png")
        return {}
    return record


def cmd_bench_overhead(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.eval.compare import WorldPolicyError
    from promptloop.eval.overhead import overhead
    from promptloop.world import UnknownWorldError

    try:  # a missing --adapter is overhead's FileNotFoundError: one line, exit 2, before the backbone loads
        return overhead(batch=args.batch, steps=args.steps, repeats=args.repeats, backbone=args.backbone,
                        world=args.world, adapter=args.adapter)
    except (WorldPolicyError, UnknownWorldError) as e:
        raise UsageError(str(e)) from None


def cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.plan import format_plan, plan

    configs = list(args.configs)
    if not configs:
        shipped = Path(__file__).resolve().parents[2] / "configs"
        configs = sorted(str(p) for p in shipped.glob("*.yaml"))
        if not configs:
            raise UsageError(f"no recipes in {shipped}: name the config files to plan")
    result = plan(configs, gpus=args.gpus, budget_gb=args.budget_gb)
    if not args.json:
        print(format_plan(result))
        return {}
    return result


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.eval.demo import run_demo

    return run_demo(out_dir=args.out, quick=args.quick, world=args.world)


def cmd_push(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.hub import push_folder
    from promptloop.integrity import verify_folder

    folder = Path(args.folder)
    if not (folder / "promptloop_policy.json").is_file():
        raise UsageError(f"{folder}: not a saved policy folder (no promptloop_policy.json)")
    verify_folder(folder, "policy folder")  # never publish a folder that does not match its manifest
    url = push_folder(folder, args.repo_id, private=args.private, commit_message=args.commit_message)
    return {"folder": str(folder), "repo": url}


AUTH_ENV = "PROMPTLOOP_APP_AUTH"  # USER:PASSWORD of the app's login (kept out of the process list, unlike --auth)


def is_loopback(host: str) -> bool:
    """Whether `host` serves this machine only (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def app_auth(flag: str | None, env: str | None) -> tuple[str, str] | None:
    """(user, password) from --auth or $PROMPTLOOP_APP_AUTH (the flag wins); None when neither is set."""
    text, name = (flag, "--auth") if flag is not None else (env, AUTH_ENV)
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise UsageError(f"{name}: expected USER:PASSWORD with both parts non-empty")
    return user, password


def cmd_app(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.validation import check_device

    check_device(args.device)  # at start, not when the first image is sampled
    auth = app_auth(args.auth, os.environ.get(AUTH_ENV))
    if not is_loopback(args.host):
        if auth is None:
            raise UsageError(f"--host {args.host} serves the app to other machines: it then needs a login, give "
                             f"{AUTH_ENV}=USER:PASSWORD in the environment (or --auth USER:PASSWORD)")
        print(f"promptloop: warning: --host {args.host} serves the app to every machine that can reach this one "
              f"(login required, as {auth[0]!r})", file=sys.stderr)
    if any(not r.strip() for r in args.runs_root or []):
        raise UsageError("--runs-root: the path is empty (give a folder, e.g. --runs-root runs)")
    roots = [Path(r).expanduser() for r in (args.runs_root or ["runs"])]
    for root in roots:
        if root.exists() and not root.is_dir():
            raise UsageError(f"--runs-root {root}: exists and is a file, not a folder")
        if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
            raise UsageError(f"--runs-root {root}: this user may not read it")
    try:
        from promptloop.app.layout import build_app, launch
    except ImportError as e:
        raise UsageError(f"the app needs gradio ({e}): pip install 'promptloop[app]'") from None
    from promptloop.app.models import ModelSpec, ModelStore

    store = ModelStore(ModelSpec(pipeline=args.pipeline, policy=args.policy, adapter=args.adapter,
                                 feed_forward_adapter=args.feed_forward_adapter, reward=args.reward,
                                 device=args.device, dtype=args.dtype))
    print(f"PromptLoop app on http://{args.host}:{args.port} (Ctrl-C stops it; runs under "
          f"{', '.join(map(str, roots))})", flush=True)
    launch(build_app(store, run_roots=tuple(str(r) for r in roots)), host=args.host, port=args.port, auth=auth)
    return {}


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="promptloop", description="PromptLoop: prompt refinement during diffusion sampling.")
    sub = p.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="sample with the loop; write images, a trajectory strip and a JSON record")
    gen.add_argument("query", nargs="?", default=None, help="the prompt (the user's query); or --prompts FILE")
    gen.add_argument("--prompts", default=None, metavar="SOURCE",
                     help="every prompt of a .txt / .jsonl / .csv file (or world:heldout, hf:NAME): one folder each")
    gen.add_argument("--reward", action="append", default=None, metavar="NAME[=WEIGHT]",
                     help="score every image with this reward, judged against its query (repeat for several)")
    gen.add_argument("--reward-kwargs", default=None, metavar="JSON", help="options per reward (JSON object)")
    gen.add_argument("--refine", type=limit_arg("refinements", non_negative_int), default=5,
                     help="number of refinements N_R")
    gen.add_argument("--mode", default="feedback", choices=["feedback", "no-feedback", "feed-forward", "none"])
    gen.add_argument("--seed", type=SEED, default=0)
    gen.add_argument("--num-images", type=limit_arg("images", positive_int), default=1)
    gen.add_argument("--steps", type=positive_int, default=20, help="sampling steps")
    gen.add_argument("--guidance", type=GUIDANCE, default=None, help="CFG scale (default: the world's on a world backbone)")
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--pipeline", default="world", help="'world', 'world:NAME' (e.g. world:v3), 'world:PATH', or a diffusers folder / hub id")
    gen.add_argument("--policy", default="world", help="'world', or a VLM folder / hub id")
    gen.add_argument("--device", default="auto")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    gen.add_argument("--out", default="outputs/generate", help="output folder")
    gen.add_argument("--json", action="store_true", help="print the record as one JSON object")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="the main job: base vs feed-forward vs PromptLoop on an embedded world (v3)")
    demo.add_argument("--world", type=world_arg, default="v3",
                      help="the world: v3 (Backdrops, built with room for feedback; default) or v1 (Shapes, a control)")
    demo.add_argument("--out", default="outputs/demo", help="output folder")
    demo.add_argument("--quick", action="store_true", help="a smaller, faster run (for smoke tests)")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.set_defaults(func=cmd_demo)

    pl = sub.add_parser("plan", help="parameter memory per GPU of training recipes (replicated / FSDP / offload), "
                                     "from model configs only: nothing is downloaded")
    pl.add_argument("configs", nargs="*", help="recipe YAML files (default: the shipped configs/*.yaml)")
    pl.add_argument("--gpus", type=gpu_list, default=[1, 2, 4, 8], help="GPU counts, comma-separated (default 1,2,4,8)")
    pl.add_argument("--budget-gb", type=limit_arg("memory_gb", positive_float), default=80.0, help="memory per GPU in GB (1e9 bytes)")
    pl.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    pl.set_defaults(func=cmd_plan)

    app = sub.add_parser("app", help="the web app: watch the loop sample, compare, browse runs (needs promptloop[app])")
    app.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only; any other needs "
                                                         "a login, see --auth)")
    app.add_argument("--port", type=limit_arg("port", positive_int), default=7860)
    app.add_argument("--pipeline", default="world", help="'world', 'world:NAME' (e.g. world:v3), 'world:PATH', or a diffusers folder / hub id")
    app.add_argument("--policy", default="world", help="'world', or a VLM folder / hub id")
    app.add_argument("--adapter", default=None, help="LoRA adapter of PromptLoop's policy (world: the GRPO one)")
    app.add_argument("--feed-forward-adapter", default=None, help="adapter of the compare switch's feed-forward row")
    app.add_argument("--reward", default=None, help="reward name (default: alignment on the world, none otherwise)")
    app.add_argument("--device", default="auto")
    app.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    app.add_argument("--runs-root", action="append", default=None, metavar="DIR",
                     help="the Runs tab reads run folders under DIR only (repeatable; default: ./runs)")
    app.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                     help=f"Gradio's login, required when --host is not loopback (better: ${AUTH_ENV}, which other "
                          "users cannot read in the process list)")
    app.set_defaults(func=cmd_app)

    add_world_parser(sub)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    ov = bench.add_parser("overhead", help="sampling time of PromptLoop vs plain sampling on the world backbone")
    ov.add_argument("--batch", type=limit_arg("images", positive_int), default=16)
    ov.add_argument("--steps", type=SAMPLING_STEPS, default=20)
    ov.add_argument("--repeats", type=limit_arg("repeats", positive_int), default=5)
    ov.add_argument("--world", default=None, metavar="NAME",
                    help="a world (shapes/v1, backdrops/v3, ...): its backbone and its shipped policy (default: the "
                         "default backbone's world)")
    ov.add_argument("--backbone", default=None, metavar="DIR", help="a world backbone folder (default: the world's)")
    ov.add_argument("--adapter", default=None, metavar="DIR",
                    help="a LoRA adapter on the world's policy, e.g. assets/world/backdrops/policy_grpo (default: none, "
                         "the SFT policy)")
    ov.add_argument("--json", action="store_true")
    ov.set_defaults(func=cmd_bench_overhead)

    add_eval_parser(sub)

    from promptloop.train.cli import add_train_parser

    add_train_parser(sub)

    push = sub.add_parser("push", help="upload a saved policy folder (e.g. OUTPUT_DIR/policy) to a Hugging Face Hub "
                                       "model repo, created when missing")
    push.add_argument("folder", help="the policy folder (what VLMPolicy.save_pretrained / promptloop train write)")
    push.add_argument("repo_id", help="the Hub repo, 'owner/name' (or 'name' in your namespace)")
    push.add_argument("--private", action=argparse.BooleanOptionalAction, default=None,
                      help="create the repo private (default: the Hub's default)")
    push.add_argument("--commit-message", default=None)
    push.add_argument("--json", action="store_true")
    push.set_defaults(func=cmd_push)

    return p


# numbers checked against validation.LIMITS outside argparse types: kind -> where (for docs/limits.md)
CHECKED_ELSEWHERE = {"sampling_steps": ["promptloop generate --steps", "app: steps (2..200)"],
                     "seed": ["app: seed"], "guidance": ["app: guidance"]}


def limit_uses() -> dict[str, list[str]]:
    """kind of `validation.LIMITS` -> the flags (every subcommand) and config fields checked against it."""
    from promptloop.model_json import POLICY_FIELDS
    from promptloop.validation import CONFIG_LIMITS

    uses: dict[str, list[str]] = {k: list(v) for k, v in CHECKED_ELSEWHERE.items()}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}")
            elif (kind := getattr(action.type, "limit", None)) is not None:
                uses.setdefault(kind, []).append(f"{prefix} {action.option_strings[0]}")

    walk(build_parser(), "promptloop")
    for field, kind in CONFIG_LIMITS.items():
        uses.setdefault(kind, []).append(f"config {field}")
    for field, (_, kind) in POLICY_FIELDS.items():
        if kind is not None:
            uses.setdefault(kind, []).append(f"promptloop_policy.json {field}")
    return uses


def _known_errors() -> tuple[type[BaseException], ...]:
    from promptloop.train.cli import known_errors

    return (UsageError, NotADirectoryError, KeyError, *known_errors())


def main(argv: Sequence[str] | None = None) -> int:
    from promptloop.fs_errors import check_argv
    from promptloop.validation import InputError

    try:
        check_argv(sys.argv[1:] if argv is None else argv)
    except InputError as e:
        print(f"promptloop: error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], dict[str, Any]] = args.func
    return run_command("promptloop", lambda: func(args), _known_errors, getattr(args, "json", False))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
