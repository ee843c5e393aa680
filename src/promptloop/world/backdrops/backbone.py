"""Backbone of the Backdrops world: the component sizes of backbone A (the pipeline itself is `world.backbone`'s).

The same architecture as the Shapes world's backbone A (32 px RGB <-> 8x8x8 latents, the UNet cross-attending to
the frozen MiniLM through the text binder), so that the v3 backbone is warm-started from the shipped v1 one:
`promptloop world train-backbone --world v3 --init-from assets/world/backbone ...` (its VAE is kept).
Backbone B (issue 31) is another denoiser on the same latents: `build_unet("b")`, trained with `--denoiser b`
(`world.denoisers`), its UNet fresh and its VAE kept from backbone A (`--vae-from`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_BACKBONE = Path(__file__).resolve().parents[4] / "assets" / "world" / "backdrops" / "backbone"
DEFAULT_POLICY = DEFAULT_BACKBONE.parent / "policy"  # its refinement policy (`promptloop world train-policy --world v3`)


def build_vae() -> Any:
    from promptloop.world.backbone import build_vae as build

    return build()


def build_unet(denoiser: str = "a") -> Any:
    """A fresh UNet of denoiser `denoiser` (`world.denoisers.DENOISERS`: "a", backbone A's; "b", backbone B's)."""
    from promptloop.world.backbone import build_unet as build

    return build(denoiser)
