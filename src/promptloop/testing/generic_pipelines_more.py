"""Tiny, random, offline pipelines of six more generic-route classes (for tests): Qwen-Image, Z-Image,
HunyuanImage 2.1, FLUX.2 [klein], FLUX.2 [dev] and HiDream-I1.

Sizes follow diffusers' own tests (`get_dummy_components`), made smaller where the tests allow; their
text encoders (Qwen2.5-VL, Qwen3, Mistral-3, Llama, T5, CLIP) are built from configs with random
weights and their tokenizers in memory (`tiny_chat_tokenizer`: the WordLevel vocabulary of
`tiny_word_tokenizer` plus the chat-template special tokens, and a chat template). Every builder is
seeded; nothing is downloaded.

    pipe = MORE_GENERIC_PIPELINES["qwen_image"]()
    pipe("a red circle", **more_generic_call_kwargs("qwen_image"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from promptloop.testing._common import TINY_SIZE, clip_text_config, finish_pipeline, seeded, t5_encoder
from promptloop.testing.generic_pipelines import tiny_word_tokenizer
from promptloop.testing.pipelines import tiny_clip_tokenizer, tiny_t5_tokenizer

# one turn per message, Qwen style; `content` may be a string or a list of {"type": "text", "text": ...} parts
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}{{ c['text'] }}"
    "{% endfor %}{% endif %}<|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def tiny_chat_tokenizer(model_max_length: int = 1024, padding_side: str = "right") -> Any:
    """`tiny_word_tokenizer` with `<|im_start|>` / `<|im_end|>` as special tokens and a chat template."""
    tokenizer = tiny_word_tokenizer(model_max_length=model_max_length, padding_side=padding_side)
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.chat_template = _CHAT_TEMPLATE
    return tokenizer


def _fit_template_prefix(pipe: Any) -> None:
    """The Qwen-template pipelines drop the template's system prefix by a token count that fits Qwen's tokenizer
    (34); set it to the count of this tokenizer, so that exactly the prefix is dropped."""
    prefix = pipe.prompt_template_encode.split("{}")[0]
    pipe.prompt_template_encode_start_idx = len(pipe.tokenizer(prefix).input_ids)


def _qwen25_vl(tokenizer: Any, hidden: int) -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vocab = len(tokenizer) + 3  # + the three vision tokens, never produced by the text tokenizer
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": hidden, "intermediate_size": hidden, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "vocab_size": vocab, "pad_token_id": tokenizer.pad_token_id,
            "rope_scaling": {"mrope_section": [1, 1, 2] if hidden == 16 else [2, 2, 4], "rope_type": "default",
                             "type": "default"},
            "rope_theta": 1000000.0,
        },
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": hidden},
        hidden_size=hidden, vocab_size=vocab, vision_start_token_id=vocab - 3, vision_end_token_id=vocab - 2,
        vision_token_id=vocab - 1, image_token_id=vocab - 1, video_token_id=vocab - 1,
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _qwen3_config(tokenizer: Any) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(
        hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        head_dim=8, vocab_size=len(tokenizer), max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
    )


def _flux2_parts(joint_attention_dim: int, guidance_embeds: bool) -> tuple[Any, Any]:
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=joint_attention_dim, timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=guidance_embeds,
    ).eval()
    vae = AutoencoderKLFlux2(
        sample_size=TINY_SIZE, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(4, 4), layers_per_block=1,
        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
    ).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so that previews must undo them
        vae.bn.running_mean.copy_(torch.linspace(-0.5, 0.5, vae.bn.running_mean.numel()))
        vae.bn.running_var.copy_(torch.linspace(0.5, 2.0, vae.bn.running_var.numel()))
    return transformer, vae


# ----------------------------------------------------------------------------------------------------------------------
# pipelines
# ----------------------------------------------------------------------------------------------------------------------
def tiny_qwen_image_pipeline(seed: int = 0) -> Any:
    """Qwen-Image: Qwen2.5-VL text encoder (variable length, mask), 3-D causal VAE, packed latents, true CFG."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    tokenizer = tiny_chat_tokenizer()
    with seeded(seed):
        transformer = QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4),
        ).eval()
        vae = AutoencoderKLQwenImage(
            base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False],
            latents_mean=[0.1, -0.1, 0.2, 0.0], latents_std=[1.5, 0.5, 1.0, 2.0],
        ).eval()
        text_encoder = _qwen25_vl(tokenizer, 16)
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        transformer=transformer,
    )
    _fit_template_prefix(pipe)
    return finish_pipeline(pipe, "cpu", None)


