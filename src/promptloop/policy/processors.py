"""The processors `VLMPolicy` loads per model family (images and text into model inputs).

LLaVA-style models (and any model whose `AutoProcessor` works) use their own processor. Qwen2-VL / Qwen2.5-VL /
Qwen3-VL processors cannot be built without torchvision in this transformers version, so
`QwenVLComponentProcessor` stands in: the PIL image processor, `<|image_pad|>` repeated
`grid_thw.prod() / merge_size**2` times, and `mm_token_type_ids` (1 on image tokens) for the 3-D RoPE. SmolVLM
(whose `SmolVLMProcessor` needs torchvision for its video processor) goes through `Idefics3Processor`, which writes
the same image prompt; LLaVA-OneVision (same obstacle) through `LlavaOnevisionImageTextProcessor`
(`promptloop.policy.onevision`: the real `LlavaOnevisionProcessor` with only its image processor and tokenizer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image


class QwenVLComponentProcessor:
    """Stands in for `Qwen2_5_VLProcessor` (which needs torchvision): PIL image processor + tokenizer.

    `__call__(text=[...], images=[...])` expands each `<|image_pad|>` in the text to
    `grid_thw.prod() // merge_size**2` copies and returns input_ids, attention_mask, pixel_values,
    image_grid_thw and mm_token_type_ids (0 text, 1 image), as the real processor does.
    """

    image_token = "<|image_pad|>"

    def __init__(self, image_processor: Any, tokenizer: Any, chat_template: str | None = None) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.merge_size = int(getattr(image_processor, "merge_size", 2))

    def __call__(
        self, text: Sequence[str], images: Sequence[Image.Image] | None = None, padding: bool = True,
        return_tensors: str = "pt", **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        texts = list(text)
        out: dict[str, torch.Tensor] = {}
        if images:
            img = self.image_processor(images=list(images), return_tensors="pt")
            grid = img["image_grid_thw"]
            out["pixel_values"] = img["pixel_values"]
            out["image_grid_thw"] = grid
            k = 0
            expanded = []
            for t in texts:
                while self.image_token in t:
                    n = int(grid[k].prod()) // self.merge_size**2
                    t = t.replace(self.image_token, "<|placeholder|>" * n, 1)
                    k += 1
                expanded.append(t.replace("<|placeholder|>", self.image_token))
            if k != len(grid):
                raise ValueError(f"{len(grid)} images for {k} image tokens in the text")
            texts = expanded
        enc = self.tokenizer(texts, padding=padding, return_tensors=return_tensors)
        out["input_ids"] = enc["input_ids"]
        out["attention_mask"] = enc["attention_mask"]
        out["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).long()
        return out

    def apply_chat_template(self, messages: Any, **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        self.image_processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


def _chat_template(path: Path, tokenizer: Any) -> str | None:
    """The tokenizer's chat template, else the folder's `chat_template.jinja` / `chat_template.json` (None: none)."""
    chat_template = getattr(tokenizer, "chat_template", None)
    if not chat_template and (path / "chat_template.jinja").exists():
        chat_template = (path / "chat_template.jinja").read_text()
    elif not chat_template and (path / "chat_template.json").exists():
        chat_template = json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return chat_template


def load_processor(path: Path, model: Any, tokenizer: Any, trust_remote_code: bool) -> Any:
    """The processor of a model folder: the family's own (`AutoProcessor`) where it can be built; for Qwen-VL
    without torchvision `QwenVLComponentProcessor`; for SmolVLM / Idefics3 `Idefics3Processor`; for
    LLaVA-OneVision `LlavaOnevisionImageTextProcessor`; otherwise a `LlavaProcessor` over the PIL image processor."""
    model_type = str(getattr(model.config, "model_type", ""))
    if re.match(r"qwen\d?(_\d)?_vl", model_type):
        try:
            from transformers import AutoProcessor

            proc = AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
            if callable(proc) and hasattr(proc, "image_processor"):
                return proc
        except Exception:  # no torchvision: fall back to the component set below
            pass
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        chat_template = _chat_template(path, tokenizer)
        if chat_template:
            tokenizer.chat_template = chat_template
        return QwenVLComponentProcessor(Qwen2VLImageProcessorPil.from_pretrained(str(path)), tokenizer,
                                        chat_template=chat_template)
    from transformers import AutoProcessor

    try:
        proc = AutoProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception:
        from transformers import AutoImageProcessor, LlavaProcessor

        image_processor = AutoImageProcessor.from_pretrained(str(path), backend="pil")
        if model_type in ("smolvlm", "idefics3"):  # SmolVLMProcessor: its video processor needs torchvision
            return _idefics3_processor(path, model, image_processor, tokenizer)
        if model_type == "llava_onevision":  # LlavaOnevisionProcessor: likewise
            from promptloop.policy.onevision import load_onevision_processor

            return load_onevision_processor(path, image_processor, tokenizer)
        proc = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                              chat_template=getattr(tokenizer, "chat_template", None))
    return proc


def _idefics3_processor(path: Path, model: Any, image_processor: Any, tokenizer: Any) -> Any:
    """`Idefics3Processor` for a SmolVLM / Idefics3 folder: it writes the same image prompt as `SmolVLMProcessor`
    (tiles in `<fake_token_around_image>` with `<row_i_col_j>`, then `<global-img>`) for images; the chat template
    is the tokenizer's or the folder's `chat_template.jinja` / `chat_template.json`."""
    from transformers import Idefics3Processor

    chat_template = _chat_template(path, tokenizer)
    vision = model.config.vision_config
    seq_len = (int(vision.image_size) // int(vision.patch_size)) ** 2 // int(model.config.scale_factor) ** 2
    return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=seq_len,
                             chat_template=chat_template)
