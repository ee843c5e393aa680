"""The registry of functions a policy folder's `promptloop_policy.json` may name (nothing else is imported).

A saved policy records its output validator, prompt-length function and decoding-constraint class by
name ("module:qualname"). Loading resolves only names registered here, per field; any other name is an
error naming the folder's file and the field, so a folder cannot make the loader import or call code of
its choosing. Each embedded world declares the names its policies may record (`POLICY_CALLABLES`) and the old
names of moved ones (`MOVED_CALLABLES`: folders saved before a move still load); register another one (at import
of the module that defines it) with `register_policy_callable("validator", fn)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

FIELDS = ("validator", "prompt_length_fn", "constraint")
_REGISTRY: dict[str, set[str]] = {field: set() for field in FIELDS}  # registered here, besides the worlds' own


def _allowed(field: str) -> set[str]:
    """The names allowed under `field`: those registered here and those the registered worlds declare."""
    from promptloop.world import get_world, world_names

    declared = {ref for name in world_names() for ref in getattr(get_world(name), "POLICY_CALLABLES", {}).get(field, ())}
    return _REGISTRY[field] | declared


def moved_callables() -> dict[str, str]:
    """Old names of moved callables -> their names now, over the registered worlds (`MOVED_CALLABLES`)."""
    from promptloop.world import get_world, world_names

    return {old: new for name in world_names() for old, new in getattr(get_world(name), "MOVED_CALLABLES", {}).items()}


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
    return ref if ref in _allowed(field) else None


def resolve_callable(field: str, ref: Any, where: str) -> Callable[..., Any] | None:
    """The registered callable `ref` names (None for null); PolicyCallableError naming `where` otherwise."""
    if ref is None:
        return None
    ref = moved_callables().get(ref, ref) if isinstance(ref, str) else ref
    allowed_refs = _allowed(field)
    if not isinstance(ref, str) or ref not in allowed_refs:
        allowed = ", ".join(sorted(allowed_refs))
        raise PolicyCallableError(f"{where}: {field} {ref!r} is not a registered policy callable (allowed: {allowed})")
    module, name = ref.split(":", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise PolicyCallableError(f"{where}: {field} {ref!r} cannot be imported ({e})") from None
