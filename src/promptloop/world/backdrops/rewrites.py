"""Rewrites of Backdrops-world queries, and the preview-reading rules of the room.

A rewrite keeps the query's facts and fills in a colour word for every object whose colour the query leaves
open (`fill_colours`); it parses back to the query's facts plus those colours, so the reward can judge the
image against the original query (where the open colours are no facts). The up-front candidates
(`upfront_candidates`) are the query itself and one rewrite per palette colour (every fixed colour choice).

A *rule* maps (query, the analysis of the sample's x0 preview) to a rewrite: `legible` fills every open colour
with the palette colour most legible against the backdrop the preview shows (`legibility.best_colour`). Its
*blind control* makes the same edit at the same moment with the colour chosen without the preview: the colour
that is most legible on average over the world's backdrops (`legibility.room_arithmetic`), the best guess from
the text alone. So the two differ only by what the preview carries.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from promptloop.policy.base import FixedPromptPolicy, PolicyInput, PolicyOutput
from promptloop.world.backdrops.analyzer import BackdropAnalysis, analyze_scenes
from promptloop.world.backdrops.grammar import parse, realise
from promptloop.world.backdrops.legibility import best_colour, room_arithmetic
from promptloop.world.backdrops.scene import COLOURS, ObjectQuery, Query

Rule = Callable[[Query, BackdropAnalysis], str]


def fill_colours(query: Query, colours: Sequence[str | None] | str) -> str:
    """The query's text with the open colours filled in: one colour for all, or one per open object in order
    (None: that one left open)."""
    todo = [colours] * query.open_colours() if isinstance(colours, str) else list(colours)
    if len(todo) != query.open_colours():
        raise ValueError(f"{len(todo)} colours for the {query.open_colours()} open colours of {realise(query)!r}")
    it = iter(todo)
    objs = tuple(o if o.colour is not None else ObjectQuery(o.shape, next(it), o.column, o.row) for o in query.objects)
    return realise(Query(objs, query.relations))


def upfront_candidates(query: Query) -> list[str]:
    """The fair feed-forward bound's candidates: the query as written, then every fixed colour choice."""
    return [realise(query)] + [fill_colours(query, c) for c in COLOURS]


@lru_cache(maxsize=1)
def prior_best_colour() -> str:
    """The colour most legible on average over the world's backdrops: the best choice without a preview."""
    return str(room_arithmetic()["best_fixed_colour"])


def legible_rule(query: Query, analysis: BackdropAnalysis) -> str:
    """Fill every open colour with the colour most legible against the preview's backdrop."""
    return fill_colours(query, best_colour(analysis.backdrop_rgb))


def blind_rule(query: Query, analysis: BackdropAnalysis) -> str:
    """The control: the same edit with the colour best on average (the preview is not read)."""
    return fill_colours(query, prior_best_colour())


RULES: dict[str, tuple[Rule, Rule | None]] = {"legible": (legible_rule, blind_rule)}


class PreviewRulePolicy:
    """Rewrites each sample's query with `rule` from the analysis of its x0 preview; keeps the analyses it read
    (`analyses`, in call order) so that measurements can compare the preview with the final image."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.analyses: list[BackdropAnalysis] = []

    def propose(self, inputs: PolicyInput) -> PolicyOutput:
        if inputs.previews is None:
            raise ValueError("PreviewRulePolicy needs previews (feedback mode)")
        analyses = analyze_scenes([np.asarray(p, dtype=np.float32) / 255.0 for p in inputs.previews])
        self.analyses.extend(analyses)
        return FixedPromptPolicy([self.rule(parse(q), a) for q, a in zip(inputs.queries, analyses, strict=True)]
                                 ).propose(inputs)


def random_colour_rule(seed: int) -> Rule:
    """A rule that ignores the preview and fills each open colour with a random palette colour, seeded by the
    query and its position in the call sequence (for the steerability measurement)."""
    counter = [0]

    def rule(query: Query, analysis: BackdropAnalysis) -> str:
        rng = random.Random(f"{seed}:{counter[0]}:{realise(query)}")
        counter[0] += 1
        return fill_colours(query, [rng.choice(list(COLOURS)) for _ in range(query.open_colours())])

    return rule
