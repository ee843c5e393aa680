"""Named fault points of training, for fault-injection tests of resume (no effect unless a hook is set).

The trainer and the checkpoint writer call `fault_point(name, step)` at: "rollout" (after a step's rollout),
"update" (after its optimizer passes), "metrics" (after its metrics row), "checkpoint:policy" (inside a
checkpoint write, after the policy files), "checkpoint:state" (after trainer_state.json, before the
atomic rename) and "checkpoint:replaced" (after the rename, before old checkpoints are pruned). A test
sets `faults.hook` to a function that raises (simulating a kill) at the chosen point.
"""

from __future__ import annotations

from collections.abc import Callable

POINTS = ("rollout", "update", "metrics", "checkpoint:policy", "checkpoint:state", "checkpoint:replaced")
hook: Callable[[str, int], None] | None = None  # called as hook(point, step) at every fault point


class SimulatedCrash(BaseException):
    """Raised by test hooks: a BaseException, so that no `except Exception` cleanup runs (as after a kill)."""


def fault_point(name: str, step: int) -> None:
    """Call the test hook, if any, at the named point of step `step`."""
    if hook is not None:
        hook(name, step)
