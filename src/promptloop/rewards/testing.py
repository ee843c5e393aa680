"""Tiny, random, offline CLIP checkpoints for tests of the model-based rewards.

`tiny_clip_dir(tmp_path)` writes a randomly initialised `CLIPModel` (about 60k parameters), a
byte-level `CLIPTokenizer` built from a tiny vocab.json / merges.txt, and a CLIP image-processor config
into a directory that `CLIPModel.from_pretrained` / `AutoTokenizer` / `AutoImageProcessor` load with
no network. `tiny_aesthetic_head(path, embed_dim)` writes a random aesthetic MLP head as safetensors.
Everything is seeded, so two calls with the same seed give identical weights.

Only this module's functions import transformers (lazily), so importing it is cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from promptloop.loop.testing import _bytes_to_unicode  # the GPT-2 / CLIP byte table

TINY_IMAGE_SIZE = 32
TINY_PROJECTION_DIM = 16


def write_tiny_clip_tokenizer(directory: str | Path) -> dict[str, int]:
    """Write vocab.json + merges.txt of a byte-level CLIP BPE covering every byte; return the vocab.

    Every byte has a token alone and as a word end ("x</w>"), plus a handful of merges, then the
    special tokens "<|startoftext|>" and "<|endoftext|>" (also the padding token).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges = [("r", "e"), ("e", "d</w>"), ("c", "i"), ("s", "q"), ("a", "t"), ("o", "n")]
    tokens += [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    return vocab


def tiny_clip_dir(
    tmp_path: str | Path,
    *,
    name: str = "tiny-clip",
    seed: int = 0,
    image_size: int = TINY_IMAGE_SIZE,
    projection_dim: int = TINY_PROJECTION_DIM,
    logit_scale: float = 2.6592,
) -> Path:
    """Write a tiny random CLIP checkpoint (model, tokenizer, image processor) under tmp_path/name.

    The vision tower sees `image_size` x `image_size` crops (patch 8); text and vision widths are 32,
    projections `projection_dim` wide. Returns the directory, loadable by path with
    `local_files_only=True`. Deterministic for a given `seed`.
    """
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    out = Path(tmp_path) / name
    out.mkdir(parents=True, exist_ok=True)
    vocab = write_tiny_clip_tokenizer(out)
    tokenizer = CLIPTokenizer.from_pretrained(str(out), model_max_length=32)
    tokenizer.save_pretrained(str(out))

    eos_id = vocab["<|endoftext|>"]
    text_config = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 32,
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": eos_id,
        "pad_token_id": eos_id,
    }
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": 8,
    }
    config = CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=projection_dim,
        logit_scale_init_value=logit_scale,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    model.save_pretrained(str(out))

    preprocessor = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_convert_rgb": True,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2), encoding="utf-8")
    return out


def tiny_aesthetic_head(path: str | Path, embed_dim: int = TINY_PROJECTION_DIM, *, seed: int = 0) -> Path:
    """Write a random aesthetic MLP head (`AestheticHead(embed_dim)` state dict) as safetensors at `path`."""
    from safetensors.torch import save_file

    from promptloop.rewards.adapters.aesthetic import AestheticHead

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = AestheticHead(embed_dim)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(path))
    return path


__all__ = [
    "TINY_IMAGE_SIZE",
    "TINY_PROJECTION_DIM",
    "tiny_aesthetic_head",
    "tiny_clip_dir",
    "write_tiny_clip_tokenizer",
]
