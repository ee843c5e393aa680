"""`promptloop generate`: sample with the loop and write the images, a trajectory strip and a JSON record.

World backbone and world policy by default; any diffusers pipeline / transformers VLM by path or id. One query, or
every prompt of a file (`prompts`: each in its own folder `prompt_NNNN/`, with a `record.json` of them all); the
images scored by named rewards (`rewards`, judged against the query) besides the world's alignment of world queries.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptloop.eval.figures import labelled_grid
from promptloop.fs_errors import atomic_write, output_dir
from promptloop.loop.sampler import MODES, PromptLoopSampler
from promptloop.models import check_local_folder
from promptloop.policy.sanitize import token_length_fn
from promptloop.validation import check_device, check_limit, check_number, check_prompt, check_prompt_tokens
from promptloop.world import world_name_of_pipeline, world_of_pipeline


@dataclass
class GenerateRequest:
    query: str | None = None  # the user's query (or `prompts`)
    refine: int = 5  # number of refinements N_R (feedback / no-feedback)
    mode: str = "feedback"  # one of MODES
    seed: int = 0  # seed of the first image; image k uses seed + k
    num_images: int = 1  # images for the query
    steps: int = 20  # sampling steps
    guidance: float | None = None  # CFG scale (None: the world's on a world backbone, the pipeline's default otherwise)
    negative_prompt: str | None = None  # negative prompt (pipelines with CFG)
    pipeline: str = "world"  # 'world', 'world:NAME' (e.g. world:v3), 'world:PATH', a diffusers folder or hub id
    policy: str = "world"  # 'world', a VLM folder or hub id
    device: str = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', ...
    dtype: str = "float32"  # float32 | bfloat16 | float16
    out: str = "outputs/generate"  # output folder
    prompts: str | None = None  # a prompt source instead of `query`: .txt / .jsonl / .csv, world:heldout, hf:NAME
    rewards: list[str] = field(default_factory=list)  # rewards scoring each image, "NAME" or "NAME=WEIGHT"
    reward_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)  # options per reward name


def validate(req: GenerateRequest) -> None:
    """Reject bad requests before loading anything (clear, specific messages)."""
    if (req.query is None) == (req.prompts is None):
        raise ValueError("give a query or --prompts FILE (one of the two)")
    if req.query is not None:
        req.query = check_prompt(req.query, "query")
    if req.negative_prompt is not None:
        check_prompt(req.negative_prompt, "--negative-prompt")
    if req.guidance is not None:
        req.guidance = check_number(req.guidance, "--guidance", lo=0.0)
    check_device(req.device)
    if req.mode.replace("_", "-") not in MODES:
        raise ValueError(f"unknown mode {req.mode!r}; choose from {', '.join(MODES)}")
    if req.steps < 2:
        raise ValueError(f"--steps must be at least 2, got {req.steps}")
    if req.refine < 0:
        raise ValueError(f"--refine must be >= 0, got {req.refine}")
    if req.mode in ("feedback", "no-feedback") and req.refine > req.steps - 1:
        raise ValueError(f"--refine {req.refine} is more than the {req.steps - 1} refinements {req.steps} steps allow")
    if req.num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {req.num_images}")
    if req.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {req.seed}")
    for value, kind, flag in ((req.steps, "sampling_steps", "--steps"), (req.refine, "refinements", "--refine"),
                              (req.num_images, "images", "--num-images"), (req.seed, "seed", "--seed"),
                              (req.guidance, "guidance", "--guidance")):
        if value is not None:
            check_limit(value, kind, flag)  # the ranges of validation.LIMITS
    check_limit(req.seed + req.num_images - 1, "seed", "--seed + --num-images - 1 (the last image's seed)")
    for flag, name in (("--pipeline", req.pipeline), ("--policy", req.policy)):
        check_local_folder(name, flag)


def _record(req: GenerateRequest, query: str, out: Any, seconds: float, scores: list[float] | None,
            rewards: dict[str, list[float]] | None = None) -> dict[str, Any]:
    samples = []
    for k, traj in enumerate(out.trajectories):
        samples.append(
            {
                "seed": req.seed + k,
                "image": f"image_{k}.png",
                "initial_prompt": traj.initial_prompt,
                "final_prompt": traj.final_prompt,
                "alignment": None if scores is None else scores[k],
                **({"rewards": {name: v[k] for name, v in rewards.items()}} if rewards is not None else {}),
                "refinements": [
                    {
                        "step": r.step,
                        "timestep": r.timestep,
                        "progress": r.progress,
                        "prompt": r.prompt,
                        "previous_prompt": r.previous_prompt,
                        "raw_text": r.raw_text,
                        "fallback": r.fallback,
                        "num_tokens": int(r.completion_ids.numel()),
                        "logprob_sum": float(r.logprobs.sum()) if r.logprobs.numel() else 0.0,
                        "preview": f"preview_{k}_{j}.png" if r.preview is not None else None,
                    }
                    for j, r in enumerate(traj.refinements)
                ],
            }
        )
    return {
        "query": query,
        "mode": out.mode,
        "pipeline": req.pipeline,
        "policy": req.policy if out.mode != "none" else None,
        "steps": req.steps,
        "guidance": req.guidance,
        "refinement_steps": out.refinement_steps,
        "num_policy_calls": out.num_policy_calls,
        "seconds": seconds,
        "samples": samples,
    }


def generate(req: GenerateRequest) -> dict[str, Any]:
    """Run the request; write images, previews, a trajectory strip and record.json into req.out (per prompt of a
    prompt source, into req.out/prompt_NNNN/, with req.out/record.json holding every prompt's record)."""
    from promptloop.models import load_pipeline, load_policy

    validate(req)
    folder = output_dir(req.out, "--out")  # before any model is loaded: a bad folder fails at once
    reward = None
    if req.rewards:
        from promptloop.eval.pipeline_compare import parse_rewards
        from promptloop.rewards import CombinedReward

        reward = CombinedReward(parse_rewards(req.rewards), normalise=False,
                                reward_kwargs=req.reward_kwargs).preflight()  # a reward that cannot load fails now
    prompts = None
    if req.prompts is not None:
        from promptloop.train.data import load_prompts

        prompts = load_prompts(req.prompts, world=world_name_of_pipeline(req.pipeline))
    mode = req.mode.replace("_", "-")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if req.device == "auto" else req.device
    pipe, extra = load_pipeline(req.pipeline, device, dtype=req.dtype)
    world = world_of_pipeline(req.pipeline)  # the world a world backbone was trained on (None for other pipelines)
    guidance = req.guidance if req.guidance is not None else (world.GUIDANCE if world is not None else None)
    req.guidance = guidance
    policy = None
    if mode != "none":
        policy = load_policy(req.policy, device, dtype="auto" if req.dtype == "float32" else req.dtype)
        if getattr(policy, "tokenizer", None) is not None:
            if prompts is not None:
                from promptloop.train.data import skip_overlong_tokens

                prompts = skip_overlong_tokens(prompts, policy.tokenizer)
            else:
                check_prompt_tokens([req.query], policy.tokenizer, "query")
        tokenizer = getattr(pipe, "tokenizer", None)
        if tokenizer is not None and getattr(policy, "prompt_length_fn", None) is None:
            policy.prompt_length_fn = token_length_fn(tokenizer)
    if prompts is not None and not prompts:
        raise ValueError(f"--prompts {req.prompts!r}: every prompt is over the length limits")
    sampler = PromptLoopSampler(pipe, policy, mode=mode, num_refinements=req.refine)  # type: ignore[arg-type]
    if prompts is None:
        assert req.query is not None
        return _generate_one(req, req.query, sampler, guidance, extra, reward, world, folder)
    records = [_generate_one(req, q, sampler, guidance, extra, reward, world, output_dir(
        str(folder / f"prompt_{i:04d}"), "--out")) for i, q in enumerate(prompts)]
    summary: dict[str, Any] = {"prompts": req.prompts, "n": len(records), "skipped_prompts": len(prompts.skipped),
                               "records": [f"prompt_{i:04d}/record.json" for i in range(len(records))]}
    if reward is not None:
        names = list(records[0]["samples"][0]["rewards"])
        summary["reward_means"] = {n: float(np.mean([s["rewards"][n] for r in records for s in r["samples"]]))
                                   for n in names}
    text = json.dumps({**summary, "prompt_records": records}, indent=2)
    atomic_write(folder / "record.json", lambda tmp: tmp.write_text(text))
    message = prompts.skip_message("--prompts")
    if message is not None:
        summary["warning"] = message
    return summary


def _generate_one(req: GenerateRequest, query: str, sampler: PromptLoopSampler, guidance: float | None,
                  extra: dict[str, Any], reward: Any, world: Any, folder: Path) -> dict[str, Any]:
    """Sample `req.num_images` images of one query; write its files into `folder`; return its record."""
    gens = [torch.Generator(device="cpu").manual_seed(req.seed + k) for k in range(req.num_images)]
    torch.manual_seed(req.seed)  # the policy samples from the global generator: seed it for a reproducible record
    t0 = time.perf_counter()
    out = sampler([query] * req.num_images, num_inference_steps=req.steps, guidance_scale=guidance,
                  negative_prompt=req.negative_prompt, generator=gens, **extra)
    seconds = time.perf_counter() - t0

    scores = None
    if world is not None:  # the world's own alignment reward, where the query is in the world's language
        from promptloop.rewards import get_reward

        try:
            world.parse(query)
        except ValueError:
            scores = None  # not a world-grammar query: no verifiable score
        else:
            arr = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in out.images])
            scores = [float(s) for s in get_reward(world.ALIGNMENT_REWARD)(arr, [query] * req.num_images).scores]
    rewards = None
    if reward is not None:
        with torch.no_grad():
            rewards = {k: [float(x) for x in v.detach().float().cpu()]
                       for k, v in reward.evaluate(list(out.images), [query] * req.num_images).items()}
    record = _record(req, query, out, seconds, scores, rewards)
    _write_outputs(folder, out, scores, rewards, record, req.num_images)
    return record


