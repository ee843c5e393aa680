"""Tiny, random, offline diffusers pipelines for tests: SD 1.x, SDXL, SD3 and FLUX.

Every builder is seeded (the same seed gives bit-identical weights), downloads nothing and builds its
tokenizers in memory (a byte-level CLIP BPE and a small T5 unigram vocabulary). The pipelines run on
CPU in well under a second for a few steps at 32 px. They keep each family's real structure (CFG
concatenation, pooled embeddings, FLUX latent packing), so anything that works on them exercises the
same code paths as the full-size models.

    pipe = tiny_sdxl_pipeline(seed=0)
    image = pipe("a red circle", num_inference_steps=4, height=32, width=32).images[0]

Width/height must be multiples of 4 for FLUX (VAE factor 2, packing factor 2); 32 is the default used
in the tests. Every other call option stays at the pipeline's default (`tiny_call_kwargs`), as a user calls it:
SD3 and FLUX pad their T5 prompts to 256 / 512 tokens of the small T5 vocabulary.
"""

from __future__ import annotations

from typing import Any

import torch

from promptloop.testing._common import (
    TINY_SIZE,
    WORDS,
    bytes_to_unicode,
    clip_text_config,
    finish_pipeline,
    seeded,
    t5_encoder,
    tiny_vae,
)

TINY_CLIP_MAX_LENGTH = 16
TINY_MAX_SEQUENCE_LENGTH = 16