def tiny_z_image_pipeline(seed: int = 0) -> Any:
    """Z-Image: Qwen3 text encoder, per-sample lists of variable-length embeddings, positional transformer args."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

    tokenizer = tiny_chat_tokenizer()
    with seeded(seed):
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=32, n_layers=1, n_refiner_layers=1,
            n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
            axes_dims=[8, 4, 4], axes_lens=[256, 32, 32],
        ).eval()
        with torch.no_grad():  # initialised with torch.empty (diffusers' tests fix them the same way)
            transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
            transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], block_out_channels=[8, 8], layers_per_block=1,
            latent_channels=4, norm_num_groups=4, sample_size=TINY_SIZE, scaling_factor=0.3611, shift_factor=0.1159,
        ).eval()
        text_encoder = Qwen3Model(_qwen3_config(tokenizer)).eval()
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        transformer=transformer,
    )
    return finish_pipeline(pipe, "cpu", None)


def tiny_hunyuan_image_pipeline(seed: int = 0) -> Any:
    """HunyuanImage 2.1: Qwen2.5-VL + ByT5 (glyph) encoders with masks, guider-driven CFG (separate calls)."""
    from diffusers import (
        AdaptiveProjectedMixGuidance,
        AutoencoderKLHunyuanImage,
        FlowMatchEulerDiscreteScheduler,
        HunyuanImagePipeline,
        HunyuanImageTransformer2DModel,
    )
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    tokenizer = tiny_chat_tokenizer()
    with seeded(seed):
        transformer = HunyuanImageTransformer2DModel(
            in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
            num_single_layers=1, num_refiner_layers=1, patch_size=(1, 1), guidance_embeds=False, text_embed_dim=32,
            text_embed_2_dim=32, rope_axes_dim=(4, 4),
        ).eval()
        vae = AutoencoderKLHunyuanImage(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32), layers_per_block=1,
            scaling_factor=0.476986, spatial_compression_ratio=2, sample_size=TINY_SIZE,
        ).eval()
        text_encoder = _qwen25_vl(tokenizer, 32)
        text_encoder_2 = T5EncoderModel(
            T5Config(d_model=32, d_kv=4, d_ff=16, num_layers=1, num_heads=2, relative_attention_num_buckets=8,
                     relative_attention_max_distance=32, vocab_size=256, feed_forward_proj="gated-gelu",
                     dense_act_fn="gelu_new", is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False)
        ).eval()
    pipe = HunyuanImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=ByT5Tokenizer(), transformer=transformer,
        guider=AdaptiveProjectedMixGuidance(adaptive_projected_guidance_start_step=2),
        ocr_guider=AdaptiveProjectedMixGuidance(adaptive_projected_guidance_start_step=3),
    )
    pipe.tokenizer_max_length = 32  # the Qwen prompt is padded to this length (1000 in the real pipeline)
    pipe.tokenizer_2_max_length = 16
    _fit_template_prefix(pipe)
    return finish_pipeline(pipe, "cpu", None)


def tiny_flux2_klein_pipeline(seed: int = 0) -> Any:
    """FLUX.2 [klein]: Qwen3 (stacked hidden layers), packed latents with position ids, batch-norm VAE statistics,
    separate negative call under CFG."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline
    from transformers import Qwen3ForCausalLM

    tokenizer = tiny_chat_tokenizer()
    with seeded(seed):
        transformer, vae = _flux2_parts(32, guidance_embeds=False)  # 2 stacked layers x 16
        text_encoder = Qwen3ForCausalLM(_qwen3_config(tokenizer)).eval()
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        transformer=transformer,
    )
    return finish_pipeline(pipe, "cpu", None)


