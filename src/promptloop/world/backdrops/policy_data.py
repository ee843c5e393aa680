"""Synthetic SFT data of the Backdrops-world policy: the language of colour fills, with colours drawn AT RANDOM.

An example (`make_example`) is a query of the world's prompt-set kind (most colours open), a current prompt (the
query, or an earlier fill of it), a progress value, an x0-preview-like image (a render of a scene the query
describes, over a random backdrop, blurred, noised and washed out like an early preview; sometimes no image), and
the target rewrite: the query with each open colour filled by a palette colour drawn uniformly at random (left
open with probability `1 - P_FILL`).

The target never depends on the preview: SFT teaches only the language (which words may go where, the article
that goes with a colour), so the SFT policy's colours are independent of the backdrop. What reading the preview
is worth, the choice of a colour that stands out on the backdrop the noise decided, is left to GRPO to learn
(issue "the loop trained on world v3"; `evaluate_backdrops_policy` measures that the SFT policy does not know it).
Every target lies in `ColourFillConstraint`'s language and parses back to the query's facts (tested).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from promptloop.world.backdrops.grammar import COLUMN_WORDS, RELATION_WORDS, ROW_WORDS, query_from_scene, realise
from promptloop.world.backdrops.render import render
from promptloop.world.backdrops.rewrites import fill_colours
from promptloop.world.backdrops.scene import COLOURS, SHAPES, Query, Scene
from promptloop.world.policy_model import instruction_words

PREVIEW_SIZE = 32  # the policy sees previews at the world's resolution
PROGRESS_LEVELS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.65, 0.8, 0.9)  # progress values of the SFT examples
P_FILL = 0.85  # an open colour of the query gets a colour word in the target
P_EARLIER = 0.5  # the current prompt is an earlier (random) fill of the query rather than the query itself
P_NO_PREVIEW = 0.15  # an example without a preview (a policy may be asked before sampling)
# the query mix of the world's prompt sets (`prompts.P_COLOUR` etc.): most colours open
QUERY_P_COLOUR, QUERY_P_POSITION, QUERY_P_RELATION = 0.25, 0.15, 0.5


def world_words() -> list[str]:
    """Every word and mark of the world's queries and rewrites and of the policy's instruction."""
    words = set(COLOURS) | set(SHAPES) | set(COLUMN_WORDS) | set(ROW_WORDS) | {"a", "an", "the", "in", "on", "at"}
    for phrase in RELATION_WORDS.values():
        words.update(phrase.split())
    words.update(instruction_words())
    words.update(", : . ; % and".split())
    return sorted(words)


def random_fill(query: Query, rng: random.Random, p_fill: float = P_FILL) -> str:
    """A fill of the query's open colours with uniformly random palette colours (each left open w.p. 1 - p_fill)."""
    return fill_colours(query, [rng.choice(list(COLOURS)) if rng.random() < p_fill else None
                        for _ in range(query.open_colours())])


def keeps_query_facts(query: Query, candidate: Query) -> bool:
    """Whether `candidate` asserts every fact of `query` and no other, the colours the query leaves open aside (what
    a colour fill of the query is)."""
    return len(candidate.objects) == len(query.objects) and candidate.relations == query.relations and all(
        c.shape == o.shape and c.column == o.column and c.row == o.row and (o.colour is None or c.colour == o.colour)
        for c, o in zip(candidate.objects, query.objects, strict=True))


def preview_like(img: np.ndarray, rng: random.Random) -> Image.Image:
    """An early-x0-preview-like version of a clean render (H, W, 3 in [0, 1]): washed out towards mid grey,
    blurred and noised by random amounts."""
    arr = img.astype(np.float32)
    wash = 0.5 * rng.random()
    arr = arr * (1 - wash) + wash * (0.35 + 0.3 * rng.random())
    noise = np.random.default_rng(rng.randrange(2**31)).normal(0, 0.1 * rng.random(), arr.shape)
    pil = Image.fromarray((np.clip(arr + noise.astype(np.float32), 0, 1) * 255).round().astype(np.uint8))
    if rng.random() < 0.7:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=0.5 + 2.0 * rng.random()))
    return pil


@dataclass(frozen=True)
class Example:
    query: Query
    query_text: str  # the user query
    current_prompt: str  # the prompt in use when the policy is asked
    preview: Image.Image | None
    target: str  # the rewrite to learn


def make_example(scene: Scene, rng: random.Random, with_preview: bool = True) -> Example:
    """One SFT example from `scene` (module docstring); the target's colours are random, never the backdrop's."""
    query = query_from_scene(scene, rng, p_colour=QUERY_P_COLOUR, p_position=QUERY_P_POSITION,
                             p_relation=QUERY_P_RELATION)
    text = realise(query)
    current = random_fill(query, rng) if rng.random() < P_EARLIER else text
    preview = preview_like(render(scene), rng) if with_preview else None
    return Example(query, text, current, preview, random_fill(query, rng))


_WORD = re.compile(r"\w+|[^\w\s]")


def in_vocabulary(text: str, words: set[str]) -> bool:
    """Whether every word of `text` is one of `words` (the tokenizer would map none to <unk>)."""
    return all(w in words for w in _WORD.findall(text.lower()))


__all__ = ["P_FILL", "PREVIEW_SIZE", "PROGRESS_LEVELS", "Example", "in_vocabulary", "keeps_query_facts", "make_example",
           "preview_like", "random_fill", "world_words"]
