"""Validation of a model folder's JSON files: one clear line naming the file and the field, before a library
meets the value (and fails with its own words, a traceback, or a tensor of negative size).

- `check_init_fields(path, data, cls)`: the fields of a diffusers config (unet/vae/text_binder `config.json`,
  `scheduler_config.json`) against the types of `cls.__init__`'s annotations (`int | tuple[int]`, `list[str]`,
  ...); fields the annotations do not describe are left to the library.
- `check_sizes(path, data)`: every integer of a size-like field (`*_size`, `*_channels`, `*_dim`, `num_*`,
  `*_layers`, `layers_per_block`, also inside lists and nested configs) is >= 0.
- `check_fields(path, data, spec)`: the fields of a file we define (`promptloop_policy.json`: `POLICY_FIELDS`)
  against a table of expected types and `validation.LIMITS` kinds.
- `describe_config_error(path, e)`: a library's error about a config file (transformers' strict config
  validation, ...) as one line naming the file and the field.

Every check raises `integrity.ModelFileError` (a ValueError), which the CLI prints as one line.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from promptloop.integrity import ModelFileError
from promptloop.validation import LIMITS, InputError, check_limit

_SIZE_FIELD = re.compile(r"(_size|_channels|_dim|_layers|^num_[a-z_]+|^layers_per_block)$")
_JSON_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "an object", type(None): "null"}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed(annotation: Any) -> tuple[tuple[type, ...], tuple[type, ...] | None] | None:
    """(JSON types a field may hold, JSON types of its list items or None) from a type annotation; None when the
    annotation says nothing checkable (a class, Any, a forward reference)."""
    parts = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    out: list[type] = []
    items: list[type] | None = None
    for a in parts:
        origin = typing.get_origin(a) or a
        if a is type(None):
            out.append(type(None))
        elif origin in (int, float, str, bool, dict):
            out.append(origin)
        elif origin in (tuple, list, Sequence):
            out.append(list)
            args = [x for x in typing.get_args(a) if x is not Ellipsis]
            simple = {x for x in args if x in (int, float, str, bool)}
            if args and len(simple) == 1 and len(set(args)) == 1:
                items = [*(items or []), *simple]
        elif origin is typing.Literal:
            out.extend(type(v) for v in typing.get_args(a))
        else:
            return None
    return tuple(out), (tuple(items) if items else None)


def _matches(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, float):
        return float in allowed or (int in allowed and value.is_integer())
    return any(isinstance(value, t) for t in allowed if t is not float and t is not int and t is not bool)


def _expected(allowed: tuple[type, ...]) -> str:
    names = list(dict.fromkeys(_JSON_NAMES.get(t, t.__name__) for t in allowed))
    return " or ".join(names)


def check_init_fields(path: str | Path, data: Mapping[str, Any], cls: type) -> None:
    """ModelFileError naming `path` and the first field of `data` whose JSON type does not fit the annotation of the
    same-named parameter of `cls.__init__` (a diffusers model or scheduler)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations this Python cannot evaluate: nothing to check against
        return
    params = inspect.signature(cls.__init__).parameters
    for key, value in data.items():
        if key.startswith("_") or key not in params or key not in hints:
            continue
        found = _allowed(hints[key])
        if found is None:
            continue
        allowed, items = found
        if not _matches(value, allowed):
            raise ModelFileError(f"{path}: field {key!r}: expected {_expected(allowed)}, got {_shown(value)}")
        if items is not None and isinstance(value, list):
            for i, item in enumerate(value):
                if not _matches(item, items):
                    raise ModelFileError(f"{path}: field {key!r}[{i}]: expected {_expected(items)}, got "
                                         f"{_shown(item)}")


def check_sizes(path: str | Path, data: Any, prefix: str = "") -> None:
    """ModelFileError naming `path` and the first size-like field (see the module docstring) holding a negative
    integer, at any depth."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            name = f"{prefix}{key}"
            if isinstance(key, str) and _SIZE_FIELD.search(key):
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if isinstance(v, int) and not isinstance(v, bool) and v < 0:
                        raise ModelFileError(f"{path}: field {name!r}: expected a size >= 0, got {_shown(value)}")
            if isinstance(value, Mapping):
                check_sizes(path, value, f"{name}.")


# a field of a file we define: (JSON types, LIMITS kind or None)
FieldSpec = tuple[tuple[type, ...], str | None]


# promptloop_policy.json: each field's JSON types and range (validation.LIMITS kind)
POLICY_FIELDS: dict[str, FieldSpec] = {
    "instruction": ((dict,), None), "temperature": ((float,), "temperature0"), "top_p": ((float,), "top_p"),
    "max_new_tokens": ((int,), "tokens"), "max_prompt_tokens": ((int, type(None)), "tokens"),
    "system_prompt": ((str, type(None)), None), "image_size": ((int, type(None)), "image_side"),
    "base_model": ((str, type(None)), None), "base_model_kind": ((str, type(None)), None),
    **{name: ((str, type(None)), None) for name in ("validator", "prompt_length_fn", "constraint")},
}
INSTRUCTION_FIELDS: dict[str, FieldSpec] = {
    "template": ((str,), None), "image_note": ((str,), None), "no_image_note": ((str,), None),
    "history": ((str,), None), "show_history": ((bool,), None), "negative_note": ((str,), None),
}


def check_fields(path: str | Path, data: Mapping[str, Any], spec: Mapping[str, FieldSpec], prefix: str = "") -> None:
    """ModelFileError naming `path` and the first field of `spec` present in `data` with another JSON type or a
    number outside its `validation.LIMITS` range (`prefix`: the dotted place of `data` in the file)."""
    for key, (allowed, kind) in spec.items():
        if key not in data:
            continue
        value = data[key]
        if not _matches(value, allowed):
            raise ModelFileError(f"{path}: field {prefix + key!r}: expected {_expected(allowed)}, got {_shown(value)}")
        if kind is not None and value is not None and not isinstance(value, bool):
            try:
                check_limit(value, kind, "x")
            except InputError:
                text = LIMITS[kind].text()
                raise ModelFileError(f"{path}: field {prefix + key!r}: expected {'an' if text[0] in 'aeiou' else 'a'} "
                                     f"{text}, got {_shown(value)}") from None


def describe_config_error(path: str | Path, e: BaseException) -> str:
    """One line for a library's error about the config file `path` (transformers' StrictDataclassFieldValidationError
    spreads its message over lines: the field is on the first, the reason on the last)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return f"{path}: {type(e).__name__}"
    field = re.search(r"field '([^']+)'", lines[0])
    reason = lines[-1]
    if field and len(lines) > 1:
        return f"{path}: field {field.group(1)!r}: {reason}"
    return f"{path}: {' '.join(lines)[:300]}"
