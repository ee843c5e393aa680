"""Tiny random VLM policies built offline, for tests (here and in the GRPO end-to-end test).

Both use the Shapes world's word-level tokenizer, so their (random) output is made of world words.

- `tiny_llava_policy()`: LlavaForConditionalGeneration = tiny CLIP vision tower (32 px, patch 8:
  16 image tokens) + tiny Llama, with a `LlavaProcessor` over a locally built `CLIPImageProcessorPil`.
- `tiny_qwen2vl_policy()` / `tiny_qwen3vl_policy()`: the same for Qwen2-VL (patch 14) and Qwen3-VL (patch 16,
  interleaved M-RoPE, DeepStack), through the same `QwenVLComponentProcessor`.
- `tiny_qwen25vl_policy()`: Qwen2_5_VLForConditionalGeneration (tiny vision tower, patch 14, merge 2,
  tiny Qwen2 LM with M-RoPE) with `QwenVLComponentProcessor` (PIL image processor, no torchvision);
  Qwen-style chat template with `<|im_start|>`/`<|im_end|>` and `<|vision_start|><|image_pad|><|vision_end|>`.
- `tiny_gemma3_policy()` / `tiny_smolvlm_policy()` / `tiny_llava_onevision_policy()`: Gemma 3, SmolVLM and
  LLaVA-OneVision, in `promptloop.testing.policy_families`.
"""

from __future__ import annotations

from typing import Any

import torch

from promptloop.policy.instruction import InstructionTemplate
from promptloop.policy.processors import QwenVLComponentProcessor
from promptloop.policy.vlm import VLMPolicy
from promptloop.testing._common import QWEN_SPECIAL_TOKENS
from promptloop.testing.policy_families import tiny_gemma3_policy, tiny_llava_onevision_policy, tiny_smolvlm_policy
from promptloop.world import get_world

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_llava_policy(seed: int = 0, image_size: int = 32, **policy_kwargs: Any) -> VLMPolicy:
    """A tiny random LLaVA policy (about 0.1M parameters) with the world tokenizer."""
    world = get_world()  # the default world's policy vocabulary and model definition, at random weights
    tokenizer = world.build_world_tokenizer()
    model = world.llava_model(tokenizer, image_size=image_size, seed=seed)
    processor = world.llava_processor(tokenizer, image_size=image_size)
    policy_kwargs.setdefault("instruction", InstructionTemplate.compact())
    policy_kwargs.setdefault("max_new_tokens", 12)
    return VLMPolicy(model, tokenizer, processor, image_size=image_size, **policy_kwargs)


def _qwen_tokenizer() -> tuple[Any, dict[str, int]]:
    """The world tokenizer with Qwen's special tokens and chat template, and the ids of those tokens."""
    tokenizer = get_world().build_world_tokenizer(extra_special_tokens=QWEN_SPECIAL_TOKENS)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.eos_token = "<|im_end|>"
    return tokenizer, {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}


def _qwen_text_config(tokenizer: Any, ids: dict[str, int], hidden: int, heads: int) -> dict[str, Any]:
    return {"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 2 * hidden,
            "num_hidden_layers": 2, "num_attention_heads": heads, "num_key_value_heads": 2,
            "max_position_embeddings": 512, "tie_word_embeddings": False, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": ids["<|im_end|>"], "bos_token_id": tokenizer.bos_token_id}


def _qwen_media_ids(ids: dict[str, int]) -> dict[str, Any]:
    return {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
            "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
            "tie_word_embeddings": False}


def _qwen_family_policy(model: Any, tokenizer: Any, ids: dict[str, int], patch: int, image_size: int,
                        **policy_kwargs: Any) -> VLMPolicy:
    """A VLMPolicy over a Qwen-VL-family model with the PIL Qwen2-VL image processor (merge 2, temporal 2)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch, temporal_patch_size=2, merge_size=2,
        size={"shortest_edge": (4 * patch) ** 2, "longest_edge": image_size * image_size},
    )
    processor = QwenVLComponentProcessor(image_processor, tokenizer)
    policy_kwargs.setdefault("instruction", InstructionTemplate.compact())
    policy_kwargs.setdefault("max_new_tokens", 12)
    return VLMPolicy(model, tokenizer, processor, image_size=image_size, **policy_kwargs)


def tiny_qwen2vl_policy(seed: int = 0, image_size: int = 56, **policy_kwargs: Any) -> VLMPolicy:
    """A tiny random Qwen2-VL policy (patch 14, merge 2: 56 px previews give 4 image tokens; M-RoPE, no window
    attention in the vision tower)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tokenizer, ids = _qwen_tokenizer()
    hidden = 64
    text = _qwen_text_config(tokenizer, ids, hidden, heads=4)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    config = Qwen2VLConfig(
        text_config=text,
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": hidden, "mlp_ratio": 2, "num_heads": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        **_qwen_media_ids(ids),
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    return _qwen_family_policy(model, tokenizer, ids, 14, image_size, **policy_kwargs)


def tiny_qwen3vl_policy(seed: int = 0, image_size: int = 64, **policy_kwargs: Any) -> VLMPolicy:
    """A tiny random Qwen3-VL policy (patch 16, merge 2: 64 px previews give 4 image tokens; interleaved M-RoPE,
    DeepStack features from vision layer 1 added to the LM's first layers)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tokenizer, ids = _qwen_tokenizer()
    hidden = 64
    text = _qwen_text_config(tokenizer, ids, hidden, heads=4)
    text.update(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "mrope_section": [2, 3, 3], "mrope_interleaved": True})
    config = Qwen3VLConfig(
        text_config=text,
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": hidden,
                       "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3,
                       "num_position_embeddings": 16, "deepstack_visual_indexes": [1]},
        **_qwen_media_ids(ids),
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    return _qwen_family_policy(model, tokenizer, ids, 16, image_size, **policy_kwargs)


def tiny_qwen25vl_policy(seed: int = 0, image_size: int = 56, **policy_kwargs: Any) -> VLMPolicy:
    """A tiny random Qwen2.5-VL policy (previews resized to 56 px: a 4x4 patch grid, 4 image tokens)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer, ids = _qwen_tokenizer()
    hidden, heads = 64, 4
    head_dim = hidden // heads
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 2 * hidden,
            "num_hidden_layers": 2, "num_attention_heads": heads, "num_key_value_heads": 2,
            "max_position_embeddings": 512, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                                  "mrope_section": [2, 3, 3]},
            "tie_word_embeddings": False, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": ids["<|im_end|>"], "bos_token_id": tokenizer.bos_token_id,
        },
        vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": hidden,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
            "fullatt_block_indexes": [1], "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    assert sum(config.text_config.rope_parameters["mrope_section"]) * 2 == head_dim
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=14, temporal_patch_size=2, merge_size=2,
        size={"shortest_edge": 56 * 56, "longest_edge": image_size * image_size},
    )
    processor = QwenVLComponentProcessor(image_processor, tokenizer)
    policy_kwargs.setdefault("instruction", InstructionTemplate.compact())
    policy_kwargs.setdefault("max_new_tokens", 12)
    return VLMPolicy(model, tokenizer, processor, image_size=image_size, **policy_kwargs)


TINY_POLICIES = {  # the names `policy.name_or_path: tiny:NAME` builds
    "gemma3": tiny_gemma3_policy,
    "llava": tiny_llava_policy,
    "llava_onevision": tiny_llava_onevision_policy,
    "qwen25vl": tiny_qwen25vl_policy,
    "qwen2vl": tiny_qwen2vl_policy,
    "qwen3vl": tiny_qwen3vl_policy,
    "smolvlm": tiny_smolvlm_policy,
}
