"""What the generic route reads of a diffusers pipeline: its own `encode_prompt` (`PromptEncoder`, called with the
options of the running pipeline call), its denoising modules (`denoisers`, the hook points) and its step callback
(`make_step_trigger`). `UnsupportedPipelineError` says in one line why a pipeline cannot be driven."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

DENOISER_NAMES = ("unet", "transformer", "transformer_2", "controlnet", "prior", "decoder")
_OWN = {
    "prompt",
    "negative_prompt",
    "device",
    "num_images_per_prompt",
    "do_classifier_free_guidance",
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
    "prompt_attention_mask",
    "negative_prompt_attention_mask",
    "lora_scale",
    "batch_size",
}
_LORA_KWARGS = ("attention_kwargs", "joint_attention_kwargs", "cross_attention_kwargs")

Encoded = list[Any]  # flattened outputs of encode_prompt: tensors, lists of tensors, or None


class UnsupportedPipelineError(TypeError):
    """A pipeline PromptLoop cannot drive; the message says why in one line."""


def denoisers(pipe: Any) -> list[tuple[str, torch.nn.Module]]:
    """The pipeline's denoising modules that receive the text conditioning (the hook points)."""
    found = []
    for name in DENOISER_NAMES:
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            found.append((name, module))
    return found


def _flatten(value: Any) -> Encoded:
    if isinstance(value, tuple):
        return [item for v in value for item in _flatten(v)]
    if isinstance(value, dict):
        return [item for v in value.values() for item in _flatten(v)]
    return [value]


class PromptEncoder:
    """Call `pipe.encode_prompt` for given (positive, negative) prompts, with the pipeline call's options."""

    def __init__(self, pipe: Any, call_kwargs: dict[str, Any], device: torch.device) -> None:
        encode = getattr(pipe, "encode_prompt", None)
        if not callable(encode):
            raise UnsupportedPipelineError(f"{type(pipe).__name__} has no encode_prompt method to encode new prompts")
        self.params = inspect.signature(encode).parameters
        if "prompt" not in self.params:
            raise UnsupportedPipelineError(
                f"{type(pipe).__name__}.encode_prompt takes no `prompt` argument; it cannot encode prompts alone"
            )
        self.pipe = pipe
        self.encode = encode
        self.takes_negative = "negative_prompt" in self.params
        self.guidance_scale = call_kwargs.get("guidance_scale")
        self.options: dict[str, Any] = {"device": device}
        if "num_images_per_prompt" in self.params:
            self.options["num_images_per_prompt"] = 1
        # options the call left at the pipeline's defaults: __call__'s default, which is not always encode_prompt's
        # (Sana's complex_human_instruction is on in __call__ and off in encode_prompt, PixArt's clean_caption
        # likewise, Qwen-Image's max_sequence_length is 512 in __call__ and 1024 in encode_prompt)
        for key, param in inspect.signature(pipe.__call__).parameters.items():
            if key in self.params and key not in _OWN and param.default is not inspect.Parameter.empty:
                self.options[key] = param.default
        for key, value in call_kwargs.items():
            if key in self.params and key not in _OWN:
                self.options[key] = value
        for key, param in self.params.items():  # required secondary prompts (SD3 img2img: prompt_2, prompt_3)
            if key.startswith("prompt_") and param.default is inspect.Parameter.empty and key not in self.options:
                self.options[key] = None
        if "lora_scale" in self.params:
            for key in _LORA_KWARGS:
                scale = (call_kwargs.get(key) or {}).get("scale")
                if scale is not None:
                    self.options["lora_scale"] = scale

    def cfg(self) -> bool:
        """Whether the running pipeline call uses classifier-free guidance: its own property, read mid-call, or
        (pipelines without one: PixArt, AuraFlow) `guidance_scale > 1` as their __call__ decides it."""
        if hasattr(type(self.pipe), "do_classifier_free_guidance"):
            return bool(self.pipe.do_classifier_free_guidance)
        scale = self.guidance_scale
        if scale is None:
            default = inspect.signature(self.pipe.__call__).parameters.get("guidance_scale")
            scale = None if default is None else default.default
        return isinstance(scale, (int, float)) and scale > 1.0

    @torch.no_grad()
    def __call__(self, prompts: list[str], negatives: list[str] | None) -> Encoded:
        kwargs = {**self.options, "prompt": list(prompts)}
        if "batch_size" in self.params:  # HunyuanImage: the batch size is an argument (default 1)
            kwargs["batch_size"] = len(prompts)
        cfg = self.cfg()
        if "do_classifier_free_guidance" in self.params:
            kwargs["do_classifier_free_guidance"] = cfg
        if self.takes_negative and cfg and negatives is not None:
            kwargs["negative_prompt"] = list(negatives)
        out = _flatten(self.encode(**kwargs))
        if not self.takes_negative and negatives is not None:  # true-CFG style: the negative is its own call
            out += _flatten(self.encode(**{**kwargs, "prompt": list(negatives)}))
        return out


def make_step_trigger(pipe: Any) -> Callable[[dict[str, Any], Callable[..., Any]], None]:
    """How the sampler gets called after every loop step: `callback_on_step_end`, or the legacy `callback`.

    Returns a function that installs `on_step(i, t, latents) -> dict` into the pipeline call kwargs."""
    params = inspect.signature(pipe.__call__).parameters
    name = type(pipe).__name__
    if "callback_on_step_end" in params:

        def install(call_kwargs: dict[str, Any], on_step: Callable[..., Any]) -> None:
            def callback(_pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
                return on_step(i, t, kwargs) or {}

            call_kwargs["callback_on_step_end"] = callback

        return install
    if "callback" in params and "callback_steps" in params:

        def install_legacy(call_kwargs: dict[str, Any], on_step: Callable[..., Any]) -> None:
            def callback(i: int, t: Any, latents: torch.Tensor) -> None:
                on_step(i, t, {"latents": latents})

            call_kwargs["callback"] = callback
            call_kwargs["callback_steps"] = 1

        return install_legacy
    raise UnsupportedPipelineError(
        f"{name}.__call__ takes neither callback_on_step_end nor callback: PromptLoop has no point to act after a step"
    )
