"""Shared machinery of the model-based reward adapters: lazy building, options, image conversion.

`ModelReward` is the base of every adapter. It stores the common options (`model_name_or_path`,
`device`, `dtype`, `batch_size`, `local_files_only`, `normalize`, `trust_remote_code`, `quantization`),
builds the model on first use (`load()`, idempotent; a quantized reward first checks that bitsandbytes
imports, see `promptloop.rewards.adapters.quantization`), converts any accepted image input to a list of uint8 RGB
arrays, scores in chunks of `batch_size`, and returns a `RewardOutput` whose `scores` are the raw
model scores, or, with ``normalize=(lo, hi)``, ``clamp((raw - lo) / (hi - lo), 0, 1)``; the raw
scores are always kept in ``breakdown["raw"]``. Scores are float32 tensors on the input tensor's
device (CPU for numpy / PIL input).

Nothing here imports transformers or any optional package; subclasses do so inside `_build`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from promptloop.rewards.adapters.quantization import check_quantization, quantize_linears, require_bitsandbytes
from promptloop.rewards.registry import RewardOutput
from promptloop.world.imaging import AnalyzerInputError, to_image_batch

_TRUE = {"1", "true", "yes", "on"}


class MissingExtraError(ImportError):
    """An optional package a reward needs is not installed; the message names the pip extra."""

    def __init__(self, reward: str, package: str, extra: str) -> None:
        super().__init__(
            f"the {reward!r} reward needs the optional package {package!r}, which is not installed; "
            f"install it with: pip install 'promptloop[{extra}]'",
            name=package,
        )
        self.extra = extra


def hf_offline_default() -> bool:
    """True when the HF_HUB_OFFLINE environment variable is set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device; None picks CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """`dtype` as a floating torch.dtype ("float32", "fp16", "bfloat16", a torch.dtype); None -> float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "float": "float32"}
        name = aliases.get(str(dtype).lower(), str(dtype).lower()).removeprefix("torch.")
        out = getattr(torch, name, None)
        if not isinstance(out, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
    if not out.is_floating_point:
        raise ValueError(f"dtype must be a floating point dtype, got {out}")
    return out


def check_normalize(normalize: tuple[float, float] | Sequence[float] | None) -> tuple[float, float] | None:
    """Validate an affine normalisation range (lo, hi) with finite lo < hi."""
    if normalize is None:
        return None
    try:
        lo, hi = (float(v) for v in normalize)
    except (TypeError, ValueError) as e:
        raise ValueError(f"normalize must be a pair (lo, hi) of numbers, got {normalize!r}") from e
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"normalize needs finite lo < hi, got {normalize!r}")
    return lo, hi


def _quantise(batch: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) float in [0, 1] -> uint8, ``round(255 * x)`` (exact for uint8-derived input)."""
    return np.round(batch * 255.0).astype(np.uint8)


def to_uint8_images(images: Any) -> list[np.ndarray]:
    """Any accepted image input as a list of uint8 (H, W, 3) RGB arrays (sizes may differ in a list).

    Accepted, validated by `promptloop.world.imaging.to_image_batch` (same errors, `AnalyzerInputError`,
    as the world rewards): torch (N, 3, H, W) or (3, H, W), float in [0, 1] or uint8; numpy
    (N, H, W, 3) or (H, W, 3), float in [0, 1] or uint8; a PIL image; a list/tuple of single images,
    which here may differ in size. Float images are quantised as ``round(255 * x)``, like a pipeline's
    PIL output.
    """
    if isinstance(images, list | tuple):
        out: list[np.ndarray] = []
        for i, im in enumerate(images):
            try:
                batch = to_image_batch(im)
            except AnalyzerInputError as e:
                raise AnalyzerInputError(f"image {i} of the list: {e}") from e
            if batch.shape[0] != 1:
                raise AnalyzerInputError(f"image {i} of the list is a batch of {batch.shape[0]}; list single images")
            out.append(_quantise(batch)[0])
        return out
    return list(_quantise(to_image_batch(images)))


def check_queries(queries: Any, n_images: int) -> list[str]:
    """One query string per image, as a list."""
    if isinstance(queries, str):
        raise ValueError("queries must be a list of strings (one per image), got a single string")
    qs = list(queries)
    if len(qs) != n_images or not all(isinstance(q, str) for q in qs):
        raise ValueError(f"need one query string per image: got {n_images} images and {len(qs)} queries")
    return qs


class ModelReward:
    """Base of the model-based rewards: lazy build on first use, batching, optional normalisation.

    Subclasses set `name` and implement `_build()` (load the model; may raise `MissingExtraError`) and
    `_score_chunk(images, queries) -> (n,) float tensor` on at most `batch_size` uint8 images.
    """

    name = "model"
    default_model: str = ""

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 16,
        local_files_only: bool | None = None,
        normalize: tuple[float, float] | Sequence[float] | None = None,
        trust_remote_code: bool = False,
        quantization: str | None = None,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name_or_path = str(model_name_or_path) if model_name_or_path is not None else self.default_model
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.batch_size = int(batch_size)
        self.local_files_only = hf_offline_default() if local_files_only is None else bool(local_files_only)
        self.normalize = check_normalize(normalize)
        self.trust_remote_code = bool(trust_remote_code)
        self.quantization = check_quantization(quantization)  # None, "8bit" or "4bit" (bitsandbytes)
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """Whether the model has been built."""
        return self._loaded

    def load(self) -> ModelReward:
        """Build the model now (otherwise done on the first call); idempotent. Returns self."""
        if not self._loaded:
            require_bitsandbytes(self.quantization)
            self._build()
            self._loaded = True
        return self

    def _build(self) -> None:
        raise NotImplementedError

    def _place(self, model: torch.nn.Module, skip: Sequence[str] = ()) -> Any:
        """A model built on CPU, frozen in eval mode on the reward's device and dtype; with `quantization`, its
        linear layers (except the module prefixes `skip`) quantized as from_pretrained would (`quantize_linears`)."""
        if self.quantization is None:
            return model.to(self.device, self.dtype).eval().requires_grad_(False)
        return quantize_linears(model.to(self.dtype), self.quantization, device=self.device, compute_dtype=self.dtype,
                                skip=skip)

    def _score_chunk(self, images: list[np.ndarray], queries: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def raw_scores(self, images: Any, queries: Sequence[str]) -> torch.Tensor:
        """Un-normalised model scores, (N,) float32 on CPU."""
        ims = to_uint8_images(images)
        qs = check_queries(queries, len(ims))
        self.load()
        chunks = [
            self._score_chunk(ims[i : i + self.batch_size], qs[i : i + self.batch_size]).detach().float().cpu()
            for i in range(0, len(ims), self.batch_size)
        ]
        return torch.cat(chunks).reshape(-1) if chunks else torch.zeros(0)

    def __call__(self, images: Any, queries: Sequence[str]) -> RewardOutput:
        out_device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
        raw = self.raw_scores(images, queries).to(out_device)
        scores = raw
        if self.normalize is not None:
            lo, hi = self.normalize
            scores = ((raw - lo) / (hi - lo)).clamp(0.0, 1.0)
        return RewardOutput(scores, {"raw": raw})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name_or_path!r}, device={str(self.device)!r}, loaded={self._loaded})"


__all__ = [
    "MissingExtraError",
    "ModelReward",
    "check_normalize",
    "check_queries",
    "hf_offline_default",
    "resolve_device",
    "resolve_dtype",
    "to_uint8_images",
]
