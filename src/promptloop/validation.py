"""Checks of user input shared by the CLI, the YAML config and the Python API (no torch at import).

Every check raises `InputError` (a ValueError) whose message names the field and the bad value, so the
CLI prints it as one `promptloop: error: ...` line and the Python API raises it before any work is done:

    check_number(float("nan"), "--guidance", lo=0)      # InputError: --guidance: expected a finite number >= 0, got nan
    check_prompt("a red circle", "query")                 # the prompt, stripped; too long / empty: InputError
    check_device("cuda")                                  # InputError when torch sees no CUDA GPU
    check_limit(1e6, "guidance", "--guidance")            # InputError: ... expected a finite number >= 0 and <= 100

`LIMITS` is the one table of the ranges of every number a user gives (CLI flags, config fields, the app, the
Python API): finite numbers that are absurd (a learning rate of 100, 10^9 images, a seed of 2^64) are refused
before any model loads. `CONFIG_LIMITS` names the kind of each numeric config field; docs/limits.md lists
every flag and field with its range (generated from these tables, see `limits_markdown`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

MAX_PROMPT_WORDS = 200  # longest accepted prompt (training data and queries) in whitespace-separated words
MAX_PROMPT_CHARS = 2000  # longest accepted prompt in characters
MAX_PROMPT_TOKENS = 512  # longest accepted prompt in policy-tokenizer tokens (see check_prompt_tokens)
MIN_IMAGE_SIDE = 8  # smallest image side a reward accepts (pixels)
MAX_IMAGE_SIDE = 4096  # largest image side a reward accepts (pixels)


MAX_SEED = 2**32 - 1  # the largest seed (numpy's range; torch takes it too)
MAX_STEPS = 10**7  # training / optimisation steps
MAX_COUNT = 100_000  # queries, samples or items evaluated in one command


@dataclass(frozen=True)
class Limit:
    """The range of one kind of number: [lo, hi] (open where `lo_open` / `hi_open`), integer or float."""

    lo: float
    hi: float
    what: str
    integer: bool = False
    lo_open: bool = False
    hi_open: bool = False

    def bounds(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "integer": self.integer, "lo_open": self.lo_open,
                "hi_open": self.hi_open}

    def text(self) -> str:
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        kind = "integer" if self.integer else "number"
        return f"{kind} in {left}{_fmt(self.lo)}, {_fmt(self.hi)}{right}"


LIMITS: dict[str, Limit] = {  # kind -> its range (the one place; docs/limits.md lists where each applies)
    "seed": Limit(0, MAX_SEED, "a random seed", integer=True),
    "sampling_steps": Limit(2, 1000, "sampling steps of one image", integer=True),
    "refinements": Limit(0, 999, "prompt refinements during one sampling run (also < sampling steps)", integer=True),
    "guidance": Limit(0, 100, "a classifier-free guidance scale"),
    "images": Limit(1, 4096, "images sampled in one call (a batch)", integer=True),
    "count": Limit(1, MAX_COUNT, "queries, seeds or items a command evaluates", integer=True),
    "count0": Limit(0, MAX_COUNT, "a count where 0 means all or none", integer=True),
    "prompts": Limit(1, 10**9, "prompts taken from a prompt source", integer=True),
    "repeats": Limit(1, 1000, "timed repetitions", integer=True),
    "train_steps": Limit(1, MAX_STEPS, "training steps", integer=True),
    "train_steps0": Limit(0, MAX_STEPS, "training steps or an interval in steps (0: none / off)", integer=True),
    "learning_rate": Limit(0, 1, "a learning rate", lo_open=True),
    "threads": Limit(0, 4096, "CPU threads (0: torch's default)", integer=True),
    "layers": Limit(0, 64, "layers of a small trainable module", integer=True),
    "loss_weight": Limit(0, 1000, "the weight of an auxiliary loss or a KL term"),
    "reward_weight": Limit(-1000, 1000, "the weight of a reward in the total"),
    "timestep_shift": Limit(0, 100, "a sampling schedule's timestep shift (1: unshifted)", lo_open=True),
    "unit": Limit(0, 1, "a fraction or probability"),
    "port": Limit(1, 65535, "a TCP port", integer=True),
    "gpus": Limit(1, 65536, "a GPU count", integer=True),
    "memory_gb": Limit(0, 10**6, "memory in GB", lo_open=True),
    "image_side": Limit(MIN_IMAGE_SIDE, MAX_IMAGE_SIDE, "an image side in pixels", integer=True),
    "tokens": Limit(1, 32768, "a length in tokens", integer=True),
    "lora_rank": Limit(1, 4096, "a LoRA rank or alpha", integer=True),
    "temperature": Limit(0, 100, "a sampling temperature", lo_open=True),
    "temperature0": Limit(0, 100, "a sampling temperature (0: greedy)"),
    "top_p": Limit(0, 1, "a nucleus-sampling threshold", lo_open=True),
    "clip": Limit(0, 10, "a PPO clip range", lo_open=True),
    "iterations": Limit(1, 100, "optimizer passes per batch", integer=True),
    "batch": Limit(1, 4096, "items per forward pass or call", integer=True),
    "beta_adam": Limit(0, 1, "an Adam beta", hi_open=True),
    "epsilon": Limit(0, 1, "a small constant added for stability", lo_open=True),
    "grad_norm": Limit(0, 10**6, "a gradient-clipping norm", lo_open=True),
    "weight_decay": Limit(0, 10, "a weight decay"),
}

CONFIG_LIMITS: dict[str, str] = {  # numeric field of the training config (dotted) -> its kind in LIMITS
    "seed": "seed", "steps": "train_steps",
    "pipeline.num_inference_steps": "sampling_steps", "pipeline.guidance_scale": "guidance",
    "pipeline.height": "image_side", "pipeline.width": "image_side",
    "policy.lora_r": "lora_rank", "policy.lora_alpha": "lora_rank", "policy.temperature": "temperature",
    "policy.top_p": "top_p", "policy.max_new_tokens": "tokens", "policy.max_prompt_tokens": "tokens",
    "loop.num_refinements": "refinements", "loop.preview_size": "image_side",
    "data.max_train_prompts": "prompts",
    "grpo.queries_per_step": "batch", "grpo.num_generations": "batch", "grpo.groups_per_rollout_call": "batch",
    "grpo.num_iterations": "iterations", "grpo.clip_eps": "clip", "grpo.clip_eps_high": "clip",
    "grpo.beta": "loss_weight", "grpo.micro_batch_size": "batch", "grpo.learning_rate": "learning_rate",
    "grpo.weight_decay": "weight_decay", "grpo.adam_beta1": "beta_adam", "grpo.adam_beta2": "beta_adam",
    "grpo.adam_eps": "epsilon", "grpo.max_grad_norm": "grad_norm", "grpo.warmup_steps": "train_steps0",
    "eval.every": "train_steps0", "eval.num_queries": "batch", "eval.seeds_per_query": "batch",
    "eval.num_refinements": "refinements", "eval.trajectories": "count0",
    "checkpoint.every": "train_steps0", "checkpoint.keep": "count0",
    "rewards.*": "reward_weight",
}


class InputError(ValueError):
    """Bad input; the message names the field (a flag, a config key or an argument) and the value."""


def _fmt(x: float) -> str:
    """A number as a user would type it: whole numbers in full (4294967295, not 4.29497e+09)."""
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e16):
        return str(int(x))
    return f"{x:g}"


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {_fmt(lo)}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {_fmt(hi)}")
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
        raise InputError(f"{name}: expected {want}, got {_fmt(value)}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise InputError(f"{name}: expected {want}, got {_fmt(value)}")
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


def check_limit(value: Any, kind: str, name: str) -> Any:
    """`value` checked against `LIMITS[kind]` (finite, in range, an int where the kind is integer); InputError
    naming `name` otherwise."""
    return check_number(value, name, **LIMITS[kind].bounds())


def limit_arg(kind: str, parse: Callable[[str], Any] | None = None) -> Callable[[str], Any]:
    """An argparse `type=` for a number of `LIMITS[kind]`: `parse(text)` first when given (its own wording for the
    values it refuses), then the table's range (argparse adds the flag name)."""
    bounds = LIMITS[kind].bounds()
    first = parse or number_arg(**bounds)

    def check(text: str) -> Any:
        value = first(text)
        try:
            return check_number(value, "value", **bounds)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value: ")) from None

    check.__name__ = getattr(first, "__name__", "number")
    check.limit = kind  # type: ignore[attr-defined]  # read by the docs table (limits_markdown)
    return check


def limits_markdown(uses: dict[str, Iterable[str]]) -> str:
    """docs/limits.md: every kind of `LIMITS` with its range and `uses[kind]` (the flags and fields it applies to)."""
    lines = ["# Ranges of the numbers a user gives", "",
             "Generated from `promptloop.validation.LIMITS` (the one table of ranges) and `CONFIG_LIMITS`; "
             "`tests/test_bad_input.py` checks that this page is current. A value outside its range is refused "
             "with one line naming the flag or field, before any model loads.", "",
             "| kind | range | what | where |", "|---|---|---|---|"]
    for kind, lim in LIMITS.items():
        where = ", ".join(f"`{u}`" for u in sorted(set(uses.get(kind, ())))) or "(the Python API)"
        lines.append(f"| {kind} | {lim.text()} | {lim.what} | {where} |")
    return "\n".join(lines) + "\n"


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
