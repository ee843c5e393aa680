"""The Shapes world (world v1): 1-3 coloured shapes on a 3x3 grid over a plain background, 32 px.

Its backbone A (32 px <-> 8x8x8 latents) decides layout, count, colours and their binding together in the
first sampling steps; the room it leaves for mid-sampling feedback is measured in docs/worlds.md. Modules:
`scene` (ground truth and queries), `render`, `grammar` (captions <-> queries), `analyzer` (classical CV),
`prompts` (fixed prompt sets), `rewards` (`alignment`, `count`), `evaluation` (backbone-eval), `fair_room` (the
room for the loop), `rewrites` / `copy_constraint` / `edits` / `policy_tokenizer` / `policy_data` / `train_policy`
(the world's refinement policy), `binding_loss` (the text binder's auxiliary loss). The backbone pipeline and its
component sizes are `world.backbone`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptloop.world.options import TIMESTEP_SHIFT, WorldOption
from promptloop.world.shapes.analyzer_accuracy import analyzer_check
from promptloop.world.shapes.grammar import parse, training_caption
from promptloop.world.shapes.prompts import prompt_set, sample_prompts
from promptloop.world.shapes.render import DEFAULT_RESOLUTION as RESOLUTION
from promptloop.world.shapes.render import render
from promptloop.world.shapes.scene import SceneSampler

NAME = "shapes"
VERSION = "v1"
GUIDANCE = 4.0  # CFG scale its backbone samples with
STEPS = 20  # sampling steps
ALIGNMENT_REWARD = "alignment"  # the reward registry's name of this world's alignment reward
REWARDS: dict[str, str] = {"alignment": "promptloop.world.shapes.rewards:make_alignment",
                           "count": "promptloop.world.shapes.rewards:make_count"}
# what a saved refinement policy of this world may name in promptloop_policy.json (`policy.callables`)
POLICY_CALLABLES: dict[str, tuple[str, ...]] = {
    "validator": ("promptloop.world.shapes.grammar:parse",),
    "prompt_length_fn": ("promptloop.world.shapes.policy_tokenizer:minilm_length",),
    "constraint": ("promptloop.world.shapes.copy_constraint:CopyEditConstraint",),
}
BINDING_LOSS = "promptloop.world.shapes.binding_loss"  # the text binder's auxiliary loss (train-backbone --binding-loss)
# names older policy folders record (the shipped ones included), and where they live now: before the Shapes world
# moved into world/shapes/, and before its tokenizer left policy_data
MOVED_CALLABLES: dict[str, str] = {
    "promptloop.world.grammar:parse": "promptloop.world.shapes.grammar:parse",
    "promptloop.world.copy_constraint:CopyEditConstraint": "promptloop.world.shapes.copy_constraint:CopyEditConstraint",
    "promptloop.world.policy_data:minilm_length": "promptloop.world.shapes.policy_tokenizer:minilm_length",
    "promptloop.world.shapes.policy_data:minilm_length": "promptloop.world.shapes.policy_tokenizer:minilm_length",
}


# its refinement policy's vocabulary and model definition (the tiny `promptloop.testing` policies use them too)
POLICY_MODEL_PARTS: dict[str, str] = {
    "world_words": "promptloop.world.shapes.policy_tokenizer",
    "build_world_tokenizer": "promptloop.world.shapes.policy_tokenizer",
    "llava_model": "promptloop.world.shapes.policy_model",
    "llava_processor": "promptloop.world.shapes.policy_model",
}


def __getattr__(name: str) -> Any:  # DEFAULT_BACKBONE, DEFAULT_POLICY, the policy parts: no torch import at import time
    if name == "DEFAULT_BACKBONE":
        from promptloop.world.backbone import DEFAULT_BACKBONE

        return DEFAULT_BACKBONE
    if name == "DEFAULT_POLICY":  # its shipped refinement policy, beside the backbone (assets/world/policy)
        from promptloop.world.backbone import DEFAULT_BACKBONE

        return DEFAULT_BACKBONE.parent / "policy"
    if name in POLICY_MODEL_PARTS:
        import importlib

        return getattr(importlib.import_module(POLICY_MODEL_PARTS[name]), name)
    raise AttributeError(name)


def build_vae() -> Any:
    from promptloop.world.backbone import build_vae as build

    return build()


def build_unet() -> Any:
    from promptloop.world.backbone import build_unet as build

    return build()


# The measurement commands (`promptloop world analyzer-check | backbone-eval | room`): the options each takes
# besides the common ones (backbone, n, seed, steps, guidance, eta; room: seeds, candidates).
ANCHORED = WorldOption("--anchored", "also the mid-way oracles over candidates pinned to each sample's preview",
                       {"action": "store_true"})
BACKBONE_EVAL_OPTIONS: tuple[WorldOption, ...] = (TIMESTEP_SHIFT,)
ROOM_OPTIONS: tuple[WorldOption, ...] = (ANCHORED, TIMESTEP_SHIFT)


def backbone_eval(**kwargs: Any) -> dict[str, Any]:
    from promptloop.world.shapes.evaluation import backbone_eval as evaluate

    return evaluate(**kwargs)


def room(**kwargs: Any) -> dict[str, Any]:
    from promptloop.world.shapes.fair_room import room as measure

    return measure(**kwargs)


def train_policy(out: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """The shipped refinement policy's recipe (`train_policy.reproduce_world_policy`) into `out` (None:
    assets/world/policy)."""
    from promptloop.world.shapes.train_policy import DEFAULT_OUT, reproduce_world_policy

    return reproduce_world_policy(DEFAULT_OUT if out is None else out, **kwargs)


__all__ = ["ALIGNMENT_REWARD", "BACKBONE_EVAL_OPTIONS", "BINDING_LOSS", "GUIDANCE", "MOVED_CALLABLES", "NAME", "POLICY_CALLABLES",
           "RESOLUTION", "REWARDS", "ROOM_OPTIONS", "STEPS", "VERSION", "SceneSampler", "analyzer_check", "backbone_eval",
           "build_unet", "build_vae", "parse", "prompt_set", "render", "room", "sample_prompts", "train_policy",
           "training_caption"]
