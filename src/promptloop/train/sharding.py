"""Fully sharded full fine-tuning of the policy: FSDP2 through Accelerate (`configs/accelerate/fsdp.yaml`).

Under `accelerate launch --config_file configs/accelerate/fsdp.yaml` every process holds 1/N of the policy's
parameters, gradients and AdamW state, and 1/N of the frozen reference copy (`grpo.beta > 0`), instead of a
whole copy of each (`promptloop plan` prints both). What the trainer does differently there:

- the policy and its optimizer go through `accelerator.prepare(model, optimizer)` (Accelerate's FSDP2:
  `fully_shard` on every decoder / vision block named in the plugin, or, where it names none, the model's own
  `_no_split_modules` classes that it holds); the frozen reference copy is sharded the same way;
- sampling runs inside `gathered(...)`: every sharded block is all-gathered once and kept whole until the
  rollout ends, so each process decodes alone (processes sample different numbers of policy calls and
  tokens; per-forward all-gathers would deadlock them), then the blocks are freed again;
- FSDP reduce-scatters the gradients, averaging them over processes; the trainer's loss is already the global
  token mean split over processes (each part a sum divided by the global count), so it is scaled by the
  process count before `backward` (`loss_scale`), which gives the single-process gradient;
- checkpoints and the final policy are written from full (gathered) state dicts on the main process, so a
  checkpoint is the same files whatever the process count, and resuming loads them back into the shards.

FSDP2 needs Accelerate's `fsdp_version: 2`. LoRA runs stay data parallel (`configs/accelerate/ddp.yaml`): the
adapter and its optimizer state are small, and the frozen base is what a GPU must hold either way. DeepSpeed's
engine owns backward and the optimizer step, which this trainer's update does itself, so it is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

_REFUSED = ("DEEPSPEED", "MEGATRON_LM")


class ShardingError(RuntimeError):
    """A distributed set-up this trainer cannot run."""


def distributed_name(accelerator: Any) -> str:
    value = accelerator.distributed_type
    return str(getattr(value, "value", value))


def is_sharded_run(accelerator: Any) -> bool:
    """True under Accelerate's FSDP (checked by `check_distributed`)."""
    return distributed_name(accelerator) == "FSDP"


def check_distributed(accelerator: Any, finetune: str) -> None:
    """Refuse, in one line, the Accelerate modes this trainer cannot run."""
    name = distributed_name(accelerator)
    if name in _REFUSED:
        raise ShardingError(f"Accelerate distributed type {name} is not supported by promptloop.train (its engine "
                            "owns backward and the optimizer step, which the GRPO update does itself): for sharded "
                            "full fine-tuning launch with configs/accelerate/fsdp.yaml, for LoRA with "
                            "configs/accelerate/ddp.yaml")
    if name != "FSDP":
        return
    plugin = accelerator.state.fsdp_plugin
    if getattr(plugin, "fsdp_version", 1) != 2:
        raise ShardingError("FSDP: promptloop.train shards with FSDP2; set fsdp_config.fsdp_version: 2 in the "
                            "Accelerate config (configs/accelerate/fsdp.yaml)")
    if finetune != "full":
        raise ShardingError("FSDP shards full fine-tuning (policy.finetune: full); a LoRA run trains a small adapter "
                            "on a frozen base: launch it with configs/accelerate/ddp.yaml")


def set_wrap_classes(accelerator: Any, model: torch.nn.Module) -> list[str]:
    """The block classes FSDP shards one at a time: the plugin's, or (where it names none) the model's own
    `_no_split_modules` classes that occur in it. Returns them."""
    plugin = accelerator.state.fsdp_plugin
    names = list(getattr(plugin, "transformer_cls_names_to_wrap", None) or [])
    if not names:
        present = {type(m).__name__ for m in model.modules()}
        declared = list(getattr(model, "_no_split_modules", None) or [])
        names = [n for n in declared if n in present]
        if not names:
            raise ShardingError(f"FSDP: {type(model).__name__} declares no block classes (_no_split_modules) to "
                                "shard; name them in fsdp_config.fsdp_transformer_layer_cls_to_wrap")
        plugin.transformer_cls_names_to_wrap = names
    return names


def shard_trainable(accelerator: Any, model: torch.nn.Module, optimizer: Any) -> tuple[torch.nn.Module, Any]:
    """The policy model and its optimizer sharded (`accelerator.prepare`; the model is sharded in place)."""
    set_wrap_classes(accelerator, model)
    return accelerator.prepare(model, optimizer)


def shard_frozen(accelerator: Any, model: torch.nn.Module) -> torch.nn.Module:
    """A frozen model (the KL reference) sharded like the policy, with no optimizer."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    set_wrap_classes(accelerator, model)
    return fsdp2_prepare_model(accelerator, model)


def loss_scale(accelerator: Any, sharded: bool) -> float:
    """What the per-process loss is multiplied by before `backward` (`sharded`: the policy is FSDP-sharded):
    FSDP averages gradients over processes, the trainer's loss parts are already global sums split over them."""
    return float(accelerator.num_processes) if sharded else 1.0


def _fsdp_modules(model: torch.nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model: torch.nn.Module, policies: tuple[Any, ...] = (), reshard_after_forward: bool = True
             ) -> Iterator[None]:
    """Within the block the sharded `model` is whole on every process (one all-gather per block on entry) and
    its forwards run without collectives, so processes may run different numbers of them (sampling); `policies`
    decode without `synced_gpus` meanwhile. A no-op for a model that is not sharded."""
    modules = _fsdp_modules(model)
    if not modules:
        yield
        return
    # the root must initialise FSDP's state before any block is unsharded alone (FSDP2 private API,
    # torch >= 2.6: FSDPModule._get_fsdp_state()._lazy_init(), what the root's first forward would call)
    modules[0]._get_fsdp_state()._lazy_init()
    saved = [p.synced_gpus for p in policies]
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    for p in policies:
        p.synced_gpus = False
    try:
        yield
    finally:
        for p, s in zip(policies, saved, strict=True):
            p.synced_gpus = s
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(reshard_after_forward, recurse=False)


def _options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on CPU, on the main process (empty elsewhere); every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def full_optimizer_state(model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    """The whole optimizer state (keyed by parameter names) on CPU, on the main process; every process calls it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, _raw(optimizer), options=_options(cpu_offload=True))


def load_full_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a whole state dict (every process holds it) into the shards."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_options())


def load_full_optimizer_state(model: torch.nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    """Load a whole optimizer state (as `full_optimizer_state` wrote it; every process holds it) into the shards."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    # strict=False: a parameter that never had a gradient (e.g. LLaVA's unused vision post-layernorm) has no AdamW
    # state to load, as `Optimizer.load_state_dict` also accepts
    set_optimizer_state_dict(model, _raw(optimizer), optim_state_dict=state, options=_options(strict=False))


def _raw(optimizer: Any) -> Any:
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps the torch one


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor (its shard of a DTensor; a plain tensor as it is)."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def as_float(value: Any) -> float:
    """A scalar that may be a DTensor (a norm over sharded gradients)."""
    full = getattr(value, "full_tensor", None)
    return float(full() if callable(full) else value)


__all__ = ["ShardingError", "as_float", "check_distributed", "full_model_state", "full_optimizer_state", "gathered",
           "is_sharded_run", "load_full_model_state", "local_part", "load_full_optimizer_state", "loss_scale", "set_wrap_classes",
           "shard_frozen", "shard_trainable"]
