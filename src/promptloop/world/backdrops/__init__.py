"""The Backdrops world (world v3): shapes over a backdrop that the noise decides and no prompt can name.

Built on purpose to have the structure in which latent feedback can pay (README, "World v3"):
1. the backdrop tone is decided by the noise early in sampling and no caption ever names it, so no up-front
   rewrite can know it;
2. the reward (`backdrops_legible`: alignment times the WCAG-contrast legibility of each object against the
   backdrop around it) makes the best colour of an object depend on that backdrop;
3. object colours stay steerable by the prompt after the backdrop is readable in the x0 preview.
Queries mostly leave object colours open. Modules: `scene`, `render`, `grammar`, `prompts`, `analyzer`,
`legibility` (WCAG contrast and the room's arithmetic bound), `rewards`, `backbone` (component sizes),
`evaluation` (backbone-eval, gate G1), `fair_room` (the fair room, gate G2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptloop.world.backdrops.backbone import DEFAULT_BACKBONE, DEFAULT_POLICY, build_unet, build_vae
from promptloop.world.backdrops.grammar import parse, training_caption
from promptloop.world.backdrops.prompts import prompt_set, sample_prompts
from promptloop.world.backdrops.render import render
from promptloop.world.backdrops.scene import RESOLUTION, SceneSampler
from promptloop.world.options import FRACTIONS, GUIDANCE_FROM, PHRASES, RULES, SPLIT, TIMESTEP_SHIFT, WorldOption

NAME = "backdrops"
VERSION = "v3"
ALIGNMENT_REWARD = "backdrops_alignment"  # the reward registry's name of this world's alignment reward
TASK_REWARD = "backdrops_legible"  # alignment x legibility: the reward feedback is meant to raise
GUIDANCE = 4.0  # CFG scale its backbone samples with
STEPS = 20  # sampling steps
# what a saved refinement policy of this world may name in promptloop_policy.json (`policy.callables`)
POLICY_CALLABLES: dict[str, tuple[str, ...]] = {
    "validator": ("promptloop.world.backdrops.grammar:parse",),
    "prompt_length_fn": ("promptloop.world.policy_model:minilm_length",),
    "constraint": ("promptloop.world.backdrops.colour_constraint:ColourFillConstraint",),
}
# its shipped LoRA adapters on the policy, by the mode they were GRPO-trained in (configs/world_v3.yaml): folders
# beside DEFAULT_POLICY
POLICY_ADAPTERS: dict[str, str] = {"feedback": "policy_grpo", "no-feedback": "policy_nofeedback",
                                   "feed-forward": "policy_feedforward"}
GRPO_CONFIG = "world_v3.yaml"  # its GRPO recipe in configs/ (the demo's short run scales it down)
DEMO_NOTE = """
World v3 (Backdrops) is built, on purpose and stated as such, to have the structure in which latent feedback can
pay, which worlds v1 and v2 lack: (1) the backdrop tone is decided by the noise early in sampling and no caption
ever names it, so no up-front rewrite can know it; (2) the reward (alignment x WCAG-contrast legibility of each
object against its backdrop) makes the best colour of an object depend on that backdrop; (3) object colours are
still steerable by the prompt when the backdrop becomes readable in the x0 preview. In v1 every fact the reward
checks is named in the query, so the best action after the preview equals the one before it: the room measured
before any RL was +0.011 [-0.004, +0.025] there, +0.111 [+0.083, +0.140] here (the best preview-reading rule over
the fair feed-forward bound, which includes every fixed colour choice; docs/worlds.md). The SFT policy picks
colours at random; what reading the preview is worth is learned by GRPO alone. With the shipped 150-step
adapters, on 256 heldout queries (`promptloop eval compare --world v3`), PromptLoop minus the feed-forward rewriter
is +0.072 [+0.041, +0.103], and minus PromptLoop without feedback +0.059 [+0.039, +0.079]: the preview is what pays.
The feedback policy picks lighter colours over dark backdrops than over light ones (a luminance gap of +0.47, against
+0.01 after SFT; docs/worlds.md). The 64 queries above are a smaller, noisier sample of the same comparison.
"""
REWARDS: dict[str, str] = {"backdrops_alignment": "promptloop.world.backdrops.rewards:make_backdrops_alignment",
                           "backdrops_legible": "promptloop.world.backdrops.rewards:make_backdrops_legible"}
DESCRIBE = "promptloop.world.backdrops.describe"  # the app's readings of an image: backdrop, contrast, reward parts

# The measurement commands (`promptloop world analyzer-check | backbone-eval | room --world v3`): the options
# each takes besides the common ones (backbone, n, seed, steps, guidance, eta; room: seeds, candidates).
BACKBONE_EVAL_OPTIONS: tuple[WorldOption, ...] = (FRACTIONS, TIMESTEP_SHIFT, GUIDANCE_FROM)
ROOM_OPTIONS: tuple[WorldOption, ...] = (RULES, FRACTIONS, SPLIT, TIMESTEP_SHIFT, GUIDANCE_FROM, PHRASES)


def analyzer_check(n: int = 500, seed: int = 0) -> dict[str, Any]:
    from promptloop.world.backdrops.analyzer import analyzer_check as check

    return check(n=n, seed=seed)


def backbone_eval(**kwargs: Any) -> dict[str, Any]:
    from promptloop.world.backdrops.evaluation import backbone_eval_backdrops

    return backbone_eval_backdrops(**kwargs)


def train_policy(out: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """The shipped refinement policy's recipe (`train_policy.reproduce_backdrops_policy`) into `out` (None:
    assets/world/backdrops/policy)."""
    from promptloop.world.backdrops.train_policy import DEFAULT_OUT, reproduce_backdrops_policy

    return reproduce_backdrops_policy(DEFAULT_OUT if out is None else out, **kwargs)


def room(**kwargs: Any) -> dict[str, Any]:
    from promptloop.world.backdrops.fair_room import room_backdrops

    return room_backdrops(**kwargs)


__all__ = ["ALIGNMENT_REWARD", "BACKBONE_EVAL_OPTIONS", "DEMO_NOTE", "GRPO_CONFIG", "DEFAULT_BACKBONE", "DEFAULT_POLICY", "GUIDANCE", "NAME", "RESOLUTION", "REWARDS",
           "ROOM_OPTIONS", "POLICY_ADAPTERS", "POLICY_CALLABLES", "STEPS", "TASK_REWARD", "VERSION", "SceneSampler", "analyzer_check", "backbone_eval", "build_unet", "build_vae",
           "parse", "prompt_set", "render", "room", "sample_prompts", "train_policy", "training_caption"]
