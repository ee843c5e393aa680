"""ImageReward (Xu et al. 2023) on transformers' BLIP classes: reward ``imagereward``.

No `image-reward` package is needed (its BLIP code does not import under transformers 5). The official
checkpoint, ``ImageReward.pt`` of the Hub repo "THUDM/ImageReward" (default `model_name_or_path`; a
local folder holding ``ImageReward.pt`` and ``med_config.json``, or a path to the .pt file, also work),
is read with ``torch.load(weights_only=True)`` and its keys renamed onto:

- ``blip.visual_encoder.*`` (BLIP's ViT) -> `BlipVisionModel` (``cls_token`` -> ``embeddings.class_embedding``,
  ``pos_embed`` -> ``embeddings.position_embedding``, ``patch_embed.proj`` -> ``embeddings.patch_embedding``,
  ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`` ->
  ``encoder.layers.N.{layer_norm1,self_attn.qkv,self_attn.projection,layer_norm2,mlp.fc1,mlp.fc2}``,
  ``norm`` -> ``post_layernorm``);
- ``blip.text_encoder.*`` (BLIP's med BERT with cross-attention) -> `BlipTextModel` (same names);
- ``mlp.layers.*`` -> the 5-layer head (`AestheticHead` architecture, input 768).
``blip.vision_proj`` / ``blip.text_proj`` (unused by scoring) and the ``position_ids`` buffer are dropped.
The ViT's shape is read from the checkpoint (heads = width / 64, as in BLIP's ViT-B and ViT-L), the
text encoder's from ``med_config.json``; the tokenizer is bert-base-uncased (`tokenizer_name_or_path`)
with BLIP's added ``[DEC]`` / ``[ENC]`` tokens, max length 35.

Scoring is the package's: ``head(text_encoder(prompt, cross-attending to ViT(image))[:, 0])``,
standardised with its training mean 0.16717 and std 1.03334, so scores are roughly N(0, 1) (about -2..2);
pass ``normalize=(lo, hi)``, e.g. ``(-2, 2)``, to map them to [0, 1]. Images are resized (shortest side
224, bicubic), centre-cropped and CLIP-normalised; a whole chunk of images is scored in one forward.

``quantization="8bit"`` / ``"4bit"`` (bitsandbytes) quantizes the ViT's and BERT's linear layers after loading
(the MLP head stays unquantized); see `promptloop.rewards.adapters.quantization`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from promptloop.rewards.adapters.aesthetic import AestheticHead
from promptloop.rewards.adapters.base import ModelReward
from promptloop.rewards.adapters.checkpoints import (
    assign_state,
    build_empty,
    center_crop,
    load_state_dict_file,
    resolve_file,
)

IMAGEREWARD_REPO = "THUDM/ImageReward"
CHECKPOINT_FILE = "ImageReward.pt"
MED_CONFIG_FILE = "med_config.json"
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_TEXT_LENGTH = 35
_VIT_RENAMES = (
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
)
_DROPPED = re.compile(r"^blip\.(vision_proj|text_proj)\.|^blip\.text_encoder\.embeddings\.position_ids$")


def convert_imagereward_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ImageReward.pt keys -> `ImageRewardModel` keys (``vision.*``, ``text.*``, ``head.*``)."""
    out: dict[str, torch.Tensor] = {}
    for key, val in state.items():
        if _DROPPED.search(key):
            continue
        if key.startswith("blip.visual_encoder."):
            sub = key.removeprefix("blip.visual_encoder.")
            for pattern, repl in _VIT_RENAMES:
                new, n = re.subn(pattern, repl, sub)
                if n:
                    out["vision." + new] = val
                    break
            else:
                raise ValueError(f"unexpected ImageReward checkpoint key {key!r}")
        elif key.startswith("blip.text_encoder."):
            out["text." + key.removeprefix("blip.text_encoder.")] = val
        elif key.startswith("mlp.layers."):
            out["head." + key.removeprefix("mlp.")] = val
        else:
            raise ValueError(f"unexpected ImageReward checkpoint key {key!r}")
    return out


