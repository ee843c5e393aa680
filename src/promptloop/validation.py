"""Checks of user input shared by the CLI, the YAML config and the Python API (no torch at import).

Every check raises `InputError` (a ValueError) whose message names the field and the bad value, so the
CLI prints it as one `promptloop: error: ...` line and the Python API raises it before any work is done:

    check_number(float("nan"), "--guidance", lo=0)      # InputError: --guidance: expected a finite number >= 0, got nan
    check_prompt("a red circle", "query")                 # the prompt, stripped; too long / empty: InputError
    check_device("cuda")                                  # InputError when torch sees no CUDA GPU
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

MAX_PROMPT_WORDS = 200  # longest accepted prompt (training data and queries) in whitespace-separated words
MAX_PROMPT_CHARS = 2000  # longest accepted prompt in characters
MAX_PROMPT_TOKENS = 512  # longest accepted prompt in policy-tokenizer tokens (see check_prompt_tokens)
MIN_IMAGE_SIDE = 8  # smallest image side a reward accepts (pixels)
MAX_IMAGE_SIDE = 4096  # largest image side a reward accepts (pixels)


class InputError(ValueError):
    """Bad input; the message names the field (a flag, a config key or an argument) and the value."""


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return (" " + " and ".join(parts)) if parts else ""


def check_number(value: Any, name: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                 hi_open: bool = False, integer: bool = False) -> Any:
    """`value` as a finite float (an int when `integer`) within the bounds; else InputError naming `name`."""
    kind = "an integer" if integer else "a finite number"
    want = f"{kind}{_range_text(lo, hi, lo_open, hi_open)}"
    if isinstance(value, bool):
        raise InputError(f"{name}: expected {want}, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            raise InputError(f"{name}: expected {want}, got {value!r}") from None
    if integer:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise InputError(f"{name}: expected {want}, got {value!r}")
    else:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{name}: expected {want}, got {value!r}") from None
        if not math.isfinite(value):
            raise InputError(f"{name}: expected {want}, got {value}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise InputError(f"{name}: expected {want}, got {value:g}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise InputError(f"{name}: expected {want}, got {value:g}")
    return value


def number_arg(**bounds: Any) -> Callable[[str], Any]:
    """An argparse `type=` that applies `check_number(text, ..., **bounds)` (argparse adds the flag name)."""

    def parse(text: str) -> Any:
        try:
            return check_number(text, "value", **bounds)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value: ")) from None

    parse.__name__ = "integer" if bounds.get("integer") else "number"
    return parse


def check_prompt(text: Any, name: str, max_words: int = MAX_PROMPT_WORDS, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """A prompt stripped of surrounding blanks; empty, non-text, NUL-holding or overlong prompts: InputError."""
    if not isinstance(text, str):
        raise InputError(f"{name}: expected a text prompt, got {type(text).__name__}")
    s = text.strip()
    if not s:
        raise InputError(f"{name}: the prompt is empty")
    if "\x00" in s:
        raise InputError(f"{name}: NUL byte in the prompt")
    if any("\ud800" <= ch <= "\udfff" for ch in s):
        raise InputError(f"{name}: the prompt is not valid UTF-8 text")
    words = len(s.split())
    if words > max_words:
        raise InputError(f"{name}: the prompt has {words} words, the limit is {max_words}")
    if len(s) > max_chars:
        raise InputError(f"{name}: the prompt has {len(s)} characters, the limit is {max_chars}")
    return s


def check_prompt_tokens(prompts: list[str], tokenizer: Any, name: str, max_tokens: int = MAX_PROMPT_TOKENS) -> None:
    """InputError naming the first prompt longer than `max_tokens` tokens of `tokenizer` (a HF tokenizer)."""
    for i, p in enumerate(prompts):
        n = len(tokenizer(p, add_special_tokens=False)["input_ids"])
        if n > max_tokens:
            raise InputError(f"{name}: prompt {i + 1} has {n} tokens, the limit is {max_tokens} ({p[:40]!r}...)")


def check_device(device: str, name: str = "--device") -> str:
    """'auto' or a torch device string that exists on this machine (torch imported only when needed)."""
    if device in ("auto", "cpu"):
        return device
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"{name}: unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{name} {device}: no CUDA GPU is available here (torch.cuda.is_available() is False); "
                             "use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"{name} {device}: only {torch.cuda.device_count()} CUDA device(s) are available")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{name} {device}: MPS is not available here; use --device cpu or auto")
    elif dev.type not in ("cuda", "mps", "cpu"):
        raise InputError(f"{name}: unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def check_image_size(height: int, width: int, name: str) -> None:
    """InputError when an image side lies outside [MIN_IMAGE_SIDE, MAX_IMAGE_SIDE] pixels."""
    for side, v in (("height", height), ("width", width)):
        if not MIN_IMAGE_SIDE <= int(v) <= MAX_IMAGE_SIDE:
            raise InputError(f"{name}: image {side} {v} px is outside {MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} px")
