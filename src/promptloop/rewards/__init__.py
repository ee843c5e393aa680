"""Rewards: a batched `Reward` protocol, a registry of named rewards and weighted combinations.

Built in: "proxy" (`rewards.proxy`, a hackable image-only aesthetic score). Each embedded world registers its own
by name, lazily (its `REWARDS`; `promptloop.world`): the Shapes world "alignment" (GenEval-like fraction of the
query's facts satisfied) and "count", the Patterns world "patterns_alignment", the Backdrops world
"backdrops_alignment" and "backdrops_legible"; every world's alignment is an `AlignmentReward`
(`rewards.alignment`). The model rewards (`rewards.adapters`) are registered too. Other modules add rewards with
`register_reward(name)(factory)` or `register_lazy_reward(name, "module:factory")`.
"""

from __future__ import annotations

from promptloop.rewards import proxy as proxy  # registers the built-in image-only reward
from promptloop.rewards.adapters import register_model_rewards
from promptloop.rewards.alignment import AlignmentReward
from promptloop.rewards.proxy import ProxyReward
from promptloop.rewards.registry import (
    CombinedReward,
    LazyRewardFactory,
    Reward,
    RewardFactory,
    RewardLoadError,
    RewardOutput,
    UnknownRewardError,
    available_rewards,
    build_reward_fn,
    get_reward,
    register_lazy_reward,
    register_reward,
    unregister_reward,
)
from promptloop.world.imaging import AnalyzerInputError

register_model_rewards()  # real-model rewards by name; each imports its model lazily, on first use

from promptloop.world import register_world_rewards  # noqa: E402  (after the registry is complete)

register_world_rewards()  # each world's `REWARDS`, by name; a world's reward module is imported on first use

__all__ = [
    "AlignmentReward",
    "AnalyzerInputError",
    "CombinedReward",
    "LazyRewardFactory",
    "ProxyReward",
    "Reward",
    "RewardFactory",
    "RewardLoadError",
    "RewardOutput",
    "UnknownRewardError",
    "available_rewards",
    "build_reward_fn",
    "get_reward",
    "register_lazy_reward",
    "register_reward",
    "unregister_reward",
]