def vision_config_from_state(state: Mapping[str, torch.Tensor]) -> Any:
    """`BlipVisionConfig` of BLIP's ViT read off a converted state dict (heads of width 64, eps 1e-6)."""
    from transformers import BlipVisionConfig

    width = int(state["vision.embeddings.class_embedding"].shape[-1])
    patch = int(state["vision.embeddings.patch_embedding.weight"].shape[-1])
    grid = int(round((state["vision.embeddings.position_embedding"].shape[1] - 1) ** 0.5))
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("vision.encoder.layers."))
    return BlipVisionConfig(
        hidden_size=width, intermediate_size=int(state["vision.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=layers, num_attention_heads=max(1, width // 64), image_size=grid * patch,
        patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-6,
    )


def text_config_from_med(med: Mapping[str, Any], encoder_width: int) -> Any:
    """`BlipTextConfig` of BLIP's med BERT config (``med_config.json``), cross-attending to `encoder_width`."""
    from transformers import BlipTextConfig

    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "max_position_embeddings", "layer_norm_eps", "pad_token_id")
    return BlipTextConfig(**{k: med[k] for k in keys if k in med}, encoder_hidden_size=encoder_width,
                          is_decoder=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


class ImageRewardModel(nn.Module):
    """BLIP ViT + cross-attending BERT + MLP head: ``forward(pixels, ids, mask) -> (n,)`` standardised rewards.

    The text layers have cross-attention (BLIP's ``is_decoder`` config) but run bidirectionally
    (``is_decoder=False`` at call time), as BLIP's image-grounded text encoder does.
    """

    def __init__(self, vision_config: Any, text_config: Any) -> None:
        super().__init__()
        from transformers import BlipTextModel, BlipVisionModel

        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        self.head = AestheticHead(int(text_config.hidden_size))

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.vision(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                         encoder_attention_mask=image_mask, is_decoder=False).last_hidden_state
        rewards = self.head(text[:, 0].float().to(self.head.layers[0].weight.dtype)).float().reshape(-1)
        return (rewards - REWARD_MEAN) / REWARD_STD


def blip_tokenizer(name_or_path: str, *, local_files_only: bool, trust_remote_code: bool = False) -> Any:
    """BLIP's tokenizer: a BERT tokenizer with ``[DEC]`` as bos and ``[ENC]`` added (as the package does)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_files_only,
                                        trust_remote_code=trust_remote_code)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


def load_imagereward_model(
    name_or_path: str, *, local_files_only: bool, revision: str | None = None
) -> ImageRewardModel:
    """The ImageReward model with the official weights (from a Hub repo, a folder or a .pt file), on CPU."""
    ckpt = resolve_file(name_or_path, CHECKPOINT_FILE, local_files_only=local_files_only, revision=revision)
    med_source = ckpt.parent if os.path.isfile(name_or_path) else name_or_path
    med_file = resolve_file(med_source, MED_CONFIG_FILE, local_files_only=local_files_only, revision=revision)
    state = convert_imagereward_state_dict(load_state_dict_file(ckpt))
    vision = vision_config_from_state(state)
    text = text_config_from_med(json.loads(med_file.read_text()), vision.hidden_size)
    model = build_empty(lambda: ImageRewardModel(vision, text))
    return assign_state(model, state, f"ImageReward {ckpt}")


class ImageRewardReward(ModelReward):
    """ImageReward scores (see the module docstring); options `tokenizer_name_or_path`, `revision`."""

    name = "imagereward"
    default_model = IMAGEREWARD_REPO
    default_tokenizer = "google-bert/bert-base-uncased"

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        tokenizer_name_or_path: str | None = None,
        revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.tokenizer_name_or_path = tokenizer_name_or_path or self.default_tokenizer
        self.revision = revision
        self.model: ImageRewardModel | None = None
        self.tokenizer: Any = None

    def _build(self) -> None:
        model = load_imagereward_model(self.model_name_or_path, local_files_only=self.local_files_only,
                                       revision=self.revision)
        self.model = self._place(model, skip=("head",))
        self.tokenizer = blip_tokenizer(self.tokenizer_name_or_path, local_files_only=self.local_files_only,
                                        trust_remote_code=self.trust_remote_code)

    @torch.no_grad()
    def _score_chunk(self, images: list[np.ndarray], queries: list[str]) -> torch.Tensor:
        assert self.model is not None
        size = int(self.model.vision.config.image_size)
        pixels = center_crop(images, size).to(self.device, self.dtype)
        tok = self.tokenizer(queries, padding="max_length", truncation=True, max_length=MAX_TEXT_LENGTH,
                             return_tensors="pt")
        return self.model(pixels, tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device))


def make_imagereward(**kwargs: Any) -> ImageRewardReward:
    """Factory of the ImageReward reward (official THUDM/ImageReward weights on transformers' BLIP)."""
    return ImageRewardReward(**kwargs)


__all__ = [
    "ImageRewardModel",
    "ImageRewardReward",
    "blip_tokenizer",
    "convert_imagereward_state_dict",
    "load_imagereward_model",
    "make_imagereward",
]
