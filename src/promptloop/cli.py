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

from promptloop.cli_runner import run_command
from promptloop.validation import InputError, check_limit, check_number, limit_arg, number_arg
from promptloop.world import DEFAULT_WORLD

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class UsageError(Exception):
    """Bad input from the command line (reported as one line, exit code 2)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with errors as one line `promptloop: error: ...` and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"promptloop: error: {self.prog.removeprefix('promptloop').strip() + ': ' if self.prog != 'promptloop' else ''}{message}\n")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return v


def non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative finite number, got {text}")
    return v


def unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return v


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


GUIDANCE = limit_arg("guidance", number_arg(lo=0.0))  # a CFG scale: finite, >= 0, at most LIMITS["guidance"]
# every number flag checks its range in validation.LIMITS (docs/limits.md); the first parser words the lower bound
SEED = limit_arg("seed", non_negative_int)
COUNT = limit_arg("count", positive_int)
SAMPLING_STEPS = limit_arg("sampling_steps", positive_int)
TRAIN_STEPS = limit_arg("train_steps", positive_int)
TRAIN_STEPS0 = limit_arg("train_steps0", non_negative_int)


# ----------------------------------------------------------------------------- world commands

WORLD_HELP = "the embedded world: shapes (v1, the default) or patterns (v2)"


def world_arg(text: str) -> str:
    from promptloop.world import UnknownWorldError, world_name

    try:
        return world_name(text)
    except UnknownWorldError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def rule_names(text: str) -> tuple[str, ...]:
    """Comma-separated rule names; the world's room checks them against its own rules."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated rule names, got {text!r}")
    return names


def fraction_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(check_number(v, "fraction", lo=0.0, hi=1.0, lo_open=True, hi_open=True) for v in text.split(","))
    except InputError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions in (0, 1), got {text!r}") from None


