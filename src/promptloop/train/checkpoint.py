"""Atomic, resumable checkpoints.

Layout of `OUTPUT_DIR/checkpoints/step-00000012/`::

    policy/                 VLMPolicy.save_pretrained: the LoRA adapter (or the full model), safetensors
    optimizer.pt            optimizer state_dict
    lr_scheduler.pt         LR schedule state_dict
    rng/rank-<r>.pt         python / numpy / torch (and CUDA) RNG states of process r
    trainer_state.json      step, data position, the run's identity (config parts that must not change),
                            and the size (and sha256 for files under 64 MiB) of every file above

Writing goes to `.tmp-step-00000012/` and ends with `os.replace` onto the final name, so a process killed
at any moment leaves either a complete checkpoint or none (stale tmp folders are removed at start).
Loading verifies sizes and hashes (`CheckpointError` on a corrupt checkpoint) and compares the identity
with the current config (`CheckpointError` naming each differing field). `torch.load` is only called
with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptloop.fs_errors import describe_os_error, os_error_in
from promptloop.integrity import IntegrityError, check_files, file_manifest
from promptloop.train.faults import fault_point

FORMAT_VERSION = 1
STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_HASH_LIMIT = 64 * 2**20


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or incompatible with the current configuration."""


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint in `output_dir`, or None."""
    cps = list_checkpoints(output_dir)
    return cps[-1] if cps else None


def remove_stale_tmp(output_dir: str | Path) -> None:
    """Delete half-written checkpoint folders left by a killed run."""
    root = checkpoint_root(output_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------------
# RNG
# ----------------------------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """This process's RNG states in a form `torch.load(weights_only=True)` accepts."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------------------------
def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with p.open("rb") as fh:
                os.fsync(fh.fileno())


def _save_torch(obj: Any, path: Path) -> None:
    """torch.save through a file handle of ours, so that a write error keeps its OSError (torch's own writer of a
    path reports a full disk as '[enforce fail at inline_container.cc:...] unexpected pos')."""
    try:
        with path.open("wb") as fh:
            torch.save(obj, fh)
    except Exception as e:
        found = os_error_in(e, path)
        if found is None:
            raise
        raise OSError(found.errno, found.strerror, str(path)) from e


def _load_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"corrupt checkpoint file {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from e


