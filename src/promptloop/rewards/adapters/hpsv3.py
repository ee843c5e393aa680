"""HPSv3 (Ma et al. 2025, "HPSv3: Towards Wide-Spectrum Human Preference Score") on transformers' Qwen2-VL: ``hpsv3``.

A Qwen2-VL-7B-Instruct with a reward head reads the image and the query in a fixed instruction
(`promptloop.rewards.adapters.hpsv3_prompt`) and outputs, at the added ``<|Reward|>`` token, the mean ``mu``
and the uncertainty ``sigma`` of a Gaussian preference score; the reward is ``mu`` (as in the official
inference), ``mu_sigma()`` gives both. No `hpsv3` package is needed (it pins transformers 4.45): the official
checkpoint, ``HPSv3.safetensors`` of the Hub repo "MizzenAI/HPSv3" (default `model_name_or_path`; a folder
holding it or a path to the file also work; safetensors only), is renamed onto transformers' `Qwen2VLModel`
and an `nn.Sequential` head:

- ``visual.*`` -> ``backbone.visual.*`` (the vision tower and its patch merger, same names);
- ``model.*`` -> ``backbone.language_model.*`` (the Qwen2 decoder, same names);
- ``rm_head.{0,3,5}.*`` -> ``rm_head.*``: Linear(hidden, 1024) -> ReLU -> Dropout(0.05) -> Linear(1024, 16)
  -> ReLU -> Linear(16, 2) (HPSv3's "ranknet" head), kept in float32 as the official model keeps it;
- ``lm_head.weight`` (unused by scoring) is dropped; any other key is an error.
The architecture (config.json), tokenizer and image processor are those of the base model,
`base_model_name_or_path` (default "Qwen/Qwen2-VL-7B-Instruct", as the official code builds it), with
``<|Reward|>`` added as a special token; the vocabulary size is read off the checkpoint (the official model
resized its embeddings to the tokenizer plus that token).

Faithful to the official forward, the decoder runs with plain sequential positions (0..L-1 in all three
M-RoPE sections: the official code calls the decoder without Qwen2-VL's 3D rope index), right-padded
sequences, and the head reads the last hidden state (after the final norm) at ``<|Reward|>``. Images are
resized as in `hpsv3_prompt.resize_for_hpsv3` (`pixels`, default 256 * 28 * 28: 256 visual tokens), then
patchified and CLIP-normalised by the base model's image processor (no second resize); a chunk of
`batch_size` images is scored in one forward.

Scale: unbounded, higher is preferred; the paper's per-model averages on its benchmark lie roughly between
0 and 11 (pass ``normalize=(lo, hi)`` to map to [0, 1]). The official model runs in bfloat16: pass
``dtype="bfloat16"`` (about 16 GB of weights), or ``quantization="8bit"`` / ``"4bit"`` (bitsandbytes; the
backbone's linear layers are quantized after loading, the head stays float32).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from promptloop.rewards.adapters.base import ModelReward, check_queries, to_uint8_images
from promptloop.rewards.adapters.checkpoints import assign_state, build_empty, load_state_dict_file, resolve_file
from promptloop.rewards.adapters.hpsv3_prompt import IMAGE_PIXELS, REWARD_TOKEN, chat_text, resize_for_hpsv3

HPSV3_REPO = "MizzenAI/HPSv3"
CHECKPOINT_FILE = "HPSv3.safetensors"
BASE_MODEL = "Qwen/Qwen2-VL-7B-Instruct"
HEAD_WIDTHS = (1024, 16, 2)  # the "ranknet" head's layer widths (output: mu, sigma)
_EMBED_KEY = "backbone.language_model.embed_tokens.weight"


def convert_hpsv3_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official HPSv3.safetensors keys (transformers 4.45 Qwen2-VL names) -> `HPSv3Model` keys.

    Names already in transformers 5's layout (``model.visual.*``, ``model.language_model.*``) are accepted too.
    """
    out: dict[str, torch.Tensor] = {}
    for key, val in state.items():
        if key == "lm_head.weight":
            continue
        if key.startswith("rm_head."):
            out[key] = val
        elif key.startswith("visual."):
            out["backbone." + key] = val
        elif key.startswith(("model.visual.", "model.language_model.")):
            out["backbone." + key.removeprefix("model.")] = val
        elif key.startswith("model."):
            out["backbone.language_model." + key.removeprefix("model.")] = val
        else:
            raise ValueError(f"unexpected HPSv3 checkpoint key {key!r}")
    return out


class HPSv3Model(nn.Module):
    """Qwen2-VL backbone + reward head: ``forward(ids, mask, pixels, grid) -> (n, 2)`` (mu, sigma) at <|Reward|>."""

    def __init__(self, config: Any, reward_token_id: int) -> None:
        super().__init__()
        from transformers import Qwen2VLModel

        self.backbone = Qwen2VLModel(config)
        hidden = int(config.text_config.hidden_size)
        self.rm_head = nn.Sequential(
            nn.Linear(hidden, HEAD_WIDTHS[0]), nn.ReLU(), nn.Dropout(0.05),
            nn.Linear(HEAD_WIDTHS[0], HEAD_WIDTHS[1]), nn.ReLU(), nn.Linear(HEAD_WIDTHS[1], HEAD_WIDTHS[2]),
        )
        self.reward_token_id = int(reward_token_id)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                image_grid_thw: torch.Tensor) -> torch.Tensor:
        batch, length = input_ids.shape
        found = (input_ids == self.reward_token_id).sum(dim=1)
        if not bool((found == 1).all()):
            raise ValueError(f"each sequence needs exactly one {REWARD_TOKEN} token, found {found.tolist()}")
        positions = torch.arange(length, device=input_ids.device).view(1, 1, -1).expand(3, batch, -1)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                               image_grid_thw=image_grid_thw, position_ids=positions, use_cache=False).last_hidden_state
        at_token = hidden[input_ids == self.reward_token_id]  # (n, hidden), in row order
        head_dtype = self.rm_head[0].weight.dtype
        return self.rm_head(at_token.to(head_dtype)).float()


