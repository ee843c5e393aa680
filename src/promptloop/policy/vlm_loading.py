"""How `VLMPolicy.from_pretrained` loads a policy: `promptloop_policy.json` read and checked first (nothing it names
is used unchecked, see `promptloop.policy.callables`), the integrity manifest and the model files checked, an
adapter folder loaded onto the base it records (`promptloop.policy.base_ref`), the weights, tokenizer and processor
(`promptloop.policy.processors`) loaded by transformers with one-line errors (`promptloop.policy.model_files`);
`tiny:NAME` builds a tiny random policy of `promptloop.testing`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from promptloop.integrity import ModelFileError, read_json_object, verify_folder
from promptloop.model_json import INSTRUCTION_FIELDS, POLICY_FIELDS, check_fields
from promptloop.models import parse_model_ref, tiny_names, tiny_policy_builder
from promptloop.policy.base_ref import resolve_base
from promptloop.policy.callables import FIELDS, resolve_callable
from promptloop.policy.instruction import InstructionTemplate
from promptloop.policy.model_files import check_finite_weights, check_model_files, load_error
from promptloop.policy.processors import load_processor
from promptloop.policy.vlm import POLICY_CONFIG, VLMPolicy


def load_pretrained(cls: type[VLMPolicy], path: str | Path, *, adapter_path: str | Path | None, trust_remote_code: bool,
                    dtype: torch.dtype | str | None, device: str | torch.device | None, is_trainable: bool,
                    revision: str | None, attn_implementation: str | None, device_map: str | dict[str, Any] | None,
                    quantization_config: Any, torch_dtype: torch.dtype | str | None, **policy_kwargs: Any) -> VLMPolicy:
    """`VLMPolicy.from_pretrained` (see there for the arguments and their defaults): a saved policy, an adapter folder
    on its recorded base, any hub-format VLM folder or Hub id, or `tiny:NAME`."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from promptloop.hub import resolve_policy

    if torch_dtype is not None:
        if dtype is not None and dtype != torch_dtype:
            raise TypeError(f"from_pretrained got dtype={dtype} and torch_dtype={torch_dtype}: pass one of them")
        dtype = torch_dtype
    if isinstance(path, str) and parse_model_ref(path).kind == "tiny":  # the tiny random policies (tests, docs)
        return _tiny(path, dtype, device, adapter_path, is_trainable, policy_kwargs)
    resolved = resolve_policy(path, revision)  # a PromptLoop policy repo on the Hub: its local snapshot
    hub_id = str(path) if resolved != path else None  # names a full model loaded from it (not the cache path)
    path = Path(resolved)
    saved: dict[str, Any] = {}
    cfg_file = path / POLICY_CONFIG
    if cfg_file.exists():  # read and checked first: nothing it names is used unchecked (see callables.py)
        saved = read_json_object(cfg_file)
        check_fields(cfg_file, saved, POLICY_FIELDS)
        if isinstance(saved.get("instruction"), dict):
            check_fields(cfg_file, saved["instruction"], INSTRUCTION_FIELDS, prefix="instruction.")
        saved["_where"] = str(cfg_file)
    kwargs = _saved_kwargs(saved)  # before any weights load: a bad promptloop_policy.json fails at once
    if path.is_dir():
        verify_folder(path, "policy folder")
    if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
        adapter_path = adapter_path or path
        base, kind, where = saved.get("base_model"), saved.get("base_model_kind"), str(cfg_file)
        if not base:
            where = str(path / "adapter_config.json")
            base, kind = read_json_object(path / "adapter_config.json").get("base_model_name_or_path"), None
        if not base:
            raise ValueError(f"{path} is an adapter folder that names no base model")
        base = resolve_base(path, base, kind, where)
        merged = {**kwargs, **policy_kwargs}
        return cls.from_pretrained(base, adapter_path=adapter_path, trust_remote_code=trust_remote_code,
                                   dtype=dtype, device=device, is_trainable=is_trainable, revision=revision,
                                   attn_implementation=attn_implementation, device_map=device_map,
                                   quantization_config=quantization_config, **merged)
    if path.is_dir():
        check_model_files(path)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dtype is None:
        dtype = torch.float32 if dev.type == "cpu" else "auto"
    load: dict[str, Any] = {"revision": revision, "device_map": dev if device_map is None else device_map}
    if attn_implementation is not None:
        load["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        load["quantization_config"] = quantization_config
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(path), trust_remote_code=trust_remote_code,
                                                            dtype=dtype, **load)
    except (OSError, ImportError, torch.OutOfMemoryError):  # not found / not installed / too large: their words
        raise
    except Exception as e:  # a config field of the wrong type, a size the weights do not have, ...
        raise ModelFileError(load_error(path, "config.json", "the model", e)) from e
    check_finite_weights(model, f"policy {path}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ImportError):
        raise
    except Exception as e:
        raise ModelFileError(load_error(path, "tokenizer.json / tokenizer_config.json", "the tokenizer", e)) from e
    try:
        processor = load_processor(path, model, tokenizer, trust_remote_code)
    except (OSError, ImportError):
        raise
    except Exception as e:
        raise ModelFileError(load_error(path, "processor_config.json / preprocessor_config.json",
                                        "the image processor", e)) from e
    kwargs.update(policy_kwargs)
    kwargs.setdefault("name_or_path", hub_id or str(path))
    if isinstance(kwargs.get("constraint"), type):  # a saved constraint class: build it for this tokenizer
        kwargs["constraint"] = kwargs["constraint"](tokenizer)
    policy = cls(model, tokenizer, processor, **kwargs)
    if adapter_path is not None:
        policy.load_adapter(adapter_path, is_trainable=is_trainable)
    return policy


def _tiny(name: str, dtype: torch.dtype | str | None, device: str | torch.device | None,
          adapter_path: str | Path | None, is_trainable: bool, policy_kwargs: dict[str, Any]) -> VLMPolicy:
    """`tiny:NAME`: the random test policy `promptloop.testing.policies.TINY_POLICIES[NAME]` (seed 0), offline."""
    builder = tiny_policy_builder(parse_model_ref(name))
    if builder is None:
        raise ValueError(f"{name!r}: unknown tiny policy; choose from {tiny_names('policies')}")
    policy_kwargs.setdefault("name_or_path", name)  # an adapter saved on it names it as its base
    policy: VLMPolicy = builder(seed=0, **policy_kwargs)
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    if isinstance(dtype, torch.dtype):
        policy.model.to(dtype)
    if device is not None:
        policy.model.to(device)
    if adapter_path is not None:
        policy.load_adapter(adapter_path, is_trainable=is_trainable)
    return policy

def _saved_kwargs(saved: dict[str, Any]) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if "instruction" in saved:
        kw["instruction"] = InstructionTemplate.from_dict(saved["instruction"])
    for k in ("temperature", "top_p", "max_new_tokens", "max_prompt_tokens", "system_prompt", "image_size"):
        if k in saved:
            kw[k] = saved[k]
    for k in FIELDS:
        fn = resolve_callable(k, saved.get(k), saved.get("_where", POLICY_CONFIG))
        if fn is not None:
            kw[k] = fn
    return kw
