"""GRPO training of PromptLoop refinement policies (the diffusion model and the reward stay frozen).

Public API:
    TrainConfig (+ sections), load_config(path, overrides), dump_yaml, ConfigError   -- config.py
    PromptLoopTrainer(config, pipeline=, policy=, reward=, accelerator=)  .rollout/.score/.update/.evaluate
    train(config) -> TrainResult                                                       -- trainer.py
    group_advantages                                                                   -- advantages.py
    grpo_loss, grpo_token_loss, kl_k3                                                  -- loss.py
    load_prompts, PromptOrder, PromptFileError                                         -- data.py
    latest_checkpoint, CheckpointError                                                 -- checkpoint.py
    read_metrics, plot_reward_curve                                                    -- logging.py
    main(argv), add_train_parser(subparsers)                                           -- cli.py
Command line: `python -m promptloop.train configs/world.yaml grpo.beta=0.02 --resume`.

The names are imported on first use (PEP 562), so that `promptloop --help` and the config tools do not
load torch, diffusers and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptloop.train.advantages import group_advantages
    from promptloop.train.checkpoint import CheckpointError, latest_checkpoint
    from promptloop.train.cli import add_train_parser, main
    from promptloop.train.config import (
        AccelerateConfig,
        CheckpointConfig,
        ConfigError,
        DataConfig,
        EvalConfig,
        GRPOSettings,
        HubConfig,
        LoggingConfig,
        LoopConfig,
        PipelineConfig,
        PolicyConfig,
        TrainConfig,
        dump_yaml,
    )
    from promptloop.train.config_load import load_config
    from promptloop.train.data import PromptFileError, PromptOrder, load_prompts
    from promptloop.train.logging import plot_reward_curve, read_metrics
    from promptloop.train.loss import grpo_loss, grpo_token_loss, kl_k3
    from promptloop.train.trainer import PromptLoopTrainer, TrainError, TrainResult, train

_MODULE_OF: dict[str, str] = {
    "group_advantages": "advantages",
    "CheckpointError": "checkpoint", "latest_checkpoint": "checkpoint",
    "add_train_parser": "cli", "main": "cli",
    **{name: "config" for name in (
        "AccelerateConfig", "CheckpointConfig", "ConfigError", "DataConfig", "EvalConfig", "GRPOSettings", "HubConfig",
        "LoggingConfig", "LoopConfig", "PipelineConfig", "PolicyConfig", "TrainConfig", "dump_yaml")},
    "load_config": "config_load",
    "PromptFileError": "data", "PromptOrder": "data", "load_prompts": "data",
    "plot_reward_curve": "logging", "read_metrics": "logging",
    "grpo_loss": "loss", "grpo_token_loss": "loss", "kl_k3": "loss",
    "PromptLoopTrainer": "trainer", "TrainError": "trainer", "TrainResult": "trainer", "train": "trainer",
}


# former names, taken by TRL for classes with other signatures: an import of one says what it is called now
_RENAMED = {"GRPOTrainer": "PromptLoopTrainer", "GRPOConfig": "GRPOSettings (the `grpo` section of TrainConfig)"}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        if name in _RENAMED:
            raise AttributeError(f"promptloop.train.{name} is now {_RENAMED[name]}: TRL's {name} is another class "
                                 "with another signature")
        raise AttributeError(f"module 'promptloop.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"promptloop.train.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})


__all__ = [
    "AccelerateConfig",
    "CheckpointConfig",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "GRPOSettings",
    "HubConfig",
    "PromptLoopTrainer",
    "LoggingConfig",
    "LoopConfig",
    "PipelineConfig",
    "PolicyConfig",
    "PromptFileError",
    "PromptOrder",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "add_train_parser",
    "dump_yaml",
    "group_advantages",
    "grpo_loss",
    "grpo_token_loss",
    "kl_k3",
    "latest_checkpoint",
    "load_config",
    "load_prompts",
    "main",
    "plot_reward_curve",
    "read_metrics",
    "train",
]
