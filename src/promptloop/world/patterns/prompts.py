"""The fixed, seeded prompt sets of the Patterns world.

- `train`: 1024 queries whose colour-pattern pairs all occur in backbone training (seed 3003).
- `heldout`: 1024 queries with at least one colour-pattern pair of `scene.HELDOUT_PAIRS` (seed 4004).
Each query is a caption drawn by `grammar.caption_scene` with the default assertion probabilities
(positions 0.15 per object, a relation 0.3): most queries leave the positions open. The scene it was drawn
from is kept as a witness that the query is satisfiable. `promptloop world prompts NAME --world v2` prints one.
"""

from __future__ import annotations

import random
from functools import lru_cache

from promptloop.world.patterns.grammar import caption_scene
from promptloop.world.patterns.scene import SceneSampler
from promptloop.world.shapes.prompts import PROMPT_SET_SIZE, PromptItem

_SEEDS = {"train": 3003, "heldout": 4004}


@lru_cache(maxsize=4)
def prompt_set(name: str) -> tuple[PromptItem, ...]:
    """The named prompt set ('train' or 'heldout'), always the same 1024 items in the same order."""
    if name not in _SEEDS:
        raise KeyError(f"unknown prompt set {name!r}; expected one of {sorted(_SEEDS)}")
    sampler = SceneSampler(_SEEDS[name], name)  # type: ignore[arg-type]
    rng = random.Random(_SEEDS[name] + 1)
    items: list[PromptItem] = []
    seen: set[str] = set()
    while len(items) < PROMPT_SET_SIZE:
        scene = sampler.sample()
        caption, query = caption_scene(scene, rng)
        if caption not in seen:
            seen.add(caption)
            items.append(PromptItem(caption, query, scene))  # type: ignore[arg-type]
    return tuple(items)


def sample_prompts(name: str, n: int, seed: int = 0) -> list[PromptItem]:
    """`n` items of a prompt set, a seeded subset (all of them, in order, when n >= the set size)."""
    items = list(prompt_set(name))
    return items if n >= len(items) else random.Random(seed).sample(items, n)
