"""Training configuration: dataclasses loaded from YAML with `key=value` command-line overrides.

Every field carries a one-line help text (`field(metadata={"help": ...})`); `dump_yaml(config)` writes a
YAML file with that help as a comment after each field. Loading validates strictly: an unknown key is
an error naming the key and the file, a value of the wrong type or out of range is an error naming the
field (`ConfigError`, a ValueError).

    cfg = load_config("configs/world.yaml", ["grpo.beta=0.02", "rewards.proxy=0.1", "steps=10"])
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from promptloop.models import parse_model_ref
from promptloop.validation import CONFIG_LIMITS, InputError, check_limit, check_number

MAX_TRAJECTORIES_PER_STEP = 4096  # queries_per_step x num_generations above this is surely a typo
MAX_MICRO_BATCH = 1024  # refinement actions per forward pass

class ConfigError(ValueError):
    """A configuration error; the message names the file (or override) and the field."""


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


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - mirrors argparse's wording
    """A dataclass field with a default and a one-line help text."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class PipelineConfig:
    """The frozen diffusion pipeline that renders the images."""

    name_or_path: str = _f("tiny:sd", "diffusers folder or hub id; 'world' / 'world:PATH' for the Shapes-world "
                                       "backbone; 'tiny:sd|sdxl|sd3|flux' for random test pipelines")
    dtype: Literal["float32", "bfloat16", "float16"] = _f("float32", "dtype of the pipeline weights")
    variant: str | None = _f(None, "weights variant to load from the hub (e.g. 'fp16'), null for the default")
    revision: str | None = _f(None, "Hub branch, tag or commit of the pipeline (null: the default branch)")
    offload: Literal["none", "model"] = _f("none", "'model': diffusers' model CPU offload (each component moved to "
                                                   "this process's device only while it runs; less GPU memory, slower)")
    num_inference_steps: int = _f(20, "sampling steps per image")
    guidance_scale: float | None = _f(None, "classifier-free guidance scale (null: the pipeline's default)")
    height: int | None = _f(None, "image height in pixels (null: the pipeline's default)")
    width: int | None = _f(None, "image width in pixels (null: the pipeline's default)")
    negative_prompt: str | None = _f(None, "negative prompt for every sample (null: none)")


@dataclass
class PolicyConfig:
    """The VLM refinement policy being trained."""

    name_or_path: str = _f("tiny:llava", "VLMPolicy folder or hub id; 'world' for assets/world/policy; "
                                          "'tiny:llava|qwen25vl|qwen2vl|qwen3vl' for random test policies")
    adapter_path: str | None = _f(None, "an existing LoRA adapter to start from (null: a fresh one)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto", "dtype of the policy weights (auto: float32 on CPU, checkpoint dtype on GPU)")
    trust_remote_code: bool = _f(False, "run the checkpoint's own Python code (only for repos you trust)")
    revision: str | None = _f(None, "Hub branch, tag or commit of the policy (null: the default branch)")
    attn_implementation: str | None = _f(None, "eager / sdpa / flash_attention_2 (null: transformers' default)")
    device_map: str | None = _f(None, "transformers device_map, e.g. 'auto' (null: load straight onto this "
                                      "process's device)")
    quantization: Literal["none", "8bit", "4bit"] = _f(
        "none", "LoRA runs: load the frozen base (and so the KL reference, the base with the adapter off) in 8 / 4 "
                "bit with bitsandbytes (QLoRA; pip install bitsandbytes); none: the policy dtype")
    finetune: Literal["lora", "full"] = _f("lora", "train a LoRA adapter or all weights")
    lora_r: int = _f(8, "LoRA rank")
    lora_alpha: int = _f(16, "LoRA alpha (scale = alpha / r)")
    lora_target_modules: str | None = _f(None, "regex of modules to adapt (null: the LM's attention projections)")
    temperature: float = _f(1.0, "sampling temperature of the rewrites (also used for all log-probs)")
    top_p: float = _f(1.0, "nucleus sampling threshold (not part of the log-prob definition)")
    max_new_tokens: int | None = _f(None, "longest rewrite in tokens (null: the policy's own setting)")
    max_prompt_tokens: int | None = _f(None, "longest accepted rewrite in diffusion-tokenizer tokens "
                                             "(null: the policy's own setting)")
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass to save memory")


