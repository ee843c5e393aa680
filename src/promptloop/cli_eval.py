"""`promptloop eval ...`: the comparisons (`compare`: on any pipeline, or an embedded world's table), the
refinements curve (`refinements`) and the paper's four claims on a world (`claims`)."""

from __future__ import annotations

import argparse
from typing import Any

from promptloop.cli_args import (
    COUNT,
    GUIDANCE,
    SAMPLING_STEPS,
    SEED,
    TEMPERATURE,
    UsageError,
    non_negative_int,
    positive_int,
)
from promptloop.cli_world import world_arg
from promptloop.validation import limit_arg

GENERAL_COMPARE = ("pipeline", "policy", "reward", "prompts")  # any of these: the comparison on any pipeline


def cmd_eval_compare(args: argparse.Namespace) -> dict[str, Any]:
    if not any(getattr(args, k) is not None for k in GENERAL_COMPARE):
        if args.backbone is not None:
            from promptloop.models import check_local_folder

            check_local_folder(args.backbone, "--backbone")
        for flag in ("reward_kwargs", "seeds_per_prompt", "batch_size", "grid", "out", "device", "dtype"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} applies to the comparison on a pipeline: name "
                                 "--pipeline, --policy, --reward or --prompts (the world's defaults otherwise)")
        from promptloop.eval.compare import compare

        return compare(n=args.n or 256, seed=args.seed, steps=args.steps,
                       guidance=args.guidance, refinements=args.refine,
                       grpo_adapter=args.adapter, feed_forward_adapter=args.feed_forward_adapter,
                       no_feedback_adapter=args.no_feedback_adapter, rewrite_first=args.rewrite_first,
                       world=args.world, backbone=args.backbone, equal_compute=args.equal_compute,
                       temperature=args.temperature, progress=not args.json)
    for flag in ("world", "backbone", "no_feedback_adapter", "temperature"):
        if getattr(args, flag) is not None:
            raise UsageError(f"--{flag.replace('_', '-')} applies to the comparison on an embedded world: leave out "
                             "--pipeline, --policy, --reward and --prompts")
    from promptloop.eval.pipeline_compare import compare_pipeline, format_summary, parse_reward_kwargs, parse_rewards

    weights = parse_rewards(args.reward) if args.reward else None  # None: the world's alignment
    summary = compare_pipeline(
        pipeline=args.pipeline or "world", policy=args.policy or "world", rewards=weights,
        prompts=args.prompts or "world:heldout", n=args.n, seeds_per_prompt=args.seeds_per_prompt or 1, seed=args.seed,
        steps=args.steps, guidance=args.guidance, refinements=args.refine, adapter=args.adapter,
        feed_forward_adapter=args.feed_forward_adapter, reward_kwargs=parse_reward_kwargs(args.reward_kwargs, weights or {}),
        device=args.device or "auto", dtype=args.dtype or "float32", batch_size=args.batch_size or 8,
        grid=4 if args.grid is None else args.grid, rewrite_first=args.rewrite_first,
        out=args.out or "outputs/compare", progress=not args.json)
    if not args.json:
        print(format_summary(summary))
        print(f"wrote {args.out or 'outputs/compare'}/compare.json, samples.jsonl"
              + (", compare_grid.png" if "grid" in summary else ""))
        return {}
    return summary


