"""Decode denoiser-space latents (an x0 estimate) to preview images, for any diffusers pipeline.

The route, in order:
1. unpack packed/patchified latents with the pipeline's own helper (`_unpack_latents(latents, height,
   width, vae_scale_factor)`: FLUX, Chroma, Qwen-Image, ...); FLUX.2 packs by position ids and normalises
   the patchified latents with the VAE's batch-norm statistics: its own `_prepare_latent_ids`,
   `_unpack_latents_with_ids` and `_unpatchify_latents` unpack them, and the statistics are undone as
   its `__call__` undoes them (the result is already in the VAE's space);
2. with a tiny autoencoder (`preview_vae`, diffusers' `AutoencoderTiny`, the TAESD family): decode the
   denoiser-space latents directly (TAESD models take them unscaled, as a pipeline would with
   `vae = AutoencoderTiny`);
3. otherwise undo the VAE's normalisation (`latents_mean`/`latents_std` per channel, or
   `scaling_factor`/`shift_factor`) and decode with the pipeline's VAE (5-D video VAEs such as
   Qwen-Image's get a frame axis and return its first frame);
4. postprocess with the pipeline's image processor, the whole batch at once.
`preview_size` bounds the longer side: with `lowres=True` the latent is downsampled before decoding
(cheaper, approximate), otherwise the decoded images are resized.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, overload

import torch
from PIL import Image


def unpack_latents(pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Spatial latents from the denoiser's layout, with the pipeline's own unpacking helper where it has one."""
    if latents.ndim != 3:
        return latents
    unpack = getattr(pipe, "_unpack_latents", None)
    if unpack is None or list(inspect.signature(unpack).parameters)[:4] != [
        "latents",
        "height",
        "width",
        "vae_scale_factor",
    ]:
        raise TypeError(
            f"{type(pipe).__name__}: the denoiser's latents are packed {tuple(latents.shape)} and the pipeline has no "
            "_unpack_latents(latents, height, width, vae_scale_factor) to unpack them for a preview"
        )
    return unpack(latents, height, width, pipe.vae_scale_factor)


def _is_flux2_layout(pipe: Any) -> bool:
    return all(hasattr(pipe, name) for name in ("_unpack_latents_with_ids", "_prepare_latent_ids", "_unpatchify_latents"))


def unpack_flux2_latents(pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """FLUX.2: packed (B, H*W, C) latents of a text-to-image call -> VAE-space (B, C/4, 2H, 2W), as its __call__ does."""
    h = 2 * (int(height) // (pipe.vae_scale_factor * 2)) // 2
    w = 2 * (int(width) // (pipe.vae_scale_factor * 2)) // 2
    ids = pipe._prepare_latent_ids(latents.new_zeros(latents.shape[0], 1, h, w)).to(latents.device)
    unpack = pipe._unpack_latents_with_ids  # [klein] takes the grid size, [dev] reads it from the ids
    x = unpack(latents, ids, h, w) if "height" in inspect.signature(unpack).parameters else unpack(latents, ids)
    bn = pipe.vae.bn
    mean = bn.running_mean.view(1, -1, 1, 1).to(x.device, x.dtype)
    std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps).to(x.device, x.dtype)
    return pipe._unpatchify_latents(x * std + mean)


def _channel_view(values: Any, like: torch.Tensor) -> torch.Tensor:
    t = torch.tensor(values, device=like.device, dtype=torch.float32)
    return t.view(1, -1, *([1] * (like.ndim - 2)))


def _denormalize(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    config = vae.config
    scaling = config.get("scaling_factor") or 1.0
    mean, std = config.get("latents_mean"), config.get("latents_std")
    if mean is not None and std is not None:
        return latents * _channel_view(std, latents) / scaling + _channel_view(mean, latents)
    return latents / scaling + (config.get("shift_factor") or 0.0)


def _vae_decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    upcast = vae.dtype == torch.float16 and bool(vae.config.get("force_upcast", False))
    if upcast:
        vae.to(torch.float32)
    try:
        device = next(vae.parameters()).device
        video = "z_dim" in vae.config and latents.ndim == 4  # Qwen-Image / Wan style 3-D VAE
        x = latents.to(device=device, dtype=vae.dtype)
        image = vae.decode(x.unsqueeze(2) if video else x, return_dict=False)[0]
    finally:
        if upcast:
            vae.to(torch.float16)
    return image[:, :, 0] if image.ndim == 5 else image


def _resize(images: list[Image.Image], preview_size: int) -> list[Image.Image]:
    out = []
    for im in images:
        scale = preview_size / max(im.size)
        if scale < 1.0:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BICUBIC)
        out.append(im)
    return out


@torch.no_grad()
def decode_preview(
    pipe: Any,
    latents: torch.Tensor,
    height: int,
    width: int,
    *,
    preview_size: int | None = None,
    lowres: bool = False,
    preview_vae: Any = None,
) -> list[Image.Image]:
    """Decode a batch of denoiser-space latents to PIL images (see the module docstring)."""
    flux2 = latents.ndim == 3 and _is_flux2_layout(pipe)
    if flux2:
        latents = unpack_flux2_latents(pipe, latents.float(), height, width)
    else:
        latents = unpack_latents(pipe, latents, height, width).float()
    if latents.ndim == 5 and latents.shape[2] == 1:  # (B, C, 1, H, W): one frame
        latents = latents[:, :, 0]
    if preview_vae is None and not flux2:
        latents = _denormalize(pipe.vae, latents)
    if preview_size is not None and lowres:
        h, w = latents.shape[-2:]
        scale = min(1.0, preview_size / (pipe.vae_scale_factor * max(h, w)))
        if scale < 1.0:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            latents = torch.nn.functional.interpolate(latents, size=size, mode="bilinear", antialias=True)
    image = _vae_decode(preview_vae if preview_vae is not None else pipe.vae, latents)
    images = pipe.image_processor.postprocess(image.float(), output_type="pil")
    if preview_size is not None and not lowres:
        images = _resize(images, preview_size)
    return images


class LazyPreviews(Sequence[Image.Image]):
    """The previews of one refinement step, decoded (the whole batch at once) on first access only.

    A policy that never looks at its previews (a null or fixed policy, a text-only rewriter) costs no
    decode at all; one that does pays a single batched decode, shared with the trajectory records."""

    def __init__(self, decode: Callable[[], list[Image.Image]], size: int) -> None:
        self._decode = decode
        self._size = size
        self._images: list[Image.Image] | None = None

    @property
    def decoded(self) -> bool:
        return self._images is not None

    def images(self) -> list[Image.Image]:
        if self._images is None:
            self._images = self._decode()
            self._decode = None  # type: ignore[assignment]  # drop the latents it holds
        return self._images

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...
    @overload
    def __getitem__(self, index: slice) -> list[Image.Image]: ...
    def __getitem__(self, index: int | slice) -> Image.Image | list[Image.Image]:
        return self.images()[index]