# ----------------------------------------------------------------------------------------------------------------------
# tokenizers
# ----------------------------------------------------------------------------------------------------------------------
def tiny_clip_tokenizer(model_max_length: int = TINY_CLIP_MAX_LENGTH) -> Any:
    """A byte-level CLIP BPE tokenizer with every byte (with and without `</w>`) plus a few merges.

    Any text tokenizes (unknown words fall back to characters); vocabulary size is 514 + merges.
    """
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in ("the", "red", "cat", "blue", "circle"):  # a few whole-word merges, built letter by letter
        left = word[0]
        for k, ch in enumerate(word[1:], start=1):
            right = ch + ("</w>" if k == len(word) - 1 else "")
            merged = left + right
            if (left, right) not in merges:
                merges.append((left, right))
            vocab.setdefault(merged, len(vocab))
            left = merged
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def tiny_t5_tokenizer(model_max_length: int = TINY_MAX_SEQUENCE_LENGTH) -> Any:
    """A T5 (unigram) tokenizer over a small word list plus single characters."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -2.0) for w in WORDS]
    pieces += [("▁", -3.0)]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.!?-'"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


# ----------------------------------------------------------------------------------------------------------------------
# schedulers
# ----------------------------------------------------------------------------------------------------------------------
def make_scheduler(name: str, **config: Any) -> Any:
    """A scheduler by short name: ddim, ddpm, euler, euler_a, dpm (DPMSolverMultistep), unipc, pndm, lcm,
    flow (FlowMatchEulerDiscrete). Extra keyword arguments go to its config (e.g. prediction_type)."""
    import diffusers

    classes = {
        "ddim": "DDIMScheduler",
        "ddpm": "DDPMScheduler",
        "euler": "EulerDiscreteScheduler",
        "euler_a": "EulerAncestralDiscreteScheduler",
        "dpm": "DPMSolverMultistepScheduler",
        "unipc": "UniPCMultistepScheduler",
        "pndm": "PNDMScheduler",
        "lcm": "LCMScheduler",
        "flow": "FlowMatchEulerDiscreteScheduler",
    }
    if name not in classes:
        raise ValueError(f"unknown scheduler {name!r}; choose from {sorted(classes)}")
    if name != "flow":
        config = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", **config}
        if name in ("ddim", "ddpm", "pndm", "lcm"):
            config = {"steps_offset": 1, **config}
        if name in ("ddim", "ddpm", "lcm"):
            config = {"clip_sample": False, **config}
        if name == "pndm":
            config.setdefault("skip_prk_steps", True)
    return getattr(diffusers, classes[name])(**config)


# ----------------------------------------------------------------------------------------------------------------------
# pipelines
# ----------------------------------------------------------------------------------------------------------------------
def tiny_sd_pipeline(
    seed: int = 0, scheduler: str = "ddim", device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Any:
    """A random StableDiffusionPipeline (SD 1.x structure): CLIP text encoder, UNet, VAE, DDIM by default."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    with seeded(seed):
        unet = UNet2DConditionModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            sample_size=TINY_SIZE // 2,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=4,
        ).eval()
        vae = tiny_vae(4)
        text_encoder = CLIPTextModel(clip_text_config(tokenizer)).eval()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=make_scheduler(scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return finish_pipeline(pipe, device, dtype)


def tiny_sdxl_pipeline(
    seed: int = 0, scheduler: str = "euler", device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Any:
    """A random StableDiffusionXLPipeline: two CLIP encoders (pooled from the second), text_time UNet."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_clip_tokenizer()
    with seeded(seed):
        unet = UNet2DConditionModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            sample_size=TINY_SIZE // 2,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x 8 + pooled (projection_dim 32)
            cross_attention_dim=64,  # 32 (encoder 1) + 32 (encoder 2)
            norm_num_groups=4,
        ).eval()
        vae = tiny_vae(4)
        text_encoder = CLIPTextModel(clip_text_config(tokenizer)).eval()
        text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer_2)).eval()
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=make_scheduler(scheduler),
        force_zeros_for_empty_prompt=True,
    )
    return finish_pipeline(pipe, device, dtype)


def tiny_sd3_pipeline(seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Any:
    """A random StableDiffusion3Pipeline: two CLIP encoders with projection, a tiny T5, MMDiT, flow matching."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer, tokenizer_2, tokenizer_3 = tiny_clip_tokenizer(), tiny_clip_tokenizer(), tiny_t5_tokenizer()
    with seeded(seed):
        transformer = SD3Transformer2DModel(
            sample_size=TINY_SIZE // 2,
            patch_size=1,
            in_channels=4,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=4,
            caption_projection_dim=32,
            joint_attention_dim=32,  # = T5 d_model = 16 + 16 (CLIP hidden sizes, padded)
            pooled_projection_dim=32,  # = 16 + 16 (CLIP projection dims)
            out_channels=4,
        ).eval()
        vae = tiny_vae(4, flow=True)
        text_encoder = CLIPTextModelWithProjection(clip_text_config(tokenizer, 16, 16)).eval()
        text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(tokenizer_2, 16, 16)).eval()
        text_encoder_3 = t5_encoder(tokenizer_3, 32)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=make_scheduler("flow"),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    return finish_pipeline(pipe, device, dtype)


def tiny_flux_pipeline(seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Any:
    """A random FluxPipeline: CLIP (pooled) + tiny T5, FLUX transformer, packed 4-channel latents."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    with seeded(seed):
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,  # 4 latent channels x 2 x 2 packing
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
        ).eval()
        vae = tiny_vae(4, flow=True)
        text_encoder = CLIPTextModel(clip_text_config(tokenizer)).eval()
        text_encoder_2 = t5_encoder(tokenizer_2, 32)
    pipe = FluxPipeline(
        scheduler=make_scheduler("flow"),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    return finish_pipeline(pipe, device, dtype)


TINY_PIPELINES = {
    "sd": tiny_sd_pipeline,
    "sdxl": tiny_sdxl_pipeline,
    "sd3": tiny_sd3_pipeline,
    "flux": tiny_flux_pipeline,
}


def tiny_call_kwargs(family: str) -> dict[str, Any]:
    """Keyword arguments every call of a tiny pipeline needs: its size (every other option is the pipeline's
    default; `family` is kept for callers that name it)."""
    return {"height": TINY_SIZE, "width": TINY_SIZE}
