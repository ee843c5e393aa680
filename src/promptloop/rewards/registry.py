"""Batched reward API: the `Reward` protocol, a registry of reward factories, and weighted combinations.

A reward maps a batch of images and their queries (the user's captions) to one score per image in
[0, 1] plus a per-component breakdown::

    reward = get_reward("alignment")
    out = reward(images, queries)  # images: torch (N, 3, H, W) in [0, 1], numpy (N, H, W, 3), list of PIL
    out.scores  # torch.Tensor (N,)
    out.breakdown["colour"]  # torch.Tensor (N,)

New rewards (e.g. adapters for learned reward models) plug in with `register_reward`::

    @register_reward("my_reward")
    def _make(**kwargs) -> Reward:
        return MyReward(**kwargs)

A reward whose module should load only when it is used registers by name instead: `register_lazy_reward("name",
"package.module:factory")` (the embedded worlds register theirs this way, from their `REWARDS`).

`CombinedReward({"alignment": 0.8, "proxy": 0.2})` is itself a `Reward`; `build_reward_fn(weights)`
returns a plain function giving every named score plus their weighted sum under "total".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

ImagesLike = Any  # torch (N, 3, H, W) in [0, 1], numpy (N, H, W, 3), or a list of PIL images


@dataclass
class RewardOutput:
    """What a reward returns for a batch of N images.

    `scores`: (N,) float tensor in [0, 1]. `breakdown`: named (N,) tensors (per attribute or per
    component). `asserted`: optional (N,) bool masks, keyed like `breakdown`, saying where a breakdown
    entry is informative (e.g. "position" where the query asserts a position); an entry without a
    mask is informative everywhere. Breakdown values where the mask is False are placeholders (1.0).
    """

    scores: torch.Tensor
    breakdown: dict[str, torch.Tensor] = field(default_factory=dict)
    asserted: dict[str, torch.Tensor] = field(default_factory=dict)

    def mean_breakdown(self) -> dict[str, float]:
        """Batch mean of each breakdown entry over the samples where it is asserted (NaN if none)."""
        out: dict[str, float] = {}
        for key, val in self.breakdown.items():
            val = val.detach().float().cpu()
            mask = self.asserted.get(key)
            if mask is not None:
                mask = mask.detach().cpu().bool()
                out[key] = float(val[mask].mean()) if bool(mask.any()) else math.nan
            else:
                out[key] = float(val.mean()) if val.numel() else math.nan
        return out


@runtime_checkable
class Reward(Protocol):
    """A batched reward: (images, queries) -> RewardOutput with scores in [0, 1]."""

    def __call__(self, images: ImagesLike, queries: Sequence[str]) -> RewardOutput: ...


RewardFactory = Callable[..., Reward]
F = TypeVar("F", bound=RewardFactory)

_REGISTRY: dict[str, RewardFactory] = {}


class RewardLoadError(ValueError):
    """A reward's model could not be loaded (pre-flight at start-up); the message says which and why."""


