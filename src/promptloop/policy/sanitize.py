"""Sanitation of raw policy output: a bad rewrite falls back to the current prompt, never a crash.

Rules, in order (the first that fires names the reason):

- ``"empty"``: nothing left after stripping whitespace, quotes and a leading ``prompt:`` label;
- ``"garbage"``: no word of two or more letters, or letters make up under 30% of the non-space characters;
- ``"overlong"``: more tokens than the diffusion text encoder's window (``prompt_length_fn(text) >
  max_prompt_tokens``); without a `prompt_length_fn` the length is the number of words and punctuation
  marks (a rough stand-in: pass the diffusion tokenizer's count to be exact);
- ``"invalid"``: the optional `validator` returned False or raised (e.g. the Shapes grammar's `parse`).

Completion format with the negative prompt (the second action, `Sanitizer.parse_completion`): the
prompt on the first line, optionally followed by a line ``Negative: <negative prompt>`` (the label is
case-insensitive; ``Negative prompt:`` works too), in the same single completion, so that GRPO's token
log-probs cover both actions:

    a red cube left of a blue ball, studio light
    Negative: blurry, extra objects

A missing, empty, garbage or overlong negative keeps the negative prompt in force (`negative` is None;
`negative_fallback` says whether a negative line was there but rejected). The `validator` applies to the
prompt only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_WORDISH = re.compile(r"\w+|[^\w\s]")
_LABEL = re.compile(r"^\s*(?:new\s+)?prompt\s*:\s*", re.IGNORECASE)
_NEGATIVE = re.compile(r"^\s*negative(?:\s+prompt)?\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)
NEGATIVE_LABEL = "Negative:"  # the label the policy writes before its negative prompt


def rough_length(text: str) -> int:
    """Number of words and punctuation marks: a tokenizer-free stand-in for a prompt's token count."""
    return len(_WORDISH.findall(text))


def token_length_fn(tokenizer: Any) -> Callable[[str], int]:
    """A prompt-length function counting `tokenizer`'s tokens (e.g. the diffusion pipeline's own).

    Measuring an over-long candidate is the point, so the tokenizer's "longer than the maximum sequence
    length" warning is not raised (`verbose=False`)."""

    def length(text: str) -> int:
        return len(tokenizer(text, verbose=False).input_ids)

    return length


def clean_text(text: str) -> str:
    """Normalise raw output: first non-empty line, no surrounding quotes or label, single spaces."""
    lines = [ln for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    text = lines[0] if lines else ""
    text = _LABEL.sub("", text).strip().strip("\"'`").strip()
    text = re.sub(r"\s+([,.:;!?])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def split_completion(text: str) -> tuple[str, str | None]:
    """(prompt part, negative part or None): the text before the first ``Negative:`` line, and that line's text."""
    match = _NEGATIVE.search(text.replace("\r", "\n"))
    if match is None:
        return text, None
    return text.replace("\r", "\n")[: match.start()], match.group(1)


@dataclass
class Completion:
    """A parsed completion: the prompt action and the optional negative-prompt action."""

    prompt: str  # the prompt to use (the current one on fallback)
    fallback: bool  # the prompt was rejected
    reason: str | None  # why (see the module docstring)
    negative: str | None  # the new negative prompt, None: keep the one in force
    negative_fallback: bool  # a negative line was there but rejected


@dataclass
class Sanitizer:
    """Applies the fallback rules; see the module docstring."""

    max_prompt_tokens: int | None = None
    prompt_length_fn: Callable[[str], int] | None = None
    validator: Callable[[str], object] | None = None

    def check(self, text: str) -> tuple[str, str | None]:
        """Return (cleaned text, None) if acceptable, else (cleaned text, reason)."""
        try:
            cleaned = clean_text(text)
        except Exception:
            return "", "garbage"
        if not cleaned:
            return cleaned, "empty"
        letters = sum(c.isalpha() for c in cleaned)
        non_space = sum(not c.isspace() for c in cleaned)
        if not re.search(r"[^\W\d_]{2,}", cleaned) or letters < 0.3 * non_space:
            return cleaned, "garbage"
        if self.max_prompt_tokens is not None:
            length_fn = self.prompt_length_fn or rough_length
            try:
                n = int(length_fn(cleaned))
            except Exception:
                return cleaned, "overlong"
            if n > self.max_prompt_tokens:
                return cleaned, "overlong"
        if self.validator is not None:
            try:
                ok = self.validator(cleaned)
            except Exception:  # a validator signals rejection by raising
                return cleaned, "invalid"
            if ok is False:
                return cleaned, "invalid"
        return cleaned, None

    def __call__(self, raw: str, current_prompt: str) -> tuple[str, bool, str | None]:
        """(prompt to use, fallback flag, reason): the cleaned raw text, or `current_prompt` on rejection."""
        cleaned, reason = self.check(raw)
        if reason is None:
            return cleaned, False, None
        return current_prompt, True, reason

    def parse_completion(self, raw: str, current_prompt: str) -> Completion:
        """Parse a completion in the documented two-action format (see the module docstring)."""
        prompt_text, negative_text = split_completion(raw)
        prompt, fallback, reason = self(prompt_text, current_prompt)
        if negative_text is None:
            return Completion(prompt, fallback, reason, None, False)
        checker = Sanitizer(self.max_prompt_tokens, self.prompt_length_fn, None)
        negative, negative_reason = checker.check(negative_text)
        if negative_reason is not None:
            return Completion(prompt, fallback, reason, None, True)
        return Completion(prompt, fallback, reason, negative, False)
