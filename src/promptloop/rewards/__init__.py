"""Rewards: a batched `Reward` protocol, a registry of named rewards and weighted combinations.

Built-in (Shapes world, see `promptloop.rewards.world`): "alignment" (GenEval-like fraction of the
query's facts satisfied), "proxy" (hackable image-only aesthetic score), "count". Other modules add
rewards with `register_reward(name)(factory)`.
"""

from __future__ import annotations

from promptloop.rewards import patterns as patterns  # registers the Patterns world's rewards
from promptloop.rewards import world as world  # registers the built-in rewards
from promptloop.rewards.adapters import register_model_rewards
from promptloop.rewards.registry import (
    CombinedReward,
    Reward,
    RewardFactory,
    RewardLoadError,
    RewardOutput,
    UnknownRewardError,
    available_rewards,
    build_reward_fn,
    get_reward,
    register_reward,
    unregister_reward,
)
from promptloop.rewards.world import AlignmentReward, CountReward, ProxyReward, alignment_facts, parse_query
from promptloop.world.imaging import AnalyzerInputError

register_model_rewards()  # real-model rewards by name; each imports its model lazily, on first use

from promptloop.world import register_world_rewards  # noqa: E402  (after the registry is complete)

register_world_rewards()  # each world package's own `rewards` module (world v3: backdrops_alignment, backdrops_legible)

__all__ = [
    "AlignmentReward",
    "AnalyzerInputError",
    "CombinedReward",
    "CountReward",
    "ProxyReward",
    "Reward",
    "RewardFactory",
    "RewardLoadError",
    "RewardOutput",
    "UnknownRewardError",
    "alignment_facts",
    "available_rewards",
    "build_reward_fn",
    "get_reward",
    "parse_query",
    "register_reward",
    "unregister_reward",
]
