"""`promptloop demo`: the main job on the embedded Shapes world (a few minutes on 2 CPU cores).

1. Evaluate on a heldout subset, same queries and seeds for every row: the plain backbone (`base`),
   the GRPO-trained feed-forward rewriter (`feed_forward`) and PromptLoop with feedback, N_R = 5
   (`promptloop`, the shipped GRPO policy).
2. Run a short GRPO from the SFT world policy (configs/world.yaml, scaled down) and plot its reward.
3. Write `report.md`, `summary.json` (keys base, feed_forward, promptloop, grpo_reward_first,
   grpo_reward_last) and PNGs: base vs PromptLoop on the same seeds, trajectory strips, the reward curve.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptloop.eval.compare import FEED_FORWARD_ADAPTER, GRPO_ADAPTER, load_world_policy
from promptloop.eval.figures import labelled_grid, reward_curve
from promptloop.fs_errors import atomic_write, output_dir
from promptloop.rewards import get_reward
from promptloop.world import world_of_backbone
from promptloop.world.backbone import load_backbone
from promptloop.world.sampling import sample

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "world.yaml"


def _short_grpo(out: Path, steps: int) -> list[dict[str, Any]]:
    """A short GRPO run from the SFT policy; returns the training records of metrics.jsonl."""
    from promptloop.train.config_load import load_config
    from promptloop.train.logging import read_metrics
    from promptloop.train.trainer import train

    cfg = load_config(CONFIG, [
        f"output_dir={out}", f"steps={steps}", "overwrite=true",
        "grpo.queries_per_step=4", "grpo.num_generations=6", "grpo.groups_per_rollout_call=4",
        "grpo.learning_rate=2e-3", "grpo.num_iterations=2", "grpo.warmup_steps=3",
        "loop.num_refinements=3", "eval.every=0", "checkpoint.every=0", "checkpoint.keep=1",
        "logging.plot=false",
    ])
    result = train(cfg)
    return [r for r in read_metrics(result.metrics_path) if r.get("kind") == "train"]


def run_demo(out_dir: str = "outputs/demo", quick: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = output_dir(out_dir, "--out")  # an empty, file or unwritable path fails before the models load
    n = 16 if quick else 64
    grpo_steps = 4 if quick else 30
    world = world_of_backbone()  # the shipped backbone's world: its prompts, sampling defaults and reward
    steps, guidance, n_r = world.STEPS, world.GUIDANCE, 5
    pipe = load_backbone()
    alignment = get_reward(world.ALIGNMENT_REWARD)
    items = world.sample_prompts("heldout", n, seed=1)
    queries = [it.caption for it in items]
    seeds = list(range(n))

    # 1. base / feed-forward / PromptLoop on the same heldout queries and seeds
    rows = {
        "base": (None, "none"),
        "feed_forward": (load_world_policy(FEED_FORWARD_ADAPTER, pipe), "feed-forward"),
        "promptloop": (load_world_policy(GRPO_ADAPTER, pipe), "feedback"),
    }
    summary: dict[str, Any] = {"n": n, "steps": steps, "guidance": guidance, "refinements": n_r}
    batches = {}
    for name, (policy, mode) in rows.items():
        torch.manual_seed(0)
        batch = sample(pipe, queries, seeds, policy=policy, mode=mode, steps=steps, guidance=guidance,
                       num_refinements=n_r if mode == "feedback" else None, desc=f"demo {name}")
        scores = alignment(batch.images, queries).scores.numpy()
        summary[name] = float(scores.mean())
        summary[f"{name}_full_correct"] = float((scores >= 1 - 1e-6).mean())
        batches[name] = (batch, scores)

    # 2. figures: base vs PromptLoop on the same seeds; trajectory strips
    k = min(12, n)
    base_b, base_s = batches["base"]
    loop_b, loop_s = batches["promptloop"]
    images, labels = [], []
    for i in range(k):
        images += [base_b.images[i], loop_b.images[i]]
        labels += [f"base {base_s[i]:.2f}: {queries[i]}", f"PromptLoop {loop_s[i]:.2f}: {loop_b.trajectories[i].final_prompt}"]
    labelled_grid(images, labels, out / "base_vs_promptloop.png", columns=6, cell=128, wrap=24, lines=7)
    strip_imgs, strip_labels = [], []
    for i in range(4):
        traj = loop_b.trajectories[i]
        strip_imgs.append(np.zeros((32, 32, 3), dtype=np.float32) + 1.0)
        strip_labels.append(f"query: {traj.query}")
        for r in traj.refinements:
            strip_imgs.append(r.preview)
            strip_labels.append(f"{r.progress:.0%}{' fallback' if r.fallback else ''}: {r.prompt}")
        strip_imgs.append(loop_b.images[i])
        strip_labels.append(f"final, alignment {loop_s[i]:.2f}")
    labelled_grid(strip_imgs, strip_labels, out / "trajectories.png", columns=n_r + 2, cell=128, wrap=24, lines=8)

    # 3. a short GRPO from the SFT policy
    records = _short_grpo(out / "grpo", grpo_steps)
    rewards = [r["reward/total/mean"] for r in records]
    window = max(1, min(5, len(rewards) // 3))
    summary["grpo_steps"] = len(rewards)
    summary["grpo_reward_first"] = float(np.mean(rewards[:window]))
    summary["grpo_reward_last"] = float(np.mean(rewards[-window:]))
    reward_curve([r["step"] for r in records], {"alignment (train batch)": rewards}, out / "reward_curve.png",
                 title="short GRPO from the SFT world policy")
    summary["seconds"] = time.perf_counter() - t0
    atomic_write(out / "summary.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))

    lines = [
        "# PromptLoop demo (embedded Shapes world)",
        "",
        f"Backbone A (frozen), {steps} sampling steps, CFG {guidance}; {n} heldout queries (unseen colour-shape pairs),",
        "one fixed seed each, the same for every row. Alignment is judged against the original query.",
        "",
        "| method | mean alignment | fully correct |",
        "|---|---|---|",
    ]
    for name, label in (("base", "plain backbone"), ("feed_forward", "feed-forward rewriter (GRPO)"),
                        ("promptloop", f"PromptLoop, feedback, N_R = {n_r} (GRPO)")):
        lines.append(f"| {label} | {summary[name]:.3f} | {summary[name + '_full_correct']:.3f} |")
    lines += [
        "",
        f"Short GRPO from the SFT policy ({len(rewards)} steps, 4 queries x 6 trajectories per step): "
        f"mean batch reward {summary['grpo_reward_first']:.3f} over the first {window} steps, "
        f"{summary['grpo_reward_last']:.3f} over the last {window} (`reward_curve.png`).",
        "",
        "Figures: `base_vs_promptloop.png` (same seeds, score before each caption), `trajectories.png`",
        "(each refinement's x0 preview with the prompt chosen from it), `reward_curve.png`.",
        f"Wall time: {summary['seconds']:.0f} s.",
        "",
    ]
    atomic_write(out / "report.md", lambda tmp: tmp.write_text("\n".join(lines)))
    return summary
