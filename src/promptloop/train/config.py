"""Training configuration: the schema, dataclasses loaded from YAML with `key=value` command-line overrides.

Every field carries a one-line help text (`field(metadata={"help": ...})`); `dump_yaml(config)` writes a
YAML file with that help as a comment after each field. Loading (`promptloop.train.config_load.load_config`)
validates strictly: an unknown key is an error naming the key and the file, a value of the wrong type or out of
range is an error naming the field (`ConfigError`, a ValueError; the checks are in
`promptloop.train.config_checks`).

    cfg = load_config("configs/world.yaml", ["grpo.beta=0.02", "rewards.proxy=0.1", "steps=10"])
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

MAX_TRAJECTORIES_PER_STEP = 4096  # queries_per_step x num_generations above this is surely a typo
MAX_MICRO_BATCH = 1024  # refinement actions per forward pass

class ConfigError(ValueError):
    """A configuration error; the message names the file (or override) and the field."""


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - mirrors argparse's wording
    """A dataclass field with a default and a one-line help text."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class PipelineConfig:
    """The frozen diffusion pipeline that renders the images."""

    name_or_path: str = _f("tiny:sd", "diffusers folder or hub id; 'world' / 'world:NAME' / 'world:PATH' for "
                                       "a world backbone (world:v3: the Backdrops world's); 'tiny:sd|sdxl|sd3|flux' "
                                       "for random test pipelines")
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

    name_or_path: str = _f("tiny:llava", "VLMPolicy folder or hub id; 'world' / 'world:NAME' for a world's shipped policy; "
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
        from promptloop.train.config_checks import validate

        validate(self, source)
        return self


# ----------------------------------------------------------------------------------------------------------------------
# writing commented YAML
# ----------------------------------------------------------------------------------------------------------------------
def yaml_scalar(value: Any) -> str:
    """`value` as one line of YAML (a flow-style scalar, list or mapping)."""
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
            lines.append(f"{pad}{f.name}: {yaml_scalar(value)}  # {help_text}")
    return "\n".join(lines)


def field_help() -> dict[str, str]:
    """{dotted field name: help} for every field (for `--help-config`)."""
    out: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            name = prefix + f.name
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], name + ".")
            else:
                out[name] = f.metadata.get("help", "")

    walk(TrainConfig, "")
    return out