class UnknownRewardError(KeyError):
    """A reward name that is not registered; the message lists the available names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def register_reward(name: str, *, overwrite: bool = False) -> Callable[[F], F]:
    """Decorator registering a reward factory (a callable taking keyword options) under `name`."""
    if not isinstance(name, str) or not name or "/" in name or name == "total":
        raise ValueError(f"invalid reward name {name!r}: a non-empty string without '/', not 'total'")

    def deco(factory: F) -> F:
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not factory and _REGISTRY[name] != factory:
            raise ValueError(f"a reward named {name!r} is already registered (pass overwrite=True to replace it)")
        _REGISTRY[name] = factory
        return factory

    return deco


class LazyRewardFactory:
    """A reward factory named "module:attribute", imported on first use; equal to another of the same name."""

    def __init__(self, ref: str) -> None:
        module, sep, attribute = ref.partition(":")
        if not sep or not module or not attribute:
            raise ValueError(f"invalid reward factory {ref!r}: expected 'package.module:factory'")
        self.ref = ref

    def resolve(self) -> Callable[..., Any]:
        """The factory itself (its module imported now)."""
        import importlib

        module, attribute = self.ref.split(":", 1)
        return getattr(importlib.import_module(module), attribute)

    @property
    def __signature__(self) -> Any:  # the factory's options, for `get_reward`'s check
        import inspect

        return inspect.signature(self.resolve())

    def __call__(self, **kwargs: Any) -> Reward:
        return self.resolve()(**kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LazyRewardFactory) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)

    def __repr__(self) -> str:
        return f"LazyRewardFactory({self.ref!r})"


def register_lazy_reward(name: str, ref: str, *, overwrite: bool = False) -> None:
    """Register the factory `ref` ("package.module:factory") under `name` without importing it; idempotent."""
    register_reward(name, overwrite=overwrite)(LazyRewardFactory(ref))


def unregister_reward(name: str) -> None:
    """Remove a registered reward (mainly for tests)."""
    if name not in _REGISTRY:
        raise UnknownRewardError(_unknown_message(name))
    del _REGISTRY[name]


def available_rewards() -> list[str]:
    """The registered reward names, sorted."""
    return sorted(_REGISTRY)


def _unknown_message(name: str) -> str:
    return f"unknown reward {name!r}; available rewards: {', '.join(available_rewards()) or '(none)'}"


def get_reward(name: str, **kwargs: Any) -> Reward:
    """Build the reward registered under `name` with the factory's keyword options."""
    if name not in _REGISTRY:
        raise UnknownRewardError(_unknown_message(name))
    _check_options(name, _REGISTRY[name], kwargs)
    return _REGISTRY[name](**kwargs)


def _check_options(name: str, factory: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    """ValueError naming the options the factory of reward `name` does not accept (before it runs)."""
    import inspect

    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"reward_kwargs.{name}: unknown option(s) {', '.join(map(repr, unknown))}; reward {name!r} "
                         f"accepts: {', '.join(known) or '(none)'}")


def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError("reward weights must be a non-empty mapping {name: weight}")
    out: dict[str, float] = {}
    for name, w in weights.items():
        if name not in _REGISTRY:
            raise UnknownRewardError(_unknown_message(name))
        try:
            wf = float(w)
        except (TypeError, ValueError) as e:
            raise ValueError(f"weight of reward {name!r} must be a number, got {w!r}") from e
        if not math.isfinite(wf):
            raise ValueError(f"weight of reward {name!r} must be finite, got {w!r}")
        out[name] = wf
    return out


def check_images(images: ImagesLike, queries: Sequence[str]) -> None:
    """ValueError for a batch whose length differs from the queries' or whose image sides are out of range."""
    from promptloop.validation import check_image_size

    if isinstance(images, (list, tuple)):
        n = len(images)
        sizes = [(im.height, im.width) for im in images if hasattr(im, "height") and hasattr(im, "width")]
    else:
        shape = tuple(getattr(images, "shape", ()))
        if len(shape) != 4:
            raise ValueError(f"reward images: expected a batch (N, 3, H, W) or (N, H, W, 3), got shape {shape}")
        n = shape[0]
        sizes = [(shape[2], shape[3]) if shape[1] in (1, 3, 4) and shape[-1] not in (1, 3, 4) else (shape[1], shape[2])]
    if n != len(queries):
        raise ValueError(f"reward images: {n} images for {len(queries)} queries")
    for h, w in sizes:
        check_image_size(h, w, "reward images")


