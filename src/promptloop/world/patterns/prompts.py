"""The fixed, seeded prompt sets of the Patterns world.

- `train`: 1024 queries whose colour-pattern pairs all occur in backbone training (seed 3003).
- `heldout`: 1024 queries with at least one colour-pattern pair of `scene.HELDOUT_PAIRS` (seed 4004).
Each query is a caption drawn by `grammar.caption_scene` with the default assertion probabilities
(positions 0.15 per object, a relation 0.3): most queries leave the positions open. The scene it was drawn
from is kept as a witness that the query is satisfiable. `promptloop world prompts NAME --world v2` prints one.
"""

from __future__ import annotations

from functools import lru_cache

from promptloop.world.patterns.grammar import caption_scene
from promptloop.world.patterns.scene import SceneSampler
from promptloop.world.prompt_sets import PromptItem, build_prompt_set, seeded_subset

_SEEDS = {"train": 3003, "heldout": 4004}


@lru_cache(maxsize=4)
def prompt_set(name: str) -> tuple[PromptItem, ...]:
    """The named prompt set ('train' or 'heldout'), always the same 1024 items in the same order."""
    return build_prompt_set(name, _SEEDS, SceneSampler, caption_scene)


def sample_prompts(name: str, n: int, seed: int = 0) -> list[PromptItem]:
    """`n` items of a prompt set, a seeded subset (all of them, in order, when n >= the set size)."""
    return seeded_subset(prompt_set(name), n, seed)
