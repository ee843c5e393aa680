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

import random
from dataclasses import dataclass
from functools import lru_cache

from promptloop.world.shapes.grammar import caption_scene
from promptloop.world.shapes.scene import Query, Scene, SceneSampler

PROMPT_SET_SIZE = 1024
_SEEDS = {"train": 1001, "heldout": 2002}


@dataclass(frozen=True)
class PromptItem:
    caption: str  # the query text given to the model
    query: Query  # the facts the caption asserts (what rewards check)
    scene: Scene  # a scene satisfying the query (the one it was drawn from)


@lru_cache(maxsize=4)
def prompt_set(name: str) -> tuple[PromptItem, ...]:
    """The named prompt set ('train' or 'heldout'), always the same 1024 items in the same order."""
    if name not in _SEEDS:
        raise KeyError(f"unknown prompt set {name!r}; expected one of {sorted(_SEEDS)}")
    sampler = SceneSampler(_SEEDS[name], name)  # type: ignore[arg-type]
    rng = random.Random(_SEEDS[name] + 1)
    items = []
    seen: set[str] = set()
    while len(items) < PROMPT_SET_SIZE:
        scene = sampler.sample()
        caption, query = caption_scene(scene, rng)
        if caption in seen:
            continue
        seen.add(caption)
        items.append(PromptItem(caption, query, scene))
    return tuple(items)


def sample_prompts(name: str, n: int, seed: int = 0) -> list[PromptItem]:
    """`n` items of a prompt set, a seeded subset (all of them, in order, when n >= the set size)."""
    items = list(prompt_set(name))
    if n >= len(items):
        return items
    return random.Random(seed).sample(items, n)
