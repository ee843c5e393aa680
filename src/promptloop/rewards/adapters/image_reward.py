"""ImageReward (Xu et al. 2023) through the optional `image-reward` package: reward ``imagereward``.

``pip install 'promptloop[imagereward]'``; the package (import name `ImageReward`) is imported on
first use, and a missing package raises `MissingExtraError` (an ImportError) naming that extra.
`ImageReward.load(model_name_or_path, device=..., download_root=...)` builds the model (default
"ImageReward-v1.0"; a local checkpoint path also works; the package fetches its own files, so offline
use needs them cached). Images are grouped by query and each group scored in chunks of `batch_size`
with ``model.score(query, [PIL images])`` (its `inference_rank` path).

Scale: the package standardises rewards with its training mean / std, so scores are roughly N(0, 1)
(about -2..2); pass ``normalize=(lo, hi)``, e.g. ``(-2, 2)``, to map them to [0, 1]. Only float32 is
supported (`dtype` other than float32 raises ValueError): the package preprocesses in float32.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from promptloop.rewards.adapters.base import MissingExtraError, ModelReward


def score_grouped(
    images: list[np.ndarray], queries: Sequence[str], score_fn: Callable[[str, list[Any]], Any], batch_size: int
) -> torch.Tensor:
    """Score uint8 images with a per-prompt scorer ``score_fn(query, [PIL images]) -> float or list``.

    Images sharing a query are scored together, in chunks of at most `batch_size`; the result is in the
    original order, (n,) float32.
    """
    from PIL import Image

    out = torch.zeros(len(images), dtype=torch.float32)
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(q, []).append(i)
    for query, idx in groups.items():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            vals = np.asarray(score_fn(query, [Image.fromarray(images[i]) for i in chunk]), dtype=np.float64)
            vals = vals.reshape(-1)
            if vals.size != len(chunk):
                raise RuntimeError(f"scorer returned {vals.size} scores for {len(chunk)} images")
            out[torch.as_tensor(chunk)] = torch.as_tensor(vals, dtype=torch.float32)
    return out


class ImageRewardReward(ModelReward):
    """ImageReward scores via the `image-reward` package (see the module docstring)."""

    name = "imagereward"
    default_model = "ImageReward-v1.0"

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        download_root: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        if self.dtype != torch.float32:
            raise ValueError(f"the 'imagereward' reward supports only float32, got dtype {self.dtype}")
        self.download_root = None if download_root is None else str(download_root)
        self.model: Any = None

    def _build(self) -> None:
        try:
            import ImageReward as RM  # the package's documented alias
        except ImportError as e:
            raise MissingExtraError("imagereward", "image-reward", "imagereward") from e
        self.model = RM.load(self.model_name_or_path, device=str(self.device), download_root=self.download_root)
        if hasattr(self.model, "eval"):
            self.model.eval()

    @torch.no_grad()
    def _score_chunk(self, images: list[np.ndarray], queries: list[str]) -> torch.Tensor:
        return score_grouped(images, queries, self.model.score, self.batch_size)


def make_imagereward(**kwargs: Any) -> ImageRewardReward:
    """Factory of the ImageReward reward (needs ``pip install 'promptloop[imagereward]'``)."""
    return ImageRewardReward(**kwargs)


__all__ = ["ImageRewardReward", "make_imagereward", "score_grouped"]
