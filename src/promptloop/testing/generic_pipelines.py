"""Tiny, random, offline pipelines of the classes that take PromptLoop's generic route (for tests).

Sizes follow diffusers' own tests (`get_dummy_components`); tokenizers are built in memory (the
diffusers tests load theirs from the Hub): T5 pipelines use `tiny_t5_tokenizer`, the Gemma / GLM ones a
WordLevel `tokenizers` model wrapped in `PreTrainedTokenizerFast`. Every builder is seeded.

    pipe = GENERIC_PIPELINES["sana"]()
    pipe("a red circle", **generic_call_kwargs("sana"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from promptloop.testing._common import TINY_SIZE, WORDS, finish_pipeline, seeded, t5_encoder, tiny_vae
from promptloop.testing.pipelines import (
    make_scheduler,
    tiny_flux_pipeline,
    tiny_sd3_pipeline,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
    tiny_t5_tokenizer,
)


def tiny_word_tokenizer(model_max_length: int = 64, padding_side: str = "right", add_bos: bool = False) -> Any:
    """A WordLevel tokenizer over a small vocabulary (plus single characters), as a PreTrainedTokenizerFast.

    `add_bos`: prepend `<bos>` to every sequence (as GLM's tokenizer prepends its prefix tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(dict.fromkeys(WORDS + list("abcdefghijklmnopqrstuvwxyz.,:"))))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        padding_side=padding_side,
    )


def _gemma2(tokenizer: Any, hidden: int, **extra: Any) -> Any:
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(
        head_dim=4, hidden_size=hidden, intermediate_size=16, num_attention_heads=2, num_hidden_layers=1,
        num_key_value_heads=2, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **extra,
    )
    return Gemma2Model(config).eval()


def _image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8))


# ----------------------------------------------------------------------------------------------------------------------
# SD / SDXL / SD3 / FLUX variants (img2img, ControlNet): the table's components, another class
# ----------------------------------------------------------------------------------------------------------------------
def tiny_sd_img2img_pipeline(seed: int = 0) -> Any:
    from diffusers import StableDiffusionImg2ImgPipeline

    return finish_pipeline(StableDiffusionImg2ImgPipeline(**tiny_sd_pipeline(seed).components), "cpu", None)


def tiny_sdxl_img2img_pipeline(seed: int = 0) -> Any:
    from diffusers import StableDiffusionXLImg2ImgPipeline

    components = tiny_sdxl_pipeline(seed).components
    return finish_pipeline(StableDiffusionXLImg2ImgPipeline(**components, requires_aesthetics_score=False), "cpu", None)


def tiny_sd_controlnet_pipeline(seed: int = 0) -> Any:
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    components = tiny_sd_pipeline(seed).components
    with seeded(seed + 1):
        controlnet = ControlNetModel.from_unet(components["unet"], conditioning_embedding_out_channels=(8, 8)).eval()
    return finish_pipeline(StableDiffusionControlNetPipeline(**components, controlnet=controlnet), "cpu", None)


def tiny_sd3_img2img_pipeline(seed: int = 0) -> Any:
    from diffusers import StableDiffusion3Img2ImgPipeline

    return finish_pipeline(StableDiffusion3Img2ImgPipeline(**tiny_sd3_pipeline(seed).components), "cpu", None)


def tiny_flux_img2img_pipeline(seed: int = 0) -> Any:
    from diffusers import FluxImg2ImgPipeline

    return finish_pipeline(FluxImg2ImgPipeline(**tiny_flux_pipeline(seed).components), "cpu", None)


# ----------------------------------------------------------------------------------------------------------------------
# other families
# ----------------------------------------------------------------------------------------------------------------------
def tiny_pixart_sigma_pipeline(seed: int = 0, sample_size: int = TINY_SIZE // 2) -> Any:
    """PixArt-Sigma: T5, PixArt transformer; its __call__ has only the legacy `callback`. `sample_size` 32 puts the
    transformer in the 256 px resolution bins (the default `use_resolution_binning` needs one of 32 / 64 / 128 / 256)."""
    from diffusers import PixArtSigmaPipeline, PixArtTransformer2DModel

    tokenizer = tiny_t5_tokenizer()
    with seeded(seed):
        transformer = PixArtTransformer2DModel(
            sample_size=sample_size, num_layers=1, patch_size=2, attention_head_dim=8, num_attention_heads=2,
            caption_channels=32, in_channels=4, cross_attention_dim=16, out_channels=8, attention_bias=True,
            activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6,
        ).eval()
        vae = tiny_vae(4)
        text_encoder = t5_encoder(tokenizer, 32)
    pipe = PixArtSigmaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=make_scheduler("ddim")
    )
    return finish_pipeline(pipe, "cpu", None)


