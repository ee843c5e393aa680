"""The fixed, seeded prompt sets of the Shapes world.

- `train`: 1024 queries whose colour-shape pairs all occur in backbone training (seed 1001).
- `heldout`: 1024 queries with at least one colour-shape pair of `scene.HELDOUT_PAIRS`, a pair the
  backbone never saw (seed 2002).
Each query is a caption drawn by `grammar.caption_scene` from a random scene of its split with the
default assertion probabilities (size 0.5, position 0.2, background 0.3, relation 0.7); the scene
is kept as a witness that the query is satisfiable. The sets are generated, not stored, so they are
the same on every machine; `promptloop world prompts NAME` prints one.
"""

from __future__ import annotations

from functools import lru_cache

from promptloop.world.prompt_sets import PROMPT_SET_SIZE, PromptItem, build_prompt_set, seeded_subset
from promptloop.world.shapes.grammar import caption_scene
from promptloop.world.shapes.scene import SceneSampler

_SEEDS = {"train": 1001, "heldout": 2002}


@lru_cache(maxsize=4)
def prompt_set(name: str) -> tuple[PromptItem, ...]:
    """The named prompt set ('train' or 'heldout'), always the same 1024 items in the same order."""
    return build_prompt_set(name, _SEEDS, SceneSampler, caption_scene)


def sample_prompts(name: str, n: int, seed: int = 0) -> list[PromptItem]:
    """`n` items of a prompt set, a seeded subset (all of them, in order, when n >= the set size)."""
    return seeded_subset(prompt_set(name), n, seed)


__all__ = ["PROMPT_SET_SIZE", "PromptItem", "prompt_set", "sample_prompts"]
