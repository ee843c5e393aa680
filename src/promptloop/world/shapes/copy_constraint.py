"""The world policy's decoding constraint: a rewrite is the user query's own words, in order, with edit
phrases inserted between them (`CopyEditConstraint`).

This is the action space of the world policy's SFT targets (`edits.apply_edits`). Between two
copied query words (a "gap") the policy may insert, in this order and each at most once per gap:

1. a background prefix "<bg> background with", only at the very start;
2. a position phrase ("in the top left", "in the centre", "on the right", "at the bottom", ...), only
   right after a shape or colour word (the end of a noun phrase);
3. a size word ("small", "big", ...), only right after an article and before a colour or shape word;
4. an emphasis of the next colour word: an intensifier ("bright", "vivid", "solid") or the colour
   itself and a comma ("a red, red circle"), only before a colour word;
5. a background suffix "on a <bg> background", only after the last query word;

the background at most once in all and only when the query names none. Copying treats "a" and "an" as
one word (insertions change the article, as English needs). Under the constraint the policy cannot drop,
swap or misspell a word of the query, nor loop on edit words — so rewrites keep the query's attributes
by construction — but it still chooses which edits to make and where: what GRPO trains.

Acceptance is a small nondeterministic automaton whose states are (words copied, last edit kind in the
current gap, the rest of a phrase being emitted, background used). The states of a prefix depend on the
prefix alone (memoised per (query, prefix), so decoding steps the automaton once per token), and
`allowed` is a pure function of (query, prefix), as `DecodingConstraint` requires. Every SFT target is
accepted (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from promptloop.world.shapes import grammar
from promptloop.world.shapes.scene import ObjectQuery, SpecError


def _position_phrases() -> tuple[str, ...]:
    """Every absolute position phrase the grammar writes ("in the top left", "on the right", ...)."""
    out = []
    for col in (None, 0, 1, 2):
        for row in (None, 0, 1, 2):
            try:
                phrase = grammar._position_phrase(ObjectQuery("red", "circle", None, col, row)).strip()
            except SpecError:  # e.g. the centre column alone has no name
                continue
            if phrase:
                out.append(phrase)
    return tuple(out)


POSITION_PHRASES = _position_phrases()
ARTICLES = ("a", "an")
_MEMO_SIZE = 200_000  # cached (query, prefix) -> states entries before the cache is emptied
# edit kinds in the order they may follow each other within a gap
BG_START, POSITION, SIZE, EMPHASIS, BG_END = range(5)


@dataclass(frozen=True)
class _State:
    copied: int  # query words copied so far
    last_kind: int  # kind of the last edit in the current gap (-1: none yet)
    pending: tuple[int, ...]  # the rest of the phrase being emitted
    background: bool  # a background phrase was used


class CopyEditConstraint:
    """`DecodingConstraint` of the world policy: copy the query, insert edit phrases (module docstring).

    Args:
        tokenizer: the world policy's word-level tokenizer (its vocabulary holds all the words above).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()

        def ids(words: Any) -> frozenset[int]:
            return frozenset(vocab[w] for w in words if w in vocab)

        def seq(text: str) -> tuple[int, ...]:
            return tuple(vocab[w] for w in text.split())

        self.articles = ids(ARTICLES)
        self.colours = ids(w for words in grammar.COLOUR_WORDS.values() for w in words)
        self.shapes = ids(w for words in grammar.SHAPE_WORDS.values() for w in words)
        self.sizes = ids(w for words in grammar.SIZE_WORDS.values() for w in words)
        self.intensifiers = ids(grammar.INTENSIFIERS)
        bg_words = [w for words in grammar.BACKGROUND_WORDS.values() for w in words]
        self.positions = tuple(seq(p) for p in POSITION_PHRASES)
        self.bg_start = tuple(seq(f"{w} background with") for w in bg_words)
        self.bg_end = tuple(seq(f"on a {w} background") for w in bg_words)
        self.background_id = vocab.get("background")
        self.comma_id = vocab.get(",")
        self.eos_id = tokenizer.eos_token_id
        self.unknown_ids = frozenset(int(i) for i in getattr(tokenizer, "all_special_ids", []))
        self._query_ids = lru_cache(maxsize=4096)(self._encode)
        self._memo: dict[tuple[str, tuple[int, ...]], frozenset[_State]] = {}

    def _encode(self, query: str) -> tuple[int, ...]:
        ids = self.tokenizer(query, add_special_tokens=False)["input_ids"]
        return tuple(int(i) for i in ids if int(i) not in self.unknown_ids)  # words it cannot copy are dropped

    def _phrases(self, q: tuple[int, ...], st: _State, prev: int | None) -> list[tuple[int, tuple[int, ...]]]:
        """(kind, token sequence) of the edits that may start in state `st` after token `prev`."""
        out: list[tuple[int, tuple[int, ...]]] = []
        nxt = q[st.copied] if st.copied < len(q) else None
        bg_free = not st.background and self.background_id not in q
        if bg_free and prev is None:
            out += [(BG_START, p) for p in self.bg_start]
        if prev is not None and (prev in self.shapes or prev in self.colours):
            out += [(POSITION, p) for p in self.positions]
        if prev in self.articles and nxt is not None and (nxt in self.colours or nxt in self.shapes):
            out += [(SIZE, (s,)) for s in self.sizes]
        if nxt is not None and nxt in self.colours:
            out += [(EMPHASIS, (i,)) for i in self.intensifiers]
            if self.comma_id is not None:
                out.append((EMPHASIS, (nxt, self.comma_id)))
        if bg_free and nxt is None:
            out += [(BG_END, p) for p in self.bg_end]
        return [(k, p) for k, p in out if k > st.last_kind]

    def _copies(self, word: int, token: int) -> bool:
        return token == word or (token in self.articles and word in self.articles)

    def _step(self, q: tuple[int, ...], st: _State, prev: int | None, token: int) -> list[_State]:
        if st.pending:
            return [replace(st, pending=st.pending[1:])] if st.pending[0] == token else []
        out = []
        if st.copied < len(q) and self._copies(q[st.copied], token):
            out.append(_State(st.copied + 1, -1, (), st.background))
        for kind, phrase in self._phrases(q, st, prev):
            if phrase[0] == token:
                out.append(_State(st.copied, kind, phrase[1:], st.background or kind in (BG_START, BG_END)))
        return out

    def states(self, query: str, prefix: Sequence[int]) -> frozenset[_State]:
        """Automaton states consistent with `prefix` (empty if `prefix` is outside the language).

        Memoised per (query, prefix): decoding extends a prefix by one token per call, so each call
        steps the automaton once from the cached states of the prefix before."""
        key = (query, tuple(int(t) for t in prefix))
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        if not key[1]:
            states = frozenset({_State(0, -1, (), False)})
        else:
            before = self.states(query, key[1][:-1])
            prev = key[1][-2] if len(key[1]) >= 2 else None
            q = self._query_ids(query)
            states = frozenset(s for st in before for s in self._step(q, st, prev, key[1][-1]))
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = states
        return states

    def accepts(self, query: str, completion: Sequence[int]) -> bool:
        """Whether a whole completion (with or without its end-of-turn token) is in the constraint's language."""
        ids = list(completion)
        if ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        n = len(self._query_ids(query))
        return any(st.copied == n and not st.pending for st in self.states(query, ids))

    def allowed(self, query: str, prefix: Sequence[int]) -> list[int] | None:
        q = self._query_ids(query)
        states = self.states(query, prefix)
        if not states:
            return None  # a prefix from outside the language (not sampled under the constraint): unrestricted
        prev = int(prefix[-1]) if len(prefix) else None
        ids: set[int] = set()
        for st in states:
            if st.pending:
                ids.add(st.pending[0])
                continue
            if st.copied < len(q):
                ids.update(self.articles if q[st.copied] in self.articles else (q[st.copied],))
            elif self.eos_id is not None:
                ids.add(self.eos_id)
            ids.update(phrase[0] for _, phrase in self._phrases(q, st, prev))
        return sorted(ids)
