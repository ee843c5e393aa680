"""`LlavaOnevisionImageTextProcessor`: the real `LlavaOnevisionProcessor` for LLaVA-OneVision, without its video
processor.

Why. In transformers 5 without torchvision, `LlavaOnevisionProcessor(...)` cannot be built: `ProcessorMixin.__init__`
checks every attribute the processor declares (read from its `__init__` signature: image_processor, tokenizer,
video_processor), and the check of `video_processor` fails even when it is None (`AttributeError: type object
'VIDEO_PROCESSOR_MAPPING' has no attribute '_extra_content'`), so AutoProcessor cannot load a LLaVA-OneVision folder.

What `LlavaOnevisionImageTextProcessor` changes, and nothing else:

- its `__init__` signature has no `video_processor`, so `ProcessorMixin.get_attributes()` lists only image_processor
  and tokenizer; the body is `LlavaOnevisionProcessor.__init__` itself, called with `video_processor=None` (the mixin
  pairs positional sub-processors with the declared attributes, so the None is never checked or stored);
- what it saves names `LlavaOnevisionProcessor` (processor_config.json and tokenizer_config.json), as a Hub folder of
  the family does; the folder has no video processor config.

Everything else is the real class's: `__call__` (ProcessorMixin's), `replace_image_token`, the anyres image-token
count (`_get_number_of_features`, `_get_unpadded_features`: base image features, then the unpadded tile grid with one
newline feature per row, shrunk past `anyres_max_N`), `_get_num_multimodal_tokens`, the chat template. Videos cannot
be processed (`videos=` is ignored by the mixin without a video processor); the policy sends images only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import LlavaOnevisionProcessor

HUB_PROCESSOR_CLASS = "LlavaOnevisionProcessor"
# the keyword arguments of LlavaOnevisionProcessor besides its sub-processors and the chat template
PROCESSOR_KWARGS = ("num_image_tokens", "vision_feature_select_strategy", "image_token", "video_token",
                    "vision_aspect_ratio")


class LlavaOnevisionImageTextProcessor(LlavaOnevisionProcessor):
    """`LlavaOnevisionProcessor` over an image processor and a tokenizer only (see the module docstring)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, num_image_tokens: int | None = None,
                 vision_feature_select_strategy: str | None = None, chat_template: str | None = None,
                 image_token: str = "<image>", video_token: str = "<video>",
                 vision_aspect_ratio: str = "anyres_max_9", **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer, None, num_image_tokens=num_image_tokens,
                         vision_feature_select_strategy=vision_feature_select_strategy, chat_template=chat_template,
                         image_token=image_token, video_token=video_token, vision_aspect_ratio=vision_aspect_ratio,
                         **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["processor_class"] = HUB_PROCESSOR_CLASS
        return out

    def save_pretrained(self, save_directory: Any, push_to_hub: bool = False, **kwargs: Any) -> Any:
        files = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        self.tokenizer._set_processor_class(HUB_PROCESSOR_CLASS)  # the mixin wrote this class's name there
        self.tokenizer.save_pretrained(save_directory)
        return files


def load_onevision_processor(path: Path, image_processor: Any, tokenizer: Any) -> LlavaOnevisionImageTextProcessor:
    """The processor of a LLaVA-OneVision folder (a Hub folder or one this class saved): its processor settings from
    processor_config.json, the chat template of the tokenizer or of the folder (chat_template.jinja / .json)."""
    kwargs: dict[str, Any] = {}
    cfg_file = path / "processor_config.json"
    if cfg_file.exists():
        cfg = json.loads(cfg_file.read_text())
        kwargs = {k: cfg[k] for k in PROCESSOR_KWARGS if cfg.get(k) is not None}
    chat_template = getattr(tokenizer, "chat_template", None)
    if not chat_template and (path / "chat_template.jinja").exists():
        chat_template = (path / "chat_template.jinja").read_text()
    elif not chat_template and (path / "chat_template.json").exists():
        chat_template = json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return LlavaOnevisionImageTextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                            chat_template=chat_template, **kwargs)
