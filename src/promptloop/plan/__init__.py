"""`promptloop plan`: parameter memory per GPU of a training recipe, from model configs alone.

Every model a recipe names (the pipeline's components, the policy, the rewards) is built from its config
on the meta device (`accelerate.init_empty_weights`: no weights are read or allocated) and its parameters
are counted. A model's config comes, in this order, from a local folder (`world`, a diffusers / transformers
folder), the Hugging Face cache (a Hub id downloaded before; nothing is fetched), or the published
hyper-parameters embedded in `promptloop.plan.archs` (the shipped recipes' Hub ids).

What is counted, per GPU, in bytes (1 GB = 1e9 bytes):
- the frozen pipeline components in `pipeline.dtype`, the reward models in their `dtype` option (default
  float32), the policy in `policy.dtype` ("auto": the checkpoint's dtype, as on a GPU);
- the trainable parameters: LoRA (rank `policy.lora_r` on the Linear modules `policy.lora_target_modules`
  matches, default the LM's attention projections) kept in float32 (peft's `autocast_adapter_dtype`), or,
  with `finetune: full`, the whole policy; their gradients and AdamW's two moments (each the trainable
  parameters' size and dtype);
- the reference policy of the KL term: nothing extra with LoRA (the same weights, adapter disabled), a
  frozen copy of the policy with `finetune: full` (and `grpo.beta > 0`).
Activations, the KV cache, latents and the CUDA context are not counted: leave head-room for them.

Scenarios, for N GPUs: `replicated` (every process holds everything: what `promptloop.train` runs today,
data parallel); `fsdp` (the policy's weights, trainable state and reference sharded N ways, FULL_SHARD,
plus one unsharded decoder layer being gathered; the pipeline and rewards replicated); `fsdp_offload`
(FSDP with CPU offload: the policy's shards, gradients and optimizer state live in CPU memory, the GPU
holds the pipeline, the rewards and the layer being gathered).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from promptloop.plan.archs import PARAMETER_FREE_REWARDS, PIPELINES, POLICIES, REWARDS, Arch

DEFAULT_LORA_TARGETS = r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj)"  # VLMPolicy.enable_lora's default
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GB = 1e9


class PlanError(ValueError):
    """A recipe `plan` cannot size (an unknown model or reward); the message names it."""


@dataclass
class Component:
    """One row of the plan: a model (or a part of the training state) with its parameter count and bytes."""

    name: str  # e.g. pipeline.unet, policy, policy.lora, reward.imagereward
    kind: str  # frozen | trainable | state | reference
    source: str  # where its architecture came from
    params: int
    dtype: str
    bytes: int


# ------------------------------------------------------------------------------------------ building on meta
def build_meta(arch: Arch) -> torch.nn.Module:
    """The model of `arch` with its parameters on the meta device (nothing allocated)."""
    model = _build_meta(arch)
    if hasattr(model, "tie_weights"):  # transformers ties nothing under init_empty_weights: tie afterwards
        model.tie_weights()
    return model


def _build_meta(arch: Arch) -> torch.nn.Module:
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        if arch.library == "diffusers":
            import diffusers

            return getattr(diffusers, arch.cls).from_config(dict(arch.config))
        if arch.library == "transformers":
            import transformers
            from transformers import AutoConfig

            cfg = dict(arch.config)
            config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
            return getattr(transformers, arch.cls)._from_config(config)
        if arch.cls == "ImageRewardModel":
            from transformers import BlipVisionConfig

            from promptloop.rewards.adapters.image_reward import ImageRewardModel, text_config_from_med

            vision = BlipVisionConfig(**arch.config["vision"])
            return ImageRewardModel(vision, text_config_from_med(arch.config["med"], vision.hidden_size))
        if arch.cls == "TextBinder":
            from promptloop.world.text_binder import TextBinder

            return TextBinder.from_config(dict(arch.config))
    raise PlanError(f"cannot build {arch.library} class {arch.cls!r}")


def count_params(model: torch.nn.Module) -> int:
    """Parameters of `model` (a tied weight counts once)."""
    return sum(p.numel() for p in model.parameters())


def lora_params(model: torch.nn.Module, r: int, target_modules: str | None = None) -> int:
    """Parameters of a rank-`r` LoRA on the Linear modules whose full name matches `target_modules` (a regex,
    matched whole as peft does; default the LM's attention projections): r * (in + out) each."""
    pattern = re.compile(target_modules or DEFAULT_LORA_TARGETS)
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and pattern.fullmatch(name))


