"""The Backdrops-world policy's decoding constraint: a rewrite is the user query's own words, in order, with at
most one colour word inserted before each shape whose colour the query leaves open (`ColourFillConstraint`).

That is the world's whole action space (`rewrites.fill_colours` writes the same texts): which colour each open
object gets, or none. The query's named colours, shapes, positions and relations are copied, so every rewrite
keeps the query's facts by construction, and what the policy learns is only the choice of colours. An article
("a" / "an") may be either word, so that "an orange circle" and "a circle" are both reachable; the SFT targets
teach the right one and the grammar accepts both.

`allowed` is a pure function of (query, prefix), as `DecodingConstraint` requires: the prefix is walked against
the query's word ids (memoised per query), one step per token.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from promptloop.world.backdrops.scene import COLOURS, SHAPES

ARTICLES = ("a", "an")


class ColourFillConstraint:
    """Allowed next tokens of a rewrite: the query's next word, a colour word before an open shape (once), and
    end-of-turn after the last query word (see the module docstring)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        missing = [w for w in (*COLOURS, *SHAPES, *ARTICLES) if w not in vocab]
        if missing:
            raise ValueError(f"the tokenizer lacks the Backdrops-world words {missing}")
        self.colour_ids = tuple(vocab[c] for c in COLOURS)
        self.article_ids = tuple(vocab[a] for a in ARTICLES)
        self.shape_ids = frozenset(vocab[s] for s in SHAPES)
        self.eos_id = int(tokenizer.eos_token_id)
        self._words = lru_cache(maxsize=4096)(self._query_ids)

    def _query_ids(self, query: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(query, add_special_tokens=False)["input_ids"])

    def allowed(self, query: str, prefix: Sequence[int]) -> Sequence[int] | None:
        words = self._words(query)
        j = 0  # query words copied so far
        filled = False  # a colour was inserted before query word j
        for tok in prefix:
            options = self._options(words, j, filled)
            if tok not in options:
                return [self.eos_id]  # off the language (only reachable unconstrained): end the rewrite
            if j < len(words) and tok in self.colour_ids and words[j] not in self.colour_ids:
                filled = True
                continue
            j += 1
            filled = False
        return list(self._options(words, j, filled))

    def _options(self, words: tuple[int, ...], j: int, filled: bool) -> tuple[int, ...]:
        if j >= len(words):
            return (self.eos_id,)
        word = words[j]
        if word in self.article_ids:
            return self.article_ids
        open_shape = word in self.shape_ids and j > 0 and words[j - 1] in self.article_ids
        if open_shape and not filled:
            return (word, *self.colour_ids)
        return (word,)


__all__ = ["ARTICLES", "ColourFillConstraint"]
