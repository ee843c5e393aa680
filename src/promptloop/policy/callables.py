"""The registry of functions a policy folder's `promptloop_policy.json` may name (nothing else is imported).

A saved policy records its output validator, prompt-length function and decoding-constraint class by
name ("module:qualname"). Loading resolves only names registered here, per field; any other name is an
error naming the folder's file and the field, so a folder cannot make the loader import or call code of
its choosing. Register a new one (at import of the module that defines it) with
`register_policy_callable("validator", fn)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

FIELDS = ("validator", "prompt_length_fn", "constraint")
# the worlds' functions (world v1 under world/shapes/, world v2 under world/patterns/)
_REGISTRY: dict[str, set[str]] = {
    "validator": {"promptloop.world.shapes.grammar:parse", "promptloop.world.patterns.grammar:parse"},
    "prompt_length_fn": {"promptloop.world.shapes.policy_data:minilm_length"},
    "constraint": {"promptloop.world.shapes.copy_constraint:CopyEditConstraint"},
}
# names that policy folders saved before the Shapes world moved into world/shapes/ record, and where they live now
MOVED: dict[str, str] = {
    f"promptloop.world.{ref}": f"promptloop.world.shapes.{ref}"
    for ref in ("grammar:parse", "policy_data:minilm_length", "copy_constraint:CopyEditConstraint")
}


class PolicyCallableError(ValueError):
    """A policy folder names a callable that is not registered (or cannot be imported)."""


def ref_of(fn: Any) -> str:
    """'module:qualname' of a function or class."""
    return f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"


def register_policy_callable(field: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Allow `fn` (a module-level function or class) under `field` of promptloop_policy.json; returns `fn`."""
    if field not in FIELDS:
        raise ValueError(f"unknown policy callable field {field!r}; fields: {', '.join(FIELDS)}")
    ref = ref_of(fn)
    if "<" in ref or "." in ref.split(":", 1)[1]:
        raise ValueError(f"{ref}: only module-level functions and classes can be registered")
    _REGISTRY[field].add(ref)
    return fn


def callable_ref(field: str, fn: Any) -> str | None:
    """The name saved for `fn` under `field`: its ref when registered, else None (not restorable)."""
    if fn is None:
        return None
    ref = ref_of(fn)
    return ref if ref in _REGISTRY[field] else None


def resolve_callable(field: str, ref: Any, where: str) -> Callable[..., Any] | None:
    """The registered callable `ref` names (None for null); PolicyCallableError naming `where` otherwise."""
    if ref is None:
        return None
    ref = MOVED.get(ref, ref) if isinstance(ref, str) else ref
    if not isinstance(ref, str) or ref not in _REGISTRY[field]:
        allowed = ", ".join(sorted(_REGISTRY[field]))
        raise PolicyCallableError(f"{where}: {field} {ref!r} is not a registered policy callable (allowed: {allowed})")
    module, name = ref.split(":", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise PolicyCallableError(f"{where}: {field} {ref!r} cannot be imported ({e})") from None
