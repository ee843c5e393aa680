"""`promptloop demo [--world v3|v1]`: the main job on an embedded world (about 10 minutes on 2 CPU cores).

1. Evaluate on heldout queries, the same queries and seeds for every row, with 95 % bootstrap CIs over queries:
   the plain backbone (`base`), the GRPO-trained feed-forward rewriter (`feed_forward`) and PromptLoop with
   feedback, N_R = 5 (`promptloop`), all shipped with the world; the world's task reward (judged against the
   original query) and its alignment.
2. The held-out curve of the shipped feedback policy's GRPO run (its `metrics.jsonl`, evaluated every few steps
   with CIs), and a short GRPO run from the SFT policy (the world's config, scaled down) with its reward curve.
3. Write `report.md`, `summary.json` (keys base, feed_forward, promptloop with `_ci`, promptloop_minus_feed_forward,
   grpo_reward_first, grpo_reward_last, ...) and PNGs: base vs PromptLoop on the same seeds, trajectory strips (each
   refinement's x0 preview and the prompt chosen from it), the held-out curve, the short run's reward curve. The
   report ends with the world's note on what it is built to show (`DEMO_NOTE`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from promptloop.eval.compare import load_world_policy, world_adapter
from promptloop.eval.figures import curve_with_bands, labelled_grid, reward_curve
from promptloop.fs_errors import atomic_write, output_dir
from promptloop.rewards import get_reward
from promptloop.world import get_world, task_reward_name
from promptloop.world.backbone import load_backbone
from promptloop.world.fair import bootstrap_ci
from promptloop.world.sampling import sample

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
DEMO_WORLD = "backdrops"  # the world `promptloop demo` runs on by default: the one built to give feedback room


def _short_grpo(world: ModuleType, out: Path, steps: int) -> list[dict[str, Any]]:
    """A short GRPO run from the world's SFT policy (its config, scaled down); the training records."""
    from promptloop.train.config_load import load_config
    from promptloop.train.logging import read_metrics
    from promptloop.train.trainer import train

    cfg = load_config(CONFIGS / world.GRPO_CONFIG, [
        f"output_dir={out}", f"steps={steps}", "overwrite=true",
        "grpo.queries_per_step=4", "grpo.num_generations=6", "grpo.groups_per_rollout_call=4",
        "grpo.num_iterations=2", "grpo.warmup_steps=3", "eval.every=0", "checkpoint.every=0", "checkpoint.keep=1",
        "logging.plot=false",
    ])
    result = train(cfg)
    return [r for r in read_metrics(result.metrics_path) if r.get("kind") == "train"]


def _heldout_curves(world: ModuleType, task: str, path: Path) -> dict[str, Any] | None:
    """The held-out evaluations in the training logs (`metrics.jsonl`) beside the world's shipped adapters, one line
    per training mode with its CI band and the plain backbone's; the feedback run's first and last points."""
    from promptloop.train.logging import read_metrics

    curves: dict[str, tuple[list[int], list[float], list[float], list[float]]] = {}
    out: dict[str, Any] | None = None
    base = None
    for mode in ("feedback", "no-feedback", "feed-forward"):
        adapter = world_adapter(world, mode)
        log = None if adapter is None else adapter / "metrics.jsonl"
        if log is None or not log.is_file():
            continue
        evals = [r for r in read_metrics(log) if r.get("kind") == "eval" and f"eval/{task}/ci_low" in r]
        if not evals:
            continue
        xs = [r["step"] for r in evals]
        curves[f"GRPO {mode}"] = (xs, *([r[f"eval/{task}/{k}"] for r in evals] for k in ("mean", "ci_low", "ci_high")))
        base = base or (xs, *([evals[0][f"eval/base/{task}/{k}"]] * len(xs) for k in ("mean", "ci_low", "ci_high")))
        if mode == "feedback":
            out = {"steps": xs, "mean": curves[f"GRPO {mode}"][1], "first": evals[0][f"eval/{task}/mean"],
                   "last": evals[-1][f"eval/{task}/mean"], "base": evals[0][f"eval/base/{task}/mean"]}
    if not curves:
        return None
    if base is not None:
        curves["plain backbone"] = base
    curve_with_bands(curves, path, xlabel="GRPO step", ylabel=task,
                     title=f"shipped runs: {task} on held-out queries (95 % CI over queries)")
    return out


