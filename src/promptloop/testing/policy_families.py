"""Tiny random Gemma 3, SmolVLM and LLaVA-OneVision policies built offline, for tests (`promptloop.testing.policies`
registers them).

Each uses a word-level tokenizer over the Shapes world's words plus the family's special tokens (named the way its
Hub tokenizer names them) and the family's real chat template, so the (random) output is made of world words.

- `tiny_gemma3_policy()`: Gemma3ForConditionalGeneration = tiny SigLIP tower (32 px, patch 8: 4x4 patches,
  average-pooled to 4 soft tokens) + tiny Gemma 3 LM (one sliding-window layer of window 8, one global layer,
  tied embeddings), with the real `Gemma3Processor` over the PIL `Gemma3ImageProcessorPil`. As on the Hub, the
  tokenizer adds `<bos>` itself and the chat template writes it too.
- `tiny_smolvlm_policy()`: SmolVLMForConditionalGeneration = tiny SmolVLM vision tower (32 px, patch 8, pixel
  shuffle 2: 4 tokens per tile) + tiny Llama, with image splitting on (64 px previews: 2x2 tiles and the global
  image, each in `<fake_token_around_image>` with its `<row_i_col_j>` / `<global-img>` tag). `SmolVLMProcessor`
  cannot be built here (its video processor needs torchvision, it needs `num2words`), so `Idefics3Processor` over
  the PIL `SmolVLMImageProcessorPil` stands in:
  it writes the same image prompt string (tested against SmolVLM's own `get_image_prompt_string`).
- `tiny_llava_onevision_policy()`: LlavaOnevisionForConditionalGeneration = tiny SigLIP tower (32 px, patch 8, no
  head, "full" features: 16 a tile) + tiny Qwen2 LM, anyres over pinpoints 32/64 x 32/64 (64 px previews: the base
  image and 2x2 tiles, 88 image features with the per-row `image_newline`). `LlavaOnevisionProcessor` cannot be
  built here (its video processor: see `promptloop.policy.onevision`), so `LlavaOnevisionImageTextProcessor`, the
  real class with only its image processor (the PIL `LlavaOnevisionImageProcessorPil`) and tokenizer, is used; it
  counts the `<image>` tokens with the real class's own anyres code.
"""

from __future__ import annotations

from typing import Any

import torch

from promptloop.policy.instruction import InstructionTemplate
from promptloop.policy.vlm import VLMPolicy

# Gemma's specials in Gemma's order (pad 0, eos 1, bos 2, unk 3, ...); the image soft token last, as in the real vocab.
GEMMA3_SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
                         "<start_of_image>", "<end_of_image>", "<image_soft_token>")
# google/gemma-3-4b-it, tokenizer_config.json "chat_template" (verbatim).
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\n'}}\n"
    "{%- endif -%}\n"
)

SMOLVLM_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", "<fake_token_around_image>",
                          "<image>", "<end_of_utterance>", "<global-img>",
                          *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)))
# SmolVLM-Instruct's chat template, verbatim as transformers' SmolVLM / Idefics3 processor tests carry it (SmolVLM2's
# adds `<video>` and string contents; images are rendered the same way).
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Qwen2's specials in Qwen2's order, then `<image>` / `<video>` as llava-hf's conversion adds them (ids right after
# `<|im_end|>`, as 151646 / 151647 follow 151645 in the real vocab); `<unk>` last: the word-level tokenizer needs one,
# Qwen2's byte-level BPE has none.
ONEVISION_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>", "<unk>")
# LLaVA-OneVision's chat template, verbatim from transformers' convert_llava_onevision_weights_to_hf.py (the script
# that wrote the llava-hf/llava-onevision-qwen2-*-hf processors): images, then videos, then the text of each turn.
ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


ROLE_WORDS = ("user", "model", "assistant", "system")  # role names the chat templates write as plain text


