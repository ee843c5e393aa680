"""Where `promptloop plan` finds each model's architecture: a local folder, the Hugging Face cache (no download),
or the hyper-parameters embedded in `promptloop.plan.archs`, in that order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from promptloop.models import (
    parse_model_ref,
    tiny_pipeline_builder,
    tiny_policy_builder,
    world_backbone_folder,
    world_policy_path,
)
from promptloop.plan.archs import (
    CLIP_ARCHS,
    PARAMETER_FREE_REWARDS,
    PIPELINES,
    POLICIES,
    REWARD_CLIP_DEFAULTS,
    REWARDS,
    Arch,
)
from promptloop.plan.meta import PlanError

HPSV3_BASE = "Qwen/Qwen2-VL-7B-Instruct"  # HPSv3's default base model (its config and tokenizer)


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


def _config_folder(name: str) -> Path | None:
    """The folder holding the transformers config.json of `name`: a local folder, or its Hub-cache snapshot."""
    return Path(name) if Path(name).is_dir() else _hub_cache_folder(name, "config.json")


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
    ref = parse_model_ref(name)
    if ref.kind == "tiny":
        builder = tiny_pipeline_builder(ref)
        if builder is None:
            raise PlanError(f"pipeline {name!r}: unknown tiny pipeline")
        pipe = builder(seed=0, device="cpu")
        return {part: _arch_of_module(m, name) for part, m in pipe.components.items()
                if isinstance(m, torch.nn.Module) and hasattr(m, "config")}
    if ref.kind == "world":
        from promptloop.world.backbone import text_encoder_path

        folder = world_backbone_folder(ref)
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
    ref = parse_model_ref(name)
    if ref.kind == "tiny":
        builder = tiny_policy_builder(ref)
        if builder is None:
            raise PlanError(f"policy {name!r}: unknown tiny policy")
        return _arch_of_module(builder(seed=0).model, name)
    if name == "world":
        return _arch_from_transformers_folder(world_policy_path(), "policy 'world'")
    folder = _config_folder(name)
    if folder is not None:
        return _arch_from_transformers_folder(folder, f"policy {name!r}")
    if name in POLICIES:
        return POLICIES[name]
    raise PlanError(f"policy {name!r}: no config found (not a local folder, not in the Hugging Face cache, not "
                    f"embedded; embedded: {', '.join(sorted(POLICIES))})")


def _clip_arch(model: str, what: str) -> Arch:
    folder = _config_folder(model)
    if folder is not None:
        return _arch_from_transformers_folder(folder, what, "CLIPModel")
    if model in CLIP_ARCHS:
        return CLIP_ARCHS[model]
    raise PlanError(f"{what}: model {model!r}: no config found (not a local folder, not in the Hugging Face cache, "
                    f"not embedded; embedded: {', '.join(sorted(CLIP_ARCHS))})")


def _parameter_free_rewards() -> tuple[str, ...]:
    """The rewards without weights: the built-in ones and every embedded world's (computed by its analyzer)."""
    from promptloop.world import world_reward_names

    return (*PARAMETER_FREE_REWARDS, *world_reward_names())


def reward_arch(name: str, options: dict[str, Any] | None = None) -> Arch | None:
    """The Arch of the model of reward `name` built with factory `options` (its `model_name_or_path`, HPSv3's
    `base_model_name_or_path`); None: a reward without weights."""
    options = options or {}
    if name in _parameter_free_rewards():
        return None
    if name in REWARD_CLIP_DEFAULTS:
        clip = _clip_arch(str(options.get("model_name_or_path") or REWARD_CLIP_DEFAULTS[name]), f"reward {name!r}")
        if name != "aesthetic":
            return clip
        fields = {"library": clip.library, "cls": clip.cls, "config": clip.config, "source": clip.source}
        return Arch("promptloop", "AestheticModel", {"clip": fields},
                    f"{clip.source} + the aesthetic MLP", extra={"quant_skip": ("head",)})
    if name == "hpsv3" and options.get("base_model_name_or_path") not in (None, HPSV3_BASE):
        base = str(options["base_model_name_or_path"])
        folder = _config_folder(base)
        if folder is None:
            raise PlanError(f"reward 'hpsv3': base model {base!r}: no config found (not a local folder, not in the "
                            f"Hugging Face cache; embedded: {HPSV3_BASE})")
        data = _arch_from_transformers_folder(folder, "reward 'hpsv3'", "Qwen2VLModel").config
        return Arch("promptloop", "HPSv3Model", {"qwen2_vl": data}, f"{folder / 'config.json'} + the HPSv3 head",
                    extra=dict(REWARDS["hpsv3"].extra))
    if name in REWARDS:
        return REWARDS[name]
    raise PlanError(f"reward {name!r}: no embedded architecture (known: "
                    f"{', '.join(sorted([*REWARDS, *REWARD_CLIP_DEFAULTS, *_parameter_free_rewards()]))})")


def reward_quantization_route(name: str) -> str:
    """How a quantized reward is loaded: "from_pretrained" (transformers' loader) or "converted" (state dict, then
    `quantize_linears`)."""
    return "from_pretrained" if name in REWARD_CLIP_DEFAULTS else "converted"


__all__ = ["pipeline_archs", "policy_arch", "reward_arch", "reward_quantization_route"]