def _write_outputs(folder: Path, out: Any, scores: list[float] | None, rewards: dict[str, list[float]] | None,
                   record: dict[str, Any], num_images: int) -> None:
    """Images, previews, the trajectory strip and record.json; each file is written whole (`atomic_write`), and
    when one cannot be written (a full disk) the files this call wrote are removed again before the error."""
    written: list[Path] = []

    def save(path: Path, write: Any) -> None:
        atomic_write(path, write)
        written.append(path)

    try:
        strip_images, strip_labels = [], []
        for k, (img, traj) in enumerate(zip(out.images, out.trajectories, strict=True)):
            save(folder / f"image_{k}.png", img.save)
            for j, r in enumerate(traj.refinements):
                if r.preview is not None:
                    save(folder / f"preview_{k}_{j}.png", r.preview.save)
                    strip_images.append(r.preview)
                    strip_labels.append(f"{r.progress:.0%}: {r.prompt}{' (fallback)' if r.fallback else ''}")
            strip_images.append(img)
            score = "" if scores is None else f" [alignment {scores[k]:.2f}]"
            if rewards is not None:
                score += f" [reward {rewards['total'][k]:.3f}]"
            strip_labels.append(f"final{score}: {traj.final_prompt}")
        columns = len(strip_images) // max(num_images, 1)
        labelled_grid(strip_images, strip_labels, folder / "trajectory.png", columns=max(columns, 1), cell=160,
                      wrap=26, lines=8)
        written.append(folder / "trajectory.png")
        text = json.dumps(record, indent=2)
        save(folder / "record.json", lambda tmp: tmp.write_text(text))
    except OSError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
