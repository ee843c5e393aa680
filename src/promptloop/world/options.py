"""Command-line options of the worlds' measurement commands (`promptloop world backbone-eval | room`).

Each world lists the options its commands take beyond the common ones (backbone, n, seed, steps, guidance, eta;
room: seeds, candidates) as `WorldOption`s in `BACKBONE_EVAL_OPTIONS` and `ROOM_OPTIONS`; the options several
worlds share are defined here once. The command line offers every registered world's options and refuses, with the
world's own list, one the chosen world does not take. Building them imports no torch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from promptloop.cli_args import positive_float
from promptloop.validation import InputError, check_number, limit_arg


@dataclass(frozen=True)
class WorldOption:
    flag: str  # what the user types, e.g. "--rules"; the keyword argument of the command is its dest
    help: str  # the help line (the command line prefixes the worlds that take it when not all do)
    kwargs: dict[str, Any] = field(default_factory=dict)  # argparse keywords: type, default, choices, nargs, ...

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


def rule_names(text: str) -> tuple[str, ...]:
    """Comma-separated rule names; the world's room checks them against its own rules."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated rule names, got {text!r}")
    return names


def fraction_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(check_number(v, "fraction", lo=0.0, hi=1.0, lo_open=True, hi_open=True) for v in text.split(","))
    except InputError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions in (0, 1), got {text!r}") from None


TIMESTEP_SHIFT = WorldOption("--timestep-shift", "sampling schedule's timestep shift (default: the backbone's own; "
                             "1 = unshifted)", {"type": limit_arg("timestep_shift", positive_float), "default": None})
GUIDANCE_FROM = WorldOption("--guidance-from", "guide only from this fraction of sampling on, the steps before it "
                            "unguided (a guidance interval; 0, the default: guided throughout)",
                            {"type": limit_arg("unit"), "default": 0.0, "metavar": "F"})
FRACTIONS = WorldOption("--fractions", "fractions of sampling at which the rules switch / the window is measured (the "
                        "world's default when not given)", {"type": fraction_list, "default": None, "metavar": "F,F"})
RULES = WorldOption("--rules", "the preview-reading rule policies and blind controls (cross-fitted, with CIs) it always "
                    "measures; NAMES (comma-separated) keeps a subset",
                    {"type": rule_names, "nargs": "?", "const": (), "default": None, "metavar": "NAMES"})
PHRASES = WorldOption("--phrases", "also try every fixed colour with each backdrop phrase no caption is trained on, "
                      "and report the fair bound over them all (whether naming a backdrop up front could stand in for "
                      "reading it)", {"action": "store_true", "default": False})
SPLIT = WorldOption("--split", "prompt set (default heldout)", {"default": None, "choices": ["train", "heldout"]})

__all__ = ["FRACTIONS", "GUIDANCE_FROM", "PHRASES", "RULES", "SPLIT", "TIMESTEP_SHIFT", "WorldOption", "fraction_list", "rule_names"]