def run_demo(out_dir: str = "outputs/demo", quick: bool = False, world: str = DEMO_WORLD) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = output_dir(out_dir, "--out")  # an empty, file or unwritable path fails before the models load
    w = get_world(world)
    if getattr(w, "DEFAULT_POLICY", None) is None or getattr(w, "GRPO_CONFIG", None) is None:
        raise ValueError(f"world {w.VERSION} ({w.NAME}) has no refinement policy to demonstrate; choose v1 or v3")
    n = 16 if quick else 64
    grpo_steps = 4 if quick else 16
    steps, guidance, n_r = w.STEPS, w.GUIDANCE, 5
    pipe = load_backbone(w.DEFAULT_BACKBONE)
    task_name = task_reward_name(w)
    task, alignment = get_reward(task_name), get_reward(w.ALIGNMENT_REWARD)
    queries = [it.caption for it in w.sample_prompts("heldout", n, seed=1)]
    seeds = list(range(n))

    # 1. base / feed-forward / PromptLoop on the same heldout queries and seeds
    rows = {
        "base": (None, "none"),
        "feed_forward": (load_world_policy(world_adapter(w, "feed-forward"), pipe, w), "feed-forward"),
        "promptloop": (load_world_policy(world_adapter(w, "feedback"), pipe, w), "feedback"),
    }
    summary: dict[str, Any] = {"world": w.NAME, "reward": task_name, "n": n, "steps": steps, "guidance": guidance,
                               "refinements": n_r}
    batches = {}
    for name, (policy, mode) in rows.items():
        torch.manual_seed(0)
        batch = sample(pipe, queries, seeds, policy=policy, mode=mode, steps=steps, guidance=guidance,
                       num_refinements=n_r if mode == "feedback" else None, desc=f"demo {name}")
        scores = task(batch.images, queries).scores.double().numpy()
        summary[name] = float(scores.mean())
        summary[f"{name}_ci"] = [float(v) for v in bootstrap_ci(scores)]
        summary[f"{name}_alignment"] = float(alignment(batch.images, queries).scores.mean())
        batches[name] = (batch, scores)
    diff = batches["promptloop"][1] - batches["feed_forward"][1]
    summary["promptloop_minus_feed_forward"] = float(diff.mean())
    summary["promptloop_minus_feed_forward_ci"] = [float(v) for v in bootstrap_ci(diff)]

    # 2. figures: base vs PromptLoop on the same seeds; trajectory strips; the shipped run's held-out curve
    k = min(12, n)
    base_b, base_s = batches["base"]
    loop_b, loop_s = batches["promptloop"]
    images, labels = [], []
    for i in range(k):
        images += [base_b.images[i], loop_b.images[i]]
        labels += [f"base {base_s[i]:.2f}: {queries[i]}", f"PromptLoop {loop_s[i]:.2f}: {loop_b.trajectories[i].final_prompt}"]
    labelled_grid(images, labels, out / "base_vs_promptloop.png", columns=6, cell=128, wrap=24, lines=7)
    strip_imgs, strip_labels = [], []
    for i in range(6):
        traj = loop_b.trajectories[i]
        strip_imgs.append(np.zeros((32, 32, 3), dtype=np.float32) + 1.0)
        strip_labels.append(f"query: {traj.query}")
        for r in traj.refinements:
            strip_imgs.append(r.preview)
            strip_labels.append(f"{r.progress:.0%}{' fallback' if r.fallback else ''}: {r.prompt}")
        strip_imgs.append(loop_b.images[i])
        strip_labels.append(f"final, {task_name} {loop_s[i]:.2f}")
    labelled_grid(strip_imgs, strip_labels, out / "trajectories.png", columns=n_r + 2, cell=128, wrap=24, lines=8)
    curve = _heldout_curves(w, task_name, out / "heldout_curve.png")
    if curve is not None:
        summary["shipped_heldout_curve"] = curve

    # 3. a short GRPO from the SFT policy
    records = _short_grpo(w, out / "grpo", grpo_steps)
    rewards = [r["reward/total/mean"] for r in records]
    window = max(1, min(5, len(rewards) // 3))
    summary["grpo_steps"] = len(rewards)
    summary["grpo_reward_first"] = float(np.mean(rewards[:window]))
    summary["grpo_reward_last"] = float(np.mean(rewards[-window:]))
    reward_curve([r["step"] for r in records], {f"{task_name} (train batch)": rewards}, out / "reward_curve.png",
                 title="short GRPO from the SFT policy")
    summary["seconds"] = time.perf_counter() - t0
    atomic_write(out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(_report(w, summary, window)))
    return summary


def _fmt_ci(summary: dict[str, Any], key: str) -> str:
    lo, hi = summary[f"{key}_ci"]
    return f"{summary[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def _report(w: ModuleType, s: dict[str, Any], window: int) -> str:
    n_r, task = s["refinements"], s["reward"]
    lines = [
        f"# PromptLoop demo (embedded world {w.VERSION}, {w.NAME})",
        "",
        f"The world's backbone (frozen), {s['steps']} sampling steps, CFG {s['guidance']}; {s['n']} heldout queries, one",
        f"fixed seed each, the same for every row. `{task}` is judged against the original query; 95 % CIs over queries.",
        "",
        f"| method | {task} | alignment |",
        "|---|---|---|",
    ]
    for name, label in (("base", "plain backbone"), ("feed_forward", "feed-forward rewriter (GRPO)"),
                        ("promptloop", f"PromptLoop, feedback, N_R = {n_r} (GRPO)")):
        lines.append(f"| {label} | {_fmt_ci(s, name)} | {s[name + '_alignment']:.3f} |")
    lines += ["", f"PromptLoop minus feed-forward (paired): {_fmt_ci(s, 'promptloop_minus_feed_forward')}.", ""]
    curve = s.get("shipped_heldout_curve")
    if curve is not None:
        lines += [f"The shipped GRPO runs, evaluated on held-out queries every few steps (`heldout_curve.png`, one "
                  f"line per training mode): the feedback run went from {curve['first']:.3f} at step "
                  f"{curve['steps'][0]} to {curve['last']:.3f} at step {curve['steps'][-1]} (plain backbone "
                  f"{curve['base']:.3f}).", ""]
    lines += [
        f"Short GRPO from the SFT policy ({s['grpo_steps']} steps, 4 queries x 6 trajectories per step): "
        f"mean batch reward {s['grpo_reward_first']:.3f} over the first {window} steps, "
        f"{s['grpo_reward_last']:.3f} over the last {window} (`reward_curve.png`; a short run is noisy).",
        "",
        "Figures: `base_vs_promptloop.png` (same seeds, score before each caption), `trajectories.png`",
        "(each refinement's x0 preview with the prompt chosen from it), `heldout_curve.png`, `reward_curve.png`.",
        f"Wall time: {s['seconds']:.0f} s.",
        "",
        "## What this world is built to show",
        "",
        getattr(w, "DEMO_NOTE", "").strip(),
        "",
    ]
    return "\n".join(lines)
