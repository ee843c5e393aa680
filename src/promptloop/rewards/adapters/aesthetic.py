"""LAION aesthetic predictor reward (``aesthetic``): an MLP head on L2-normalised CLIP image embeddings.

The head is the public improved-aesthetic-predictor MLP (`AestheticHead`): Linear(D, 1024) ->
Dropout(0.2) -> Linear(1024, 128) -> Dropout(0.2) -> Linear(128, 64) -> Dropout(0.1) -> Linear(64, 16)
-> Linear(16, 1), state-dict keys ``layers.{0,2,4,6,7}.{weight,bias}`` (D = 768 for CLIP ViT-L/14,
the default backbone "openai/clip-vit-large-patch14"). Its weights (`head_weights`) default to the
official v2 head ``sac+logos+ava1-l14-linearMSE.pth`` as published on the Hub by TRL
("trl-lib/ddpo-aesthetic-predictor", file "aesthetic-model.pth"), downloaded once and cached; also
accepted: a local .safetensors file, a .pt/.pth/.bin state dict (read with
``torch.load(weights_only=True)``, never unpickled otherwise), a directory holding one such file, or
another HF repo id (file `head_filename`, default "model.safetensors"). Key prefixes before "layers."
are stripped. The query is ignored.

Scale: the predictor regresses AVA-style mean ratings, about 1-10 (typically 4-7 for generated
images); pass ``normalize=(lo, hi)``, e.g. ``(4, 7)``, to map to [0, 1] for combinations.

``quantization="8bit"`` / ``"4bit"`` loads the CLIP backbone through bitsandbytes (`ClipEmbedder`); the MLP head
stays unquantized.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from promptloop.rewards.adapters.base import ModelReward
from promptloop.rewards.adapters.checkpoints import load_state_dict_file
from promptloop.rewards.adapters.clip import ClipEmbedder

HEAD_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
DEFAULT_HEAD_REPO = "trl-lib/ddpo-aesthetic-predictor"
DEFAULT_HEAD_FILE = "aesthetic-model.pth"


class AestheticHead(nn.Module):
    """The improved-aesthetic-predictor MLP: D -> 1024 -> 128 -> 64 -> 16 -> 1 (dropout between)."""

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.layers = nn.Sequential(
            nn.Linear(self.input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(n, D) embeddings -> (n, 1) predicted ratings."""
        return self.layers(embeddings)


def _resolve_head_file(head_weights: str | os.PathLike[str], head_filename: str | None, local_files_only: bool) -> Path:
    path = Path(head_weights).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if head_filename:
            return path / head_filename
        found = sorted(p for p in path.iterdir() if p.suffix in HEAD_SUFFIXES)
        found.sort(key=lambda p: p.suffix != ".safetensors")  # prefer safetensors
        if not found:
            raise FileNotFoundError(f"no aesthetic head weights ({', '.join(HEAD_SUFFIXES)}) in directory {path}")
        return found[0]
    text = str(head_weights)
    if path.suffix in HEAD_SUFFIXES or path.is_absolute() or text.startswith((".", "~")) or text.count("/") != 1:
        raise FileNotFoundError(f"aesthetic head weights file {path} does not exist")
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(str(head_weights), head_filename or "model.safetensors", local_files_only=local_files_only)
    )


def load_head_state_dict(
    head_weights: str | os.PathLike[str], head_filename: str | None = None, *, local_files_only: bool = False
) -> dict[str, torch.Tensor]:
    """The head's state dict (keys ``layers.N.*``) from a file, directory or HF repo id, never unpickled."""
    file = _resolve_head_file(head_weights, head_filename, local_files_only)
    state = load_state_dict_file(file)
    out: dict[str, torch.Tensor] = {}
    for key, val in state.items():
        pos = key.find("layers.")
        if pos < 0:
            raise ValueError(f"unexpected key {key!r} in aesthetic head weights {file}: expected 'layers.N.*'")
        out[key[pos:]] = val
    return out


class AestheticReward(ModelReward):
    """LAION aesthetic score of each image (query-blind): ``head(normalize(clip_image_embedding))``."""

    name = "aesthetic"
    default_model = "openai/clip-vit-large-patch14"

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        head_weights: str | os.PathLike[str] | None = None,
        head_filename: str | None = None,
        processor_name_or_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        if head_weights is None:
            head_weights, head_filename = DEFAULT_HEAD_REPO, head_filename or DEFAULT_HEAD_FILE
        super().__init__(model_name_or_path, **kwargs)
        self.head_weights = head_weights
        self.head_filename = head_filename
        self.processor_name_or_path = processor_name_or_path
        self.embedder: ClipEmbedder | None = None
        self.head: AestheticHead | None = None

    def _build(self) -> None:
        state = load_head_state_dict(self.head_weights, self.head_filename, local_files_only=self.local_files_only)
        if "layers.0.weight" not in state:
            raise ValueError(f"aesthetic head weights {self.head_weights} lack 'layers.0.weight'")
        head = AestheticHead(int(state["layers.0.weight"].shape[1]))
        head.load_state_dict(state)
        self.embedder = ClipEmbedder(
            self.model_name_or_path,
            processor_name_or_path=self.processor_name_or_path,
            device=self.device,
            dtype=self.dtype,
            local_files_only=self.local_files_only,
            trust_remote_code=self.trust_remote_code,
            quantization=self.quantization,
        ).load()
        dim = int(self.embedder.model.config.projection_dim)
        if dim != head.input_size:
            raise ValueError(
                f"aesthetic head expects {head.input_size}-d embeddings but CLIP {self.model_name_or_path!r} gives {dim}"
            )
        self.head = head.to(self.device).eval().requires_grad_(False)

    @torch.no_grad()
    def _score_chunk(self, images: list[np.ndarray], queries: list[str]) -> torch.Tensor:
        assert self.embedder is not None and self.head is not None
        emb = self.embedder.embed_images(images)
        return self.head(emb.to(self.device)).reshape(-1)


def make_aesthetic(**kwargs: Any) -> AestheticReward:
    """Factory of the LAION aesthetic-predictor v2 reward (see the module docstring)."""
    return AestheticReward(**kwargs)


__all__ = ["AestheticHead", "AestheticReward", "load_head_state_dict", "make_aesthetic"]