def cmd_world_train_backbone(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.fs_errors import output_dir
    from promptloop.world.train_backbone import BackboneTrainConfig, train_backbone

    args.work_dir = str(output_dir(args.work_dir, "--work-dir"))  # both folders before any training: a bad one fails at once
    if args.out is not None:
        args.out = str(output_dir(args.out, "--out"))
    if args.init_from is not None and not Path(args.init_from).expanduser().is_dir():
        raise UsageError(f"--init-from {args.init_from}: no such backbone folder")

    cfg = BackboneTrainConfig(world=args.world, work_dir=args.work_dir, seed=args.seed, unet_steps=args.steps,
                              stop_at=args.stop_at, vae_steps=args.vae_steps, threads=args.threads,
                              decoder_steps=args.decoder_steps, init_from=args.init_from or "",
                              text_binder_layers=args.text_binder_layers, binding_loss=args.binding_loss,
                              vae_finetune_steps=args.vae_finetune_steps)
    if args.binding_loss > 0 and args.text_binder_layers == 0:
        raise UsageError("--binding-loss trains the text binder: it needs --text-binder-layers > 0")
    if args.lr is not None:
        cfg.lr = args.lr
    if args.out:
        cfg.out_dir = args.out
    out = train_backbone(cfg)
    return {"backbone": str(out)}


# world-specific options of the measurement commands: argparse dest -> the flag a user types
WORLD_FLAGS = {"timestep_shift": "--timestep-shift", "anchored": "--anchored", "rules": "--rules",
               "fractions": "--fractions", "split": "--split"}


def _run_world_command(args: argparse.Namespace, command: str, common: dict[str, Any]) -> dict[str, Any]:
    """Call the world package's `command` with the common options and the world-specific ones the user set;
    a flag the world does not take is a usage error naming the world's own."""
    from promptloop.world import get_world

    world = get_world(args.world)
    allowed = getattr(world, f"{command.upper()}_OPTIONS")
    given = {k: getattr(args, k) for k in WORLD_FLAGS if getattr(args, k, None) not in (None, False)}
    refused = [WORLD_FLAGS[k] for k in given if k not in allowed]
    if refused:
        own = ", ".join(WORLD_FLAGS[k] for k in allowed) or "none"
        raise UsageError(f"{', '.join(refused)}: not an option of {command.replace('_', '-')} in world {args.world} "
                         f"(its own: {own})")
    return getattr(world, command)(**common, **given)


def cmd_world_analyzer_check(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.world import get_world

    return get_world(args.world).analyzer_check(n=args.n, seed=args.seed)


def cmd_world_backbone_eval(args: argparse.Namespace) -> dict[str, Any]:
    return _run_world_command(args, "backbone_eval", {"backbone": args.backbone, "n": args.n, "seed": args.seed,
                                                      "steps": args.steps, "guidance": args.guidance, "eta": args.eta})


def cmd_world_train_policy(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.fs_errors import output_dir
    from promptloop.world.shapes.train_policy import DEFAULT_OUT, reproduce_world_policy

    out = output_dir(args.out, "--out") if args.out is not None else DEFAULT_OUT  # before 15 min of training
    return reproduce_world_policy(out, steps=args.steps, seed=args.seed, num_threads=args.threads,
                                  progress_bar=not args.json)


def cmd_world_room(args: argparse.Namespace) -> dict[str, Any]:
    common = {"backbone": args.backbone, "n": args.n, "seeds": args.seeds, "candidates": args.candidates,
              "steps": args.steps, "guidance": args.guidance, "seed": args.seed, "eta": args.eta}
    return _run_world_command(args, "room", common)


def cmd_world_write_manifests(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.integrity import verify_folder, write_manifest
    from promptloop.world.backbone import DEFAULT_BACKBONE

    shipped = DEFAULT_BACKBONE.parent
    folders = args.folders or [str(shipped / n) for n in ("backbone", "policy", "policy_feedforward", "policy_grpo")]
    done = {}
    for f in folders:
        if not Path(f).is_dir():
            raise UsageError(f"not a folder: {f}")
        if args.check:
            done[f] = "ok" if verify_folder(f, missing="ignore") else "no manifest"
        else:
            done[f] = str(write_manifest(f))
    return done


def cmd_world_prompts(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.world import get_world

    prompt_set = get_world(args.world).prompt_set
    items = prompt_set(args.name)[: args.n] if args.n else prompt_set(args.name)
    if not args.json:
        for it in items:
            print(it.caption)
        return {}
    return {"world": args.world, "name": args.name, "prompts": [it.caption for it in items]}


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
    from promptloop.eval.overhead import overhead

    return overhead(batch=args.batch, steps=args.steps, repeats=args.repeats)


GENERAL_COMPARE = ("pipeline", "policy", "reward", "prompts")  # any of these: the comparison on any pipeline


def cmd_eval_compare(args: argparse.Namespace) -> dict[str, Any]:
    if not any(getattr(args, k) is not None for k in GENERAL_COMPARE):
        for flag in ("reward_kwargs", "seeds_per_prompt", "batch_size", "grid", "out", "device", "dtype"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} applies to the comparison on a pipeline: name "
                                 "--pipeline, --policy, --reward or --prompts (the world's defaults otherwise)")
        from promptloop.eval.compare import compare

        return compare(n=args.n or 256, seed=args.seed, steps=args.steps,
                       guidance=4.0 if args.guidance is None else args.guidance, refinements=args.refine,
                       grpo_adapter=args.adapter, feed_forward_adapter=args.feed_forward_adapter,
                       rewrite_first=args.rewrite_first)
    from promptloop.eval.pipeline_compare import compare_pipeline, format_summary, parse_reward_kwargs, parse_rewards

    weights = parse_rewards(args.reward or ["alignment"])
    summary = compare_pipeline(
        pipeline=args.pipeline or "world", policy=args.policy or "world", rewards=weights,
        prompts=args.prompts or "world:heldout", n=args.n, seeds_per_prompt=args.seeds_per_prompt or 1, seed=args.seed,
        steps=args.steps, guidance=args.guidance, refinements=args.refine, adapter=args.adapter,
        feed_forward_adapter=args.feed_forward_adapter, reward_kwargs=parse_reward_kwargs(args.reward_kwargs, weights),
        device=args.device or "auto", dtype=args.dtype or "float32", batch_size=args.batch_size or 8,
        grid=4 if args.grid is None else args.grid, rewrite_first=args.rewrite_first,
        out=args.out or "outputs/compare", progress=not args.json)
    if not args.json:
        print(format_summary(summary))
        print(f"wrote {args.out or 'outputs/compare'}/compare.json, samples.jsonl"
              + (", compare_grid.png" if "grid" in summary else ""))
        return {}
    return summary


def gpu_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    for v in values:
        try:
            check_limit(v, "gpus", "GPU count")
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return values


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

    return run_demo(out_dir=args.out, quick=args.quick)


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
    gen.add_argument("--guidance", type=GUIDANCE, default=None, help="CFG scale (default: 4 on the world backbone)")
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--pipeline", default="world", help="'world', 'world:PATH', or a diffusers folder / hub id")
    gen.add_argument("--policy", default="world", help="'world', or a VLM folder / hub id")
    gen.add_argument("--device", default="auto")
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    gen.add_argument("--out", default="outputs/generate", help="output folder")
    gen.add_argument("--json", action="store_true", help="print the record as one JSON object")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="the main job: base vs PromptLoop on the embedded Shapes world")
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
    app.add_argument("--pipeline", default="world", help="'world', 'world:PATH', or a diffusers folder / hub id")
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

    world = sub.add_parser("world", help="the embedded worlds (shapes = v1, patterns = v2, backdrops = v3)").add_subparsers(dest="world_command", required=True)

    tb = world.add_parser("train-backbone", help="train backbone A from scratch (resumable)")
    tb.add_argument("--world", type=world_arg, default=DEFAULT_WORLD, help=WORLD_HELP)
    tb.add_argument("--work-dir", default="runs/backbone", help="checkpoints and caches; rerun to resume")
    tb.add_argument("--out", default=None, help="output folder (default: the world's shipped backbone folder)")
    tb.add_argument("--vae-steps", type=TRAIN_STEPS, default=1200, help="AutoencoderKL steps (stage 1)")
    tb.add_argument("--threads", type=limit_arg("threads", non_negative_int), default=0, help="torch CPU threads (0: torch's default)")
    tb.add_argument("--steps", type=TRAIN_STEPS, default=5000,
                    help="UNet training steps (length of the cosine schedule); a larger value resumes and extends a run")
    tb.add_argument("--stop-at", type=TRAIN_STEPS0, default=0, help="end after this step and save (0: all steps)")
    tb.add_argument("--decoder-steps", type=TRAIN_STEPS0, default=3000,
                    help="VAE-decoder-only steps after the UNet stage (encoder frozen; 0: skip)")
    tb.add_argument("--init-from", default=None,
                    help="continue from this backbone folder: keep its VAE (no decoder stage), train its UNet --steps more steps")
    tb.add_argument("--vae-finetune-steps", type=TRAIN_STEPS0, default=0,
                    help="with --init-from: fine-tune its VAE on this world's renders first, latents anchored (0: keep it)")
    tb.add_argument("--lr", type=limit_arg("learning_rate", positive_float), default=None,
                    help="peak learning rate of the UNet (default 5e-4)")
    tb.add_argument("--text-binder-layers", type=limit_arg("layers", non_negative_int), default=2,
                    help="trainable layers binding words between MiniLM and the UNet (0: condition on MiniLM directly)")
    tb.add_argument("--binding-loss", type=limit_arg("loss_weight", non_negative_float), default=0.0,
                    help="weight of the binder's auxiliary loss binding each word to its object's attributes (0: off)")
    tb.add_argument("--seed", type=SEED, default=0)
    tb.add_argument("--json", action="store_true")
    tb.set_defaults(func=cmd_world_train_backbone)

    tp = world.add_parser(
        "train-policy", help="SFT of the world refinement policy (the shipped recipe), then its held-out evaluation")
    tp.add_argument("--out", default=None, help="output folder (default: assets/world/policy)")
    tp.add_argument("--steps", type=TRAIN_STEPS, default=None, help="SFT steps (default: the shipped recipe's)")
    tp.add_argument("--seed", type=SEED, default=0)
    tp.add_argument("--threads", type=limit_arg("threads", positive_int), default=2, help="torch CPU threads")
    tp.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    tp.set_defaults(func=cmd_world_train_policy)

    ac = world.add_parser("analyzer-check", help="attribute accuracy of the analyzer on clean renders")
    ac.add_argument("--world", type=world_arg, default=DEFAULT_WORLD, help=WORLD_HELP)
    ac.add_argument("--n", type=COUNT, default=500)
    ac.add_argument("--seed", type=SEED, default=0)
    ac.add_argument("--json", action="store_true")
    ac.set_defaults(func=cmd_world_analyzer_check)

    for name, func, n_default in (("backbone-eval", cmd_world_backbone_eval, 256), ("room", cmd_world_room, 128)):
        c = world.add_parser(name, help="quality window of the backbone" if name == "backbone-eval"
                             else "room for the loop: base vs feed-forward bound vs mid-way oracles")
        c.add_argument("--world", type=world_arg, default=DEFAULT_WORLD, help=WORLD_HELP)
        c.add_argument("--backbone", default=None, help="backbone folder (default: the world's shipped one)")
        c.add_argument("--n", type=COUNT, default=n_default, help="prompts per set")
        c.add_argument("--seed", type=SEED, default=0)
        c.add_argument("--steps", type=SAMPLING_STEPS, default=20, help="sampling steps")
        c.add_argument("--guidance", type=GUIDANCE, default=4.0, help="classifier-free guidance scale")
        c.add_argument("--timestep-shift", type=limit_arg("timestep_shift", positive_float), default=None,
                       help="sampling schedule's timestep shift (default: the backbone's own; 1 = unshifted)")
        c.add_argument("--eta", type=limit_arg("unit", unit_float), default=0.0,
                       help="stochastic sampling: DDIM's eta in [0, 1] (0 = deterministic, 1 = DDPM's noise)")
        c.add_argument("--json", action="store_true")
        c.add_argument("--fractions", type=fraction_list, default=None, metavar="F,F",
                       help="worlds v2, v3: fractions of sampling at which the rules switch / the window is measured "
                            "(the world's default when not given)")
        if name == "room":
            c.add_argument("--seeds", type=COUNT, default=4, help="seeds per query")
            c.add_argument("--candidates", type=COUNT, default=8, help="candidate rewrites per query")
            c.add_argument("--anchored", action="store_true",
                           help="world v1: also the mid-way oracles over candidates pinned to each sample's preview")
            c.add_argument("--rules", type=rule_names, nargs="?", const=(), default=None, metavar="NAMES",
                           help="worlds v2, v3: the preview-reading rule policies and blind controls (cross-fitted, with "
                                "CIs) it always measures; NAMES (comma-separated) keeps a subset")
            c.add_argument("--split", default=None, choices=["train", "heldout"],
                           help="worlds v2, v3: prompt set (default heldout)")
        c.set_defaults(func=func)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    ov = bench.add_parser("overhead", help="sampling time of PromptLoop vs plain sampling on the world backbone")
    ov.add_argument("--batch", type=limit_arg("images", positive_int), default=16)
    ov.add_argument("--steps", type=SAMPLING_STEPS, default=20)
    ov.add_argument("--repeats", type=limit_arg("repeats", positive_int), default=5)
    ov.add_argument("--json", action="store_true")
    ov.set_defaults(func=cmd_bench_overhead)

    ev = sub.add_parser("eval", help="evaluation").add_subparsers(dest="eval_command", required=True)
    cmp_ = ev.add_parser("compare", help="base vs feed-forward vs PromptLoop: on any pipeline, policy and reward "
                                         "(--pipeline/--policy/--reward/--prompts, with CIs and a trajectory grid), "
                                         "or the embedded world's heldout alignment (none of those flags)")
    cmp_.add_argument("--pipeline", default=None, help="diffusers folder or Hub id, 'world', 'tiny:NAME'")
    cmp_.add_argument("--policy", default=None, help="VLM policy folder or Hub id, 'world', 'tiny:NAME'")
    cmp_.add_argument("--reward", action="append", default=None, metavar="NAME[=WEIGHT]",
                      help="a reward judged against each prompt (repeat for several; default alignment)")
    cmp_.add_argument("--reward-kwargs", default=None, metavar="JSON",
                      help='options per reward, e.g. \'{"clipscore": {"model_name_or_path": "PATH"}}\'')
    cmp_.add_argument("--prompts", default=None, metavar="SOURCE",
                      help="a .txt / .jsonl / .csv file, world:heldout or hf:NAME[:SPLIT[:COLUMN]]")
    cmp_.add_argument("--n", type=COUNT, default=None,
                      help="prompts (the first N; default: all, or 256 heldout queries of the world)")
    cmp_.add_argument("--seeds-per-prompt", type=limit_arg("images", positive_int), default=None,
                      help="images per prompt (default 1)")
    cmp_.add_argument("--seed", type=SEED, default=0)
    cmp_.add_argument("--steps", type=SAMPLING_STEPS, default=20)
    cmp_.add_argument("--guidance", type=GUIDANCE, default=None, help="CFG scale (default: 4 on the world, else the "
                                                                        "pipeline's default)")
    cmp_.add_argument("--refine", type=limit_arg("refinements", positive_int), default=5,
                      help="refinements N_R of the loop rows")
    cmp_.add_argument("--adapter", default=None, help="LoRA adapter of the policy, folder or Hub id (world: "
                                                        "assets/world/policy_grpo)")
    cmp_.add_argument("--feed-forward-adapter", default=None,
                      help="adapter of the feed-forward row (default: the policy itself, rewriting once; world: "
                           "assets/world/policy_feedforward)")
    cmp_.add_argument("--batch-size", type=limit_arg("images", positive_int), default=None,
                      help="images per sampler call (default 8)")
    cmp_.add_argument("--grid", type=limit_arg("count0", non_negative_int), default=None,
                      help="prompts in the trajectory grid (default 4)")
    cmp_.add_argument("--out", default=None, help="output folder (default outputs/compare)")
    cmp_.add_argument("--device", default=None, help="auto (default), cpu, cuda, ...")
    cmp_.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    cmp_.add_argument("--rewrite-first", action=argparse.BooleanOptionalAction, default=False,
                      help="the feedback rows also rewrite the query before sampling (for a policy trained with "
                           "loop.rewrite_first)")
    cmp_.add_argument("--json", action="store_true")
    cmp_.set_defaults(func=cmd_eval_compare)

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

    wm = world.add_parser("write-manifests", help="write (or --check) the sizes+sha256 manifest of model folders "
                          "(default: the shipped ones in assets/world/)")
    wm.add_argument("folders", nargs="*", help="model folders (default: assets/world/{backbone,policy,policy_*})")
    wm.add_argument("--check", action="store_true", help="verify the manifests instead of writing them")
    wm.add_argument("--json", action="store_true")
    wm.set_defaults(func=cmd_world_write_manifests)

    pr = world.add_parser("prompts", help="print a fixed prompt set")
    pr.add_argument("name", choices=["train", "heldout"])
    pr.add_argument("--world", type=world_arg, default=DEFAULT_WORLD, help=WORLD_HELP)
    pr.add_argument("--n", type=limit_arg("count0", non_negative_int), default=0, help="only the first N (0: all)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_world_prompts)
    return p


gpu_list.limit = "gpus"  # type: ignore[attr-defined]  # each value checked against LIMITS["gpus"]
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