def _dc_ae(levels: int = 2) -> Any:
    """A DC-AE with `levels` levels: spatial compression 2 ** (levels - 1) (the real ones compress 32x)."""
    from diffusers import AutoencoderDC

    deep = levels - 1
    return AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2,
        encoder_block_types=("ResBlock",) + ("EfficientViTBlock",) * deep,
        decoder_block_types=("ResBlock",) + ("EfficientViTBlock",) * deep,
        encoder_block_out_channels=(8,) * levels, decoder_block_out_channels=(8,) * levels,
        encoder_qkv_multiscales=((),) + ((5,),) * deep, decoder_qkv_multiscales=((),) + ((5,),) * deep,
        encoder_layers_per_block=(1,) * levels, decoder_layers_per_block=[1] * levels, downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
        scaling_factor=0.41407,
    ).eval()


def _sana_transformer(**extra: Any) -> Any:
    from diffusers import SanaTransformer2DModel

    return SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
        **{"sample_size": TINY_SIZE // 2, **extra},
    ).eval()


def tiny_sana_pipeline(seed: int = 0, vae_levels: int = 2) -> Any:
    """Sana: Gemma2 text encoder (attention mask), DC-AE autoencoder, flow matching. `vae_levels` 4 compresses 8x:
    cheap latents at the 512 px of the default resolution binning."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaPipeline

    tokenizer = tiny_word_tokenizer()
    with seeded(seed):
        transformer = _sana_transformer()
        vae = _dc_ae(vae_levels)
        text_encoder = _gemma2(tokenizer, 8)
    pipe = SanaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )
    return finish_pipeline(pipe, "cpu", None)


def tiny_sana_sprint_pipeline(seed: int = 0, sample_size: int = TINY_SIZE // 2, vae_levels: int = 2) -> Any:
    """Sana-Sprint: guidance-distilled (no CFG), SCM consistency scheduler. `sample_size` 32 puts the transformer in
    the 1024 px resolution bins (the default `use_resolution_binning` needs 32); `vae_levels` as for Sana."""
    from diffusers import SanaSprintPipeline, SCMScheduler

    tokenizer = tiny_word_tokenizer()
    with seeded(seed):
        transformer = _sana_transformer(guidance_embeds=True, qk_norm="rms_norm_across_heads", sample_size=sample_size)
        vae = _dc_ae(vae_levels)
        text_encoder = _gemma2(tokenizer, 8)
    pipe = SanaSprintPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=SCMScheduler()
    )
    return finish_pipeline(pipe, "cpu", None)


def tiny_lumina2_pipeline(seed: int = 0) -> Any:
    """Lumina-Image 2.0: Gemma2 (mask), separate conditional / unconditional transformer calls."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, Lumina2Pipeline, Lumina2Transformer2DModel

    tokenizer = tiny_word_tokenizer()
    with seeded(seed):
        transformer = Lumina2Transformer2DModel(
            sample_size=TINY_SIZE // 2, patch_size=2, in_channels=4, hidden_size=8, num_layers=1,
            num_attention_heads=1, num_kv_heads=1, multiple_of=16, ffn_dim_multiplier=None, norm_eps=1e-5,
            scaling_factor=1.0, axes_dim_rope=[4, 2, 2], cap_feat_dim=8,
        ).eval()
        vae = AutoencoderKL(
            sample_size=TINY_SIZE, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
            latent_channels=4, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
            shift_factor=0.0609, scaling_factor=1.5035,
        ).eval()
        text_encoder = _gemma2(tokenizer, 8, sliding_window=2)
    pipe = Lumina2Pipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder,
        tokenizer=tokenizer,
    )
    return finish_pipeline(pipe, "cpu", None)


def tiny_cogview4_pipeline(seed: int = 0) -> Any:
    """CogView4: GLM text encoder with variable (multiple-of-16, left-padded) length, no mask."""
    from diffusers import CogView4Pipeline, CogView4Transformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import GlmConfig, GlmModel

    tokenizer = tiny_word_tokenizer(padding_side="left", add_bos=True)
    with seeded(seed):
        transformer = CogView4Transformer2DModel(
            patch_size=2, in_channels=4, num_layers=1, attention_head_dim=4, num_attention_heads=4, out_channels=4,
            text_embed_dim=32, time_embed_dim=8, condition_dim=4,
        ).eval()
        vae = tiny_vae(4)
        text_encoder = GlmModel(
            GlmConfig(hidden_size=32, intermediate_size=8, num_hidden_layers=2, num_attention_heads=4, head_dim=8,
                      vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
        ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_shift=0.25, max_shift=0.75, base_image_seq_len=256, use_dynamic_shifting=True, time_shift_type="linear"
    )
    pipe = CogView4Pipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    return finish_pipeline(pipe, "cpu", None)


def tiny_chroma_pipeline(seed: int = 0) -> Any:
    """Chroma: T5 (mask extended by the image tokens), packed latents, separate negative call."""
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    tokenizer = tiny_t5_tokenizer()
    with seeded(seed):
        transformer = ChromaTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=[4, 4, 8], approximator_hidden_dim=32,
            approximator_layers=1, approximator_num_channels=16,
        ).eval()
        vae = tiny_vae(4, flow=True)
        text_encoder = t5_encoder(tokenizer, 32)
    pipe = ChromaPipeline(
        scheduler=make_scheduler("flow"), text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
        vae=vae, image_encoder=None, feature_extractor=None,
    )
    return finish_pipeline(pipe, "cpu", None)


