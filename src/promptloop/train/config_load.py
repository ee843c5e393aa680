"""Loading a `TrainConfig`: strict YAML (duplicate keys are errors), TRL's names translated to the fields they mean,
values coerced to each field's type with errors naming the field, `key=value` overrides.

    cfg = load_config("configs/world.yaml", ["grpo.beta=0.02", "rewards.proxy=0.1", "steps=10"])
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from promptloop.train.config import ConfigError, TrainConfig, yaml_scalar


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML would keep the last one silently)."""


def _mapping_without_duplicates(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base' (its keys may be overridden on purpose)
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key]} and {line})", key_node.start_mark)
            seen[key] = line
        except TypeError:  # an unhashable key: construct_mapping words it
            continue
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


# ----------------------------------------------------------------------------------------------------------------------
# TRL's names
# ----------------------------------------------------------------------------------------------------------------------
# The names a TRL user types in a `trl.GRPOConfig`, and the field each is here. Accepted at the top level (a flat
# TRL-style config) or inside the section of their field (e.g. `grpo: {epsilon: 0.2}`); each use prints one line
# naming the field. `report_to` keeps its name (a list of trackers is accepted as TRL takes it).
TRL_ALIASES: dict[str, str] = {
    "epsilon": "grpo.clip_eps",
    "epsilon_high": "grpo.clip_eps_high",
    "max_completion_length": "policy.max_new_tokens",
    "max_steps": "steps",
    "lr_scheduler_type": "grpo.lr_schedule",
    "report_to": "logging.report_to",
    "learning_rate": "grpo.learning_rate",
    "num_generations": "grpo.num_generations",
    "beta": "grpo.beta",
    "num_iterations": "grpo.num_iterations",
    "scale_rewards": "grpo.scale_rewards",
    "loss_type": "grpo.loss_type",
    "max_grad_norm": "grpo.max_grad_norm",
    "warmup_steps": "grpo.warmup_steps",
    "weight_decay": "grpo.weight_decay",
    "adam_beta1": "grpo.adam_beta1",
    "adam_beta2": "grpo.adam_beta2",
    "adam_epsilon": "grpo.adam_eps",
    "temperature": "policy.temperature",
    "top_p": "policy.top_p",
    "gradient_checkpointing": "policy.gradient_checkpointing",
    "run_name": "logging.run_name",
    "save_steps": "checkpoint.every",
    "save_total_limit": "checkpoint.keep",
    "eval_steps": "eval.every",
    "bf16": "accelerate.mixed_precision",
    "fp16": "accelerate.mixed_precision",
    "use_cpu": "accelerate.cpu",
    "push_to_hub": "hub.push_to_hub",
    "hub_model_id": "hub.hub_model_id",
    "hub_private_repo": "hub.hub_private_repo",
}
# TRL values with another spelling here: lr_scheduler_type "constant_with_warmup" is our "constant" (whose warm-up
# is grpo.warmup_steps), save_total_limit null (keep all) is our 0, bf16 / fp16 true are mixed_precision bf16 / fp16
# (false sets nothing: TRL configs often carry `bf16: true, fp16: false`)
_UNSET = object()
_TRL_VALUES: dict[str, Any] = {
    "lr_scheduler_type": lambda v: "constant" if v == "constant_with_warmup" else v,
    "save_total_limit": lambda v: 0 if v is None else v,
    "bf16": lambda v: "bf16" if v is True else _UNSET if v is False else v,
    "fp16": lambda v: "fp16" if v is True else _UNSET if v is False else v,
}
# TRL names with no one field here, and what to set instead (named in the unknown-key error)
TRL_HINTS: dict[str, str] = {
    "per_device_train_batch_size": "grpo.queries_per_step (queries per step over all processes; each gets "
                                   "grpo.num_generations trajectories) and grpo.micro_batch_size (actions per forward)",
    "gradient_accumulation_steps": "grpo.micro_batch_size (a step's actions are accumulated in micro-batches)",
    "generation_batch_size": "grpo.queries_per_step x grpo.num_generations",
    "num_train_epochs": "steps (data.train is cycled, reshuffled every epoch)",
    "logging_steps": "nothing (every step is logged to metrics.jsonl)",
    "max_prompt_length": "nothing (prompts over 512 policy tokens are skipped)",
}


