"""Human Preference Score v2 / v2.1 (Wu et al. 2023) on transformers' `CLIPModel`: reward ``hpsv2``.

No `hpsv2` package is needed. The official checkpoint (Hub repo "xswu/HPSv2", file
``HPS_v2.1_compressed.pt`` for ``hps_version="v2.1"``, the default, or ``HPS_v2_compressed.pt`` for
"v2.0"; or a local .pt / .safetensors file as `model_name_or_path`) is an OpenCLIP ViT-H-14 state dict;
it is read once, with ``torch.load(weights_only=True)``, and renamed onto a `CLIPModel` whose shape is
read off the checkpoint (heads: vision width / 80 and text width / 64, as in OpenCLIP's ViT-H-14.json):
``visual.{conv1,class_embedding,positional_embedding,ln_pre,ln_post,proj}`` ->
``vision_model.embeddings.{patch_embedding,class_embedding,position_embedding}``,
``vision_model.{pre_layrnorm,post_layernorm}``, ``visual_projection`` (transposed);
``[visual.]transformer.resblocks.N.{ln_1,attn.in_proj_*,attn.out_proj,ln_2,mlp.c_fc,mlp.c_proj}`` ->
``{vision,text}_model.encoder.layers.N.{layer_norm1,self_attn.{q,k,v}_proj,self_attn.out_proj,
layer_norm2,mlp.fc1,mlp.fc2}``; ``token_embedding``, ``positional_embedding``, ``ln_final``,
``text_projection`` (transposed), ``logit_scale``.

The tokenizer is OpenCLIP's BPE vocabulary as published with the converted ViT-H-14
("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", `tokenizer_name_or_path`); texts are ``<sot> ids <eot>``,
truncated to the 77-token context (the last token kept as ``<eot>``), pooled at ``<eot>`` under the causal
mask as OpenCLIP does. Images follow HPSv2's evaluation transform: longest side to 224 (bicubic), centred
on black, CLIP-normalised.

Scale: HPS is the cosine similarity of the normalised embeddings, about 0.20-0.35 for generated images;
pass ``normalize=(lo, hi)``, e.g. ``(0.2, 0.35)``, to map to [0, 1].

``quantization="8bit"`` / ``"4bit"`` (bitsandbytes) quantizes the CLIP's linear layers after loading, the ones
``CLIPModel.from_pretrained(quantization_config=...)`` would (all but ``text_projection``); see
`promptloop.rewards.adapters.quantization`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from promptloop.rewards.adapters.base import ModelReward
from promptloop.rewards.adapters.checkpoints import (
    assign_state,
    build_empty,
    load_state_dict_file,
    pad_square,
    resolve_file,
)

HPS_REPO = "xswu/HPSv2"
HPS_FILES = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}
HPS_VERSIONS = tuple(HPS_FILES)
VISION_HEAD_WIDTH = 80
TEXT_HEAD_WIDTH = 64
_BLOCK = (
    ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.out_proj.", "self_attn.out_proj."),
    ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
)
_PLAIN = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "logit_scale": "logit_scale",
}
_NORMS = {"visual.ln_pre.": "vision_model.pre_layrnorm.", "visual.ln_post.": "vision_model.post_layernorm.",
          "ln_final.": "text_model.final_layer_norm."}
_RESBLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")


def convert_open_clip_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An OpenCLIP (ViT, non-custom text tower) state dict -> transformers `CLIPModel` keys."""
    out: dict[str, torch.Tensor] = {}
    for key, val in state.items():
        if key == "attn_mask":
            continue
        if key in _PLAIN:
            out[_PLAIN[key]] = val
            continue
        if key in ("visual.proj", "text_projection"):
            out["visual_projection.weight" if key == "visual.proj" else "text_projection.weight"] = val.t().contiguous()
            continue
        norm = next((p for p in _NORMS if key.startswith(p)), None)
        if norm is not None:
            out[_NORMS[norm] + key.removeprefix(norm)] = val
            continue
        m = _RESBLOCK.match(key)
        if m is None:
            raise ValueError(f"unexpected HPSv2 (OpenCLIP) checkpoint key {key!r}")
        prefix = f"{'vision' if m.group(1) else 'text'}_model.encoder.layers.{m.group(2)}."
        rest = m.group(3)
        if rest.startswith("attn.in_proj_"):
            kind = rest.removeprefix("attn.in_proj_")  # "weight" or "bias"
            for name, part in zip(("q", "k", "v"), val.chunk(3, dim=0), strict=True):
                out[f"{prefix}self_attn.{name}_proj.{kind}"] = part.contiguous()
            continue
        new = next((rest.replace(a, b, 1) for a, b in _BLOCK if rest.startswith(a)), None)
        if new is None:
            raise ValueError(f"unexpected HPSv2 (OpenCLIP) checkpoint key {key!r}")
        out[prefix + new] = val
    return out


