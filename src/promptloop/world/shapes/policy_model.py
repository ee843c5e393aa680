"""The world policy's model: a LlavaForConditionalGeneration (a small CLIP vision tower + a small Llama) and its
LlavaProcessor, for the world's word-level tokenizer. `train_policy` builds the shipped policy (assets/world/policy)
from these at its sizes; `promptloop.testing.policies.tiny_llava_policy` builds a random one at the default sizes."""

from __future__ import annotations

from typing import Any

import torch


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
