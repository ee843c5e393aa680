"""Backbone B of the Patterns world: the component sizes (the pipeline itself is `world.backbone`'s).

A StableDiffusionPipeline like backbone A (frozen MiniLM + text binder, v-prediction cosine DDIM), at
64 px: an AutoencoderKL of factor 4 (64 px RGB <-> 16x16x8 latents, so the 8 px pattern period is two
latent pixels) and a three-level UNet (16x16 -> 8x8 -> 4x4) cross-attending to the text at 8x8 and 4x4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_BACKBONE = Path(__file__).resolve().parents[4] / "assets" / "world" / "patterns" / "backbone"


def build_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=8,
        norm_num_groups=16,
        sample_size=64,
    )


def build_unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16,
        in_channels=8,
        out_channels=8,
        block_out_channels=(48, 96, 160),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=384,
        attention_head_dim=8,
        norm_num_groups=16,
    )
