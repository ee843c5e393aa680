"""The fixed, seeded prompt sets of the Backdrops world.

- `train`: 1024 queries (seed 5005), for policy training.
- `heldout`: 1024 queries (seed 6006) none of which is in `train`, for evaluation (leaving out the train set's
  many short shape-only queries, 68 % of its objects have an open colour).
- `shape_only`: 1024 queries (seed 7007) that name no colour at all.
Queries of `train` and `heldout` name each object's colour with probability 0.25 (most colours are open),
a position with probability 0.15, a relation between consecutive objects with probability 0.5. No query names
the backdrop. The scene each was drawn from is kept as a witness that it is satisfiable.
`promptloop world prompts NAME --world v3` prints one.
"""

from __future__ import annotations

import random
from functools import lru_cache

from promptloop.world.backdrops.grammar import query_from_scene, realise
from promptloop.world.backdrops.scene import Query, Scene, SceneSampler
from promptloop.world.prompt_sets import PromptItem, build_prompt_set, seeded_subset

_SEEDS = {"train": 5005, "heldout": 6006, "shape_only": 7007}
P_COLOUR = {"train": 0.25, "heldout": 0.25, "shape_only": 0.0}


def _caption(name: str):
    def caption(scene: Scene, rng: random.Random) -> tuple[str, Query]:
        query = query_from_scene(scene, rng, p_colour=P_COLOUR[name], p_position=0.15, p_relation=0.5)
        return realise(query), query

    return caption


@lru_cache(maxsize=4)
def prompt_set(name: str) -> tuple[PromptItem, ...]:
    """The named prompt set, always the same 1024 items in the same order."""
    if name not in _SEEDS:
        raise KeyError(f"unknown prompt set {name!r}; expected one of {sorted(_SEEDS)}")
    exclude = {item.caption for item in prompt_set("train")} if name == "heldout" else set()
    return build_prompt_set(name, _SEEDS, SceneSampler, _caption(name), exclude=exclude)


def sample_prompts(name: str, n: int, seed: int = 0) -> list[PromptItem]:
    """`n` items of a prompt set, a seeded subset (all of them, in order, when n >= the set size)."""
    return seeded_subset(prompt_set(name), n, seed)
