"""The models the app samples with: which pipeline, policies and reward, loaded once and kept.

The embedded world by default: backbone A, the shipped world policy with its GRPO adapter for
PromptLoop (as the demo uses it) and its feed-forward adapter for the feed-forward row. Another world's backbone
by folder (`world:PATH`; `world_pipeline` gives a world's shipped one): the policy `world` is then that world's
shipped policy (its `DEFAULT_POLICY`), and where it ships none yet the rows that need a policy say so instead of
sampling with another world's policy. Any diffusers pipeline / transformers VLM / LoRA adapter by folder or Hub id
otherwise (loaded through `promptloop.models`, as `promptloop generate` does); a load failure is kept as a message
for the page instead of raising, so the app keeps serving.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from promptloop.models import parse_model_ref
from promptloop.rewards import get_reward
from promptloop.world import (
    DEFAULT_WORLD,
    WORLD_PIPELINE,
    get_world,
    is_world_reference,
    world_describer,
    world_names,
    world_of_pipeline,
)

WORLD_POLICY = "world"  # the policy reference of a world's shipped refinement policy


@dataclass(frozen=True)
class ModelSpec:
    pipeline: str = "world"  # 'world', 'world:PATH', a diffusers folder or Hub id
    policy: str = "world"  # 'world' (the shipped SFT world policy), a VLM folder or Hub id
    adapter: str | None = None  # LoRA adapter of PromptLoop's policy (None: the world's GRPO adapter on 'world')
    feed_forward_adapter: str | None = None  # adapter of the feed-forward row (None: world's, else `adapter`)
    reward: str | None = None  # reward name of the registry (None: the world's alignment on a world backbone, else none)
    device: str = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', ...
    dtype: str = "float32"  # float32 | bfloat16 | float16

    @property
    def is_world(self) -> bool:
        return is_world_reference(self.pipeline)

    @property
    def world(self) -> Any:
        """The world package of a world backbone (read from its folder), None for any other pipeline."""
        return world_of_pipeline(self.pipeline)

    def _world_alignment(self) -> str:
        """The alignment reward of the backbone's world (the default world's while its folder cannot be read: loading
        the pipeline then reports why)."""
        try:
            return self.world.ALIGNMENT_REWARD
        except Exception:  # the pipeline's own load error is the one to show
            return get_world(DEFAULT_WORLD).ALIGNMENT_REWARD

    def other_world(self) -> Any:
        """The world of a world backbone other than the default world (whose shipped policy `world` names), None
        for the default world, other pipelines and an unreadable backbone folder (loading reports that)."""
        try:
            world = self.world
        except Exception:  # the pipeline's own load error is the one to show
            return None
        return None if world is None or world.NAME == DEFAULT_WORLD else world

    def missing_policy(self) -> str:
        """Why the policy `world` cannot be had on this backbone ("" where it can): its world ships none yet."""
        world = self.other_world() if self.policy == WORLD_POLICY else None
        if world is None or shipped_policy(world) is not None:
            return ""
        return (f"world {world.NAME} ({world.VERSION}) ships no refinement policy yet, so the policy 'world' has "
                "nothing to load: the feedback, no-feedback and feed-forward modes and the compare switch need one. "
                "Sample with mode 'none', or load a policy (a VLM folder, Hub id or tiny:NAME) under models.")

    def resolved(self) -> ModelSpec:
        """The spec with the world's defaults filled in (policy, adapters, reward): the policy `world` on a world
        backbone is that world's shipped policy (`DEFAULT_POLICY`) with its shipped feedback and feed-forward
        adapters (`POLICY_ADAPTERS`, where those folders exist)."""
        from promptloop.eval.compare import world_adapter

        other = self.other_world() if self.policy == WORLD_POLICY else None
        policy = self.policy
        if other is not None:
            folder = shipped_policy(other)
            policy = WORLD_POLICY if folder is None else str(folder)  # none shipped: `missing_policy` says so
        shipped: dict[str, str | None] = {"feedback": None, "feed-forward": None}
        if self.policy == WORLD_POLICY:
            world = other if other is not None else get_world(DEFAULT_WORLD)
            for mode in shipped:
                folder = world_adapter(world, mode)
                shipped[mode] = str(folder) if folder is not None and folder.is_dir() else None
        adapter = self.adapter or shipped["feedback"]
        ff = self.feed_forward_adapter or shipped["feed-forward"] or adapter
        reward = self.reward if self.reward is not None else (self._world_alignment() if self.is_world else "")
        return replace(self, policy=policy, adapter=adapter, feed_forward_adapter=ff, reward=reward)


def shipped_policy(world: Any) -> Path | None:
    """The folder of a world's shipped refinement policy (its `DEFAULT_POLICY`), None where it ships none yet (no
    such attribute, or no such folder). The default world's is the one `promptloop.models` loads for 'world'."""
    folder = getattr(world, "DEFAULT_POLICY", None)
    return Path(folder) if folder is not None and Path(folder).is_dir() else None


def world_choices() -> list[tuple[str, str]]:
    """(label, name) of every registered world, for the page's world picker: 'backdrops (v3)'."""
    return [(f"{name} ({get_world(name).VERSION})", name) for name in world_names()]