def tiny_aura_flow_pipeline(seed: int = 0) -> Any:
    """AuraFlow: UMT5 text encoder, MMDiT + single DiT layers, flow matching."""
    from diffusers import AuraFlowPipeline, AuraFlowTransformer2DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    with seeded(seed):
        transformer = AuraFlowTransformer2DModel(
            sample_size=TINY_SIZE // 2, patch_size=2, in_channels=4, num_mmdit_layers=1, num_single_dit_layers=1,
            attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
            out_channels=4, pos_embed_max_size=256,
        ).eval()
        vae = tiny_vae(4)
        text_encoder = UMT5EncoderModel(
            UMT5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_layers=1, num_heads=4,
                       relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
        ).eval()
    pipe = AuraFlowPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=make_scheduler("flow")
    )
    return finish_pipeline(pipe, "cpu", None)


GENERIC_PIPELINES: dict[str, Callable[..., Any]] = {
    "sd_img2img": tiny_sd_img2img_pipeline,
    "sdxl_img2img": tiny_sdxl_img2img_pipeline,
    "sd_controlnet": tiny_sd_controlnet_pipeline,
    "sd3_img2img": tiny_sd3_img2img_pipeline,
    "flux_img2img": tiny_flux_img2img_pipeline,
    "pixart_sigma": tiny_pixart_sigma_pipeline,
    "sana": tiny_sana_pipeline,
    "sana_sprint": tiny_sana_sprint_pipeline,
    "lumina2": tiny_lumina2_pipeline,
    "cogview4": tiny_cogview4_pipeline,
    "chroma": tiny_chroma_pipeline,
    "aura_flow": tiny_aura_flow_pipeline,
}
NO_CFG = {"sana_sprint"}  # guidance-distilled: no negative branch

# Options the tiny pipelines are called with where the pipeline's own default cannot run on the tiny components, or
# would multiply the work of every check, each with the reason. Every other option stays at the pipeline's default,
# as a user calls it (Sana's complex human instruction, PixArt's caption cleaning, Lumina 2's system prompt, the
# sequence lengths, guidance scales); `tests/test_loop_generic.py` runs these families with the overridden defaults
# too (`test_family_defaults_binning_and_sprint_schedule`).
TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "sd_img2img": {"strength": 1.0},
    "sdxl_img2img": {"strength": 1.0},
    "sd3_img2img": {"strength": 1.0},
    "flux_img2img": {"strength": 1.0},
    "pixart_sigma": {"use_resolution_binning": False},
    "sana": {"use_resolution_binning": False},
    "sana_sprint": {"use_resolution_binning": False, "intermediate_timesteps": None},
}
OVERRIDE_REASONS = {
    "strength": "the checks count the denoiser calls of every one of num_inference_steps; the default 0.8 skips the "
                "first fifth of them (tested by itself)",
    "use_resolution_binning": "binning moves the size to the nearest bin of the real model's resolution (256 to 1024 "
                              "px for the transformer's sample size) and resizes the image back: 64 to 1024 times "
                              "the tiny size's work in every check (tested on by itself)",
    "intermediate_timesteps": "Sana-Sprint's default intermediate timestep (1.3) is defined for exactly 2 steps; the "
                              "checks sample 4 (tested by itself with 2)",
}


def generic_call_kwargs(name: str, batch_size: int = 1) -> dict[str, Any]:
    """Keyword arguments a call of the tiny pipeline `name` with `batch_size` prompts needs: the tiny size, the input
    images (the image-to-image pipelines get one per prompt, as diffusers asks) and `TINY_OVERRIDES`; everything
    else is the pipeline's own default."""
    kwargs: dict[str, Any] = {"height": TINY_SIZE, "width": TINY_SIZE}
    if name in ("sd_img2img", "sdxl_img2img", "sd3_img2img", "flux_img2img"):
        kwargs["image"] = _image() if batch_size == 1 else [_image()] * batch_size
        if name in ("sd_img2img", "sdxl_img2img"):  # their size is the input image's
            kwargs.pop("height")
            kwargs.pop("width")
    if name == "sd_controlnet":
        kwargs["image"] = _image(1)
    kwargs.update(TINY_OVERRIDES.get(name, {}))
    return kwargs
