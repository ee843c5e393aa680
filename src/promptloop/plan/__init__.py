"""`promptloop plan`: parameter memory per GPU of a training recipe, from model configs alone.

Every model a recipe names (the pipeline's components, the policy, the rewards) is built from its config
on the meta device (`accelerate.init_empty_weights`: no weights are read or allocated) and its parameters
are counted. A model's config comes, in this order, from a local folder (`world`, a diffusers / transformers
folder), the Hugging Face cache (a Hub id downloaded before; nothing is fetched), or the published
hyper-parameters embedded in `promptloop.plan.archs` (`promptloop.plan.resolve`).

What is counted, per GPU, in bytes (1 GB = 1e9 bytes):
- the frozen pipeline components in `pipeline.dtype`, the reward models in their `dtype` option (default
  float32), the policy in `policy.dtype` ("auto": the checkpoint's dtype, as on a GPU);
- quantized models (a reward's `quantization` option, `policy.quantization`): the linear layers bitsandbytes
  replaces, as the loader would choose them, at their quantized size (int8 + a float32 scale per row; NF4 two
  per byte + a float32 absmax per 64), the rest in the compute dtype (rows `NAME.int8` / `NAME.nf4`);
- the trainable parameters: LoRA (rank `policy.lora_r` on the Linear modules `policy.lora_target_modules`
  matches, default the LM's attention projections) kept in float32 (peft's `autocast_adapter_dtype`), or,
  with `finetune: full`, the whole policy; their gradients and AdamW's two moments (each the trainable
  parameters' size and dtype);
- the reference policy of the KL term: nothing extra with LoRA (the same weights, adapter disabled), a
  frozen copy of the policy with `finetune: full` (and `grpo.beta > 0`).
Activations, the KV cache, latents and the CUDA context are not counted: leave head-room for them.

Scenarios, for N GPUs, each one `promptloop.train` runs:
- `replicated`: data parallel (`configs/accelerate/ddp.yaml`): every process holds everything;
- `offload`: the same with `pipeline.offload: model`: the pipeline's components wait in CPU memory and
  only the one running is on the GPU (the largest counts);
- `fsdp` (full fine-tuning only; LoRA runs are refused under FSDP): `configs/accelerate/fsdp.yaml`: the
  policy's weights, gradients, AdamW state and reference sharded N ways; while it samples the trainer
  gathers the policy's weights whole on every GPU (so that each process decodes alone), which is the peak:
  shards + one whole copy of the policy's weights; pipeline and rewards replicated;
- `fsdp_offload`: `fsdp` with `pipeline.offload: model`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from promptloop.plan.meta import (
    DEFAULT_LORA_TARGETS,
    DTYPE_BYTES,
    PlanError,
    build_meta,
    count_params,
    largest_layer_params,
    lora_params,
    quantized_split,
)
from promptloop.plan.resolve import pipeline_archs, policy_arch, reward_arch, reward_quantization_route

GB = 1e9
SCENARIOS = (("replicated", "replicated"), ("offload", "offload"), ("fsdp", "fsdp"), ("fsdp_offload", "fsdp+offload"))
QUANT_DTYPES = {"8bit": "int8", "4bit": "nf4"}


@dataclass
class Component:
    """One row of the plan: a model (or a part of the training state) with its parameter count and bytes."""

    name: str  # e.g. pipeline.unet, policy, policy.lora, reward.imagereward, reward.hpsv3.nf4
    kind: str  # frozen | trainable | state | reference
    source: str  # where its architecture came from
    params: int
    dtype: str  # float32 / bfloat16 / float16, or int8 / nf4 (bitsandbytes-quantized linear weights)
    bytes: int


# ------------------------------------------------------------------------------------------ the plan
def _dtype_name(dtype: Any, default: str = "float32") -> str:
    name = str(dtype or default).removeprefix("torch.")
    aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16", "float": "float32"}
    name = aliases.get(name, name)
    if name not in DTYPE_BYTES:
        raise PlanError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return name


def _row(name: str, kind: str, source: str, params: int, dtype: str) -> Component:
    return Component(name, kind, source, int(params), dtype, int(params) * DTYPE_BYTES[dtype])


def _model_rows(name: str, kind: str, source: str, model: Any, dtype: str, quantization: str, how: str,
                skip: tuple[str, ...] = ()) -> list[Component]:
    """The row(s) of one frozen model: all of it in `dtype`, or, quantized, its quantized linear weights and the rest."""
    if quantization in (None, "none"):
        return [_row(name, kind, source, count_params(model), dtype)]
    split = quantized_split(model, quantization, how=how, skip=skip)
    qtype = QUANT_DTYPES[quantization]
    return [_row(name, kind, f"{source} (not quantized: biases, norms, embeddings, kept layers)", split.rest_params,
                 dtype),
            Component(f"{name}.{qtype}", kind, f"{split.layers} linear layers, bitsandbytes {quantization}",
                      split.quantized_params, qtype, split.quantized_bytes)]


def plan_config(cfg: Any, gpus: list[int], budget_gb: float = 80.0, source: str = "config") -> dict[str, Any]:
    """The plan of one TrainConfig: components and bytes per GPU under each scenario (see the module docstring)."""
    rows: list[Component] = []
    pipe_dtype = _dtype_name(cfg.pipeline.dtype)
    pipe_parts: list[int] = []
    for part, arch in pipeline_archs(cfg.pipeline.name_or_path).items():
        rows.append(_row(f"pipeline.{part}", "frozen", arch.source, count_params(build_meta(arch)), pipe_dtype))
        pipe_parts.append(rows[-1].bytes)
    arch = policy_arch(cfg.policy.name_or_path)
    policy = build_meta(arch)
    pol_dtype = _dtype_name(arch.dtype if cfg.policy.dtype == "auto" else cfg.policy.dtype)
    n_policy = count_params(policy)
    lora = cfg.policy.finetune == "lora"
    policy_rows = _model_rows("policy", "frozen" if lora else "trainable", arch.source, policy, pol_dtype,
                              cfg.policy.quantization, "from_pretrained")
    rows += policy_rows
    policy_weights = sum(r.bytes for r in policy_rows)
    if lora:
        n_train, train_dtype = lora_params(policy, cfg.policy.lora_r, cfg.policy.lora_target_modules), "float32"
        if n_train == 0:
            raise PlanError(f"policy.lora_target_modules {cfg.policy.lora_target_modules or DEFAULT_LORA_TARGETS!r} "
                            "matches no Linear module of the policy")
        rows.append(_row("policy.lora", "trainable", f"rank {cfg.policy.lora_r}", n_train, train_dtype))
    else:
        n_train, train_dtype = n_policy, pol_dtype
    rows.append(_row("trainable.grads", "state", "one per trainable parameter", n_train, train_dtype))
    rows.append(_row("trainable.adamw", "state", "exp_avg + exp_avg_sq", 2 * n_train, train_dtype))
    if cfg.grpo.beta > 0 and not lora:
        rows.append(_row("reference", "reference", "frozen copy of the policy (finetune: full)", n_policy, pol_dtype))
    for name in cfg.rewards:
        options = dict(cfg.reward_kwargs.get(name) or {})
        r_arch = reward_arch(name, options)
        if r_arch is None:
            continue
        rows += _model_rows(f"reward.{name}", "frozen", r_arch.source, build_meta(r_arch),
                            _dtype_name(options.get("dtype")), options.get("quantization"),
                            reward_quantization_route(name), tuple(r_arch.extra.get("quant_skip", ())))
    policy_side = sum(r.bytes for r in rows if r.name.startswith(("policy", "trainable.", "reference")))
    pipeline_side = sum(pipe_parts)
    reward_side = sum(r.bytes for r in rows if r.name.startswith("reward."))
    per_gpu: dict[str, dict[str, int | None]] = {key: {} for key, _ in SCENARIOS}
    for n in gpus:
        shards = -(-policy_side // n) + policy_weights  # FSDP: the shards + the policy gathered whole to sample
        per_gpu["replicated"][str(n)] = pipeline_side + reward_side + policy_side
        per_gpu["offload"][str(n)] = max(pipe_parts, default=0) + reward_side + policy_side
        per_gpu["fsdp"][str(n)] = None if lora else pipeline_side + reward_side + shards
        per_gpu["fsdp_offload"][str(n)] = None if lora else max(pipe_parts, default=0) + reward_side + shards
    budget = int(budget_gb * GB)
    fits = {k: {n: (None if b is None else b <= budget) for n, b in v.items()} for k, v in per_gpu.items()}
    return {
        "config": source,
        "pipeline": cfg.pipeline.name_or_path,
        "policy": cfg.policy.name_or_path,
        "finetune": cfg.policy.finetune,
        "components": [asdict(r) for r in rows],
        "pipeline_bytes": pipeline_side,
        "reward_bytes": reward_side,
        "policy_side_bytes": policy_side,
        "policy_weight_bytes": policy_weights,
        "largest_policy_block_bytes": largest_layer_params(policy) * DTYPE_BYTES[pol_dtype],
        "cpu_bytes_offload": pipeline_side - max(pipe_parts, default=0),  # per process, in CPU memory
        "per_gpu_bytes": per_gpu,
        "fits": fits,
        "smallest_fit": _smallest_fit(fits, gpus),
    }


def _smallest_fit(fits: dict[str, dict[str, bool | None]], gpus: list[int]) -> str | None:
    """The first set-up under the budget, in the order: fewest GPUs, then replicated, offload, fsdp, fsdp+offload."""
    for n in gpus:
        for key, label in SCENARIOS:
            if fits[key][str(n)]:
                return f"{label} on {n} GPU{'s' if n > 1 else ''}"
    return None


def plan(configs: list[str | Path], gpus: list[int] | None = None, budget_gb: float = 80.0) -> dict[str, Any]:
    """Plans of the YAML recipes `configs` (see the module docstring)."""
    from promptloop.train.config_load import load_config

    gpus = sorted(set(gpus or [1, 2, 4, 8]))
    if not configs:
        raise PlanError("no config to plan")
    if any(n < 1 for n in gpus):
        raise PlanError(f"GPU counts must be >= 1, got {gpus}")
    if not budget_gb > 0:
        raise PlanError(f"the budget must be > 0 GB, got {budget_gb}")
    recipes = [plan_config(load_config(c), gpus, budget_gb, str(c)) for c in configs]
    return {"budget_gb": budget_gb, "gpus": gpus, "recipes": recipes,
            "note": "parameters and optimizer state only: activations, KV cache, latents and the CUDA context "
                    "are not counted; fsdp applies to full fine-tuning (LoRA runs are data parallel)"}


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3f}{unit}"
    return str(n)


def format_plan(result: dict[str, Any]) -> str:
    """The plan as text tables (one per recipe)."""
    lines: list[str] = []
    budget = result["budget_gb"]
    gpus = result["gpus"]
    for rec in result["recipes"]:
        lines.append(f"{rec['config']}: pipeline {rec['pipeline']}, policy {rec['policy']} ({rec['finetune']})")
        lines.append(f"  {'component':<26}{'params':>10}  {'dtype':<9}{'GB':>8}  source")
        for c in rec["components"]:
            lines.append(f"  {c['name']:<26}{_human(c['params']):>10}  {c['dtype']:<9}{c['bytes'] / GB:>8.2f}  "
                         f"{c['source']}")
        na = "; n/a: LoRA runs are not sharded" if rec["finetune"] == "lora" else ""
        lines.append(f"  per GPU (GB; budget {budget:g} GB; '!' = over{na}):")
        lines.append("  " + f"{'scenario':<16}" + "".join(f"{f'{n} GPU' + ('s' if n > 1 else ''):>11}" for n in gpus))
        for key, label in SCENARIOS:
            cells = []
            for n in gpus:
                b = rec["per_gpu_bytes"][key][str(n)]
                cells.append(f"{'n/a':>10} " if b is None else f"{b / GB:>10.2f}{' ' if rec['fits'][key][str(n)] else '!'}")
            lines.append(f"  {label:<16}" + "".join(cells))
        lines.append(f"  (offload keeps {rec['cpu_bytes_offload'] / GB:.2f} GB of pipeline weights in CPU memory per "
                     "process)")
        fit = rec["smallest_fit"]
        lines.append(f"  smallest set-up under {budget:g} GB: {fit}" if fit else
                     f"  nothing fits {budget:g} GB: more GPUs, policy.quantization (LoRA) or a reward's quantization")
        lines.append("")
    lines.append(f"note: {result['note']}")
    return "\n".join(lines)


__all__ = ["DTYPE_BYTES", "GB", "Component", "PlanError", "build_meta", "count_params", "format_plan",
           "largest_layer_params", "lora_params", "pipeline_archs", "plan", "plan_config", "policy_arch", "reward_arch"]
