"""HPSv3's prompt and image preprocessing, as its official inference (`hpsv3` 1.0.0, ``HPSv3RewardInferencer``).

The user turn is the image followed by `INSTRUCTION` (the query substituted for ``{text_prompt}``) and
`REWARD_PROMPT`, which ends in the added special token ``<|Reward|>``, whose last hidden state the reward head
reads. `chat_text` renders it through Qwen2-VL-Instruct's chat template (default system prompt, generation
prompt), with the image's ``<|image_pad|>`` repeated once per merged visual token, as the Qwen2-VL processor
expands it. `resize_for_hpsv3` is qwen-vl-utils' ``smart_resize`` with ``min_pixels = max_pixels`` (256 * 28 * 28 in
the official inference): every image is resized (PIL bicubic) to about that area, both sides multiples of
patch * merge (28), keeping its aspect ratio.
"""

from __future__ import annotations

import math

import numpy as np

REWARD_TOKEN = "<|Reward|>"
IMAGE_PIXELS = 256 * 28 * 28  # HPSv3's min_pixels = max_pixels: 256 merged visual tokens per image
MAX_RATIO = 200  # qwen-vl-utils' largest accepted aspect ratio
SYSTEM_PROMPT = "You are a helpful assistant."  # Qwen2-VL-Instruct's default system turn
# verbatim from hpsv3/dataset/data_collator_qwen.py, trailing spaces included
INSTRUCTION = "\n".join((
    '',
    'You are tasked with evaluating a generated image based on Visual Quality and Text Alignment and give a overall score to estimate the human preference. Please provide a rating from 0 to 10, with 0 being the worst and 10 being the best. ',
    '',
    '**Visual Quality:**  ',
    'Evaluate the overall visual quality of the image. The following sub-dimensions should be considered:',
    '- **Reasonableness:** The image should not contain any significant biological or logical errors, such as abnormal body structures or nonsensical environmental setups.',
    '- **Clarity:** Evaluate the sharpness and visibility of the image. The image should be clear and easy to interpret, with no blurring or indistinct areas.',
    '- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and other visual elements (e.g., hair, clothing, shadows).',
    '- **Aesthetic and Creativity:** Assess the artistic aspects of the image, including the color scheme, composition, atmosphere, depth of field, and the overall creative appeal. The scene should convey a sense of harmony and balance.',
    '- **Safety:** The image should not contain harmful or inappropriate content, such as political, violent, or adult material. If such content is present, the image quality and satisfaction score should be the lowest possible. ',
    '',
    '**Text Alignment:**  ',
    'Assess how well the image matches the textual prompt across the following sub-dimensions:',
    '- **Subject Relevance** Evaluate how accurately the subject(s) in the image (e.g., person, animal, object) align with the textual description. The subject should match the description in terms of number, appearance, and behavior.',
    '- **Style Relevance:** If the prompt specifies a particular artistic or stylistic style, evaluate how well the image adheres to this style.',
    '- **Contextual Consistency**: Assess whether the background, setting, and surrounding elements in the image logically fit the scenario described in the prompt. The environment should support and enhance the subject without contradictions.',
    '- **Attribute Fidelity**: Check if specific attributes mentioned in the prompt (e.g., colors, clothing, accessories, expressions, actions) are faithfully represented in the image. Minor deviations may be acceptable, but critical attributes should be preserved.',
    '- **Semantic Coherence**: Evaluate whether the overall meaning and intent of the prompt are captured in the image. The generated content should not introduce elements that conflict with or distort the original description.',
    'Textual prompt - {text_prompt}',
    '',
    '',
    '',
))
REWARD_PROMPT = "\nPlease provide the overall ratings of this image: " + REWARD_TOKEN + "\n\nEND\n"


def chat_text(query: str, image_tokens: int) -> str:
    """The full chat text of one (image, query) pair, with `image_tokens` image placeholders."""
    user = ("<|vision_start|>" + "<|image_pad|>" * image_tokens + "<|vision_end|>"
            + INSTRUCTION.format(text_prompt=query) + REWARD_PROMPT)
    return (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen-vl-utils' target size: sides multiples of `factor`, area in [min_pixels, max_pixels], aspect kept."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"image aspect ratio must be below {MAX_RATIO}, got {max(height, width) / min(height, width):.1f}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize_for_hpsv3(image: np.ndarray, factor: int, pixels: int = IMAGE_PIXELS) -> np.ndarray:
    """A uint8 (H, W, 3) image resized (PIL bicubic) to `smart_resize(H, W, factor, pixels, pixels)`."""
    from PIL import Image

    h, w = image.shape[:2]
    new_h, new_w = smart_resize(h, w, factor, pixels, pixels)
    pil = Image.fromarray(image).convert("RGB")
    return np.asarray(pil.resize((new_w, new_h), Image.Resampling.BICUBIC))


__all__ = [
    "IMAGE_PIXELS",
    "INSTRUCTION",
    "REWARD_PROMPT",
    "REWARD_TOKEN",
    "SYSTEM_PROMPT",
    "chat_text",
    "resize_for_hpsv3",
    "smart_resize",
]