# ----------------------------------------------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------------------------------------------
def save_checkpoint(
    accelerator: Any,
    output_dir: str | Path,
    step: int,
    policy: Any,
    optimizer: Any,
    lr_scheduler: Any,
    state: dict[str, Any],
    keep: int = 0,
    sharded: bool = False,
) -> Path:
    """Write the checkpoint of `step` atomically (all processes call this; returns its final path). `sharded`:
    the policy is FSDP-sharded; its weights and optimizer state are gathered whole first (every process takes
    part) and written as a single process would."""
    root = checkpoint_root(output_dir)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}"
    try:
        if accelerator.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            (tmp / "rng").mkdir(parents=True)
        accelerator.wait_for_everyone()
        _save_torch(rng_state(), tmp / "rng" / f"rank-{accelerator.process_index}.pt")
        model_state = optimizer_state = None
        if sharded:
            from promptloop.train import sharding

            model_state = sharding.full_model_state(policy.model)
            optimizer_state = sharding.full_optimizer_state(policy.model, optimizer)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            policy.save_pretrained(tmp / "policy", state_dict=model_state)
            fault_point("checkpoint:policy", step)
            _save_torch(optimizer.state_dict() if optimizer_state is None else optimizer_state, tmp / "optimizer.pt")
            _save_torch(lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
            full_state = {"format": FORMAT_VERSION, **state, "world_size": accelerator.num_processes,
                          "optimizer_layout": "by_name" if sharded else "by_index",
                          "files": file_manifest(tmp, exclude=(STATE_FILE,), hash_limit=_HASH_LIMIT)}
            (tmp / STATE_FILE).write_text(json.dumps(full_state, indent=1))
            _fsync_tree(tmp)
            fault_point("checkpoint:state", step)
            if final.exists():  # re-saving a step (e.g. after a resume at that step)
                shutil.rmtree(final)
            os.replace(tmp, final)
            fault_point("checkpoint:replaced", step)
            if keep > 0:
                for old in list_checkpoints(output_dir)[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
    except Exception as e:  # disk full, read-only (torch / safetensors wrap the OSError): no partial checkpoint stays
        shutil.rmtree(tmp, ignore_errors=True)
        os_error = os_error_in(e, tmp)
        if os_error is None:
            raise
        last = next((p for p in reversed(list_checkpoints(output_dir)) if p != final), None)
        keep = f"the last good checkpoint {last} is unchanged" if last is not None else "there is no earlier checkpoint"
        raise CheckpointError(f"cannot write checkpoint {final}: {describe_os_error(os_error, writing=True)}; the "
                              f"partial {tmp.name} was removed; {keep}") from e
    accelerator.wait_for_everyone()
    return final


def read_state(path: str | Path) -> dict[str, Any]:
    """The trainer_state.json of a checkpoint, after checking every listed file's size and hash."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    state_file = path / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a checkpoint (no {STATE_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt checkpoint {path}: {STATE_FILE} is not valid JSON ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {state.get('format') if isinstance(state, dict) else '?'}"
                              f", this version reads format {FORMAT_VERSION}")
    try:
        check_files(path, state.get("files", {}), "corrupt checkpoint")
    except IntegrityError as e:
        raise CheckpointError(str(e)) from None
    return state


def _upgrade_identity(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint identity written by an older version in today's spelling (grpo.scale_rewards was a bool;
    pipeline.revision and policy.quantization did not exist: the default branch, none)."""
    pipeline = saved.get("pipeline")
    if isinstance(pipeline, dict) and "revision" not in pipeline:
        saved = {**saved, "pipeline": {**pipeline, "revision": None}}
    policy = saved.get("policy")
    if isinstance(policy, dict) and "quantization" not in policy:
        saved = {**saved, "policy": {**policy, "quantization": "none"}}
    grpo = saved.get("grpo")
    if isinstance(grpo, dict) and isinstance(grpo.get("scale_rewards"), bool):
        from promptloop.train.advantages import LEGACY_SCALE_REWARDS

        saved = {**saved, "grpo": {**grpo, "scale_rewards": LEGACY_SCALE_REWARDS[grpo["scale_rewards"]]}}
    return saved


def check_identity(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Raise CheckpointError listing the fields where the checkpoint's run identity differs from the config."""
    saved = _upgrade_identity(saved)
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if saved.get(key, "<missing>") != current.get(key, "<missing>"):
            old, new = saved.get(key, "<missing>"), current.get(key, "<missing>")
            diffs.append(f"{key}: checkpoint {old!r} vs config {new!r}")
    if diffs:
        raise CheckpointError(f"checkpoint {path} was written by an incompatible run (different config/model): "
                              + "; ".join(diffs))


def _unsharded_class(model: Any) -> type:
    """The model's own class (FSDP2 swaps a sharded module's class for a subclass named FSDP<Name>)."""
    cls = type(model)
    name = cls.__name__.removeprefix("FSDP")
    return next((c for c in cls.__mro__ if c.__name__ == name), cls)


def _load_policy_weights(path: Path, policy: Any, sharded: bool = False) -> None:
    folder = path / "policy"
    if policy.has_lora:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        f = folder / "adapter_model.safetensors"
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} holds no LoRA adapter (policy/adapter_model.safetensors); "
                                  "was it written by a full fine-tuning run?")
        try:
            sd = load_file(str(f))
        except Exception as e:
            raise CheckpointError(f"corrupt checkpoint file {f}: {e}") from e
        try:
            result = set_peft_model_state_dict(policy.model, sd)
        except RuntimeError as e:  # shape mismatch
            raise CheckpointError(f"checkpoint {path}: the adapter does not fit the policy: "
                                  f"{str(e).splitlines()[0]}") from e
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing or result.unexpected_keys:
            raise CheckpointError(f"checkpoint {path}: the adapter does not fit the policy (missing {missing[:3]}, "
                                  f"unexpected {list(result.unexpected_keys)[:3]})")
        return
    if (folder / "adapter_config.json").exists():
        raise CheckpointError(f"checkpoint {path} holds a LoRA adapter but the policy is fully fine-tuned")
    base = policy.base_model
    try:
        loaded = _unsharded_class(base).from_pretrained(str(folder), dtype=policy.dtype)
        if sharded:  # every process read the whole weights; each keeps its shard
            from promptloop.train import sharding

            result = sharding.load_full_model_state(base, loaded.state_dict())
        else:
            result = base.load_state_dict(loaded.state_dict(), strict=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path}: cannot load the policy weights: {type(e).__name__}: "
                              f"{str(e).splitlines()[0]}") from e
    del loaded, result


def load_checkpoint(
    path: str | Path,
    accelerator: Any,
    policy: Any,
    optimizer: Any,
    lr_scheduler: Any,
    identity: dict[str, Any],
    sharded: bool = False,
) -> dict[str, Any]:
    """Restore policy weights, optimizer, LR schedule and this process's RNG; return the trainer state.
    `sharded`: the policy is FSDP-sharded (a checkpoint of a sharded run is resumed by a sharded run)."""
    path = Path(path)
    state = read_state(path)
    check_identity(path, state.get("identity", {}), identity)
    layout = state.get("optimizer_layout", "by_index")
    if layout != ("by_name" if sharded else "by_index"):
        kind, launch = ("a sharded (FSDP)", "configs/accelerate/fsdp.yaml") if layout == "by_name" else \
            ("a data-parallel", "a launch without FSDP")
        raise CheckpointError(f"checkpoint {path} was written by {kind} run; resume it with {launch}")
    _load_policy_weights(path, policy, sharded)
    try:
        if sharded:
            from promptloop.train import sharding

            sharding.load_full_optimizer_state(policy.model, optimizer, _load_torch(path / "optimizer.pt"))
        else:
            optimizer.load_state_dict(_load_torch(path / "optimizer.pt"))
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path}: optimizer state does not fit the trainable parameters: {e}") from e
    lr_scheduler.load_state_dict(_load_torch(path / "lr_scheduler.pt"))
    rng_file = path / "rng" / f"rank-{accelerator.process_index}.pt"
    if rng_file.is_file():
        set_rng_state(_load_torch(rng_file))
    return state
