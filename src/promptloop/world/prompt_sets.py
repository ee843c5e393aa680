"""Fixed, seeded prompt sets, the same machinery for every world: captions drawn from random scenes of a split.

A world's `prompts` module names its sets and their seeds and calls `build_prompt_set`; the sets are generated,
not stored, so they are the same on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PROMPT_SET_SIZE = 1024


@dataclass(frozen=True)
class PromptItem:
    caption: str  # the query text given to the model
    query: Any  # the facts the caption asserts (what rewards check): the world's Query
    scene: Any  # a scene satisfying the query (the one it was drawn from): the world's Scene


def build_prompt_set(name: str, seeds: Mapping[str, int], sampler: Callable[[int, str], Any],
                     caption: Callable[[Any, random.Random], tuple[str, Any]], size: int = PROMPT_SET_SIZE,
                     exclude: frozenset[str] | set[str] = frozenset()) -> tuple[PromptItem, ...]:
    """`size` distinct captions of scenes drawn by `sampler(seeds[name], name)`, captioned with an rng seeded
    `seeds[name] + 1`, none of them in `exclude`; KeyError for a set name not in `seeds`."""
    if name not in seeds:
        raise KeyError(f"unknown prompt set {name!r}; expected one of {sorted(seeds)}")
    scenes = sampler(seeds[name], name)
    rng = random.Random(seeds[name] + 1)
    items: list[PromptItem] = []
    seen: set[str] = set(exclude)
    while len(items) < size:
        scene = scenes.sample()
        text, query = caption(scene, rng)
        if text not in seen:
            seen.add(text)
            items.append(PromptItem(text, query, scene))
    return tuple(items)


def seeded_subset(items: tuple[PromptItem, ...], n: int, seed: int) -> list[PromptItem]:
    """`n` items, a seeded subset (all of them, in order, when n >= their number)."""
    return list(items) if n >= len(items) else random.Random(seed).sample(list(items), n)
