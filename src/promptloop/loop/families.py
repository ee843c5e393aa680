"""The per-family table: what PromptLoop swaps in each diffusers pipeline and how it encodes a prompt.

| family | pipeline class              | swapped through `callback_on_step_end`          | swapped through a transformer hook |
|--------|-----------------------------|-------------------------------------------------|------------------------------------|
| sd     | StableDiffusionPipeline     | prompt_embeds                                   | -                                  |
| sdxl   | StableDiffusionXLPipeline   | prompt_embeds, add_text_embeds (pooled)         | -                                  |
| sd3    | StableDiffusion3Pipeline    | prompt_embeds, pooled_prompt_embeds             | -                                  |
| flux   | FluxPipeline                | prompt_embeds                                   | pooled_projections                 |

Inside the denoising loop, with classifier-free guidance, SD/SDXL/SD3 hold these tensors as
cat([negative, positive]) along the batch; without CFG (and always for FLUX, whose true-CFG negative is
a separate tensor) only the positive rows. A swap replaces the positive rows and keeps the negative
rows bit-identical. Each encoder calls the pipeline's own `encode_prompt` for the positive prompts only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Encoder = Callable[[Any, list[str], torch.device, dict[str, Any]], dict[str, torch.Tensor]]


def _lora_scale(kwargs: dict[str, Any], key: str) -> float | None:
    attention_kwargs = kwargs.get(key) or {}
    return attention_kwargs.get("scale")


def _encode_sd(pipe: Any, prompts: list[str], device: torch.device, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    prompt_embeds, _ = pipe.encode_prompt(
        prompts,
        device,
        1,
        False,
        lora_scale=_lora_scale(kwargs, "cross_attention_kwargs"),
        clip_skip=kwargs.get("clip_skip"),
    )
    return {"prompt_embeds": prompt_embeds}


def _encode_sdxl(
    pipe: Any, prompts: list[str], device: torch.device, kwargs: dict[str, Any]
) -> dict[str, torch.Tensor]:
    prompt_embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=prompts,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=False,
        lora_scale=_lora_scale(kwargs, "cross_attention_kwargs"),
        clip_skip=kwargs.get("clip_skip"),
    )
    return {"prompt_embeds": prompt_embeds, "add_text_embeds": pooled}


def _encode_sd3(pipe: Any, prompts: list[str], device: torch.device, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    prompt_embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=prompts,
        prompt_2=None,
        prompt_3=None,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=False,
        clip_skip=kwargs.get("clip_skip"),
        max_sequence_length=kwargs.get("max_sequence_length", 256),
        lora_scale=_lora_scale(kwargs, "joint_attention_kwargs"),
    )
    return {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}


def _encode_flux(
    pipe: Any, prompts: list[str], device: torch.device, kwargs: dict[str, Any]
) -> dict[str, torch.Tensor]:
    prompt_embeds, pooled, _text_ids = pipe.encode_prompt(
        prompt=prompts,
        prompt_2=None,
        device=device,
        num_images_per_prompt=1,
        max_sequence_length=kwargs.get("max_sequence_length", 512),
        lora_scale=_lora_scale(kwargs, "joint_attention_kwargs"),
    )
    return {"prompt_embeds": prompt_embeds, "pooled_projections": pooled}


@dataclass(frozen=True)
class FamilySpec:
    """How PromptLoop drives one pipeline family."""

    name: str
    pipeline_class: str  # diffusers class name (subclasses match too)
    callback_tensors: tuple[str, ...]  # tensors replaced by returning them from callback_on_step_end
    hooked_tensors: tuple[str, ...]  # denoiser kwargs replaced by a forward pre-hook (not reachable by callback)
    denoiser: str  # attribute name of the denoising network
    packed_latents: bool  # FLUX packs 2x2 latent patches into tokens
    encode: Encoder  # positive prompts -> {tensor name: embedding}, names = callback_tensors + hooked_tensors


FAMILIES: dict[str, FamilySpec] = {
    "sd": FamilySpec("sd", "StableDiffusionPipeline", ("prompt_embeds",), (), "unet", False, _encode_sd),
    "sdxl": FamilySpec(
        "sdxl", "StableDiffusionXLPipeline", ("prompt_embeds", "add_text_embeds"), (), "unet", False, _encode_sdxl
    ),
    "sd3": FamilySpec(
        "sd3",
        "StableDiffusion3Pipeline",
        ("prompt_embeds", "pooled_prompt_embeds"),
        (),
        "transformer",
        False,
        _encode_sd3,
    ),
    "flux": FamilySpec(
        "flux", "FluxPipeline", ("prompt_embeds",), ("pooled_projections",), "transformer", True, _encode_flux
    ),
}


def table_family(pipe: Any) -> FamilySpec | None:
    """The table entry of a pipeline object, by its class (or a base class) name; None: the generic route."""
    names = [cls.__name__ for cls in type(pipe).__mro__]
    for spec in FAMILIES.values():
        if spec.pipeline_class in names:
            allowed = set(getattr(pipe, "_callback_tensor_inputs", []))
            missing = set(spec.callback_tensors) - allowed
            if missing:
                raise TypeError(f"{type(pipe).__name__} does not let the step callback replace {sorted(missing)}")
            return spec
    return None


def detect_family(pipe: Any) -> FamilySpec:
    """The FamilySpec of a table pipeline; TypeError for any other object (see `table_family`)."""
    spec = table_family(pipe)
    if spec is None:
        supported = ", ".join(spec.pipeline_class for spec in FAMILIES.values())
        raise TypeError(f"{type(pipe).__name__} is not in the family table ({supported}); it takes the generic route")
    return spec


def execution_device(pipe: Any) -> torch.device:
    """The device the pipeline runs its models on (respects CPU offload)."""
    device = getattr(pipe, "_execution_device", None)
    return torch.device(device) if device is not None else torch.device(pipe.device)


def default_size(pipe: Any) -> tuple[int, int]:
    """The (height, width) a pipeline samples at when none is given (as its own __call__ computes it)."""
    if getattr(pipe, "default_sample_size", None) is not None:
        size = pipe.default_sample_size * pipe.vae_scale_factor
        return size, size
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        sample_size = getattr(getattr(module, "config", None), "sample_size", None)
        if sample_size is not None:
            if isinstance(sample_size, int):
                sample_size = (sample_size, sample_size)
            return sample_size[0] * pipe.vae_scale_factor, sample_size[1] * pipe.vae_scale_factor
    raise TypeError(f"{type(pipe).__name__}: cannot tell its default image size; pass height= and width=")