def cmd_eval_refinements(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.eval.refinements import refinements_curve

    if args.backbone is not None:
        from promptloop.models import check_local_folder

        check_local_folder(args.backbone, "--backbone")
    return refinements_curve(world=args.world, n=args.n, seed=args.seed, max_refinements=args.max,
                             backbone=args.backbone, figure=args.figure, temperature=args.temperature,
                             progress=not args.json)


def cmd_eval_claims(args: argparse.Namespace) -> dict[str, Any]:
    from promptloop.eval.claims import eval_claims

    inputs = {k: getattr(args, k) for k in ("backbone_b", "ddpo", "ddpo_proxy", "grpo_proxy")}
    for flag, folder in inputs.items():
        if folder is not None and not folder.strip():
            raise UsageError(f"--{flag.replace('_', '-')}: the path is empty (give a folder)")
    return eval_claims(world=args.world, n=args.n, seed=args.seed, refinements=args.refine, inputs=inputs,
                       results_dir=args.results, figures_dir=args.figures, progress=not args.json)


def add_eval_parser(sub: Any) -> None:
    """The `eval` subcommands on the top-level subparsers `sub`."""
    ev = sub.add_parser("eval", help="evaluation").add_subparsers(dest="eval_command", required=True)
    cmp_ = ev.add_parser("compare", help="base vs feed-forward vs PromptLoop: on any pipeline, policy and reward "
                                         "(--pipeline/--policy/--reward/--prompts, with CIs and a trajectory grid), "
                                         "or an embedded world's table with CIs (none of those flags; --world v1|v3)")
    cmp_.add_argument("--pipeline", default=None, help="diffusers folder or Hub id, 'world', 'tiny:NAME'")
    cmp_.add_argument("--policy", default=None, help="VLM policy folder or Hub id, 'world', 'tiny:NAME'")
    cmp_.add_argument("--reward", action="append", default=None, metavar="NAME[=WEIGHT]",
                      help="a reward judged against each prompt (repeat for several; default: the world's alignment)")
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
    cmp_.add_argument("--guidance", type=GUIDANCE, default=None, help="CFG scale (default: the world's on the world, else the "
                                                                        "pipeline's default)")
    cmp_.add_argument("--refine", type=limit_arg("refinements", positive_int), default=5,
                      help="refinements N_R of the loop rows")
    cmp_.add_argument("--adapter", default=None, help="LoRA adapter of the policy, folder or Hub id (world: "
                                                        "assets/world/policy_grpo)")
    cmp_.add_argument("--feed-forward-adapter", default=None,
                      help="adapter of the feed-forward row (default: the policy itself, rewriting once; world: "
                           "assets/world/policy_feedforward)")
    cmp_.add_argument("--no-feedback-adapter", default=None,
                      help="world: adapter of the no-feedback row (default: the world's, else the feedback policy "
                           "without previews)")
    cmp_.add_argument("--world", type=world_arg, default=None,
                      help="world: which embedded world (v1, v2, v3; default: the backbone's, the default world's)")
    cmp_.add_argument("--backbone", default=None, help="world: a backbone folder of that world (default: its shipped one)")
    cmp_.add_argument("--equal-compute", action=argparse.BooleanOptionalAction, default=True,
                      help="world: also run the feed-forward rewriter with its steps raised to PromptLoop's wall time")
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
    cmp_.add_argument("--temperature", type=TEMPERATURE, default=None,
                      help="world: the rewrites' sampling temperature in every policy row (0: greedy; default: the "
                           "policies' saved one, 1.0)")
    cmp_.add_argument("--json", action="store_true")
    cmp_.set_defaults(func=cmd_eval_compare)

    ref = ev.add_parser("refinements", help="the world's task reward at N_R = 0..max, with and without feedback")
    ref.add_argument("--world", type=world_arg, default="v3", help="the world (default v3)")
    ref.add_argument("--n", type=COUNT, default=128, help="heldout queries (one seed each)")
    ref.add_argument("--seed", type=SEED, default=0)
    ref.add_argument("--max", type=limit_arg("refinements", positive_int), default=5, help="largest N_R")
    ref.add_argument("--backbone", default=None, help="a backbone folder of that world (default: its shipped one)")
    ref.add_argument("--figure", default="outputs/refinements.png", help="where to write the figure (PNG)")
    ref.add_argument("--temperature", type=TEMPERATURE, default=None,
                     help="the rewrites' sampling temperature (0: greedy; default: the policies' saved one, 1.0)")
    ref.add_argument("--json", action="store_true")
    ref.set_defaults(func=cmd_eval_refinements)

    cl = ev.add_parser("claims", help="the paper's four claims on an embedded world (PromptLoop works, unseen "
                                      "backbone, composition with DDPO, over-optimisation): tables with CIs and a "
                                      "figure written to docs/")
    cl.add_argument("--world", type=world_arg, default="v3", help="the world (default v3)")
    cl.add_argument("--n", type=COUNT, default=256, help="heldout queries (one seed each)")
    cl.add_argument("--seed", type=SEED, default=0)
    cl.add_argument("--refine", type=limit_arg("refinements", positive_int), default=5,
                    help="refinements N_R of the loop rows")
    cl.add_argument("--backbone-b", default=None, help="backbone B's folder (default runs/{v}bbB_out)")
    cl.add_argument("--ddpo", default=None, help="the DDPO run on the task reward (default runs/{v}ddpo)")
    cl.add_argument("--ddpo-proxy", default=None, help="the DDPO run on the proxy (default runs/{v}ddpo_proxy)")
    cl.add_argument("--grpo-proxy", default=None,
                    help="the feedback policy's GRPO run on the proxy (default runs/{v}grpo_proxy)")
    cl.add_argument("--results", default="docs/results", help="folder of the JSON ({v}_claims.json)")
    cl.add_argument("--figures", default="docs/figures", help="folder of the figure ({v}_claims_overoptimisation.png)")
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=cmd_eval_claims)
