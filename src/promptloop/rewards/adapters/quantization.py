"""Optional 4/8-bit loading of the frozen reward models with bitsandbytes (option ``quantization``).

``quantization=None`` (the default) loads a reward in its `dtype`; ``"8bit"`` stores the weights of every
linear layer in int8 (LLM.int8(), outlier threshold 6.0, bitsandbytes' `Linear8bitLt`), ``"4bit"`` in NF4
(`Linear4bit`, computing in the reward's dtype); embeddings, norms and the small reward heads stay as they
are. Models loaded with ``from_pretrained`` get a transformers `BitsAndBytesConfig` (`bnb_config`); models
built from a converted state dict (ImageReward, HPSv2, HPSv3) are quantized after loading by
`quantize_linears`, which gives each linear layer the module and weights from_pretrained would give it.

bitsandbytes is optional (``pip install bitsandbytes``, or the ``quant`` extra): without it a quantized
reward fails at load (the pre-flight check) with one line, ``quantization='8bit' needs bitsandbytes
(pip install bitsandbytes)``. On CPU, bitsandbytes 0.50 runs both; its 4-bit CPU kernel needs linear
layers whose output width is a multiple of 32 and input width a multiple of 64 (true of the real models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

QUANTIZATIONS = ("8bit", "4bit")
INT8_THRESHOLD = 6.0  # LLM.int8() outlier threshold, transformers' default `llm_int8_threshold`
QUANT_TYPE_4BIT = "nf4"  # 4-bit data type (NF4, as QLoRA)
BLOCKSIZE_4BIT = 64  # bitsandbytes' Params4bit block size (one absmax per block)


class QuantizationUnavailableError(ImportError):
    """A quantized reward was asked for but bitsandbytes is not importable."""


def check_quantization(quantization: str | None) -> str | None:
    """`quantization` validated: None, "8bit" or "4bit"."""
    if quantization is None or quantization in QUANTIZATIONS:
        return quantization
    raise ValueError(f"quantization must be None, '8bit' or '4bit', got {quantization!r}")


def require_bitsandbytes(quantization: str | None) -> None:
    """Raise `QuantizationUnavailableError` (one line) when `quantization` is set and bitsandbytes is absent."""
    if quantization is None:
        return
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise QuantizationUnavailableError(
            f"quantization={quantization!r} needs bitsandbytes (pip install bitsandbytes)", name="bitsandbytes"
        ) from e


def bnb_config(quantization: str, compute_dtype: torch.dtype) -> Any:
    """transformers' `BitsAndBytesConfig` for "8bit" / "4bit" (the settings `quantize_linears` applies)."""
    from transformers import BitsAndBytesConfig

    if check_quantization(quantization) == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=INT8_THRESHOLD)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=QUANT_TYPE_4BIT,
                              bnb_4bit_compute_dtype=compute_dtype)


def _quantized_linear(linear: nn.Linear, quantization: str, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
    import bitsandbytes as bnb

    weight = linear.weight.detach().to("cpu", compute_dtype)  # bitsandbytes quantizes on the move off the CPU
    bias = linear.bias
    if quantization == "8bit":
        new: nn.Module = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias is not None,
                                             has_fp16_weights=False, threshold=INT8_THRESHOLD, device="meta")
        new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False).to(device)
    else:
        new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias is not None,
                                compute_dtype=compute_dtype, compress_statistics=False, quant_type=QUANT_TYPE_4BIT,
                                device="meta")
        new.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=False,
                                          quant_type=QUANT_TYPE_4BIT, module=new).to(device)
    if bias is not None:
        new.bias = nn.Parameter(bias.detach().to(device, compute_dtype), requires_grad=False)
    return new


def _kept_by_transformers(model: nn.Module) -> list[str]:
    """Module names that from_pretrained leaves unquantized in each transformers model inside `model`
    (its output embeddings, tied weights and last module: e.g. CLIPModel's ``text_projection``)."""
    from transformers import PreTrainedModel
    from transformers.quantizers.base import get_keys_to_not_convert

    return [f"{name}.{key}" if name else key for name, mod in model.named_modules()
            if isinstance(mod, PreTrainedModel) for key in get_keys_to_not_convert(mod)]


def converted_linear_names(model: nn.Module, skip: Sequence[str] = ()) -> list[str]:
    """Names of the linear layers `quantize_linears(model, ..., skip=skip)` replaces (no bitsandbytes needed: also
    what `promptloop plan` counts as quantized)."""
    keep = [*skip, *_kept_by_transformers(model)]
    return [name for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and not any(name == k or name.startswith(k + ".") for k in keep)]


def from_pretrained_linear_names(model: nn.Module) -> list[str]:
    """Names of the linear layers transformers' ``from_pretrained(quantization_config=bnb_config(...))`` replaces in
    the transformers model `model`: its bitsandbytes quantizer's rule (keep `get_keys_to_not_convert` and the
    model's `_keep_in_fp32_modules`, matched by `should_convert_module`; convert each plain `nn.Linear`), applied
    without bitsandbytes (what `promptloop plan` counts as quantized)."""
    from transformers.quantizers.base import get_keys_to_not_convert
    from transformers.quantizers.quantizers_utils import should_convert_module

    keep = list({*get_keys_to_not_convert(model), *(getattr(model, "_keep_in_fp32_modules", None) or ())})
    return [name for name, mod in model.named_modules() if type(mod) is nn.Linear and should_convert_module(name, keep)]


def quantized_linear_bytes(in_features: int, out_features: int, quantization: str) -> int:
    """Bytes bitsandbytes keeps for the weight of one quantized linear layer (its bias stays in the compute dtype):
    "8bit": the int8 weight + a float32 scale per output row (`SCB`); "4bit": the packed NF4 weight (two per byte)
    + a float32 absmax per block of 64 + the 16-entry float32 code (no double quantization, as `bnb_config`)."""
    n = int(in_features) * int(out_features)
    if check_quantization(quantization) == "8bit":
        return n + 4 * int(out_features)
    return -(-n // 2) + 4 * -(-n // BLOCKSIZE_4BIT) + 4 * 16


def quantize_linears(
    model: nn.Module, quantization: str, *, device: torch.device, compute_dtype: torch.dtype,
    skip: Sequence[str] = (),
) -> nn.Module:
    """Replace every `nn.Linear` of `model` by bitsandbytes' 8-bit / 4-bit linear holding its weights, quantized
    on `device`, except under the module-name prefixes `skip` and where from_pretrained would keep one; then
    move the rest to `device`.

    The rest of the model should already be in `compute_dtype`. Returns `model` (changed in place), frozen.
    """
    check_quantization(quantization)
    require_bitsandbytes(quantization)
    targets = [(name, model.get_submodule(name)) for name in converted_linear_names(model, skip)]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _quantized_linear(linear, quantization, device, compute_dtype))
    return model.to(device).eval().requires_grad_(False)


__all__ = [
    "QUANTIZATIONS",
    "QuantizationUnavailableError",
    "bnb_config",
    "check_quantization",
    "converted_linear_names",
    "from_pretrained_linear_names",
    "quantize_linears",
    "quantized_linear_bytes",
    "require_bitsandbytes",
]
