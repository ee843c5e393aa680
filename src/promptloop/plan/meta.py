"""Models built on the meta device from an `Arch`, and what their parameters weigh (plain or bitsandbytes-quantized).

Nothing here reads or allocates weights: `build_meta` constructs the model under `accelerate.init_empty_weights`,
the counters walk its modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from promptloop.plan.archs import Arch

DEFAULT_LORA_TARGETS = r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj)"  # VLMPolicy.enable_lora's default
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class PlanError(ValueError):
    """A recipe `plan` cannot size (an unknown model or reward); the message names it."""


def build_meta(arch: Arch) -> torch.nn.Module:
    """The model of `arch` with its parameters on the meta device (nothing allocated)."""
    model = _build_meta(arch)
    if hasattr(model, "tie_weights"):  # transformers ties nothing under init_empty_weights: tie afterwards
        model.tie_weights()
    return model


def _build_meta(arch: Arch) -> torch.nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        if arch.library == "diffusers":
            import diffusers

            return getattr(diffusers, arch.cls).from_config(dict(arch.config))
        if arch.library == "transformers":
            import transformers

            return getattr(transformers, arch.cls)._from_config(_transformers_config(arch.config))
        if arch.cls == "ImageRewardModel":
            from transformers import BlipVisionConfig

            from promptloop.rewards.adapters.image_reward import ImageRewardModel, text_config_from_med

            vision = BlipVisionConfig(**arch.config["vision"])
            return ImageRewardModel(vision, text_config_from_med(arch.config["med"], vision.hidden_size))
        if arch.cls == "HPSv3Model":
            from promptloop.rewards.adapters.hpsv3 import HPSv3Model

            return HPSv3Model(_transformers_config(arch.config["qwen2_vl"]), reward_token_id=0)
        if arch.cls == "AestheticModel":  # a CLIPModel + the aesthetic MLP on its projection
            from promptloop.rewards.adapters.aesthetic import AestheticHead

            clip = _build_meta(Arch(**arch.config["clip"]))
            return torch.nn.ModuleDict({"clip": clip, "head": AestheticHead(int(clip.config.projection_dim))})
        if arch.cls == "TextBinder":
            from promptloop.world.text_binder import TextBinder

            return TextBinder.from_config(dict(arch.config))
    raise PlanError(f"cannot build {arch.library} class {arch.cls!r}")


def _transformers_config(data: dict[str, Any]) -> Any:
    """The transformers config of a config.json-style dict (its `model_type` picks the class)."""
    from transformers import AutoConfig

    cfg = dict(data)
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def count_params(model: torch.nn.Module) -> int:
    """Parameters of `model` (a tied weight counts once)."""
    return sum(p.numel() for p in model.parameters())


def lora_params(model: torch.nn.Module, r: int, target_modules: str | None = None) -> int:
    """Parameters of a rank-`r` LoRA on the Linear modules whose full name matches `target_modules` (a regex,
    matched whole as peft does; default the LM's attention projections): r * (in + out) each."""
    pattern = re.compile(target_modules or DEFAULT_LORA_TARGETS)
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and pattern.fullmatch(name))


def largest_layer_params(model: torch.nn.Module) -> int:
    """Parameters of the largest module of a class the model will not split (its decoder / vision blocks:
    `_no_split_modules`, the unit an FSDP transformer-layer wrap gathers at once)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    sizes = [count_params(m) for m in model.modules() if type(m).__name__ in names]
    return max(sizes, default=0)


@dataclass(frozen=True)
class QuantizedSplit:
    """A model loaded with bitsandbytes: the weights of its quantized linear layers, and the rest."""

    quantized_params: int  # weight elements of the quantized linear layers
    quantized_bytes: int  # what bitsandbytes keeps for them (weights + scales)
    layers: int  # how many linear layers are quantized
    rest_params: int  # every other parameter (biases, norms, embeddings, kept layers), in the compute dtype


def quantized_split(model: torch.nn.Module, quantization: str, *, how: str, skip: tuple[str, ...] = ()
                    ) -> QuantizedSplit:
    """Which parameters of `model` bitsandbytes would quantize under `quantization` ("8bit" / "4bit") and their
    bytes. `how`: "from_pretrained" (transformers' loader with a `BitsAndBytesConfig`: policies, CLIP rewards) or
    "converted" (`quantize_linears` after a state-dict load, keeping the module prefixes `skip`)."""
    from promptloop.rewards.adapters.quantization import (
        converted_linear_names,
        from_pretrained_linear_names,
        quantized_linear_bytes,
    )

    if how == "converted":
        names = converted_linear_names(model, skip)
    else:
        names = [n for m_name, m in _transformers_models(model)
                 for n in (f"{m_name}.{x}" if m_name else x for x in from_pretrained_linear_names(m))]
    n_params = n_bytes = 0
    for name in names:
        linear = model.get_submodule(name)
        n_params += linear.in_features * linear.out_features
        n_bytes += quantized_linear_bytes(linear.in_features, linear.out_features, quantization)
    return QuantizedSplit(n_params, n_bytes, len(names), count_params(model) - n_params)


def _transformers_models(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The outermost transformers models in `model` (itself, or those of a container such as AestheticModel)."""
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return [("", model)]
    out: list[tuple[str, torch.nn.Module]] = []
    for name, child in model.named_children():
        out.extend((f"{name}.{n}" if n else name, m) for n, m in _transformers_models(child))
    return out


__all__ = ["DEFAULT_LORA_TARGETS", "DTYPE_BYTES", "PlanError", "QuantizedSplit", "build_meta", "count_params",
           "largest_layer_params", "lora_params", "quantized_split"]
