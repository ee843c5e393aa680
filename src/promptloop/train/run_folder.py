"""The run folder of a `PromptLoopTrainer`: resuming or starting afresh in `output_dir` (refusing to clobber another
run), and writing the final policy with its model card, whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from promptloop.fs_errors import atomic_write, describe_os_error, os_error_in
from promptloop.train import checkpoint as ckpt
from promptloop.train.resume import metrics_problems, resume_checkpoint

if TYPE_CHECKING:
    from promptloop.train.trainer import PromptLoopTrainer


def _train_error(message: str) -> Exception:
    from promptloop.train.trainer import TrainError

    return TrainError(message)


def prepare_output_dir(trainer: PromptLoopTrainer) -> None:
    """Resume, refuse to clobber another run, or start afresh, as configured."""
    cfg, acc = trainer.config, trainer.accelerator
    if acc.is_main_process:
        trainer.output_dir.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite:
            shutil.rmtree(ckpt.checkpoint_root(trainer.output_dir), ignore_errors=True)
        ckpt.remove_stale_tmp(trainer.output_dir)
    acc.wait_for_everyone()
    path, warnings = resume_checkpoint(cfg.resume, trainer.output_dir)
    if path is None and not cfg.resume and ckpt.latest_checkpoint(trainer.output_dir) is not None:
        raise _train_error(f"{trainer.output_dir} holds checkpoints of an earlier run: pass --resume (resume=true) to "
                           "continue it, or overwrite=true to start afresh")
    if path is not None:
        trainer.load_checkpoint(path)
        if trainer.step > cfg.steps:
            raise _train_error(f"steps={cfg.steps} is below the step {trainer.step} of checkpoint {path}: set steps >= "
                               f"{trainer.step} to continue, or overwrite=true to start afresh")
        if acc.is_main_process:
            warnings += metrics_problems(trainer.logger.path, trainer.step)
            for w in warnings:
                print(f"promptloop.train: warning: {w}", file=sys.stderr)
        trainer.logger.truncate_after(trainer.step)
        if acc.is_main_process:
            print(f"promptloop.train: resumed from {path} at step {trainer.step}")
    else:
        trainer.logger.reset()
        if acc.is_main_process:
            atomic_write(trainer.output_dir / "config.json",
                         lambda tmp: tmp.write_text(json.dumps(cfg.to_dict(), indent=1)))
    acc.wait_for_everyone()


def write_model_card(trainer: PromptLoopTrainer, folder: Path, last: dict[str, Any]) -> None:
    """The saved policy's README.md: what it is, its training, the last held-out rows (with the base row) and the
    last evaluation's trajectory grid as trajectory.png (see `promptloop.hub`)."""
    from promptloop.hub import write_training_card
    from promptloop.integrity import write_manifest

    train_rec, eval_rec = _latest_records(trainer.logger.path)
    grids = sorted((trainer.output_dir / "trajectories").glob("step_*.png"))
    cfg = trainer.config
    write_training_card(folder, config=cfg, metrics=last or train_rec, eval_metrics=eval_rec,
                        trajectory_png=grids[-1] if grids else None,
                        repo_id=(cfg.hub.hub_model_id or Path(cfg.output_dir).resolve().name) if cfg.hub.push_to_hub
                        else None)
    write_manifest(folder)  # trajectory.png joins the manifest (the card itself is never in it)


def save_final_policy(trainer: PromptLoopTrainer, policy_path: Path, weights: dict[str, torch.Tensor] | None,
                      last: dict[str, Any]) -> None:
    """Write the final policy (with its model card) through `.tmp-policy` and a rename; a full disk leaves
    neither half of it."""
    tmp = trainer.output_dir / ".tmp-policy"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.policy.save_pretrained(tmp, state_dict=weights)
        write_model_card(trainer, tmp, last)
        shutil.rmtree(policy_path, ignore_errors=True)
        os.replace(tmp, policy_path)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        found = os_error_in(e, tmp)
        if found is None:
            raise
        raise _final_policy_error(policy_path, found, trainer.last_checkpoint) from e


def _latest_records(metrics_path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The last training and evaluation records of metrics.jsonl (also those of the runs before a resume)."""
    from promptloop.train.logging import read_metrics

    recs = read_metrics(metrics_path) if metrics_path.exists() else []
    train = [r for r in recs if r.get("kind") == "train"]
    evals = [r for r in recs if r.get("kind") == "eval"]
    return (train[-1] if train else None), (evals[-1] if evals else None)


def _final_policy_error(path: Path, error: OSError, checkpoint: Path | None) -> Exception:
    where = f"; the last checkpoint {checkpoint} holds the same policy (its policy/ folder)" if checkpoint else ""
    return _train_error(f"cannot write the final policy {path}: {describe_os_error(error, writing=True)}; the partial "
                        f".tmp-policy was removed{where}")