def translate_trl_names(data: dict[str, Any], where: str = "") -> tuple[dict[str, Any], list[str]]:
    """`data` (a TrainConfig mapping) with TRL's names moved to the fields they mean, and one note per name used.

    A TRL name and its field both given is an error (they would silently disagree)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    notes: list[str] = []
    field_names = {f.name for f in dataclasses.fields(TrainConfig)}

    def move(container: dict[str, Any], key: str, shown: str) -> None:
        target = TRL_ALIASES[key]
        value = container.pop(key)
        value = _TRL_VALUES[key](value) if key in _TRL_VALUES else value
        if value is _UNSET:
            notes.append(f"{shown}: false (TRL's name) sets nothing ({target} stays as configured)")
            return
        section, _, name = target.rpartition(".")
        dest = out if not section else out.setdefault(section, {})
        if not isinstance(dest, dict):
            raise ConfigError(f"{where}{shown} (TRL's name for {target}): {section!r} is not a section")
        if name in dest and dest[name] != value:
            raise ConfigError(f"{where}{shown} (TRL's name) and {target} both given, with different values "
                              f"({value!r} and {dest[name]!r}): keep one")
        dest[name] = value
        notes.append(f"{shown} (TRL's name) sets {target}")

    for key in [k for k in out if k in TRL_ALIASES and k not in field_names]:
        move(out, key, key)
    for section, value in list(out.items()):
        if not isinstance(value, dict):
            continue
        for key in [k for k in value if k in TRL_ALIASES and TRL_ALIASES[k].startswith(section + ".")
                    and TRL_ALIASES[k] != f"{section}.{k}"]:
            move(value, key, f"{section}.{key}")
    return out, notes


def _trl_override(key: str, value: Any, notes: list[str]) -> tuple[str | None, Any]:
    """A `key=value` override by TRL's name (`epsilon=0.3`, `grpo.epsilon=0.3`) as the override of its field
    (key None: an override that sets nothing, such as `fp16=false`)."""
    section, _, name = key.rpartition(".")
    target = TRL_ALIASES.get(name)
    if target is None or target == key or (section and not target.startswith(section + ".")):
        return key, value
    if not section and name in {f.name for f in dataclasses.fields(TrainConfig)}:
        return key, value
    value = _TRL_VALUES[name](value) if name in _TRL_VALUES else value
    if value is _UNSET:  # e.g. fp16=false
        notes.append(f"{key}: false (TRL's name) sets nothing ({target} stays as configured)")
        return None, None
    notes.append(f"{key} (TRL's name) sets {target}")
    return target, value


def _note_trl(notes: list[str]) -> None:
    import sys

    for note in dict.fromkeys(notes):
        print(f"promptloop.train: note: {note}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------------------
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert `value` to the annotated type `tp`; raise ConfigError otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:  # try bool before str so that `true` stays a bool for `bool | str`
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_coerce(k, kt, f"{where} key"): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (et,) = typing.get_args(tp)
        return [_coerce(v, et, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover


def _build(cls: type, data: Any, where: str, source: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    if cls is TrainConfig:
        data, _ = translate_trl_names(data)
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(fields)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            hint = f" (TRL's name; here: {TRL_HINTS[key]})" if key in TRL_HINTS else ""
            raise ConfigError(f"{where}: unknown key {key!r}{' in ' + source if source else ''}{hint}; "
                              f"known keys: {', '.join(names)}")
        name = f"{where}.{key}" if where else key
        aliases = fields[key].metadata.get("aliases") or {}
        # a field's old spellings (e.g. a former bool), matched by type too: 1 is not true
        value = next((new for a, new in aliases.items() if type(a) is type(value) and a == value), value)
        try:
            kwargs[key] = _coerce(value, hints[key], name)
        except ConfigError as e:
            if not aliases:
                raise
            forms = ", ".join(f"{yaml_scalar(a)} = {v!r}" for a, v in aliases.items())
            raise ConfigError(f"{e}; the old forms are also accepted ({forms})") from None
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> list[tuple[str, Any]]:
    """`["grpo.beta=0.1", "rewards.proxy=0.2"]` -> [("grpo.beta", 0.1), ...] (values parsed as YAML)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (dotted keys for nested fields)")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.load(text, Loader=StrictLoader) if text.strip() else None  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
        out.append((key, value))
    return out


def config_from_dict(data: dict[str, Any], source: str = "config", quiet: bool = False) -> TrainConfig:
    """Build and validate a TrainConfig from a nested dict; errors name `source`. TRL's names (`TRL_ALIASES`) are
    accepted, each with one line on stderr naming the field it sets (unless `quiet`)."""
    try:
        cfg = _build(TrainConfig, data, "", source)
        _, notes = translate_trl_names(data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    _expand_paths(cfg)
    cfg.validate(source)
    if not quiet:
        _note_trl(notes)
    return cfg


def _expand_paths(cfg: TrainConfig) -> None:
    """'~' in the path fields means the home folder (not a folder named '~' in the working folder)."""
    cfg.output_dir = os.path.expanduser(cfg.output_dir)
    if isinstance(cfg.resume, str):
        cfg.resume = os.path.expanduser(cfg.resume)
    for sub, key in (("data", "train"), ("data", "eval"), ("policy", "adapter_path"), ("policy", "name_or_path"),
                     ("pipeline", "name_or_path")):
        obj = getattr(cfg, sub)
        value = getattr(obj, key)
        if isinstance(value, str) and value.startswith("~"):
            setattr(obj, key, os.path.expanduser(value))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                quiet: bool = False) -> TrainConfig:
    """Load a YAML config (or the defaults when `path` is None), apply `key=value` overrides, validate. TRL's names
    are accepted in both, each with one line on stderr naming the field it sets (unless `quiet`)."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path).expanduser()
        source = str(p)
        if p.is_dir():
            raise ConfigError(f"config {p}: is a folder, not a YAML file")
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            loaded = yaml.load(p.read_bytes().decode("utf-8"), Loader=StrictLoader)  # noqa: S506 - a SafeLoader
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of fields, got {type(loaded).__name__}")
        data = loaded
    notes: list[str] = []
    if path is not None:
        try:  # unknown keys are reported against the file before the overrides are merged
            _build(TrainConfig, data, "", source)
            data, notes = translate_trl_names(data)  # the file's TRL names as our fields, which overrides then set
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    parsed = parse_overrides(list(overrides))
    for key, value in parsed:
        target, value = _trl_override(key, value, notes)  # an override by TRL's name overrides its field
        if target is None:
            continue
        key = target
        _set_dotted(data, key, value)
        try:
            _build(TrainConfig, data, "", f"override {key}={value!r}")
        except ConfigError as e:
            raise ConfigError(f"override {key}={value!r}: {e}") from None
    if parsed:
        source = f"{source} + overrides"
    cfg = config_from_dict(data, source, quiet)
    if not quiet:
        _note_trl(notes)
    return cfg


