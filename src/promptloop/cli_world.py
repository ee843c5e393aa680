"""`promptloop world ...`: the embedded worlds' commands (train a backbone or a policy, measure, list prompts).

Generic over the registered worlds (`promptloop.world`): `--world` picks one by name or alias, and the options of
the measurement commands beyond the common ones are the ones the worlds declare (`BACKBONE_EVAL_OPTIONS`,
`ROOM_OPTIONS`); an option the chosen world does not take is a usage error naming the world's own.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from promptloop.cli_args import (
    COUNT,
    GUIDANCE,
    SAMPLING_STEPS,
    SEED,
    TRAIN_STEPS,
    TRAIN_STEPS0,
    UsageError,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    unit_float,
)
from promptloop.validation import limit_arg
from promptloop.world import ALIASES, DEFAULT_WORLD, UnknownWorldError, get_world, world_name, world_names
from promptloop.world.denoisers import DEFAULT_DENOISER, DEFAULT_SAMPLER, DENOISERS, SAMPLERS

MEASUREMENTS = ("backbone_eval", "room")  # the commands whose options the worlds declare


def world_help() -> str:
    names = [f"{n} ({a}{', the default' if n == DEFAULT_WORLD else ''})" for a, n in ALIASES.items() if n in world_names()]
    return f"the embedded world: {', '.join(names)}"


def world_arg(text: str) -> str:
    try:
        return world_name(text)
    except UnknownWorldError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def world_options(command: str) -> dict[str, tuple[Any, list[str]]]:
    """dest -> (the option, the versions of the worlds that take it) over the registered worlds, in order."""
    found: dict[str, tuple[Any, list[str]]] = {}
    for name in world_names():
        world = get_world(name)
        for option in getattr(world, f"{command.upper()}_OPTIONS", ()):
            found.setdefault(option.dest, (option, []))[1].append(world.VERSION)
    return found


def _run_world_command(args: argparse.Namespace, command: str, common: dict[str, Any]) -> dict[str, Any]:
    """Call the world package's `command` with the common options and the world-specific ones the user set;
    a flag the world does not take is a usage error naming the world's own."""
    world = get_world(args.world)
    if not hasattr(world, command):
        raise UsageError(f"world {args.world} has no {command.replace('_', '-')} command")
    flags = {dest: option.flag for dest, (option, _) in world_options(command).items()}
    allowed = [option.dest for option in getattr(world, f"{command.upper()}_OPTIONS", ())]
    given = {k: getattr(args, k) for k in flags if getattr(args, k, None) not in (None, False)}
    refused = [flags[k] for k in given if k not in allowed]
    if refused:
        own = ", ".join(flags[k] for k in allowed) or "none"
        raise UsageError(f"{', '.join(refused)}: not an option of {command.replace('_', '-')} in world {args.world} "
                         f"(its own: {own})")
    common["guidance"] = world.GUIDANCE if common["guidance"] is None else common["guidance"]
    return getattr(world, command)(**common, **given)