@dataclass
class LoopConfig:
    """How the sampler calls the policy during a rollout."""

    mode: Literal["feedback", "no-feedback", "feed-forward"] = _f("feedback", "refinement mode of the sampler")
    num_refinements: int = _f(3, "refinements per trajectory (K); drawn at random steps during training")
    preview: Literal["vae", "vae-lowres"] = _f("vae", "how x0 previews are decoded")
    preview_size: int | None = _f(None, "longest side of the previews in pixels (null: full resolution)")
    rewrite_first: bool = _f(False, "feedback mode: also rewrite the query once before sampling, without a preview "
                                    "(an extra action at step -1)")


@dataclass
class DataConfig:
    """Where the training and evaluation queries come from."""

    train: str = _f("world:train", "training prompts: a .txt/.jsonl/.csv file, 'world:train', 'world:heldout' "
                                   "or 'hf:NAME[:SPLIT[:COLUMN]]'")
    eval: str | None = _f("world:heldout", "evaluation prompts (same forms; null: no evaluation)")
    column: str | None = _f(None, "field holding the prompt in .jsonl/.csv/hf sources (null: prompt, caption or text)")
    max_train_prompts: int | None = _f(None, "use only the first N training prompts (null: all)")
    shuffle: bool = _f(True, "reshuffle the training prompts every epoch (seeded)")


@dataclass
class GRPOSettings:
    """Group-relative policy optimisation."""

    queries_per_step: int = _f(4, "queries per GRPO step over all processes (divisible by the process count)")
    num_generations: int = _f(4, "trajectories per query (G)")
    shared_noise: bool = _f(False, "the G trajectories of a query share one initial noise (common random numbers): "
                                   "advantages then compare prompts, not seeds")
    groups_per_rollout_call: int = _f(1, "query groups per sampler call (per-process group counts should be a "
                                         "multiple of it for identical results across process counts)")
    num_iterations: int = _f(1, "optimizer passes per rollout batch (mu); pass 1 is exactly on-policy")
    clip_eps: float = _f(0.2, "PPO clip range below 1 (ratio >= 1 - clip_eps)")
    clip_eps_high: float | None = _f(None, "PPO clip range above 1 (null: clip_eps)")
    beta: float = _f(0.04, "weight of the k3 estimator exp(r-n)-(r-n)-1 of KL(policy || reference) per token, "
                           "added to the loss (0: no reference pass)")
    scale_rewards: Literal["group", "batch", "none"] = _f(
        "group", "std dividing the group-centred rewards: group, batch (all rewards of the step) or none (Dr. GRPO); "
                 "old configs' true / false mean group / none", aliases={True: "group", False: "none"})
    loss_type: Literal["dapo", "grpo", "dr_grpo"] = _f("dapo", "token aggregation: dapo = mean over all tokens, "
                                                               "grpo = per-rewrite mean then mean, dr_grpo = "
                                                               "sum / (rewrites * max_new_tokens)")
    micro_batch_size: int = _f(8, "refinement actions per forward/backward pass (gradient accumulation)")
    recompute_old_logprobs: bool = _f(False, "ignored (kept for old configs): old log-probs always come from "
                                              "the first update pass's own forward, so its ratio is exactly 1")
    learning_rate: float = _f(1e-4, "peak learning rate of AdamW")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_eps: float = _f(1e-8, "AdamW epsilon")
    max_grad_norm: float | None = _f(1.0, "gradient clipping norm (null: no clipping)")
    lr_schedule: Literal["constant", "linear", "cosine"] = _f("constant", "learning-rate decay after warm-up")
    warmup_steps: int = _f(0, "optimizer steps of linear warm-up")


@dataclass
class EvalConfig:
    """Periodic held-out evaluation (over-optimisation monitor)."""

    every: int = _f(0, "evaluate every N steps and at the end (0: never)")
    num_queries: int = _f(8, "held-out queries per evaluation (first N of data.eval)")
    seeds_per_query: int = _f(1, "images per held-out query")
    num_refinements: int | None = _f(None, "refinements at evaluation, equally spaced (null: loop.num_refinements)")
    alignment: Literal["auto", "always", "never"] = _f("auto", "also report the world's alignment reward: auto = "
                                                               "when every eval query parses as a world query")
    trajectories: int = _f(4, "trajectories drawn per evaluation (previews + prompts + reward) to "
                              "OUTPUT_DIR/trajectories/step_N.png/.json and the tracker (0: none)")
    base_row: bool = _f(True, "also score the plain pipeline on the same queries and seeds (eval/base/..., once per "
                              "run) and report the policy's margin over it (eval/KEY/minus_base)")


