"""Human Preference Score v2 (Wu et al. 2023) through the optional `hpsv2` package: reward ``hpsv2``.

``pip install 'promptloop[hpsv2]'``; the package is imported on first use, and a missing package
raises `MissingExtraError` (an ImportError) naming that extra. Scoring calls
``hpsv2.score([PIL images], query, cp=checkpoint, hps_version=version)`` per query group (chunks of
`batch_size`); `model_name_or_path` is the HPS version ("v2.0" or "v2.1", default "v2.1") or a local
checkpoint file (then `hps_version` says which). The package picks its own device (CUDA when
available) and downloads its checkpoint unless given one, so `device`, `dtype` (float32 only) and
`local_files_only` are recorded but cannot be enforced here.

Scale: HPS is the cosine similarity of OpenCLIP ViT-H/14 embeddings, about 0.20-0.35 for generated
images; pass ``normalize=(lo, hi)``, e.g. ``(0.2, 0.35)``, to map to [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptloop.rewards.adapters.base import MissingExtraError, ModelReward
from promptloop.rewards.adapters.image_reward import score_grouped

HPS_VERSIONS = ("v2.0", "v2.1")


class HPSv2Reward(ModelReward):
    """HPSv2 scores via the `hpsv2` package (see the module docstring)."""

    name = "hpsv2"
    default_model = "v2.1"

    def __init__(
        self, model_name_or_path: str | os.PathLike[str] | None = None, *, hps_version: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        if self.dtype != torch.float32:
            raise ValueError(f"the 'hpsv2' reward supports only float32, got dtype {self.dtype}")
        if self.model_name_or_path in HPS_VERSIONS:
            self.checkpoint: str | None = None
            self.hps_version = hps_version or self.model_name_or_path
        else:
            self.checkpoint = str(Path(self.model_name_or_path).expanduser())
            self.hps_version = hps_version or self.default_model
        if self.hps_version not in HPS_VERSIONS:
            raise ValueError(f"hps_version must be one of {HPS_VERSIONS}, got {self.hps_version!r}")
        self.module: Any = None

    def _build(self) -> None:
        try:
            import hpsv2
        except ImportError as e:
            raise MissingExtraError("hpsv2", "hpsv2", "hpsv2") from e
        self.module = hpsv2

    def _score(self, query: str, images: list[Any]) -> Any:
        return self.module.score(images, query, cp=self.checkpoint, hps_version=self.hps_version)

    @torch.no_grad()
    def _score_chunk(self, images: list[np.ndarray], queries: list[str]) -> torch.Tensor:
        return score_grouped(images, queries, self._score, self.batch_size)


def make_hpsv2(**kwargs: Any) -> HPSv2Reward:
    """Factory of the HPSv2 reward (needs ``pip install 'promptloop[hpsv2]'``)."""
    return HPSv2Reward(**kwargs)


__all__ = ["HPS_VERSIONS", "HPSv2Reward", "make_hpsv2"]