def cmd_world_train_backbone(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.fs_errors import output_dir
    from promptloop.world.train_backbone import BackboneTrainConfig, train_backbone

    args.work_dir = str(output_dir(args.work_dir, "--work-dir"))  # both folders before any training: a bad one fails at once
    if args.out is not None:
        args.out = str(output_dir(args.out, "--out"))
    for flag, folder in (("--init-from", args.init_from), ("--vae-from", args.vae_from)):
        if folder is not None and not folder.strip():  # not the working folder
            raise UsageError(f"{flag}: the path is empty (give a backbone folder)")
        if folder is not None and not Path(folder).expanduser().is_dir():
            raise UsageError(f"{flag} {folder}: no such backbone folder")
    if args.init_from is not None and args.vae_from is not None:
        raise UsageError("--init-from keeps its backbone's VAE and UNet, --vae-from its VAE only: give one of the two")

    cfg = BackboneTrainConfig(world=args.world, work_dir=args.work_dir, seed=args.seed, unet_steps=args.steps,
                              stop_at=args.stop_at, vae_steps=args.vae_steps, threads=args.threads,
                              decoder_steps=args.decoder_steps, init_from=args.init_from or "",
                              text_binder_layers=args.text_binder_layers, binding_loss=args.binding_loss,
                              vae_finetune_steps=args.vae_finetune_steps, denoiser=args.denoiser,
                              sampler=args.sampler, vae_from=args.vae_from or "")
    if args.binding_loss > 0 and args.text_binder_layers == 0:
        raise UsageError("--binding-loss trains the text binder: it needs --text-binder-layers > 0")
    if args.lr is not None:
        cfg.lr = args.lr
    if args.out:
        cfg.out_dir = args.out
    out = train_backbone(cfg)
    return {"backbone": str(out)}


def cmd_world_ddpo(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.fs_errors import output_dir
    from promptloop.rewards.registry import available_rewards
    from promptloop.weightrl.config import DDPOConfig
    from promptloop.weightrl.ddpo import train_ddpo

    if args.reward is not None and args.reward not in available_rewards():
        raise UsageError(f"--reward {args.reward}: no such reward (one of {', '.join(available_rewards())})")
    if args.backbone is not None and not Path(args.backbone).expanduser().is_dir():
        raise UsageError(f"--backbone {args.backbone}: no such backbone folder")
    work = str(output_dir(args.work_dir, "--work-dir"))  # both folders before any training: a bad one fails at once
    out = str(output_dir(args.out, "--out")) if args.out is not None else ""
    cfg = DDPOConfig(world=args.world, backbone=args.backbone or "", reward=args.reward or "", work_dir=work,
                     out_dir=out, seed=args.seed, steps=args.steps, prompts_per_step=args.prompts_per_step,
                     images_per_prompt=args.images_per_prompt, eta=args.eta, eval_every=args.eval_every,
                     eval_queries=args.eval_queries, threads=args.threads)
    if args.lr is not None:
        cfg.learning_rate = args.lr
    try:
        cfg.check()
    except ValueError as e:
        raise UsageError(str(e)) from None
    return train_ddpo(cfg, progress=not args.json)


def cmd_world_analyzer_check(args: argparse.Namespace) -> dict[str, Any]:
    world = get_world(args.world)
    if not hasattr(world, "analyzer_check"):
        raise UsageError(f"world {args.world} has no analyzer-check command")
    return world.analyzer_check(n=args.n, seed=args.seed)


def cmd_world_backbone_eval(args: argparse.Namespace) -> dict[str, Any]:
    return _run_world_command(args, "backbone_eval", {"backbone": args.backbone, "n": args.n, "seed": args.seed,
                                                      "steps": args.steps, "guidance": args.guidance, "eta": args.eta})


def cmd_world_train_policy(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.fs_errors import output_dir

    world = get_world(args.world)
    if not hasattr(world, "train_policy"):
        raise UsageError(f"world {args.world} has no refinement-policy recipe")
    out = output_dir(args.out, "--out") if args.out is not None else None  # before 15 min of training
    return world.train_policy(out, steps=args.steps, seed=args.seed, num_threads=args.threads,
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
    prompt_set = get_world(args.world).prompt_set
    items = prompt_set(args.name)[: args.n] if args.n else prompt_set(args.name)
    if not args.json:
        for it in items:
            print(it.caption)
        return {}
    return {"world": args.world, "name": args.name, "prompts": [it.caption for it in items]}


def _add_world_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The options the registered worlds declare for `command`, each once; help names the worlds that take it
    when not all of them do."""
    everyone = len(world_names())
    for option, versions in world_options(command).values():
        who = "" if len(versions) == everyone else f"world{'s' if len(versions) > 1 else ''} {', '.join(versions)}: "
        parser.add_argument(option.flag, help=who + option.help, **option.kwargs)


def add_world_parser(sub: Any) -> None:
    """`promptloop world ...` and its subcommands, on the `promptloop` parser's subparsers `sub`."""
    versions = ", ".join(f"{n} = {a}" for a, n in ALIASES.items() if n in world_names())
    world = sub.add_parser("world", help=f"the embedded worlds ({versions})").add_subparsers(
        dest="world_command", required=True)
    help_world = world_help()

    tb = world.add_parser("train-backbone", help="train backbone A from scratch (resumable)")
    tb.add_argument("--world", type=world_arg, default=DEFAULT_WORLD, help=help_world)
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
    tb.add_argument("--vae-from", default=None,
                    help="keep this backbone folder's VAE (its latent space; no VAE or decoder stage) and train a fresh "
                         "UNet of --denoiser on it (not with --init-from)")
    tb.add_argument("--vae-finetune-steps", type=TRAIN_STEPS0, default=0,
                    help="with --init-from or --vae-from: fine-tune its VAE on this world's renders first, latents "
                         "anchored (0: keep it)")
    tb.add_argument("--denoiser", choices=sorted(DENOISERS), default=DEFAULT_DENOISER,
                    help="the UNet trained: a (backbone A's, the world's own) or b (backbone B's, world v3 only; "
                         "promptloop.world.denoisers)")
    tb.add_argument("--sampler", choices=sorted(SAMPLERS), default=DEFAULT_SAMPLER,
                    help="the sampling scheduler saved with it: ddim (the world's) or dpm (DPM-Solver++ on the same "
                         "schedule)")
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
    tp.add_argument("--world", type=world_arg, default=DEFAULT_WORLD, help=help_world)
    tp.add_argument("--out", default=None, help="output folder (default: assets/world/policy)")
    tp.add_argument("--steps", type=TRAIN_STEPS, default=None, help="SFT steps (default: the shipped recipe's)")
    tp.add_argument("--seed", type=SEED, default=0)
    tp.add_argument("--threads", type=limit_arg("threads", positive_int), default=2, help="torch CPU threads")
    tp.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    tp.set_defaults(func=cmd_world_train_policy)

    dd = world.add_parser("ddpo", help="DDPO: tune the backbone's UNet weights on a reward (the weight-level RL "
                          "baseline; resumable)")
    dd.add_argument("--world", type=world_arg, default=DEFAULT_WORLD, help=help_world)
    dd.add_argument("--backbone", default=None, help="backbone folder to tune (default: the world's shipped one)")
    dd.add_argument("--reward", default=None, help="registered reward to tune on (default: the world's task reward)")
    dd.add_argument("--work-dir", default="runs/ddpo", help="checkpoint and metrics.jsonl; rerun to resume")
    dd.add_argument("--out", default=None, help="folder of the tuned backbone (default: WORK_DIR/backbone)")
    dd.add_argument("--steps", type=TRAIN_STEPS, default=100,
                    help="DDPO steps (a larger value resumes and extends a finished run)")
    dd.add_argument("--prompts-per-step", type=COUNT, default=8, help="training queries per step")
    dd.add_argument("--images-per-prompt", type=COUNT, default=4, help="images per query (at least 2)")
    dd.add_argument("--lr", type=limit_arg("learning_rate", positive_float), default=None,
                    help="AdamW learning rate of the UNet (default 1e-4)")
    dd.add_argument("--eta", type=limit_arg("unit", unit_float), default=1.0,
                    help="DDIM's eta of the rollouts, in (0, 1] (1 = DDPM's noise)")
    dd.add_argument("--eval-every", type=TRAIN_STEPS0, default=10,
                    help="held-out evaluation every N steps (0: at the start and the end only)")
    dd.add_argument("--eval-queries", type=COUNT, default=64, help="held-out queries per evaluation")
    dd.add_argument("--threads", type=limit_arg("threads", non_negative_int), default=0,
                    help="torch CPU threads (0: torch's default)")
    dd.add_argument("--seed", type=SEED, default=0)
    dd.add_argument("--json", action="store_true")
    dd.set_defaults(func=cmd_world_ddpo)

    ac = world.add_parser("analyzer-check", help="attribute accuracy of the analyzer on clean renders")
    ac.add_argument("--world", type=world_arg, default=DEFAULT_WORLD, help=help_world)
    ac.add_argument("--n", type=COUNT, default=500)
    ac.add_argument("--seed", type=SEED, default=0)
    ac.add_argument("--json", action="store_true")
    ac.set_defaults(func=cmd_world_analyzer_check)

    for name, func, n_default in (("backbone-eval", cmd_world_backbone_eval, 256), ("room", cmd_world_room, 128)):
        c = world.add_parser(name, help="quality window of the backbone" if name == "backbone-eval"
                             else "room for the loop: base vs feed-forward bound vs mid-way oracles")
        c.add_argument("--world", type=world_arg, default=DEFAULT_WORLD, help=help_world)
        c.add_argument("--backbone", default=None, help="backbone folder (default: the world's shipped one)")
        c.add_argument("--n", type=COUNT, default=n_default, help="prompts per set")
        c.add_argument("--seed", type=SEED, default=0)
        c.add_argument("--steps", type=SAMPLING_STEPS, default=20, help="sampling steps")
        c.add_argument("--guidance", type=GUIDANCE, default=None,
                       help="classifier-free guidance scale (default: the world's)")
        c.add_argument("--eta", type=limit_arg("unit", unit_float), default=0.0,
                       help="stochastic sampling: DDIM's eta in [0, 1] (0 = deterministic, 1 = DDPM's noise)")
        c.add_argument("--json", action="store_true")
        if name == "room":
            c.add_argument("--seeds", type=COUNT, default=4, help="seeds per query")
            c.add_argument("--candidates", type=COUNT, default=8, help="candidate rewrites per query")
        _add_world_options(c, name.replace("-", "_"))
        c.set_defaults(func=func)

    wm = world.add_parser("write-manifests", help="write (or --check) the sizes+sha256 manifest of model folders "
                          "(default: the shipped ones in assets/world/)")
    wm.add_argument("folders", nargs="*", help="model folders (default: assets/world/{backbone,policy,policy_*})")
    wm.add_argument("--check", action="store_true", help="verify the manifests instead of writing them")
    wm.add_argument("--json", action="store_true")
    wm.set_defaults(func=cmd_world_write_manifests)

    pr = world.add_parser("prompts", help="print a fixed prompt set")
    pr.add_argument("name", choices=["train", "heldout"])
    pr.add_argument("--world", type=world_arg, default=DEFAULT_WORLD, help=help_world)
    pr.add_argument("--n", type=limit_arg("count0", non_negative_int), default=0, help="only the first N (0: all)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_world_prompts)