TRACKERS = ("tensorboard", "wandb", "trackio")  # Accelerate trackers `logging.report_to` may name


@dataclass
class LoggingConfig:
    """Progress bar, metrics files, trackers, plots."""

    report_to: str | list[str] = _f(
        "none", "Accelerate tracker(s) besides metrics.jsonl: none, tensorboard, wandb or trackio, or a list of them "
                "(as TRL's report_to; trackio: local-first, pip install trackio)")
    project_name: str = _f("promptloop", "tracker project name")
    run_name: str | None = _f(None, "name of the run in the tracker (null: the output_dir's folder name)")
    tags: list[str] = _f([], "tags of the run in the tracker (wandb / trackio)")
    progress_bar: bool = _f(True, "show a tqdm progress bar (main process)")
    plot: bool = _f(True, "write reward_curve.png at the end")

    def trackers(self) -> list[str]:
        """The trackers `report_to` names, in order, without "none" (empty: metrics.jsonl only)."""
        names = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        return list(dict.fromkeys(n for n in names if n != "none"))


@dataclass
class CheckpointConfig:
    """Checkpointing and resume."""

    every: int = _f(0, "save a checkpoint every N steps and at the end (0: only at the end)")
    keep: int = _f(2, "checkpoints kept (older ones are deleted; 0 keeps all)")
    save_final_policy: bool = _f(True, "save the trained policy to OUTPUT_DIR/policy at the end")


@dataclass
class HubConfig:
    """Publishing the trained policy on the Hugging Face Hub (names as in TRL / transformers)."""

    push_to_hub: bool = _f(False, "at the end, push OUTPUT_DIR/policy (weights, policy JSON, manifest, model card with "
                                  "metrics and a trajectory strip) to the Hub repo hub_model_id")
    hub_model_id: str | None = _f(None, "the Hub repo, 'owner/name' or 'name' in your namespace (null: the "
                                        "output_dir's folder name)")
    hub_private_repo: bool | None = _f(None, "create the repo private (null: the Hub's default)")


@dataclass
class AccelerateConfig:
    """Accelerate settings."""

    mixed_precision: Literal["no", "bf16", "fp16"] = _f("no", "autocast precision of the policy (fp16 needs CUDA)")
    cpu: bool = _f(False, "force CPU even when a GPU is present")


