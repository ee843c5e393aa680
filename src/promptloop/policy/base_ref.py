"""Where an adapter's base model is: recorded so that the adapter loads from anywhere, and never from the
working folder by accident.

An adapter folder's `promptloop_policy.json` records its base as `base_model` with `base_model_kind`:

- `"registered"`: a name of `registered_bases()` (`"world"`: the default world's shipped policy, assets/world/policy
  of this install; `"world:v3"` and the like: another world's shipped policy, its `DEFAULT_POLICY`), or a tiny
  random policy `"tiny:NAME"` (`VLMPolicy.from_pretrained` builds it), wherever the adapter folder lies;
- `"relative"`: a path relative to the adapter's own folder (`"../policy"`), whatever the working folder;
- `"hub"`: a Hub id (`"Qwen/Qwen2.5-VL-3B-Instruct"`).

`base_model_ref(base, adapter_dir)` chooses the form when saving (a registered name first, then a relative
path for a local folder, else the Hub id) and `resolve_base(adapter_dir, value, kind, where)` reads it back.
Folders written before this (no `base_model_kind`, e.g. `"base_model": "assets/world/policy"`, a path relative
to the working folder of the run that saved them) are read with `kind=None`: a relative path is looked for
next to the adapter folder and in its parent folders (nearest first), never in the working folder; an
absolute path is taken as it is; a Hub-id-shaped name found nowhere is taken as a Hub id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

from promptloop.models import TINY, WORLD, world_policy_path

KINDS = ("registered", "relative", "hub")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")



def registered_bases() -> dict[str, Callable[[], Path]]:
    """Registered base-model names -> the folder each stands for: `world` (the default world's policy) and
    `world:VERSION` for every other registered world that declares a `DEFAULT_POLICY`."""
    from promptloop.world import DEFAULT_WORLD, get_world, world_names

    bases: dict[str, Callable[[], Path]] = {WORLD: world_policy_path}
    for name in world_names():
        world = get_world(name)
        if name != DEFAULT_WORLD and getattr(world, "DEFAULT_POLICY", None) is not None:
            bases[f"{WORLD}:{world.VERSION}"] = partial(world_policy_path, f"{WORLD}:{name}")
    return bases


class BaseModelError(ValueError):
    """An adapter whose recorded base model cannot be found (the message names the folder and the record)."""


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.is_dir() and b.is_dir() and a.resolve() == b.resolve()
    except OSError:
        return False


def base_model_ref(base: str | Path | None, adapter_dir: str | Path) -> tuple[str | None, str | None]:
    """(`base_model`, `base_model_kind`) to record in `adapter_dir` for the base `base` (a folder, a registered
    name or a Hub id); (None, None) when there is no base to record."""
    if base is None or str(base) == "":
        return None, None
    text = str(base)
    bases = registered_bases()
    if text in bases or text.startswith(TINY):
        return text, "registered"
    folder = Path(text).expanduser()
    if folder.is_dir():
        for name, where in bases.items():
            if _same_folder(folder, where()):
                return name, "registered"
        try:
            rel = os.path.relpath(folder.absolute(), Path(adapter_dir).expanduser().absolute())
        except ValueError:  # another drive (Windows): only an absolute path reaches it
            return str(folder.absolute()), "relative"
        return Path(rel).as_posix(), "relative"
    if _HUB_ID.match(text):
        return text, "hub"
    return None, None  # a path that does not exist (e.g. a model built in memory): nothing to record


def resolve_base(adapter_dir: str | Path, value: object, kind: object, where: str) -> str:
    """The base model (a folder path or a Hub id) that an adapter folder's record names; BaseModelError naming
    `where` (the file holding the record) when it cannot be found."""
    adapter_dir = Path(adapter_dir).expanduser().absolute()
    if not isinstance(value, str) or not value.strip():
        raise BaseModelError(f"{where}: base_model: expected the base model's folder, registered name or Hub id, "
                             f"got {value!r}")
    if kind == "registered":
        if value.startswith(TINY):
            return value
        bases = registered_bases()
        if value not in bases:
            raise BaseModelError(f"{where}: base_model {value!r} is not a registered base model (registered: "
                                 f"{', '.join(bases)})")
        folder = bases[value]()
        if not folder.is_dir():
            raise BaseModelError(f"{where}: base_model {value!r} stands for {folder}, which is not a folder")
        return str(folder)
    if kind == "relative":
        folder = Path(os.path.normpath(adapter_dir / value))
        if not folder.is_dir():
            raise BaseModelError(f"{where}: base_model {value!r} (relative to the adapter folder) is {folder}, which "
                                 "is not a folder; load the adapter onto its base with adapter_path=")
        return str(folder)
    if kind == "hub":
        return value
    if kind is not None:
        raise BaseModelError(f"{where}: base_model_kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return _resolve_legacy(adapter_dir, value, where)


def _resolve_legacy(adapter_dir: Path, value: str, where: str) -> str:
    """A base recorded before `base_model_kind` existed (see the module docstring)."""
    if value.startswith(TINY):
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        if path.is_dir():
            return str(path)
        raise BaseModelError(f"{where}: base_model {value!r} is not a folder")
    for parent in (adapter_dir, *adapter_dir.parents):
        if (parent / path).is_dir():
            return str(parent / path)
    if _HUB_ID.match(value) and not value.startswith("."):
        return value
    raise BaseModelError(f"{where}: base_model {value!r} is not found next to {adapter_dir} or in its parent folders "
                         "(an old record, relative to the folder its run was started in); load the adapter onto its "
                         "base with adapter_path=, or re-save it")
