"""The Shapes-world refinement policy's tokenizer, and a prompt's length in the world backbone's text window.

Tokenizer: a word-level tokenizer (`tokenizers` WordLevel, lower-casing, whitespace/punctuation
pre-tokenizer) over every word the world grammar can produce (colour, shape, size, background,
relation and position words, fillers, intensifiers, punctuation), the words of the policy's
instruction templates and chat roles, the numbers 0..100 (progress in percent), and the special
tokens `<pad> <s> </s> <unk> <image>` plus chat markers `<|user|> <|assistant|> <|system|>`.

`minilm_length` (the policy's prompt-length function): MiniLM word pieces, at most `TEXT_WINDOW` fit.
"""

from __future__ import annotations

import re

from promptloop.policy.instruction import (
    COMPACT_HISTORY,
    COMPACT_IMAGE_NOTE,
    COMPACT_INSTRUCTION,
    COMPACT_NO_IMAGE_NOTE,
    DEFAULT_HISTORY,
    DEFAULT_IMAGE_NOTE,
    DEFAULT_INSTRUCTION,
    DEFAULT_NO_IMAGE_NOTE,
)
from promptloop.world.policy_model import (  # noqa: F401  (re-exported: saved policies name minilm_length here)
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    TEXT_WINDOW,
    minilm_length,
    word_level_tokenizer,
)
from promptloop.world.shapes import grammar

_WORD_RE = re.compile(r"\w+|[^\w\s]")


def world_words() -> list[str]:
    """Every word and punctuation mark of the world's captions and of the policy's instructions."""
    words: set[str] = set()
    for table in (grammar.COLOUR_WORDS, grammar.SHAPE_WORDS, grammar.SIZE_WORDS, grammar.BACKGROUND_WORDS,
                  grammar.RELATION_WORDS):
        for phrases in table.values():
            for ph in phrases:
                words.update(_WORD_RE.findall(ph))
    words.update(grammar.INTENSIFIERS)
    words.update(grammar.FILLER)
    words.update("a an the top bottom left right centre center middle at on in to of background".split())
    words.update(", : . ; % ! ? ' \" -".split())
    for text in (DEFAULT_INSTRUCTION, DEFAULT_IMAGE_NOTE, DEFAULT_NO_IMAGE_NOTE, DEFAULT_HISTORY,
                 COMPACT_INSTRUCTION, COMPACT_IMAGE_NOTE, COMPACT_NO_IMAGE_NOTE, COMPACT_HISTORY):
        words.update(_WORD_RE.findall(re.sub(r"\{\w+\}", " ", text).lower()))
    words.update("user assistant system prompt query rewrite".split())
    words.update(str(i) for i in range(101))
    return sorted(words)


def build_world_tokenizer(extra_special_tokens: tuple[str, ...] = ()) -> object:
    """The word-level `PreTrainedTokenizerFast` of the Shapes world (see the module docstring)."""
    return word_level_tokenizer(world_words(), extra_special_tokens)


__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "TEXT_WINDOW", "build_world_tokenizer", "minilm_length", "world_words"]
