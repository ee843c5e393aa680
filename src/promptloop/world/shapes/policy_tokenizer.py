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
from functools import lru_cache

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
from promptloop.world.shapes import grammar

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>", "<|user|>", "<|assistant|>", "<|system|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% if message['content'] is string %}{{ ' ' + message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}{{ ' <image>' }}{% else %}{{ ' ' + c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ ' </s>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
_WORD_RE = re.compile(r"\w+|[^\w\s]")
TEXT_WINDOW = 48  # = backbone.TEXT_MAX_TOKENS (MiniLM word pieces); not imported to keep this module light


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
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS) + [t for t in extra_special_tokens if t not in SPECIAL_TOKENS]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for w in world_words():
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=512,
    )
    fast.add_special_tokens({"additional_special_tokens": specials[4:]})
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


@lru_cache(maxsize=1)
def _minilm_tokenizer() -> object:
    from transformers import AutoTokenizer

    from promptloop.world.backbone import text_encoder_path

    # no window here: the count must see past it (and not warn about it)
    return AutoTokenizer.from_pretrained(text_encoder_path(), model_max_length=1_000_000)


def minilm_length(text: str) -> int:
    """Length of a prompt in the world backbone's text window: MiniLM word pieces incl. [CLS] / [SEP]."""
    return len(_minilm_tokenizer()(text, truncation=False)["input_ids"])  # type: ignore[operator]


__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "TEXT_WINDOW", "build_world_tokenizer", "minilm_length", "world_words"]