def tiny_flux2_pipeline(seed: int = 0) -> Any:
    """FLUX.2 [dev]: Mistral-3 text encoder (stacked hidden layers), guidance-distilled (no CFG), packed latents
    with position ids and batch-norm VAE statistics."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    tokenizer = tiny_chat_tokenizer()
    vocab = len(tokenizer) + 1  # + the image token
    with seeded(seed):
        transformer, vae = _flux2_parts(16, guidance_embeds=True)
        config = Mistral3Config(
            text_config={
                "model_type": "mistral", "vocab_size": vocab, "hidden_size": 16, "intermediate_size": 16,
                "max_position_embeddings": 512, "num_attention_heads": 2, "num_hidden_layers": 1,
                "num_key_value_heads": 2, "head_dim": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
                "sliding_window": None, "pad_token_id": tokenizer.pad_token_id,
            },
            vision_config={"model_type": "pixtral", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "intermediate_size": 16, "image_size": 30, "patch_size": 6, "num_channels": 3},
            pad_token_id=tokenizer.pad_token_id, image_seq_length=4, vision_feature_layer=-1, image_token_index=vocab - 1,
        )
        text_encoder = Mistral3ForConditionalGeneration(config).eval()
    pipe = Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        transformer=transformer,
    )
    return finish_pipeline(pipe, "cpu", None)


def tiny_hidream_image_pipeline(seed: int = 0) -> Any:
    """HiDream-I1: two CLIP (pooled), T5 and Llama (every hidden layer, stacked on axis 0: the batch is axis 1)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        HiDreamImagePipeline,
        HiDreamImageTransformer2DModel,
    )
    from transformers import CLIPTextModelWithProjection, LlamaConfig, LlamaForCausalLM

    # the CLIP towers are Long-CLIP's (248 positions): HiDream pads their prompts to its max_sequence_length (128)
    tokenizer, tokenizer_2, tokenizer_3 = tiny_clip_tokenizer(248), tiny_clip_tokenizer(248), tiny_t5_tokenizer()
    tokenizer_4 = tiny_word_tokenizer()
    with seeded(seed):
        transformer = HiDreamImageTransformer2DModel(
            patch_size=2, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
            num_attention_heads=2, caption_channels=[32, 16], text_emb_dim=32, num_routed_experts=2,
            num_activated_experts=1, axes_dims_rope=(4, 2, 2), max_resolution=(32, 32), llama_layers=(0, 1),
        ).eval()
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], block_out_channels=[8, 8], layers_per_block=1,
            latent_channels=4, norm_num_groups=4, sample_size=TINY_SIZE, scaling_factor=0.3611, shift_factor=0.1159,
        ).eval()
        text_encoder = CLIPTextModelWithProjection(clip_text_config(tokenizer, 16, 16)).eval()
        text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer_2, 16, 16)).eval()
        text_encoder_3 = t5_encoder(tokenizer_3, 32)
        text_encoder_4 = LlamaForCausalLM(
            LlamaConfig(hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=2, head_dim=8, vocab_size=len(tokenizer_4),
                        pad_token_id=tokenizer_4.eos_token_id, attn_implementation="eager")
        ).eval()  # eager: the pipeline asks for the attention maps
    pipe = HiDreamImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
        text_encoder_4=text_encoder_4, tokenizer_4=tokenizer_4, transformer=transformer,
    )
    pipe.default_sample_size = TINY_SIZE // pipe.vae_scale_factor  # the call rescales (height, width) to this area
    return finish_pipeline(pipe, "cpu", None)


MORE_GENERIC_PIPELINES: dict[str, Callable[..., Any]] = {
    "qwen_image": tiny_qwen_image_pipeline,
    "z_image": tiny_z_image_pipeline,
    "hunyuan_image": tiny_hunyuan_image_pipeline,
    "flux2_klein": tiny_flux2_klein_pipeline,
    "flux2": tiny_flux2_pipeline,
    "hidream_image": tiny_hidream_image_pipeline,
}
# no negative_prompt in __call__: FLUX.2 [dev] is guidance-distilled, FLUX.2 [klein] guides against "" only
MORE_NO_NEGATIVE = {"flux2", "flux2_klein"}
TRUE_CFG = {"qwen_image", "hunyuan_image"}  # the negative is its own encode_prompt call: start with negative_prompt


# The one option the tiny pipelines are called with besides their size, and why: everything else (sequence lengths,
# guidance and true-CFG scales) stays at the pipeline's own default, as a user calls it.
MORE_TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    # FLUX.2 stacks hidden layers (10, 20, 30) / [klein] (9, 18, 27) of its text encoder; the tiny ones have 2 / 3
    "flux2": {"text_encoder_out_layers": (1,)},
    "flux2_klein": {"text_encoder_out_layers": (1, 2)},
}


def more_generic_call_kwargs(name: str) -> dict[str, Any]:
    """Keyword arguments a call of the tiny pipeline `name` needs: the tiny size and `MORE_TINY_OVERRIDES`."""
    return {"height": TINY_SIZE, "width": TINY_SIZE, **MORE_TINY_OVERRIDES.get(name, {})}
