"""Loading of official reward checkpoints without unpickling, and the image preprocessing they expect.

`load_state_dict_file` reads a ``.safetensors`` file, or a ``.pt``/``.pth``/``.bin`` file with
``torch.load(weights_only=True)`` (tensors and plain containers only; never arbitrary pickles), and
unwraps a ``{"state_dict": ...}`` wrapper. `resolve_file` finds a file in a local folder or downloads it
once from an HF repo (cached by huggingface_hub; offline with ``local_files_only``). `build_empty` builds
a module with parameters on the meta device (buffers real) so that a converted checkpoint can be
assigned to it without materialising a random initialisation first.

Preprocessing, as in the official code (PIL bicubic resampling, which antialiases like torchvision's):
``center_crop`` (shortest side to `size`, centre crop: CLIP / BLIP, used by ImageReward) and
``pad_square`` (longest side to `size`, centred on black: HPSv2's evaluation transform), both
normalised with OpenAI CLIP's mean / std.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
M = TypeVar("M", bound=nn.Module)


def resolve_file(
    name_or_path: str | os.PathLike[str], filename: str, *, local_files_only: bool, revision: str | None = None
) -> Path:
    """`filename` inside the folder `name_or_path`, `name_or_path` itself if a file, else from that HF repo."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = path / filename
        if not found.is_file():
            raise FileNotFoundError(f"{found} does not exist")
        return found
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(name_or_path), filename, revision=revision, local_files_only=local_files_only))


def load_state_dict_file(file: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a safetensors or torch file, never unpickling code objects."""
    file = Path(file)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(file))
    else:
        state = torch.load(str(file), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{file} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_empty(factory: Callable[[], M]) -> M:
    """``factory()`` with its parameters on the meta device (buffers are real); fill with `assign_state`."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return factory()


def assign_state(model: M, state: dict[str, torch.Tensor], what: str) -> M:
    """Load a complete converted state dict into `model` (strict; tensors assigned, not copied)."""
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{what}: checkpoint does not match the model: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    return model


def _normalise(arrays: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _fit(im: np.ndarray, size: int, crop: bool) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(im)
    w, h = pil.size
    scale = size / (min(w, h) if crop else max(w, h))
    nw, nh = round(w * scale), round(h * scale)
    if crop:
        nw, nh = max(size, nw), max(size, nh)
    if (nw, nh) != (w, h):
        pil = pil.resize((nw, nh), Image.Resampling.BICUBIC)
    if crop:
        left, top = (nw - size) // 2, (nh - size) // 2
        return np.asarray(pil.crop((left, top, left + size, top + size)))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top : top + nh, left : left + nw] = np.asarray(pil)
    return canvas


def center_crop(images: list[np.ndarray], size: int) -> torch.Tensor:
    """(n, 3, size, size) pixels: shortest side to `size` (bicubic), centre crop, CLIP-normalised."""
    return _normalise([_fit(im, size, crop=True) for im in images])


def pad_square(images: list[np.ndarray], size: int) -> torch.Tensor:
    """(n, 3, size, size) pixels: longest side to `size` (bicubic), centred on black, CLIP-normalised."""
    return _normalise([_fit(im, size, crop=False) for im in images])


__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "assign_state",
    "build_empty",
    "center_crop",
    "load_state_dict_file",
    "pad_square",
    "resolve_file",
]
