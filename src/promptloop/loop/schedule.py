"""Refinement schedules: at which denoising-loop steps the prompt is rewritten.

A refinement "at step i" happens right after the scheduler step i (0-based loop index): the policy
sees the x0 estimate of step i and its prompt conditions steps i+1, i+2, ... So valid steps are
0 .. num_steps - 2 (a rewrite after the last step would condition nothing), and the progress reported
to the policy is (i + 1) / num_steps, the fraction of sampling already done.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

SCHEDULE_KINDS = ("uniform", "random")


def uniform_schedule(num_steps: int, num_refinements: int) -> list[int]:
    """`num_refinements` steps equally spaced strictly inside the trajectory.

    Step k (1-based) sits after a fraction k / (num_refinements + 1) of the steps, e.g. 50 steps, 5 refinements
    -> [7, 16, 24, 32, 41].
    """
    _check_counts(num_steps, num_refinements)
    steps = [round(k * num_steps / (num_refinements + 1)) - 1 for k in range(1, num_refinements + 1)]
    # rounding can collide for dense schedules: push forward, staying inside [0, num_steps - 2]
    out: list[int] = []
    for s in steps:
        s = max(s, out[-1] + 1 if out else 0)
        out.append(s)
    if out and out[-1] > num_steps - 2:  # only when num_refinements == num_steps - 1: use every step
        out = list(range(num_steps - 1 - num_refinements, num_steps - 1))
    return out


def random_schedule(num_steps: int, num_refinements: int, seed: int | random.Random | None = None) -> list[int]:
    """`num_refinements` distinct steps drawn uniformly from 0 .. num_steps - 2 (seeded), sorted."""
    _check_counts(num_steps, num_refinements)
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    return sorted(rng.sample(range(num_steps - 1), num_refinements))


def validate_schedule(num_steps: int, steps: Sequence[int]) -> list[int]:
    """Check an explicit list of refinement steps: ints, distinct, within 0 .. num_steps - 2. Returns it sorted."""
    out = []
    for s in steps:
        if isinstance(s, bool) or not isinstance(s, int):
            raise ValueError(f"refinement steps must be ints, got {s!r}")
        if not 0 <= s <= num_steps - 2:
            raise ValueError(
                f"refinement step {s} is out of range for {num_steps} sampling steps (valid: 0..{num_steps - 2}; "
                "a refinement at step i conditions steps i+1 onwards)"
            )
        out.append(s)
    if len(set(out)) != len(out):
        raise ValueError(f"refinement steps must be distinct, got {list(steps)}")
    return sorted(out)


def make_schedule(
    num_steps: int,
    num_refinements: int | None = None,
    *,
    kind: str = "uniform",
    steps: Sequence[int] | None = None,
    seed: int | random.Random | None = None,
) -> list[int]:
    """The refinement steps for one sampling call.

    Either an explicit `steps` list (validated; `num_refinements`, if also given, must match its length) or
    `num_refinements` steps by `kind`: "uniform" (inference) or "random" (training; seeded by `seed`).
    """
    if steps is not None:
        validated = validate_schedule(num_steps, steps)
        if num_refinements is not None and num_refinements != len(validated):
            raise ValueError(f"num_refinements={num_refinements} but {len(validated)} refinement steps were given")
        return validated
    if num_refinements is None:
        raise ValueError("give num_refinements or an explicit list of refinement steps")
    if kind == "uniform":
        return uniform_schedule(num_steps, num_refinements)
    if kind == "random":
        return random_schedule(num_steps, num_refinements, seed)
    raise ValueError(f"unknown schedule kind {kind!r}; choose from {SCHEDULE_KINDS}")


def _check_counts(num_steps: int, num_refinements: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if isinstance(num_refinements, bool) or not isinstance(num_refinements, int) or num_refinements < 0:
        raise ValueError(f"num_refinements must be a non-negative int, got {num_refinements!r}")
    if num_refinements > num_steps - 1:
        raise ValueError(
            f"{num_refinements} refinements do not fit in {num_steps} sampling steps "
            f"(at most {max(num_steps - 1, 0)}: a refinement after the last step would condition nothing)"
        )
