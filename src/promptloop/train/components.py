"""Build the run's parts from the config: the frozen pipeline, the policy (with LoRA or trainable in full),
the reference policy, and the reward.

The pipeline and the policy are loaded by `promptloop.models` (which reads `world`, `world:PATH`, `tiny:NAME`,
folders and Hub ids) with the config's options.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch

from promptloop import models
from promptloop.policy.sanitize import token_length_fn
from promptloop.train.config import PipelineConfig, PolicyConfig, TrainConfig


def load_pipeline(cfg: PipelineConfig, device: torch.device | str) -> tuple[Any, dict[str, Any]]:
    """(pipeline on `device`, extra keyword arguments every sampler call needs), by `promptloop.models`."""
    return models.load_pipeline(cfg.name_or_path, device, dtype=cfg.dtype, variant=cfg.variant,
                                revision=cfg.revision, offload=cfg.offload, height=cfg.height, width=cfg.width)


def load_policy(cfg: PolicyConfig, device: torch.device | str) -> Any:
    """The policy (without the trainable adapter, which `prepare_policy` attaches), by `promptloop.models`."""
    return models.load_policy(cfg.name_or_path, device, dtype=cfg.dtype, quantization=cfg.quantization,
                              trust_remote_code=cfg.trust_remote_code, revision=cfg.revision,
                              attn_implementation=cfg.attn_implementation, device_map=cfg.device_map,
                              adapter_path=cfg.adapter_path)


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
