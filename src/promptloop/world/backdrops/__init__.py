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

from typing import Any

from promptloop.world.backdrops.backbone import DEFAULT_BACKBONE, build_unet, build_vae
from promptloop.world.backdrops.grammar import parse, training_caption
from promptloop.world.backdrops.prompts import prompt_set, sample_prompts
from promptloop.world.backdrops.render import render
from promptloop.world.backdrops.scene import RESOLUTION, SceneSampler
from promptloop.world.options import FRACTIONS, RULES, SPLIT, TIMESTEP_SHIFT, WorldOption

NAME = "backdrops"
VERSION = "v3"
ALIGNMENT_REWARD = "backdrops_alignment"  # the reward registry's name of this world's alignment reward
TASK_REWARD = "backdrops_legible"  # alignment x legibility: the reward feedback is meant to raise
GUIDANCE = 4.0  # CFG scale its backbone samples with
STEPS = 20  # sampling steps
REWARDS: dict[str, str] = {"backdrops_alignment": "promptloop.world.backdrops.rewards:make_backdrops_alignment",
                           "backdrops_legible": "promptloop.world.backdrops.rewards:make_backdrops_legible"}
DESCRIBE = "promptloop.world.backdrops.describe"  # the app's readings of an image: backdrop, contrast, reward parts

# The measurement commands (`promptloop world analyzer-check | backbone-eval | room --world v3`): the options
# each takes besides the common ones (backbone, n, seed, steps, guidance, eta; room: seeds, candidates).
BACKBONE_EVAL_OPTIONS: tuple[WorldOption, ...] = (FRACTIONS, TIMESTEP_SHIFT)
ROOM_OPTIONS: tuple[WorldOption, ...] = (RULES, FRACTIONS, SPLIT, TIMESTEP_SHIFT)


def analyzer_check(n: int = 500, seed: int = 0) -> dict[str, Any]:
    from promptloop.world.backdrops.analyzer import analyzer_check as check

    return check(n=n, seed=seed)


def backbone_eval(**kwargs: Any) -> dict[str, Any]:
    from promptloop.world.backdrops.evaluation import backbone_eval_backdrops

    return backbone_eval_backdrops(**kwargs)


def room(**kwargs: Any) -> dict[str, Any]:
    from promptloop.world.backdrops.fair_room import room_backdrops

    return room_backdrops(**kwargs)


__all__ = ["ALIGNMENT_REWARD", "BACKBONE_EVAL_OPTIONS", "DEFAULT_BACKBONE", "GUIDANCE", "NAME", "RESOLUTION", "REWARDS",
           "ROOM_OPTIONS", "STEPS", "TASK_REWARD", "VERSION", "SceneSampler", "analyzer_check", "backbone_eval", "build_unet", "build_vae",
           "parse", "prompt_set", "render", "room", "sample_prompts", "training_caption"]
