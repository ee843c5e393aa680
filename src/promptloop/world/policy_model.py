"""The parts every world policy is built from: a word-level tokenizer over the world's words, a
LlavaForConditionalGeneration (a small CLIP vision tower + a small Llama) and its LlavaProcessor, and a prompt's
length in the world backbones' text window.

Each world's `train_policy` builds its policy from these at its sizes (the Shapes world's shipped policy at
assets/world/policy, the Backdrops world's at assets/world/backdrops/policy);
`promptloop.testing.policies.tiny_llava_policy` builds a random one at the default sizes.

Tokenizer (`word_level_tokenizer`): `tokenizers` WordLevel over the given words, lower-casing, a
whitespace/punctuation pre-tokenizer, the special tokens `<pad> <s> </s> <unk> <image>` plus the chat markers
`<|user|> <|assistant|> <|system|>`, and `CHAT_TEMPLATE`. `minilm_length`: MiniLM word pieces (the world
backbones' text encoder), of which at most `TEXT_WINDOW` fit.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import torch

from promptloop.policy.instruction import InstructionTemplate

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
# The world policies' instruction: short (fewer tokens, faster SFT and decoding); each world's tokenizer holds its words
# (`instruction_words`).
WORLD_INSTRUCTION = InstructionTemplate(
    "query : {query} . prompt : {prompt} . {progress} % . {image_note}{history}rewrite :",
    "image . ", "no image . ", "earlier : {items} . ",
)
TEXT_WINDOW = 48  # = world.backbone.TEXT_MAX_TOKENS (MiniLM word pieces); not imported to keep this module light


def instruction_words() -> set[str]:
    """The words and marks of `WORLD_INSTRUCTION`, the chat roles and the progress numbers 0..100."""
    import re

    words: set[str] = set()
    for text in (WORLD_INSTRUCTION.template, WORLD_INSTRUCTION.image_note, WORLD_INSTRUCTION.no_image_note,
                 WORLD_INSTRUCTION.history):
        words.update(re.findall(r"\w+|[^\w\s]", re.sub(r"\{\w+\}", " ", text).lower()))
    words.update("user assistant system".split())
    words.update(str(i) for i in range(101))
    return words


def word_level_tokenizer(words: Iterable[str], extra_special_tokens: tuple[str, ...] = ()) -> Any:
    """A word-level `PreTrainedTokenizerFast`: the special tokens (ids 0..), then `words` in the given order."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS) + [t for t in extra_special_tokens if t not in SPECIAL_TOKENS]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for w in words:
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
    """Length of a prompt in the world backbones' text window: MiniLM word pieces incl. [CLS] / [SEP]."""
    return len(_minilm_tokenizer()(text, truncation=False)["input_ids"])  # type: ignore[operator]


def llava_model(tokenizer: Any, image_size: int = 32, patch_size: int = 8, hidden: int = 64, layers: int = 2,
                vision_hidden: int = 32, vision_layers: int = 2, heads: int = 4, seed: int = 0,
                tie_embeddings: bool = False) -> Any:
    """A randomly initialised tiny LlavaForConditionalGeneration for `tokenizer` (`tie_embeddings`: the
    LM head shares the input embedding matrix)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers,
        num_attention_heads=max(1, vision_hidden // 32) * 2, image_size=image_size, patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=tie_embeddings,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1, projector_hidden_act="gelu",
        image_seq_length=(image_size // patch_size) ** 2, tie_word_embeddings=tie_embeddings,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def llava_processor(tokenizer: Any, image_size: int = 32, patch_size: int = 8) -> Any:
    """A LlavaProcessor over a locally built PIL CLIP image processor."""
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template, image_token="<image>",
    )
