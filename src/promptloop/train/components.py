"""Build the run's parts from the config: the frozen pipeline, the policy (with LoRA or trainable in full),
the reference policy, and the reward.

Names understood besides ordinary diffusers / transformers folders and hub ids:
- pipeline `tiny:sd|sdxl|sd3|flux` (random test pipelines of `promptloop.testing.pipelines`), `world`
  (the Shapes-world backbone at assets/world/backbone) or `world:PATH`;
- policy `tiny:llava|qwen25vl|qwen2vl|qwen3vl` (random test policies of `promptloop.testing.policies`), `world`
  (the SFT'd world policy at assets/world/policy).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from promptloop.policy.sanitize import token_length_fn
from promptloop.train.config import PipelineConfig, PolicyConfig, TrainConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def world_policy_path() -> Path:
    """assets/world/policy of the source tree."""
    from promptloop.world.backbone import DEFAULT_BACKBONE

    return DEFAULT_BACKBONE.parent / "policy"


def load_pipeline(cfg: PipelineConfig, device: torch.device | str) -> tuple[Any, dict[str, Any]]:
    """(pipeline on `device`, extra keyword arguments every sampler call needs)."""
    dtype = _DTYPES[cfg.dtype]
    name = cfg.name_or_path
    extra: dict[str, Any] = {}
    if name.startswith("tiny:"):
        from promptloop.testing.pipelines import TINY_PIPELINES, tiny_call_kwargs

        family = name.split(":", 1)[1]
        if family not in TINY_PIPELINES:
            raise ValueError(f"pipeline.name_or_path {name!r}: unknown tiny pipeline; choose from "
                             f"{['tiny:' + k for k in TINY_PIPELINES]}")
        pipe = TINY_PIPELINES[family](seed=0, device=device)
        pipe.to(dtype=dtype)
        extra = tiny_call_kwargs(family)
    elif name == "world" or name.startswith("world:"):
        from promptloop.world.backbone import load_backbone

        pipe = load_backbone(name.split(":", 1)[1] if ":" in name else None, device=device, dtype=dtype)
    else:
        from diffusers import DiffusionPipeline

        kw: dict[str, Any] = {"dtype": dtype}
        if cfg.variant:
            kw["variant"] = cfg.variant
        if cfg.revision:
            kw["revision"] = cfg.revision
        try:
            pipe = DiffusionPipeline.from_pretrained(name, **kw)
        except Exception as e:
            raise ValueError(f"pipeline.name_or_path {name!r}: cannot load the pipeline: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from e
        if cfg.offload == "none":
            pipe.to(device)
    if cfg.offload == "model":
        enable_model_offload(pipe, device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    for part in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, part, None)
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    if cfg.height is not None:
        extra["height"] = cfg.height
    if cfg.width is not None:
        extra["width"] = cfg.width
    return pipe, extra


def enable_model_offload(pipe: Any, device: torch.device | str) -> None:
    """diffusers' model CPU offload onto `device`: every component waits in CPU memory and is moved to `device`
    while it runs (the loop's conditioning hooks and previews work unchanged: its hooks wrap `forward` and
    `vae.decode`). A preview decode moves the VAE in and the denoiser out, so previews cost a transfer each."""
    if not hasattr(pipe, "enable_model_cpu_offload") or getattr(pipe, "model_cpu_offload_seq", None) is None:
        raise ValueError(f"pipeline.offload: model: {type(pipe).__name__} has no model CPU offload sequence; "
                         "use pipeline.offload: none")
    pipe.enable_model_cpu_offload(device=torch.device(device))


def load_policy(cfg: PolicyConfig, device: torch.device | str) -> Any:
    """The policy (without the trainable adapter, which `prepare_policy` attaches)."""
    name = cfg.name_or_path
    if name.startswith("tiny:"):
        from promptloop.testing.policies import TINY_POLICIES as builders

        kind = name.split(":", 1)[1]
        if kind not in builders:
            raise ValueError(f"policy.name_or_path {name!r}: unknown tiny policy; choose from "
                             f"{['tiny:' + k for k in builders]}")
        policy = builders[kind](seed=0)
        policy.model.to(device)
        if cfg.dtype not in ("auto", "float32"):
            policy.model.to(_DTYPES[cfg.dtype])
    else:
        from promptloop.policy.vlm import VLMPolicy

        path: str | Path = name
        if name == "world":
            path = world_policy_path()
            if not Path(path).is_dir():
                raise FileNotFoundError(f"world policy not found at {path} (train it with "
                                        "promptloop.world.shapes.train_policy.train_world_policy)")
        dtype = None if cfg.dtype == "auto" else _DTYPES[cfg.dtype]
        quantization = None
        if cfg.quantization != "none":  # QLoRA: the frozen base in 8 / 4 bit
            from promptloop.rewards.adapters.quantization import bnb_config, require_bitsandbytes

            try:
                require_bitsandbytes(cfg.quantization)
            except ImportError as e:
                raise ValueError(f"policy.quantization: {e}") from None
            quantization = bnb_config(cfg.quantization, dtype or torch.float32)
        try:
            policy = VLMPolicy.from_pretrained(path, dtype=dtype, device=device, trust_remote_code=cfg.trust_remote_code,
                                               revision=cfg.revision, attn_implementation=cfg.attn_implementation,
                                               device_map=cfg.device_map, quantization_config=quantization)
        except (OSError, ValueError) as e:
            raise ValueError(f"policy.name_or_path {name!r}: cannot load the policy: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from e
    if cfg.adapter_path:
        policy.load_adapter(cfg.adapter_path, is_trainable=True)
    return policy


def prepare_policy(policy: Any, cfg: TrainConfig, pipe: Any | None = None) -> list[torch.nn.Parameter]:
    """Apply sampling settings, attach LoRA or unfreeze everything; return the trainable parameters."""
    pc = cfg.policy
    policy.temperature = pc.temperature
    policy.top_p = pc.top_p
    if pc.max_new_tokens is not None:
        policy.max_new_tokens = pc.max_new_tokens
    if pc.max_prompt_tokens is not None:
        policy.max_prompt_tokens = pc.max_prompt_tokens
        tokenizer = getattr(pipe, "tokenizer", None)
        if policy.prompt_length_fn is None and tokenizer is not None:
            policy.prompt_length_fn = token_length_fn(tokenizer)
    if pc.finetune == "lora":
        if not policy.has_lora:
            policy.enable_lora(r=pc.lora_r, alpha=pc.lora_alpha, target_modules=pc.lora_target_modules)
        for n, p in policy.model.named_parameters():
            p.requires_grad_("lora_" in n)
    else:
        if policy.has_lora:
            raise ValueError("policy.finetune is 'full' but the policy carries a LoRA adapter; use finetune: lora")
        policy.model.requires_grad_(True)
    if pc.gradient_checkpointing:
        policy.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if policy.has_lora and hasattr(policy.base_model, "enable_input_require_grads"):
            policy.base_model.enable_input_require_grads()
    params = [p for p in policy.model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters (check policy.lora_target_modules)")
    return params


class ReferencePolicy:
    """The reference policy of the KL term: the same policy with LoRA disabled, or (full fine-tuning) a
    frozen copy of the initial weights. `with ref.active() as p: p.logprobs(...)`."""

    def __init__(self, policy: Any, frozen_copy: bool) -> None:
        self.policy = policy
        self.copy = None
        if frozen_copy:
            self.copy = copy.copy(policy)
            self.copy.model = copy.deepcopy(policy.model).requires_grad_(False).eval()

    @contextlib.contextmanager
    def active(self) -> Iterator[Any]:
        if self.copy is not None:
            yield self.copy
            return
        with self.policy.disabled_adapter() as p:
            yield p
