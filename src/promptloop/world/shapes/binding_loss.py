"""An auxiliary loss that makes the text binder bind words to their object (`train-backbone
--binding-loss`).

Why: a linear probe reads the colour of an object off MiniLM's state at its shape word with 0.87
accuracy (and the shape off the colour word with 0.97), so the binding is in the text states, but only
in a direction that carries a few per cent of the state's norm (the states at "circle" in "a red circle
and a blue square" and "a blue circle and a red square" are 0.998 cosine-similar). Trained by the
diffusion loss alone, the binder barely amplified it (probe 0.89), and the backbone still swapped
colours between objects.

What: every token of an object's noun phrase ("a diamond in orange", "the crimson box") is labelled
with that object's colour, shape and size (from the world's grammar; -1 where there is none). A *fixed*
random probe (unit directions, one per attribute value, never trained) reads the binder's output, and
the loss is the cross-entropy of those readings. The probe being fixed is the point: a trained probe
could scale itself up and read the faint direction that is already there; a fixed one can only be
satisfied by token states that carry their object's attributes as a component of the size of MiniLM's
own directions (token norms are 6–12; a random direction reads about 0.5 of noise).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from promptloop.world.shapes.grammar import _LOOKUP, COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS

ATTRIBUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("colour", tuple(COLOUR_WORDS)), ("shape", tuple(SHAPE_WORDS)), ("size", tuple(SIZE_WORDS)),
)
_PHRASE_START = {"a", "an", "the"}
_SEPARATORS = {",", "and", "with", ":"}


def _word_labels(words: Sequence[str]) -> list[tuple[int, int, int]]:
    """Per word: (colour, shape, size) indices of the object whose noun phrase holds the word, -1 if none.

    A phrase opens at a determiner and closes at the next one, or at a separator once it has its shape
    (as the grammar's parser reads captions). A phrase without both a colour and a shape (e.g. "the left"
    of "on the left") labels nothing."""
    labels = [(-1, -1, -1)] * len(words)
    phrase: list[int] = []
    attrs: dict[str, str] = {}

    def close() -> None:
        if "colour" in attrs and "shape" in attrs:
            lab = tuple(values.index(attrs[name]) if name in attrs else -1 for name, values in ATTRIBUTES)
            for i in phrase:
                labels[i] = lab  # type: ignore[assignment]
        phrase.clear()
        attrs.clear()

    for i, w in enumerate(words):
        w = w.lower()
        if w in _PHRASE_START:
            close()
        elif w in _SEPARATORS and "shape" in attrs:
            close()
            continue
        phrase.append(i)
        if w in _LOOKUP:
            kind, canon = _LOOKUP[w]
            attrs.setdefault(kind, canon)
    close()
    return labels


def phrase_labels(tokenizer, captions: Sequence[str], max_tokens: int) -> torch.Tensor:
    """(N, max_tokens, 3) int8 labels of every token of `captions`, tokenized as the pipeline does
    (padded to `max_tokens`); -1 for special tokens, padding and words outside an object phrase."""
    enc = tokenizer(list(captions), padding="max_length", max_length=max_tokens, truncation=True)
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    out = torch.full((len(captions), max_tokens, len(ATTRIBUTES)), -1, dtype=torch.int8)
    for n, caption in enumerate(captions):
        words = [w for w, _ in pre.pre_tokenize_str(caption)]
        per_word = _word_labels(words)
        for t, wid in enumerate(enc.word_ids(n)):
            if wid is not None:
                out[n, t] = torch.tensor(per_word[wid], dtype=torch.int8)
    return out


def probe_directions(dim: int, seed: int = 0) -> torch.Tensor:
    """The fixed probe: (dim, n_values) orthonormal columns, one per value of every attribute."""
    n = sum(len(values) for _, values in ATTRIBUTES)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, n, generator=g))
    return q


def binding_loss(states: torch.Tensor, labels: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the fixed probe's readings of `states` (B, T, dim) against `labels` (B, T, 3),
    over the labelled tokens of each attribute (0 when no token is labelled)."""
    logits = states.float() @ directions  # (B, T, n_values)
    total = states.new_zeros((), dtype=torch.float32)
    start = 0
    for a, (_, values) in enumerate(ATTRIBUTES):
        lab = labels[..., a].long()
        mask = lab >= 0
        if mask.any():
            total = total + F.cross_entropy(logits[..., start : start + len(values)][mask], lab[mask])
        start += len(values)
    return total / len(ATTRIBUTES)
