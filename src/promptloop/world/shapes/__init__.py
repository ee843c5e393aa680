"""The Shapes world (world v1): 1-3 coloured shapes on a 3x3 grid over a plain background, 32 px.

Its backbone A (32 px <-> 8x8x8 latents) decides layout, count, colours and their binding together in the
first sampling steps; the room it leaves for mid-sampling feedback is measured in docs/worlds.md. Modules:
`scene` (ground truth and queries), `render`, `grammar` (captions <-> queries), `analyzer` (classical CV),
`prompts` (fixed prompt sets), `rewrites` / `copy_constraint` / `policy_data` / `train_policy` (the world's
refinement policy), `binding_loss` (the text binder's auxiliary loss).
"""

from __future__ import annotations

from typing import Any

from promptloop.world.shapes.analyzer import analyzer_check
from promptloop.world.shapes.grammar import parse, training_caption
from promptloop.world.shapes.prompts import prompt_set, sample_prompts
from promptloop.world.shapes.render import DEFAULT_RESOLUTION as RESOLUTION
from promptloop.world.shapes.render import render
from promptloop.world.shapes.scene import SceneSampler

NAME = "shapes"
VERSION = "v1"
ALIGNMENT_REWARD = "alignment"  # the reward registry's name of this world's alignment reward


def __getattr__(name: str) -> Any:  # DEFAULT_BACKBONE without importing torch at import time
    if name == "DEFAULT_BACKBONE":
        from promptloop.world.backbone import DEFAULT_BACKBONE

        return DEFAULT_BACKBONE
    raise AttributeError(name)


def build_vae() -> Any:
    from promptloop.world.backbone import build_vae as build

    return build()


def build_unet() -> Any:
    from promptloop.world.backbone import build_unet as build

    return build()


# The measurement commands (`promptloop world analyzer-check | backbone-eval | room`): the options each takes
# besides the common ones (backbone, n, seed, steps, guidance, eta; room: seeds, candidates).
BACKBONE_EVAL_OPTIONS: tuple[str, ...] = ("timestep_shift",)
ROOM_OPTIONS: tuple[str, ...] = ("anchored", "timestep_shift")


def backbone_eval(**kwargs: Any) -> dict[str, Any]:
    from promptloop.eval.backbone import backbone_eval as evaluate

    return evaluate(**kwargs)


def room(**kwargs: Any) -> dict[str, Any]:
    from promptloop.eval.room import room as measure

    return measure(**kwargs)


__all__ = ["ALIGNMENT_REWARD", "BACKBONE_EVAL_OPTIONS", "NAME", "RESOLUTION", "ROOM_OPTIONS", "VERSION", "SceneSampler",
           "analyzer_check", "backbone_eval", "build_unet", "build_vae", "parse", "prompt_set", "render", "room",
           "sample_prompts", "training_caption"]
