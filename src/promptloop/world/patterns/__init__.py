"""The Patterns world (world v2): 1-3 objects of a colour, a shape and a pattern on a 3x3 grid, 64 px.

Designed for a coarse-to-fine backbone: at 64 px with 16x16 latents, where each object lands, its shape and
its colour are low-frequency and form in the first sampling steps, while its pattern (solid, striped,
dotted, checkered; an 8 px period, two latent pixels) is the highest frequency the latents hold and forms
last. Queries mostly leave positions open, so positions are known only from the x0 preview, and captions
teach the backbone position words bound to objects: the words a rewrite reading the preview can use.
Modules: `scene`, `render`, `grammar`, `analyzer`, `prompts`, `backbone` (component sizes).
"""

from __future__ import annotations

from promptloop.world.patterns.backbone import DEFAULT_BACKBONE, build_unet, build_vae
from promptloop.world.patterns.grammar import parse, training_caption
from promptloop.world.patterns.prompts import prompt_set, sample_prompts
from promptloop.world.patterns.render import render
from promptloop.world.patterns.scene import RESOLUTION, SceneSampler

NAME = "patterns"
VERSION = "v2"
ALIGNMENT_REWARD = "patterns_alignment"  # the reward registry's name of this world's alignment reward

__all__ = ["ALIGNMENT_REWARD", "DEFAULT_BACKBONE", "NAME", "RESOLUTION", "VERSION", "SceneSampler", "build_unet",
           "build_vae", "parse", "prompt_set", "render", "sample_prompts", "training_caption"]
