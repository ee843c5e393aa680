"""CLIP-similarity rewards (transformers `CLIPModel`): ``clipscore`` and ``pickscore``.

``clipscore``
    Cosine similarity of the CLIP image and text embeddings, in [-1, 1] (about 0.15-0.40 for real
    image/caption pairs with ViT-L/14). With ``rescale=True`` it is CLIP-S of Hessel et al. 2021,
    ``w * max(cos, 0)`` with ``w = 2.5`` (in [0, 2.5]). Default checkpoint "openai/clip-vit-large-patch14".

``pickscore``
    PickScore (Kirstain et al. 2023): ``exp(logit_scale) * cos`` with the PickScore_v1 checkpoint
    (default "yuvalkirstain/PickScore_v1", processor "laion/CLIP-ViT-H-14-laion2B-s32B-b79K");
    logit scale 100, so scores lie in [-100, 100], typically about 18-24 for generated images.

Neither is in [0, 1]: pass ``normalize=(lo, hi)`` (e.g. ``(0.15, 0.40)`` for clipscore, ``(17, 25)``
for pickscore) to map them affinely, clamped, to [0, 1] for weighted combinations.

Images go through the checkpoint's image processor as uint8 RGB, always with transformers' PIL backend
(`backend="pil"`: transformers' own default is its torchvision backend wherever torchvision is installed, whose
tensor resize gives other pixel values, up to 1/255 apart, so the scores would depend on what is installed).
Its steps are the official preprocessing of OpenAI's CLIP (`clip.load`'s transform, which the LAION aesthetic
predictor uses too) and of PickScore (whose HF processor is this one): the shortest side resized to the crop
size with PIL's bicubic filter, a centre crop, scaling by 1/255, CLIP normalisation. One deviation: where the
resized side exceeds the crop by 3, 7, 11, ... pixels (3 mod 4), the crop offset is rounded down here and half
to even by torchvision's `CenterCrop`, so the crop is 1 pixel off the official one (none for square images);
`tests/test_reward_models.py` checks both against a re-implementation of the official transform. Texts go
through the checkpoint's tokenizer, truncated to the text tower's length. Text embeddings of repeated queries
within a call are computed once.

``quantization="8bit"`` / ``"4bit"`` loads the CLIP with transformers' `BitsAndBytesConfig` (bitsandbytes; see
`promptloop.rewards.adapters.quantization`), on the reward's device.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from promptloop.rewards.adapters.base import ModelReward
from promptloop.rewards.adapters.quantization import bnb_config, check_quantization, require_bitsandbytes


def _pooled(out: Any) -> torch.Tensor:
    """Projected embeddings from `get_*_features` (a tensor in transformers 4, a model output in 5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipEmbedder:
    """A CLIP model with its tokenizer and image processor, producing L2-normalised embeddings.

    Built by `load()` (transformers imported there). `processor_name_or_path` defaults to the model's
    own; `trust_remote_code` is passed to the tokenizer / image-processor auto classes only; `quantization`
    ("8bit" / "4bit") loads the model through a bitsandbytes `BitsAndBytesConfig`.
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        processor_name_or_path: str | None = None,
        device: torch.device,
        dtype: torch.dtype,
        local_files_only: bool,
        trust_remote_code: bool = False,
        quantization: str | None = None,
    ) -> None:
        self.model_name_or_path = model_name_or_path
        self.processor_name_or_path = processor_name_or_path or model_name_or_path
        self.device = device
        self.dtype = dtype
        self.local_files_only = local_files_only
        self.trust_remote_code = trust_remote_code
        self.quantization = check_quantization(quantization)
        self.model: Any = None
        self.tokenizer: Any = None
        self.image_processor: Any = None
        self.max_length = 77

    def load(self) -> ClipEmbedder:
        """Load model, tokenizer and image processor (idempotent)."""
        if self.model is not None:
            return self
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        opts = {"local_files_only": self.local_files_only}
        if self.quantization is None:
            self.model = CLIPModel.from_pretrained(self.model_name_or_path, dtype=self.dtype, **opts)
            self.model.to(self.device)
        else:
            require_bitsandbytes(self.quantization)
            self.model = CLIPModel.from_pretrained(
                self.model_name_or_path, dtype=self.dtype, device_map={"": str(self.device)},
                quantization_config=bnb_config(self.quantization, self.dtype), **opts,
            )
        self.model.eval().requires_grad_(False)
        auto = {**opts, "trust_remote_code": self.trust_remote_code}
        self.tokenizer = AutoTokenizer.from_pretrained(self.processor_name_or_path, **auto)
        # the PIL backend whatever is installed (see the module docstring)
        self.image_processor = AutoImageProcessor.from_pretrained(self.processor_name_or_path, backend="pil", **auto)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        return self

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale) of the loaded model."""
        return float(self.load().model.logit_scale.detach().float().exp())

    @torch.no_grad()
    def embed_images(self, images: list[np.ndarray]) -> torch.Tensor:
        """(n, D) float32 L2-normalised image embeddings of uint8 (H, W, 3) images."""
        self.load()
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        feats = _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))).float()
        return torch.nn.functional.normalize(feats, dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, D) float32 L2-normalised text embeddings (padded to the text tower's full length)."""
        self.load()
        tok = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        feats = _pooled(
            self.model.get_text_features(
                input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
            )
        ).float()
        return torch.nn.functional.normalize(feats, dim=-1)

    def cosine(self, images: list[np.ndarray], queries: Sequence[str]) -> torch.Tensor:
        """(n,) cosine similarity of each image with its query (repeated queries embedded once)."""
        unique = list(dict.fromkeys(queries))
        text = self.embed_texts(unique)
        index = torch.as_tensor([unique.index(q) for q in queries], device=text.device)
        img = self.embed_images(images)
        return (img * text[index]).sum(dim=-1)


class ClipSimilarityReward(ModelReward):
    """Base of the CLIP rewards: a lazily built `ClipEmbedder` (optionally with another processor)."""

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        processor_name_or_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.processor_name_or_path = processor_name_or_path
        self.embedder: ClipEmbedder | None = None

    def _build(self) -> None:
        self.embedder = ClipEmbedder(
            self.model_name_or_path,
            processor_name_or_path=self.processor_name_or_path,
            device=self.device,
            dtype=self.dtype,
            local_files_only=self.local_files_only,
            trust_remote_code=self.trust_remote_code,
            quantization=self.quantization,
        ).load()


class ClipScoreReward(ClipSimilarityReward):
    """CLIP image-text cosine similarity (optionally CLIP-S rescaled: ``w * max(cos, 0)``)."""

    name = "clipscore"
    default_model = "openai/clip-vit-large-patch14"

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        rescale: bool = False,
        w: float = 2.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        self.rescale = bool(rescale)
        self.w = float(w)

    def _score_chunk(self, images: list[np.ndarray], queries: list[str]) -> torch.Tensor:
        assert self.embedder is not None
        cos = self.embedder.cosine(images, queries)
        return self.w * cos.clamp_min(0.0) if self.rescale else cos


class PickScoreReward(ClipSimilarityReward):
    """PickScore: ``exp(logit_scale) * cos`` of a CLIP checkpoint fine-tuned on Pick-a-Pic.

    The processor defaults to "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" with the default checkpoint, and
    to the checkpoint's own files when `model_name_or_path` is given.
    """

    name = "pickscore"
    default_model = "yuvalkirstain/PickScore_v1"
    default_processor = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        processor_name_or_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        if processor_name_or_path is None and model_name_or_path is None:
            processor_name_or_path = self.default_processor
        super().__init__(model_name_or_path, processor_name_or_path=processor_name_or_path, **kwargs)

    def _score_chunk(self, images: list[np.ndarray], queries: list[str]) -> torch.Tensor:
        assert self.embedder is not None
        return self.embedder.logit_scale * self.embedder.cosine(images, queries)


def make_clipscore(**kwargs: Any) -> ClipScoreReward:
    """Factory of the CLIP cosine-similarity reward (see `ClipScoreReward` and the module docstring)."""
    return ClipScoreReward(**kwargs)


def make_pickscore(**kwargs: Any) -> PickScoreReward:
    """Factory of the PickScore reward (see `PickScoreReward` and the module docstring)."""
    return PickScoreReward(**kwargs)


__all__ = [
    "ClipEmbedder",
    "ClipScoreReward",
    "ClipSimilarityReward",
    "PickScoreReward",
    "make_clipscore",
    "make_pickscore",
]