def clip_config_from_state(state: Mapping[str, torch.Tensor]) -> Any:
    """`CLIPConfig` read off a converted OpenCLIP state dict (gelu, eps 1e-5, head widths 80 / 64)."""
    from transformers import CLIPConfig

    def layers(tower: str) -> int:
        return 1 + max(int(k.split(".")[3]) for k in state if k.startswith(f"{tower}_model.encoder.layers."))

    vw = int(state["vision_model.embeddings.class_embedding"].shape[0])
    patch = int(state["vision_model.embeddings.patch_embedding.weight"].shape[-1])
    grid = int(round((state["vision_model.embeddings.position_embedding.weight"].shape[0] - 1) ** 0.5))
    vocab, tw = (int(s) for s in state["text_model.embeddings.token_embedding.weight"].shape)
    vision = {"hidden_size": vw, "num_hidden_layers": layers("vision"), "patch_size": patch, "image_size": grid * patch,
              "num_attention_heads": max(1, vw // VISION_HEAD_WIDTH), "hidden_act": "gelu",
              "intermediate_size": int(state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0])}
    text = {"hidden_size": tw, "num_hidden_layers": layers("text"), "vocab_size": vocab,
            "max_position_embeddings": int(state["text_model.embeddings.position_embedding.weight"].shape[0]),
            "num_attention_heads": max(1, tw // TEXT_HEAD_WIDTH), "hidden_act": "gelu",
            "intermediate_size": int(state["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
            "bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": 0}
    return CLIPConfig(text_config=text, vision_config=vision,
                      projection_dim=int(state["visual_projection.weight"].shape[0]))


def load_hps_model(file: str | os.PathLike[str]) -> Any:
    """`CLIPModel` holding an HPSv2 (OpenCLIP ViT) checkpoint file, on CPU."""
    from transformers import CLIPModel

    state = convert_open_clip_state_dict(load_state_dict_file(file))
    config = clip_config_from_state(state)
    model = build_empty(lambda: CLIPModel(config))
    return assign_state(model, state, f"HPSv2 {file}")


def open_clip_token_ids(tokenizer: Any, texts: list[str], context: int) -> torch.Tensor:
    """OpenCLIP's tokenisation: ``<sot> ids <eot>`` truncated to `context` (last kept as eot), zero-padded."""
    sot, eot = tokenizer.bos_token_id, tokenizer.eos_token_id
    out = torch.zeros(len(texts), context, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot, *tokenizer(text, add_special_tokens=False)["input_ids"], eot][:context]
        ids[-1] = eot
        out[i, : len(ids)] = torch.tensor(ids)
    return out


class HPSv2Reward(ModelReward):
    """HPSv2 / v2.1 scores (see the module docstring); options `hps_version`, `tokenizer_name_or_path`."""

    name = "hpsv2"
    default_model = HPS_REPO
    default_tokenizer = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        hps_version: str = "v2.1",
        tokenizer_name_or_path: str | None = None,
        revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        if model_name_or_path in HPS_VERSIONS:  # the former spelling: the version as the model name
            hps_version, model_name_or_path = str(model_name_or_path), None
        super().__init__(model_name_or_path, **kwargs)
        if hps_version not in HPS_VERSIONS:
            raise ValueError(f"hps_version must be one of {HPS_VERSIONS}, got {hps_version!r}")
        self.hps_version = hps_version
        self.tokenizer_name_or_path = tokenizer_name_or_path or self.default_tokenizer
        self.revision = revision
        self.model: Any = None
        self.tokenizer: Any = None

    def _build(self) -> None:
        from transformers import AutoTokenizer

        file = resolve_file(self.model_name_or_path, HPS_FILES[self.hps_version],
                            local_files_only=self.local_files_only, revision=self.revision)
        self.model = self._place(load_hps_model(file))
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_name_or_path,
                                                       local_files_only=self.local_files_only,
                                                       trust_remote_code=self.trust_remote_code)

    @torch.no_grad()
    def _score_chunk(self, images: list[np.ndarray], queries: list[str]) -> torch.Tensor:
        cfg = self.model.config
        pixels = pad_square(images, int(cfg.vision_config.image_size)).to(self.device, self.dtype)
        unique = list(dict.fromkeys(queries))
        ids = open_clip_token_ids(self.tokenizer, unique, int(cfg.text_config.max_position_embeddings))
        text = self.model.get_text_features(input_ids=ids.to(self.device))
        img = self.model.get_image_features(pixel_values=pixels)
        text = torch.nn.functional.normalize(getattr(text, "pooler_output", text).float(), dim=-1)
        img = torch.nn.functional.normalize(getattr(img, "pooler_output", img).float(), dim=-1)
        index = torch.as_tensor([unique.index(q) for q in queries], device=text.device)
        return (img * text[index]).sum(dim=-1)


def make_hpsv2(**kwargs: Any) -> HPSv2Reward:
    """Factory of the HPSv2 reward (official xswu/HPSv2 weights on transformers' CLIP)."""
    return HPSv2Reward(**kwargs)


__all__ = [
    "HPS_FILES",
    "HPS_VERSIONS",
    "HPSv2Reward",
    "clip_config_from_state",
    "convert_open_clip_state_dict",
    "load_hps_model",
    "make_hpsv2",
    "open_clip_token_ids",
]