def load_hpsv3_model(file: str | os.PathLike[str], config: Any, reward_token_id: int) -> HPSv3Model:
    """`HPSv3Model` holding an HPSv3 safetensors checkpoint, built on `config` (the base model's), on CPU."""
    if Path(file).suffix != ".safetensors":
        raise ValueError(f"HPSv3 weights must be a .safetensors file, got {file}")
    state = convert_hpsv3_state_dict(load_state_dict_file(file))
    if _EMBED_KEY not in state:
        raise ValueError(f"HPSv3 checkpoint {file} lacks 'model.embed_tokens.weight'")
    config.text_config.vocab_size = int(state[_EMBED_KEY].shape[0])
    if reward_token_id >= config.text_config.vocab_size:
        raise ValueError(f"{REWARD_TOKEN} has id {reward_token_id}, outside the checkpoint's vocabulary of "
                         f"{config.text_config.vocab_size}: the tokenizer does not match the checkpoint")
    model = build_empty(lambda: HPSv3Model(config, reward_token_id))
    return assign_state(model, state, f"HPSv3 {file}")


class HPSv3Reward(ModelReward):
    """HPSv3 scores (mu; see the module docstring); options `base_model_name_or_path`, `pixels`, `revision`."""

    name = "hpsv3"
    default_model = HPSV3_REPO

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        base_model_name_or_path: str | os.PathLike[str] | None = None,
        pixels: int = IMAGE_PIXELS,
        revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        if int(pixels) < 1:
            raise ValueError(f"pixels must be >= 1, got {pixels}")
        self.base_model_name_or_path = str(base_model_name_or_path or BASE_MODEL)  # config, tokenizer, processor
        self.pixels = int(pixels)  # image area after resizing (HPSv3's min_pixels = max_pixels)
        self.revision = revision  # revision of the HPSv3 checkpoint repo
        self.model: HPSv3Model | None = None
        self.tokenizer: Any = None
        self.image_processor: Any = None

    def _build(self) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen2VLConfig

        base = {"local_files_only": self.local_files_only}
        auto = {**base, "trust_remote_code": self.trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(self.base_model_name_or_path, **auto)
        tokenizer.padding_side = "right"
        tokenizer.add_special_tokens({"additional_special_tokens": [REWARD_TOKEN]})
        reward_id = int(tokenizer.convert_tokens_to_ids(REWARD_TOKEN))
        # the PIL backend whatever is installed (the official inference's processor; torchvision's differs slightly)
        processor = AutoImageProcessor.from_pretrained(self.base_model_name_or_path, backend="pil", **auto)
        config = Qwen2VLConfig.from_pretrained(self.base_model_name_or_path, **base)
        file = resolve_file(self.model_name_or_path, CHECKPOINT_FILE, local_files_only=self.local_files_only,
                            revision=self.revision)
        model = self._place(load_hpsv3_model(file, config, reward_id), skip=("rm_head",))
        model.rm_head.float()  # the official head runs in float32 whatever the backbone's dtype
        self.model, self.tokenizer, self.image_processor = model, tokenizer, processor

    @torch.no_grad()
    def _mu_sigma_chunk(self, images: list[np.ndarray], queries: list[str]) -> torch.Tensor:
        assert self.model is not None
        from PIL import Image

        merge = int(self.image_processor.merge_size)
        factor = int(self.image_processor.patch_size) * merge
        resized = [Image.fromarray(resize_for_hpsv3(im, factor, self.pixels)) for im in images]
        vision = self.image_processor(images=resized, do_resize=False, return_tensors="pt")
        grid = vision["image_grid_thw"]
        texts = [chat_text(q, int(n)) for q, n in zip(queries, grid.prod(dim=-1) // merge**2, strict=True)]
        tok = self.tokenizer(texts, padding=True, return_tensors="pt")
        return self.model(tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device),
                          vision["pixel_values"].to(self.device, self.dtype), grid.to(self.device))

    def _score_chunk(self, images: list[np.ndarray], queries: list[str]) -> torch.Tensor:
        return self._mu_sigma_chunk(images, queries)[:, 0]

    def mu_sigma(self, images: Any, queries: Sequence[str]) -> torch.Tensor:
        """(N, 2) float32 on CPU: HPSv3's mean score mu (the reward) and its uncertainty sigma per image."""
        ims = to_uint8_images(images)
        qs = check_queries(queries, len(ims))
        self.load()
        chunks = [self._mu_sigma_chunk(ims[i : i + self.batch_size], qs[i : i + self.batch_size]).float().cpu()
                  for i in range(0, len(ims), self.batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, 2)


def make_hpsv3(**kwargs: Any) -> HPSv3Reward:
    """Factory of the HPSv3 reward (official MizzenAI/HPSv3 weights on transformers' Qwen2-VL)."""
    return HPSv3Reward(**kwargs)


__all__ = [
    "BASE_MODEL",
    "CHECKPOINT_FILE",
    "HPSV3_REPO",
    "HPSv3Model",
    "HPSv3Reward",
    "convert_hpsv3_state_dict",
    "load_hpsv3_model",
    "make_hpsv3",
]