def largest_layer_params(model: torch.nn.Module) -> int:
    """Parameters of the largest module of a class the model will not split (its decoder / vision blocks:
    `_no_split_modules`, the unit an FSDP transformer-layer wrap gathers at once)."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    sizes = [count_params(m) for m in model.modules() if type(m).__name__ in names]
    return max(sizes, default=0)


# ------------------------------------------------------------------------------------------ resolving configs
def _hub_cache_folder(repo_id: str, filename: str) -> Path | None:
    """The cached snapshot folder of `repo_id` holding `filename`, when the Hub cache has it (no download)."""
    if "/" not in repo_id or Path(repo_id).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, filename)
    except Exception:  # a malformed id, an unreadable cache: fall back to the embedded configs
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def _arch_from_transformers_folder(folder: Path, what: str, cls: str | None = None) -> Arch:
    data = json.loads((folder / "config.json").read_text())
    if "model_type" not in data:
        raise PlanError(f"{what}: {folder / 'config.json'} names no model_type")
    cls = cls or (data.get("architectures") or [None])[0]
    if not cls:
        raise PlanError(f"{what}: {folder / 'config.json'} names no architecture class")
    dtype = data.get("dtype") or data.get("torch_dtype") or (data.get("text_config") or {}).get("dtype")
    config = {k: v for k, v in data.items() if k not in ("architectures", "transformers_version", "_name_or_path")}
    return Arch("transformers", cls, config, str(folder / "config.json"), dtype=dtype)


def _arch_of_module(module: Any, source: str) -> Arch:
    """An Arch from a live (e.g. tiny) model: its class and config."""
    config = module.config
    if hasattr(config, "to_dict") and hasattr(config, "model_type"):  # transformers
        return Arch("transformers", type(module).__name__, config.to_dict(), source)
    lib = "promptloop" if type(module).__module__.startswith("promptloop") else "diffusers"
    return Arch(lib, type(module).__name__, {k: v for k, v in dict(config).items() if not k.startswith("_")}, source)


def pipeline_archs(name: str) -> dict[str, Arch]:
    """{component: Arch} of a pipeline named as `pipeline.name_or_path` is."""
    if name.startswith("tiny:"):
        from promptloop.loop.testing import TINY_PIPELINES

        family = name.split(":", 1)[1]
        if family not in TINY_PIPELINES:
            raise PlanError(f"pipeline {name!r}: unknown tiny pipeline")
        pipe = TINY_PIPELINES[family](seed=0, device="cpu")
        return {part: _arch_of_module(m, name) for part, m in pipe.components.items()
                if isinstance(m, torch.nn.Module) and hasattr(m, "config")}
    if name == "world" or name.startswith("world:"):
        from promptloop.world.backbone import DEFAULT_BACKBONE, text_encoder_path

        folder = Path(name.split(":", 1)[1]) if ":" in name else DEFAULT_BACKBONE
        archs = _diffusers_folder_archs(folder, name)
        archs["text_encoder"] = _arch_from_transformers_folder(Path(text_encoder_path()), f"pipeline {name!r}",
                                                               "BertModel")
        return archs
    if Path(name).is_dir():
        return _diffusers_folder_archs(Path(name), name)
    cached = _hub_cache_folder(name, "model_index.json")
    if cached is not None:
        try:
            return _diffusers_folder_archs(cached, name)
        except (OSError, PlanError):  # a partial cache (configs of some components missing): use the embedded ones
            pass
    if name in PIPELINES:
        return dict(PIPELINES[name])
    raise PlanError(f"pipeline {name!r}: no config found (not a local folder, not in the Hugging Face cache, not "
                    f"embedded; embedded: {', '.join(sorted(PIPELINES))})")


def _diffusers_folder_archs(folder: Path, name: str) -> dict[str, Arch]:
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise PlanError(f"pipeline {name!r}: {folder} holds no model_index.json")
    index = json.loads(index_file.read_text())
    out: dict[str, Arch] = {}
    for part, spec in index.items():
        if part.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] is None:
            continue
        sub = folder / part
        if not (sub / "config.json").is_file():
            continue  # a tokenizer, a scheduler or a component kept elsewhere
        library, cls = spec
        if library == "transformers":
            out[part] = _arch_from_transformers_folder(sub, f"pipeline {name!r}", cls)
        else:
            import diffusers

            model_cls = getattr(diffusers, cls, None) if library == "diffusers" else None
            if not (isinstance(model_cls, type) and issubclass(model_cls, torch.nn.Module)):
                continue  # not a model (a scheduler) or not a diffusers class
            data = json.loads((sub / "config.json").read_text())
            out[part] = Arch("diffusers", cls, {k: v for k, v in data.items() if not k.startswith("_")},
                             str(sub / "config.json"))
    if (folder / "text_binder" / "config.json").is_file():  # the world backbone's trainable binder
        data = json.loads((folder / "text_binder" / "config.json").read_text())
        out["text_binder"] = Arch("promptloop", "TextBinder", {k: v for k, v in data.items() if not k.startswith("_")},
                                  str(folder / "text_binder" / "config.json"))
    if not out:
        raise PlanError(f"pipeline {name!r}: {folder} holds no model config")
    return out


def policy_arch(name: str) -> Arch:
    """The Arch of a policy named as `policy.name_or_path` is."""
    if name.startswith("tiny:"):
        from promptloop.policy.testing import TINY_POLICIES as builders

        kind = name.split(":", 1)[1]
        if kind not in builders:
            raise PlanError(f"policy {name!r}: unknown tiny policy")
        return _arch_of_module(builders[kind](seed=0).model, name)
    if name == "world":
        from promptloop.train.components import world_policy_path

        return _arch_from_transformers_folder(world_policy_path(), "policy 'world'")
    if Path(name).is_dir():
        return _arch_from_transformers_folder(Path(name), f"policy {name!r}")
    cached = _hub_cache_folder(name, "config.json")
    if cached is not None:
        return _arch_from_transformers_folder(cached, f"policy {name!r}")
    if name in POLICIES:
        return POLICIES[name]
    raise PlanError(f"policy {name!r}: no config found (not a local folder, not in the Hugging Face cache, not "
                    f"embedded; embedded: {', '.join(sorted(POLICIES))})")


def reward_arch(name: str) -> Arch | None:
    """The Arch of a reward model (None: a reward without weights)."""
    if name in PARAMETER_FREE_REWARDS:
        return None
    if name in REWARDS:
        return REWARDS[name]
    raise PlanError(f"reward {name!r}: no embedded architecture (known: "
                    f"{', '.join(sorted([*REWARDS, *PARAMETER_FREE_REWARDS]))})")


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


def plan_config(cfg: Any, gpus: list[int], budget_gb: float = 80.0, source: str = "config") -> dict[str, Any]:
    """The plan of one TrainConfig: components and bytes per GPU under each scenario (see the module docstring)."""
    rows: list[Component] = []
    pipe_dtype = _dtype_name(cfg.pipeline.dtype)
    for part, arch in pipeline_archs(cfg.pipeline.name_or_path).items():
        rows.append(_row(f"pipeline.{part}", "frozen", arch.source, count_params(build_meta(arch)), pipe_dtype))
    arch = policy_arch(cfg.policy.name_or_path)
    policy = build_meta(arch)
    pol_dtype = _dtype_name(arch.dtype if cfg.policy.dtype == "auto" else cfg.policy.dtype)
    n_policy = count_params(policy)
    lora = cfg.policy.finetune == "lora"
    rows.append(_row("policy", "frozen" if lora else "trainable", arch.source, n_policy, pol_dtype))
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
        r_arch = reward_arch(name)
        if r_arch is None:
            continue
        r_dtype = _dtype_name((cfg.reward_kwargs.get(name) or {}).get("dtype"))
        rows.append(_row(f"reward.{name}", "frozen", r_arch.source, count_params(build_meta(r_arch)), r_dtype))
    unit = largest_layer_params(policy) * DTYPE_BYTES[pol_dtype]
    policy_side = sum(r.bytes for r in rows if r.name.startswith(("policy", "trainable.", "reference")))
    replicated_side = sum(r.bytes for r in rows if r.name.startswith(("pipeline.", "reward.")))
    per_gpu: dict[str, dict[str, int]] = {"replicated": {}, "fsdp": {}, "fsdp_offload": {}}
    for n in gpus:
        per_gpu["replicated"][str(n)] = replicated_side + policy_side
        per_gpu["fsdp"][str(n)] = replicated_side + -(-policy_side // n) + unit
        per_gpu["fsdp_offload"][str(n)] = replicated_side + unit
    budget = int(budget_gb * GB)
    return {
        "config": source,
        "pipeline": cfg.pipeline.name_or_path,
        "policy": cfg.policy.name_or_path,
        "finetune": cfg.policy.finetune,
        "components": [asdict(r) for r in rows],
        "policy_side_bytes": policy_side,
        "replicated_side_bytes": replicated_side,
        "gathered_layer_bytes": unit,
        "cpu_bytes_fsdp_offload": policy_side,  # per node, all N shards together
        "per_gpu_bytes": per_gpu,
        "fits": {k: {n: b <= budget for n, b in v.items()} for k, v in per_gpu.items()},
    }


def plan(configs: list[str | Path], gpus: list[int] | None = None, budget_gb: float = 80.0) -> dict[str, Any]:
    """Plans of the YAML recipes `configs` (see the module docstring)."""
    from promptloop.train.config import load_config

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
                    "are not counted; promptloop.train runs the replicated scenario today"}


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
        lines.append(f"  per GPU (GB; budget {budget:g} GB; '!' = over):")
        lines.append("  " + f"{'scenario':<16}" + "".join(f"{f'{n} GPU' + ('s' if n > 1 else ''):>11}" for n in gpus))
        for scen, label in (("replicated", "replicated"), ("fsdp", "fsdp"), ("fsdp_offload", "fsdp+offload")):
            cells = []
            for n in gpus:
                b = rec["per_gpu_bytes"][scen][str(n)]
                cells.append(f"{b / GB:>10.2f}{' ' if rec['fits'][scen][str(n)] else '!'}")
            lines.append(f"  {label:<16}" + "".join(cells))
        lines.append(f"  (fsdp+offload keeps {rec['cpu_bytes_fsdp_offload'] / GB:.2f} GB of policy state in CPU "
                     "memory per node)")
        lines.append("")
    lines.append(f"note: {result['note']}")
    return "\n".join(lines)