def family_tokenizer(specials: tuple[str, ...], *, bos: str | None, eos: str, pad: str, unk: str, chat_template: str,
                     add_bos: bool = False, named: dict[str, str] | None = None) -> Any:
    """A word-level `PreTrainedTokenizerFast` over the world's words (and `ROLE_WORDS`) with a family's special tokens (ids in the
    order given), its chat template and named multimodal tokens (`named`, e.g. {"boi_token": "<start_of_image>"},
    saved in tokenizer_config.json as a Hub tokenizer declares them). `add_bos`: encoding prepends `bos` (None: the
    family has no BOS token, as Qwen2's tokenizer)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from promptloop.world import get_world

    vocab = {tok: i for i, tok in enumerate(specials)}
    for w in (*get_world().world_words(), *ROLE_WORDS):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    if add_bos:
        assert bos is not None
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, vocab[bos])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=unk, pad_token=pad, model_max_length=1024,
        model_specific_special_tokens=dict(named or {}),
    )
    fast.add_special_tokens({"additional_special_tokens": [t for t in specials if t not in (bos, eos, unk, pad)]})
    fast.chat_template = chat_template
    fast.padding_side = "left"
    return fast


def _finish(model: Any, tokenizer: Any, processor: Any, eos: str, image_size: int, **policy_kwargs: Any) -> VLMPolicy:
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(eos)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    policy_kwargs.setdefault("instruction", InstructionTemplate.compact())
    policy_kwargs.setdefault("max_new_tokens", 12)
    return VLMPolicy(model.eval(), tokenizer, processor, image_size=image_size, **policy_kwargs)


def tiny_gemma3_policy(seed: int = 0, image_size: int = 32, **policy_kwargs: Any) -> VLMPolicy:
    """A tiny random Gemma 3 policy (32 px previews: 4 soft image tokens between `<start_of_image>` and
    `<end_of_image>`; sliding window 8 on the first layer, so the prompts are longer than the window)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    tokenizer = family_tokenizer(
        GEMMA3_SPECIAL_TOKENS, bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", add_bos=True,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        named={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in GEMMA3_SPECIAL_TOKENS}
    hidden, patch, tokens_per_image = 64, 8, 4
    config = Gemma3Config(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 2 * hidden,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
            "query_pre_attn_scalar": 16, "max_position_embeddings": 512, "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention"], "pad_token_id": ids["<pad>"],
            "bos_token_id": ids["<bos>"], "eos_token_id": [ids["<eos>"], ids["<end_of_turn>"]],
            "tie_word_embeddings": True,
        },
        vision_config={
            "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": image_size, "patch_size": patch, "vision_use_head": False,
        },
        mm_tokens_per_image=tokens_per_image, boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"], image_token_index=ids["<image_soft_token>"], tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # transformers initialises the projector to zero; random weights let the image reach the LM
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.03)
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=GEMMA3_CHAT_TEMPLATE, image_seq_length=tokens_per_image)
    return _finish(model, tokenizer, processor, "<end_of_turn>", image_size, **policy_kwargs)


def tiny_smolvlm_policy(seed: int = 0, image_size: int = 64, **policy_kwargs: Any) -> VLMPolicy:
    """A tiny random SmolVLM policy (64 px previews split into 2x2 tiles of 32 px plus the global image, 4 image
    tokens each: 20 `<image>` tokens per preview)."""
    from transformers import Idefics3Processor, LlamaConfig, SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    tokenizer = family_tokenizer(
        SMOLVLM_SPECIAL_TOKENS, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|endoftext|>", unk="<unk>",
        chat_template=SMOLVLM_CHAT_TEMPLATE,
        named={"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
               "end_of_utterance_token": "<end_of_utterance>", "global_image_token": "<global-img>"},
    )
    tile, patch, scale = image_size // 2, 8, 2
    hidden = 64
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<end_of_utterance>"), tie_word_embeddings=False,
    )
    config = SmolVLMConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": tile, "patch_size": patch},
        text_config=text, scale_factor=scale, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = SmolVLMForConditionalGeneration(config)
    image_processor = SmolVLMImageProcessorPil(
        do_image_splitting=True, size={"longest_edge": image_size}, max_image_size={"longest_edge": tile},
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=(tile // patch) ** 2 // scale**2, chat_template=SMOLVLM_CHAT_TEMPLATE)
    return _finish(model, tokenizer, processor, "<end_of_utterance>", image_size, **policy_kwargs)


def tiny_llava_onevision_policy(seed: int = 0, image_size: int = 64, **policy_kwargs: Any) -> VLMPolicy:
    """A tiny random LLaVA-OneVision policy: 64 px previews, anyres over a 32 px SigLIP tower (patch 8: 16 features a
    tile) and the pinpoints 32/64 x 32/64, so each preview is the base image plus 2x2 tiles: 16 base features, then
    the 8x8 tile grid with one `image_newline` feature per row (72), 88 `<image>` tokens."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from promptloop.policy.onevision import LlavaOnevisionImageTextProcessor

    tokenizer = family_tokenizer(
        ONEVISION_SPECIAL_TOKENS, bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk="<unk>",
        chat_template=ONEVISION_CHAT_TEMPLATE, named={"image_token": "<image>", "video_token": "<video>"},
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ONEVISION_SPECIAL_TOKENS}
    tile, patch, hidden = 32, 8, 64
    pinpoints = [[tile * i, tile * j] for i in (1, 2) for j in (1, 2)]  # the real ones: 384 x 1..6 each way
    config = LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": tile, "patch_size": patch,
                       "vision_use_head": False},
        text_config={"model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": hidden,
                     "intermediate_size": 2 * hidden, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "max_position_embeddings": 1024, "tie_word_embeddings": False,
                     "pad_token_id": tokenizer.pad_token_id, "bos_token_id": ids["<|endoftext|>"],
                     "eos_token_id": ids["<|im_end|>"]},
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full", vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config)
    image_processor = LlavaOnevisionImageProcessorPil(  # SigLIP's normalisation, as the family's image processor
        size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints, image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = LlavaOnevisionImageTextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, num_image_tokens=(tile // patch) ** 2,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        chat_template=ONEVISION_CHAT_TEMPLATE,
    )
    return _finish(model, tokenizer, processor, "<|im_end|>", image_size, **policy_kwargs)