@dataclass
class TrainConfig:
    """A PromptLoop GRPO run."""

    output_dir: str = _f("runs/promptloop", "folder for metrics.jsonl, checkpoints, plots and the final policy")
    seed: int = _f(0, "seed of everything (data order, sampling seeds, schedules)")
    steps: int = _f(10, "GRPO steps (one rollout batch + mu optimizer passes each)")
    resume: bool | str = _f(False, "true: continue from the latest checkpoint in output_dir (if any); "
                                   "a path: that checkpoint")
    overwrite: bool = _f(False, "start afresh even if output_dir holds checkpoints (they are deleted)")
    rewards: dict[str, float] = _f({"alignment": 1.0}, "named rewards and their weights; the terminal reward "
                                                        "is the weighted sum, judged against the original query")
    reward_kwargs: dict[str, dict[str, Any]] = _f({}, "options per reward name, passed to its factory")
    pipeline: PipelineConfig = field(default_factory=PipelineConfig, metadata={"help": "the frozen diffusion pipeline"})
    policy: PolicyConfig = field(default_factory=PolicyConfig, metadata={"help": "the VLM policy"})
    loop: LoopConfig = field(default_factory=LoopConfig, metadata={"help": "the refinement loop"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "prompt sources"})
    grpo: GRPOSettings = field(default_factory=GRPOSettings, metadata={"help": "GRPO hyper-parameters"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "held-out evaluation"})
    logging: LoggingConfig = field(default_factory=LoggingConfig, metadata={"help": "logging"})
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, metadata={"help": "checkpoints"})
    hub: HubConfig = field(default_factory=HubConfig, metadata={"help": "the Hugging Face Hub"})
    accelerate: AccelerateConfig = field(default_factory=AccelerateConfig, metadata={"help": "Accelerate"})

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (YAML/JSON serialisable)."""
        return dataclasses.asdict(self)

    def validate(self, source: str = "config") -> TrainConfig:
        """Range checks across fields; raises ConfigError naming `source` and the field."""
        validate(self, source)
        return self


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
            forms = ", ".join(f"{_yaml_scalar(a)} = {v!r}" for a, v in aliases.items())
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


def _is_path(name: str) -> bool:
    """Whether a model name is meant as a local folder: not 'world', 'world:PATH' (checked by the backbone loader),
    'tiny:...' or a Hub id ('org/name': one slash at most)."""
    return parse_model_ref(name).kind == "folder"


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


# ----------------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------------
def validate(cfg: TrainConfig, source: str = "config") -> None:
    """Range and consistency checks; raises ConfigError('<source>: <field>: <problem>')."""

    def check(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {key}: {msg}")

    def finite(obj: Any, prefix: str) -> None:  # every float field: a finite number (nan / inf are typos)
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                finite(v, f"{prefix}{f.name}.")
            elif isinstance(v, float):
                try:
                    check_number(v, f"{prefix}{f.name}")
                except InputError as e:
                    raise ConfigError(f"{source}: {e}") from None

    finite(cfg, "")
    check(cfg.steps >= 1, "steps", f"must be >= 1, got {cfg.steps}")
    check(cfg.seed >= 0, "seed", f"must be >= 0, got {cfg.seed}")
    check(bool(cfg.output_dir.strip()), "output_dir", "must not be empty")
    for key, value in (("output_dir", cfg.output_dir), ("resume", cfg.resume), ("data.train", cfg.data.train),
                       ("data.eval", cfg.data.eval), ("policy.adapter_path", cfg.policy.adapter_path),
                       ("policy.name_or_path", cfg.policy.name_or_path),
                       ("pipeline.name_or_path", cfg.pipeline.name_or_path)):
        check(not (isinstance(value, str) and "\x00" in value), key, "NUL byte in the path")
    for key, value in (("policy.adapter_path", cfg.policy.adapter_path), ("policy.name_or_path", cfg.policy.name_or_path),
                       ("pipeline.name_or_path", cfg.pipeline.name_or_path)):
        check(not (value and _is_path(value) and not Path(value).is_dir()), key,
              f"no such folder: {value} (a local model folder, or a Hub id such as org/name)")
    check(bool(cfg.rewards), "rewards", "name at least one reward, e.g. {alignment: 1.0}")
    for name, w in cfg.rewards.items():
        check(math.isfinite(w), f"rewards.{name}", f"weight must be finite, got {w}")
    for name in cfg.reward_kwargs:
        check(name in cfg.rewards, f"reward_kwargs.{name}", f"options for a reward without a weight; rewards: "
                                                            f"{sorted(cfg.rewards)}")
    p = cfg.pipeline
    check(p.num_inference_steps >= 2, "pipeline.num_inference_steps", f"must be >= 2, got {p.num_inference_steps}")
    check(p.guidance_scale is None or p.guidance_scale >= 0, "pipeline.guidance_scale", "must be >= 0")
    for k in ("height", "width"):
        v = getattr(p, k)
        check(v is None or (v > 0 and v % 8 == 0), f"pipeline.{k}", f"must be a positive multiple of 8, got {v}")
    pol = cfg.policy
    check(pol.lora_r >= 1, "policy.lora_r", f"must be >= 1, got {pol.lora_r}")
    check(pol.lora_alpha >= 1, "policy.lora_alpha", f"must be >= 1, got {pol.lora_alpha}")
    check(pol.temperature > 0, "policy.temperature", f"must be > 0 for GRPO (sampling), got {pol.temperature}")
    check(0 < pol.top_p <= 1, "policy.top_p", f"must be in (0, 1], got {pol.top_p}")
    check(pol.max_new_tokens is None or pol.max_new_tokens >= 1, "policy.max_new_tokens", "must be >= 1")
    check(pol.max_prompt_tokens is None or pol.max_prompt_tokens >= 1, "policy.max_prompt_tokens", "must be >= 1")
    check(not (pol.adapter_path and pol.finetune == "full"), "policy.adapter_path",
          "an adapter to start from needs finetune: lora")
    check(pol.quantization == "none" or pol.finetune == "lora", "policy.quantization",
          "quantizes the frozen base of a LoRA run; full fine-tuning trains every weight (use quantization: none)")
    check(pol.quantization == "none" or parse_model_ref(pol.name_or_path).kind != "tiny", "policy.quantization",
          "needs a policy loaded from a folder or Hub id (tiny:* policies are built in memory)")
    lp = cfg.loop
    check(1 <= lp.num_refinements <= p.num_inference_steps - 1, "loop.num_refinements",
          f"must be in 1..{p.num_inference_steps - 1} (pipeline.num_inference_steps - 1), got {lp.num_refinements}")
    check(lp.mode != "feed-forward" or lp.num_refinements == 1, "loop.num_refinements",
          "feed-forward mode makes exactly one rewrite: set loop.num_refinements: 1")
    check(lp.preview_size is None or lp.preview_size >= 8, "loop.preview_size", "must be >= 8")
    check(not lp.rewrite_first or lp.mode == "feedback", "loop.rewrite_first",
          f"applies to mode: feedback only (mode is {lp.mode!r})")
    if pol.lora_target_modules is not None:
        try:
            re.compile(pol.lora_target_modules)
        except re.error as e:
            check(False, "policy.lora_target_modules", f"not a valid regular expression ({e})")
    d = cfg.data
    check(bool(d.train), "data.train", "must name a prompt source")
    sources = [src for src in (d.train, d.eval) if src is not None]
    check(d.column is None or not all(src.startswith("world:") or src.lower().endswith(".txt") for src in sources),
          "data.column", f"names a field of .jsonl / .csv / hf: sources, and {' / '.join(map(repr, sources))} have none "
                         "(remove data.column)")
    check(d.max_train_prompts is None or d.max_train_prompts >= 1, "data.max_train_prompts", "must be >= 1")
    g = cfg.grpo
    check(g.queries_per_step >= 1, "grpo.queries_per_step", f"must be >= 1, got {g.queries_per_step}")
    check(g.num_generations >= 2, "grpo.num_generations",
          f"must be >= 2 (a group of one has no spread, so zero advantage), got {g.num_generations}")
    check(g.groups_per_rollout_call >= 1, "grpo.groups_per_rollout_call", "must be >= 1")
    check(g.num_iterations >= 1, "grpo.num_iterations", f"must be >= 1, got {g.num_iterations}")
    check(0 < g.clip_eps < 1, "grpo.clip_eps", f"must be in (0, 1), got {g.clip_eps}")
    check(g.clip_eps_high is None or g.clip_eps_high > 0, "grpo.clip_eps_high", "must be > 0")
    check(g.beta >= 0, "grpo.beta", f"must be >= 0, got {g.beta}")
    check(1 <= g.micro_batch_size <= MAX_MICRO_BATCH, "grpo.micro_batch_size",
          f"must be in 1..{MAX_MICRO_BATCH}, got {g.micro_batch_size}")
    n_traj = g.queries_per_step * g.num_generations
    check(n_traj <= MAX_TRAJECTORIES_PER_STEP, "grpo.queries_per_step",
          f"x grpo.num_generations = {n_traj} trajectories per step, the limit is {MAX_TRAJECTORIES_PER_STEP}")
    if p.height and p.width:  # decoded images + previews held per step, float32
        need = n_traj * (lp.num_refinements + 1) * p.height * p.width * 3 * 4
        ram = _physical_memory()
        check(ram is None or need <= ram // 2, "grpo.queries_per_step",
              f"{n_traj} trajectories of {p.height}x{p.width} images with {lp.num_refinements} previews need about "
              f"{need / 2**30:.1f} GiB, more than half of this machine's {(ram or 0) / 2**30:.1f} GiB: lower "
              "grpo.queries_per_step or grpo.num_generations")
    check(g.learning_rate > 0, "grpo.learning_rate", f"must be > 0, got {g.learning_rate}")
    check(g.weight_decay >= 0, "grpo.weight_decay", "must be >= 0")
    check(0 <= g.adam_beta1 < 1 and 0 <= g.adam_beta2 < 1, "grpo.adam_beta1/adam_beta2", "must be in [0, 1)")
    check(g.adam_eps > 0, "grpo.adam_eps", "must be > 0")
    check(g.max_grad_norm is None or g.max_grad_norm > 0, "grpo.max_grad_norm", "must be > 0 or null")
    check(g.warmup_steps >= 0, "grpo.warmup_steps", "must be >= 0")
    names = [cfg.logging.report_to] if isinstance(cfg.logging.report_to, str) else cfg.logging.report_to
    bad = [n for n in names if n not in ("none", *TRACKERS)]
    check(not bad, "logging.report_to", f"expected none, {', '.join(TRACKERS)} or a list of them, got {bad[0]!r}"
          if bad else "")
    check(not ("none" in names and len(names) > 1), "logging.report_to", f"'none' together with trackers: {names}")
    e = cfg.eval
    check(e.every >= 0, "eval.every", "must be >= 0")
    check(e.num_queries >= 1, "eval.num_queries", "must be >= 1")
    check(e.seeds_per_query >= 1, "eval.seeds_per_query", "must be >= 1")
    check(e.num_queries * e.seeds_per_query <= MAX_TRAJECTORIES_PER_STEP, "eval.num_queries",
          f"x eval.seeds_per_query = {e.num_queries * e.seeds_per_query}, the limit is {MAX_TRAJECTORIES_PER_STEP}")
    check(e.every == 0 or d.eval is not None, "eval.every", "evaluation needs data.eval")
    check(e.num_refinements is None or 1 <= e.num_refinements <= p.num_inference_steps - 1, "eval.num_refinements",
          f"must be in 1..{p.num_inference_steps - 1}")
    c = cfg.checkpoint
    check(c.every >= 0, "checkpoint.every", "must be >= 0")
    check(c.keep >= 0, "checkpoint.keep", "must be >= 0")
    check(not (cfg.resume and cfg.overwrite), "overwrite", "cannot be combined with resume")
    h = cfg.hub
    check(h.hub_model_id is None or bool(re.fullmatch(r"([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*", h.hub_model_id)),
          "hub.hub_model_id", f"expected 'owner/name' or 'name' (letters, digits, -, _, .), got {h.hub_model_id!r}")
    check(not h.push_to_hub or cfg.checkpoint.save_final_policy, "hub.push_to_hub",
          "pushes the final policy: needs checkpoint.save_final_policy: true")
    check_ranges(cfg, source)


def check_ranges(cfg: TrainConfig, source: str = "config") -> None:
    """Every numeric field against its range in `validation.LIMITS` (kinds by `validation.CONFIG_LIMITS`): finite
    but absurd values (grpo.learning_rate=100, seed=2**64) are refused before anything loads."""
    values: list[tuple[str, Any, str]] = []
    for dotted, kind in CONFIG_LIMITS.items():
        if dotted == "rewards.*":
            values += [(f"rewards.{name}", w, kind) for name, w in cfg.rewards.items()]
            continue
        obj: Any = cfg
        for part in dotted.split("."):
            obj = getattr(obj, part)
        values.append((dotted, obj, kind))
    for name, value, kind in values:
        if value is None:
            continue
        try:
            check_limit(value, kind, name)
        except InputError as e:
            raise ConfigError(f"{source}: {e}") from None


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


# ----------------------------------------------------------------------------------------------------------------------
# writing commented YAML
# ----------------------------------------------------------------------------------------------------------------------
def _yaml_scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    return text.removesuffix("...").strip()


def dump_yaml(cfg: Any, indent: int = 0) -> str:
    """YAML text of a config dataclass with each field's help as a trailing comment."""
    lines: list[str] = []
    pad = "  " * indent
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:  # {help_text}")
            lines.append(dump_yaml(value, indent + 1))
        else:
            lines.append(f"{pad}{f.name}: {_yaml_scalar(value)}  # {help_text}")
    return "\n".join(lines)


def field_help() -> dict[str, str]:
    """{dotted field name: help} for every field (for `--help-config`)."""
    out: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            name = prefix + f.name
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], name + ".")
            else:
                out[name] = f.metadata.get("help", "")

    walk(TrainConfig, "")
    return out