def world_pipeline(name: str) -> tuple[str | None, str]:
    """(the pipeline reference of a world's shipped backbone, a note for the page): 'world' for the default world,
    'world:PATH' for another with its backbone folder present; None, and a note saying how to give one, where that
    world ships no backbone yet."""
    world = get_world(name)
    label = f"world {world.NAME} ({world.VERSION})"
    if world.NAME == DEFAULT_WORLD:
        return WORLD_PIPELINE, f"{label}: its shipped backbone and policies"
    folder = Path(world.DEFAULT_BACKBONE)
    note = "" if shipped_policy(world) is not None else "; it ships no refinement policy yet (mode 'none', or load one)"
    if not (folder / "model_index.json").is_file():
        return None, (f"{label} ships no backbone yet (expected at {folder}): type a backbone folder of it as "
                      f"world:PATH under pipeline{note}")
    return f"{WORLD_PIPELINE}:{folder}", f"{label}: its shipped backbone{note}"


@dataclass
class Models:
    """What one spec loads to: the pipeline (+ the keyword arguments every call needs), the policies, the reward."""

    spec: ModelSpec
    pipe: Any
    call_kwargs: dict[str, Any]
    guidance: float | None  # default CFG scale (the world's on a world backbone, the pipeline's own otherwise)
    policies: dict[str, Any] = field(default_factory=dict)  # "promptloop" / "feed_forward" -> policy, loaded lazily
    reward: Any = None  # the reward callable, or None
    describer: Any = None  # the world's `DESCRIBE` module (its readings of images), None where it declares none

    def policy(self, role: str) -> Any:
        """The policy of a row ('promptloop' or 'feed_forward'), loaded on first use; ModelLoadError where the
        backbone's world ships no policy for 'world' (`ModelSpec.missing_policy`)."""
        if role not in self.policies:
            spec = self.spec
            if spec.missing_policy():
                raise ModelLoadError(spec.missing_policy())
            adapter = spec.adapter if role == "promptloop" else spec.feed_forward_adapter
            self.policies[role] = _load_policy(spec, adapter, self.pipe)
        return self.policies[role]

    def world_rows(self, image: Any, query: str) -> list[tuple[str, str]]:
        """The world's readings of a final image, next to the query's facts (`describe`; none without a hook)."""
        return [] if self.describer is None else list(self.describer.describe(image, query))

    def preview_note(self, preview: Any) -> str:
        """What the world reads in an x0 preview, one line (`describe_preview`; "" without a hook or preview)."""
        if self.describer is None or preview is None or not hasattr(self.describer, "describe_preview"):
            return ""
        return str(self.describer.describe_preview(preview))


class ModelLoadError(Exception):
    """A pipeline / policy / reward that cannot be loaded (its message is shown in the page)."""


def _device(spec: ModelSpec) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if spec.device == "auto" else spec.device


def _check_path(what: str, name: str | None) -> None:
    if name and parse_model_ref(name).explicit_path and not Path(name).expanduser().is_dir():
        raise ModelLoadError(f"{what} {name!r}: no such folder")


def _load_policy(spec: ModelSpec, adapter: str | None, pipe: Any) -> Any:
    from promptloop.models import load_policy
    from promptloop.policy.sanitize import token_length_fn

    _check_path("policy", spec.policy)
    _check_path("adapter", adapter)
    try:
        policy = load_policy(spec.policy, _device(spec), adapter_path=adapter or None,
                             dtype="auto" if spec.dtype == "float32" else spec.dtype)
    except Exception as e:  # any failure of a user-named model is reported in the page
        raise ModelLoadError(f"cannot load policy {spec.policy!r}"
                             f"{f' with adapter {adapter!r}' if adapter else ''}: {_first_line(e)}") from e
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is not None and getattr(policy, "prompt_length_fn", None) is None:
        policy.prompt_length_fn = token_length_fn(tokenizer)
    return policy


def _first_line(e: BaseException) -> str:
    from promptloop.cli_runner import error_line

    return f"{type(e).__name__}: {error_line(e)}"


def load_models(spec: ModelSpec) -> Models:
    """Load the pipeline and the reward of `spec` (policies load on first use); ModelLoadError says why not."""
    from promptloop.models import load_pipeline

    spec = spec.resolved()
    _check_path("pipeline", spec.pipeline)
    try:
        pipe, extra = load_pipeline(spec.pipeline, _device(spec), dtype=spec.dtype)
    except Exception as e:  # any failure of a user-named model is reported in the page
        raise ModelLoadError(f"cannot load pipeline {spec.pipeline!r}: {_first_line(e)}") from e
    world = spec.world
    reward = None
    if spec.reward:
        try:
            reward = get_reward(spec.reward)
        except Exception as e:
            raise ModelLoadError(f"cannot load reward {spec.reward!r}: {_first_line(e)}") from e
    return Models(spec=spec, pipe=pipe, call_kwargs=extra, guidance=world.GUIDANCE if world is not None else None,
                  reward=reward, describer=world_describer(world) if world is not None else None)


class ModelStore:
    """The loaded models of the app, swapped when the user loads another spec; one sampling run at a time."""

    def __init__(self, spec: ModelSpec | None = None) -> None:
        self.spec = spec or ModelSpec()
        self._models: Models | None = None
        self.lock = threading.Lock()  # held for a whole sampling run (the policy samples from torch's global RNG)

    def get(self) -> Models:
        """The models of the current spec (loaded on first use); ModelLoadError when they cannot load."""
        if self._models is None or self._models.spec != self.spec.resolved():
            self._models = load_models(self.spec)
        return self._models

    def load(self, spec: ModelSpec) -> Models:
        """Switch to `spec` and load it now; on failure the previous models stay in use."""
        models = load_models(spec)
        self.spec, self._models = spec, models
        return models
