"""Argument types and the parser class of the `promptloop` command line (no torch at import).

Every number flag checks its range in `validation.LIMITS` (docs/limits.md); the first parser words the lower bound.
"""

from __future__ import annotations

import argparse

from promptloop.validation import InputError, check_limit, limit_arg, number_arg


class UsageError(Exception):
    """Bad input from the command line (reported as one line, exit code 2)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with errors as one line `promptloop: error: ...` and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"promptloop: error: {self.prog.removeprefix('promptloop').strip() + ': ' if self.prog != 'promptloop' else ''}{message}\n")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return v


def non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative finite number, got {text}")
    return v


def unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return v


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


GUIDANCE = limit_arg("guidance", number_arg(lo=0.0))  # a CFG scale: finite, >= 0, at most LIMITS["guidance"]
SEED = limit_arg("seed", non_negative_int)
TEMPERATURE = limit_arg("temperature0", number_arg(lo=0.0))  # a rewrite temperature: finite, >= 0 (0: greedy decoding)
COUNT = limit_arg("count", positive_int)
SAMPLING_STEPS = limit_arg("sampling_steps", positive_int)
TRAIN_STEPS = limit_arg("train_steps", positive_int)
TRAIN_STEPS0 = limit_arg("train_steps0", non_negative_int)


def gpu_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    for v in values:
        try:
            check_limit(v, "gpus", "GPU count")
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return values


gpu_list.limit = "gpus"  # type: ignore[attr-defined]  # each value checked against LIMITS["gpus"]
