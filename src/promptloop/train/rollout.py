"""Rollouts: G trajectories per query through the PromptLoop sampler, and the actions GRPO re-scores.

Every random choice of a rollout is derived from (seed, step, group index, member index) by `derive_seed`,
never from how groups are split over processes or batched: the diffusion noise of a trajectory has its
own generator, and the policy's sampling RNG and the random refinement schedule are seeded per sampler
call (a call holds `groups_per_call` whole groups). A run therefore gives the same trajectories in one
process or several, and after a resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from promptloop.loop.sampler import PromptLoopSampler, Trajectory
from promptloop.policy.base import PolicyInput


def derive_seed(*parts: object) -> int:
    """A 62-bit seed from any parts (stable across runs, processes and machines)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


@contextlib.contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Seed torch's global RNGs (CPU and CUDA) inside the block; restore them afterwards."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed % (2**63))
        yield


@dataclass
class Action:
    """One refinement decision of one trajectory: what the policy saw and the tokens it sampled."""

    traj: int  # index of the trajectory in the rollout batch
    query: str
    previous_prompt: str
    history: list[str]
    progress: float
    preview: Image.Image | None
    completion_ids: torch.Tensor  # (T,) long
    old_logprobs: torch.Tensor  # (T,) float, recorded at sampling time
    fallback: bool
    ref_logprobs: torch.Tensor | None = None  # filled by the trainer when beta > 0

    @property
    def num_tokens(self) -> int:
        return int(self.completion_ids.numel())


@dataclass
class RolloutBatch:
    """The local (this process's) part of one GRPO step's rollout: whole groups of G trajectories."""

    group_ids: list[int]  # global index of each local group
    group_size: int
    queries: list[str]  # per trajectory (the original query, repeated G times per group)
    trajectories: list[Trajectory]
    images: list[Any]  # per trajectory, as the pipeline returns them (PIL)
    actions: list[Action] = field(default_factory=list)
    rewards: dict[str, torch.Tensor] = field(default_factory=dict)  # per named reward and "total", per trajectory
    advantages: torch.Tensor | None = None  # per trajectory
    seconds: float = 0.0

    @property
    def num_trajectories(self) -> int:
        return len(self.trajectories)


def actions_of(trajectories: Sequence[Trajectory]) -> list[Action]:
    """Every refinement of every trajectory as an `Action` (K per trajectory)."""
    out = []
    for i, traj in enumerate(trajectories):
        for r in traj.refinements:
            out.append(Action(
                traj=i, query=traj.query, previous_prompt=r.previous_prompt, history=list(r.history),
                progress=float(r.progress), preview=r.preview, completion_ids=r.completion_ids.detach().cpu().long(),
                old_logprobs=r.logprobs.detach().cpu().float(), fallback=bool(r.fallback),
            ))
    return out


def micro_batches(actions: Sequence[Action], size: int) -> list[list[Action]]:
    """Split actions into forward batches of at most `size` that share a progress value (a PolicyInput
    holds one progress) and whether they carry previews; deterministic order."""
    buckets: dict[tuple[float, bool], list[Action]] = {}
    for a in actions:
        buckets.setdefault((a.progress, a.preview is not None), []).append(a)
    out = []
    for key in sorted(buckets):
        acts = buckets[key]
        out.extend(acts[i : i + size] for i in range(0, len(acts), size))
    return out


def policy_input(actions: Sequence[Action]) -> PolicyInput:
    """The PolicyInput the policy saw for a micro-batch of actions (same progress)."""
    previews = [a.preview for a in actions] if actions and actions[0].preview is not None else None
    return PolicyInput(
        queries=[a.query for a in actions],
        current_prompts=[a.previous_prompt for a in actions],
        progress=actions[0].progress,
        previews=previews,  # type: ignore[arg-type]
        history=[list(a.history) for a in actions],
    )


def run_rollout(
    sampler: PromptLoopSampler,
    groups: Sequence[tuple[int, str]],
    group_size: int,
    *,
    seed: int,
    tag: object,
    num_refinements: int,
    schedule: str,
    groups_per_call: int,
    mode: str,
    call_kwargs: dict[str, Any],
    shared_noise: bool = False,
) -> RolloutBatch:
    """Sample `group_size` trajectories for each (global group index, query) in `groups`.

    `tag` distinguishes rollouts (the training step, or "eval"); seeds derive from (seed, tag, group, member),
    or from (seed, tag, group) alone with `shared_noise` (every member of a group starts from the same noise).
    """
    t0 = time.perf_counter()
    queries: list[str] = []
    trajectories: list[Trajectory] = []
    images: list[Any] = []
    for start in range(0, len(groups), groups_per_call):
        chunk = groups[start : start + groups_per_call]
        call_queries = [q for _, q in chunk for _ in range(group_size)]
        gens = [torch.Generator(device="cpu").manual_seed(derive_seed(seed, tag, gid, "noise", 0 if shared_noise else k) % (2**63))
                for gid, _ in chunk for k in range(group_size)]
        call_seed = derive_seed(seed, tag, chunk[0][0], "call")
        kwargs: dict[str, Any] = dict(call_kwargs)
        if mode in ("feedback", "no-feedback"):
            kwargs.update(num_refinements=num_refinements, schedule=schedule, schedule_seed=call_seed)
        with seeded_torch(call_seed):
            out = sampler(call_queries, mode=mode, generator=gens, output_type="pil", **kwargs)
        queries.extend(call_queries)
        trajectories.extend(out.trajectories)
        images.extend(out.images)
    batch = RolloutBatch(group_ids=[g for g, _ in groups], group_size=group_size, queries=queries,
                         trajectories=trajectories, images=images)
    batch.actions = actions_of(trajectories)
    batch.seconds = time.perf_counter() - t0
    return batch
