"""Model-based reward adapters (optional extras) and their opt-in registration in the reward registry.

``clipscore``, ``pickscore`` (`promptloop.rewards.adapters.clip`), ``aesthetic`` (`.aesthetic`),
``imagereward`` (`.image_reward`), ``hpsv2`` (`.hps`) and ``hpsv3`` (`.hpsv3`), all on transformers' own classes.

Registration is explicit, so that importing `promptloop.rewards` (or this package) leaves the
registry to the world rewards::

    from promptloop.rewards.adapters import register_model_rewards
    register_model_rewards()  # idempotent; imports neither transformers nor the optional packages
    reward = get_reward("clipscore", model_name_or_path="openai/clip-vit-base-patch32")

(`model_rewards_registered()` is the same as a context manager that unregisters on exit, for tests.)
Each reward builds its model on first use (or `load()`). Common factory options: `model_name_or_path`,
`device` (None: CUDA if available, else CPU), `dtype`, `batch_size`, `local_files_only` (default: the
HF_HUB_OFFLINE environment variable), `normalize=(lo, hi)` (affine map of the raw score to [0, 1],
clamped; the raw score stays in ``breakdown["raw"]``), `trust_remote_code` (False) and `quantization`
(None, "8bit" or "4bit": bitsandbytes, `.quantization`). Raw scores are not in [0, 1]; each module documents
its scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from promptloop.rewards.adapters.aesthetic import AestheticHead, AestheticReward, load_head_state_dict, make_aesthetic
from promptloop.rewards.adapters.base import MissingExtraError, ModelReward, to_uint8_images
from promptloop.rewards.adapters.clip import (
    ClipEmbedder,
    ClipScoreReward,
    ClipSimilarityReward,
    PickScoreReward,
    make_clipscore,
    make_pickscore,
)
from promptloop.rewards.adapters.hps import HPSv2Reward, make_hpsv2
from promptloop.rewards.adapters.hpsv3 import HPSv3Reward, make_hpsv3
from promptloop.rewards.adapters.image_reward import ImageRewardReward, make_imagereward
from promptloop.rewards.registry import RewardFactory, available_rewards, register_reward, unregister_reward

MODEL_REWARD_FACTORIES: dict[str, RewardFactory] = {
    "aesthetic": make_aesthetic,
    "clipscore": make_clipscore,
    "hpsv2": make_hpsv2,
    "hpsv3": make_hpsv3,
    "imagereward": make_imagereward,
    "pickscore": make_pickscore,
}


def register_model_rewards(names: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Register the model rewards `names` (default: all) in the reward registry; idempotent.

    Returns the names that were newly registered. A name already taken by another factory raises
    ValueError (the registry's rule).
    """
    selected = list(MODEL_REWARD_FACTORIES) if names is None else list(names)
    unknown = [n for n in selected if n not in MODEL_REWARD_FACTORIES]
    if unknown:
        raise ValueError(f"unknown model rewards {unknown}; choose from {sorted(MODEL_REWARD_FACTORIES)}")
    before = set(available_rewards())
    for name in selected:
        register_reward(name)(MODEL_REWARD_FACTORIES[name])
    return [n for n in selected if n not in before]


def unregister_model_rewards(names: list[str] | tuple[str, ...] | None = None) -> None:
    """Remove the model rewards `names` (default: all) from the registry where registered."""
    registered = set(available_rewards())
    for name in MODEL_REWARD_FACTORIES if names is None else names:
        if name in registered:
            unregister_reward(name)


@contextmanager
def model_rewards_registered(names: list[str] | tuple[str, ...] | None = None) -> Iterator[list[str]]:
    """Register the model rewards for the duration of a block; unregister those it added on exit."""
    added = register_model_rewards(names)
    try:
        yield added
    finally:
        unregister_model_rewards(added)


__all__ = [
    "MODEL_REWARD_FACTORIES",
    "AestheticHead",
    "AestheticReward",
    "ClipEmbedder",
    "ClipScoreReward",
    "ClipSimilarityReward",
    "HPSv2Reward",
    "HPSv3Reward",
    "ImageRewardReward",
    "MissingExtraError",
    "ModelReward",
    "PickScoreReward",
    "load_head_state_dict",
    "model_rewards_registered",
    "register_model_rewards",
    "to_uint8_images",
    "unregister_model_rewards",
]