class CombinedReward:
    """Weighted combination of registered rewards; itself a `Reward`.

    `scores` = sum_i w_i * s_i / sum_i w_i when `normalise` (default; needs non-negative weights with a
    positive sum, so scores stay in [0, 1]), else the plain weighted sum. Every component is computed,
    weight 0 included (handy for logging). `breakdown` holds each component's scores under its name and
    its own breakdown under "name/key". `evaluate` returns {name: scores, ..., "total": weighted sum}.
    """

    def __init__(
        self,
        weights: Mapping[str, float],
        *,
        normalise: bool = True,
        reward_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        rewards: Mapping[str, Reward] | None = None,
    ) -> None:
        self.weights = _check_weights(weights)
        self.normalise = normalise
        if normalise:
            if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
                raise ValueError(
                    f"normalised combination needs non-negative weights with a positive sum, got {self.weights}"
                )
        reward_kwargs = dict(reward_kwargs or {})
        rewards = dict(rewards or {})
        for name in list(reward_kwargs) + list(rewards):
            if name not in self.weights:
                raise ValueError(f"options given for reward {name!r} which has no weight; weights: {self.weights}")
        self.rewards: dict[str, Reward] = {
            name: rewards[name] if name in rewards else get_reward(name, **reward_kwargs.get(name, {}))
            for name in self.weights
        }

    def preflight(self) -> CombinedReward:
        """Load every component that has a `load()` now, before any rollout; returns self.

        A component that cannot load raises `RewardLoadError` (a ValueError: one line, naming the reward
        and the reason), so `train`, `eval` and `generate` fail at start-up rather than mid-run.
        """
        for name, reward in self.rewards.items():
            load = getattr(reward, "load", None)
            if callable(load):
                try:
                    load()
                except Exception as e:  # noqa: BLE001 - any loading failure becomes one clear line
                    reason = " ".join(str(e).split()) or type(e).__name__
                    raise RewardLoadError(f"reward {name!r} cannot load: {reason}") from e
        return self

    def _components(self, images: ImagesLike, queries: Sequence[str]) -> dict[str, RewardOutput]:
        check_images(images, queries)
        return {name: reward(images, queries) for name, reward in self.rewards.items()}

    def _total(self, outs: Mapping[str, RewardOutput]) -> torch.Tensor:
        total: torch.Tensor | None = None
        for name, out in outs.items():
            term = self.weights[name] * out.scores.float()
            total = term if total is None else total + term.to(total.device)
        assert total is not None
        return total

    def __call__(self, images: ImagesLike, queries: Sequence[str]) -> RewardOutput:
        outs = self._components(images, queries)
        total = self._total(outs)
        if self.normalise:
            total = (total / sum(self.weights.values())).clamp(0.0, 1.0)
        breakdown: dict[str, torch.Tensor] = {}
        asserted: dict[str, torch.Tensor] = {}
        for name, out in outs.items():
            breakdown[name] = out.scores
            for key, val in out.breakdown.items():
                breakdown[f"{name}/{key}"] = val
            for key, val in out.asserted.items():
                asserted[f"{name}/{key}"] = val
        return RewardOutput(total, breakdown, asserted)

    def evaluate(self, images: ImagesLike, queries: Sequence[str]) -> dict[str, torch.Tensor]:
        """{name: scores for each component, "total": plain weighted sum (not normalised)}."""
        outs = self._components(images, queries)
        result = {name: out.scores for name, out in outs.items()}
        result["total"] = self._total(outs)
        return result


def build_reward_fn(
    weights: Mapping[str, float], reward_kwargs: Mapping[str, Mapping[str, Any]] | None = None
) -> Callable[[ImagesLike, Sequence[str]], dict[str, torch.Tensor]]:
    """A function (images, queries) -> {name: (N,) scores, ..., "total": sum_i w_i * scores_i}.

    Weights may be any finite numbers (negative ones penalise); "total" is not normalised.
    """
    combined = CombinedReward(weights, normalise=False, reward_kwargs=reward_kwargs)

    def reward_fn(images: ImagesLike, queries: Sequence[str]) -> dict[str, torch.Tensor]:
        return combined.evaluate(images, queries)

    return reward_fn
