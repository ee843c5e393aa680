"""The Patterns world (world v2): 1-3 objects of a colour, a shape and a pattern on a 3x3 grid, 64 px.

Designed for a coarse-to-fine backbone: at 64 px with 16x16 latents, where each object lands, its shape and
its colour are low-frequency and form in the first sampling steps, while its pattern (solid, striped,
dotted, checkered; an 8 px period, two latent pixels) is the highest frequency the latents hold and forms
last. Queries mostly leave positions open, so positions are known only from the x0 preview, and captions
teach the backbone position words bound to objects: the words a rewrite reading the preview can use.
Modules: `scene`, `render`, `grammar`, `analyzer`, `prompts`, `rewards` (`patterns_alignment`), `backbone`
(component sizes), `evaluation` (backbone-eval), `rewrites` and `fair_room` (the fair room with its preview-reading
rules).
"""

from __future__ import annotations

from typing import Any

from promptloop.world.options import FRACTIONS, RULES, SPLIT, TIMESTEP_SHIFT, WorldOption
from promptloop.world.patterns.analyzer import analyzer_check
from promptloop.world.patterns.backbone import DEFAULT_BACKBONE, build_unet, build_vae
from promptloop.world.patterns.grammar import parse, training_caption
from promptloop.world.patterns.prompts import prompt_set, sample_prompts
from promptloop.world.patterns.render import render
from promptloop.world.patterns.scene import RESOLUTION, SceneSampler

NAME = "patterns"
VERSION = "v2"
GUIDANCE = 4.0  # CFG scale its backbone samples with
STEPS = 20  # sampling steps
ALIGNMENT_REWARD = "patterns_alignment"  # the reward registry's name of this world's alignment reward
REWARDS: dict[str, str] = {"patterns_alignment": "promptloop.world.patterns.rewards:make_patterns_alignment"}
POLICY_CALLABLES: dict[str, tuple[str, ...]] = {"validator": ("promptloop.world.patterns.grammar:parse",)}

# The measurement commands (`promptloop world analyzer-check | backbone-eval | room --world v2`): the options
# each takes besides the common ones (backbone, n, seed, steps, guidance, eta; room: seeds, candidates).
BACKBONE_EVAL_OPTIONS: tuple[WorldOption, ...] = (TIMESTEP_SHIFT,)
ROOM_OPTIONS: tuple[WorldOption, ...] = (RULES, FRACTIONS, SPLIT, TIMESTEP_SHIFT)


def backbone_eval(**kwargs: Any) -> dict[str, Any]:
    from promptloop.world.patterns.evaluation import backbone_eval_patterns

    return backbone_eval_patterns(**kwargs)


def room(**kwargs: Any) -> dict[str, Any]:
    from promptloop.world.patterns.fair_room import room_patterns

    return room_patterns(**kwargs)


__all__ = ["ALIGNMENT_REWARD", "BACKBONE_EVAL_OPTIONS", "DEFAULT_BACKBONE", "GUIDANCE", "NAME", "POLICY_CALLABLES",
           "RESOLUTION", "REWARDS", "ROOM_OPTIONS", "STEPS", "VERSION", "SceneSampler", "analyzer_check", "backbone_eval", "build_unet", "build_vae", "parse",
           "prompt_set", "render", "room", "sample_prompts", "training_caption"]
