"""The decisions of one PromptLoopSampler call: per-call state, policy calls, and the records they leave.

`propose` asks the policy (validated by `check_policy_output`), `plan_in_advance` makes the no-feedback
mode's decisions before sampling, `record` appends each sample's decision to its trajectory and
`advance` puts the new prompts (and negative prompts) in force. `call_queries`, `check_queries` and `check_mode`
validate a call's input.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from promptloop.loop.generic import ConditioningSwap
from promptloop.loop.outputs import Refinement, Trajectory
from promptloop.loop.table_swap import TableSwap
from promptloop.loop.x0 import StepRecorder
from promptloop.policy.base import PolicyInput, PolicyOutput, RefinementPolicy

MODES: tuple[str, ...] = ("feedback", "no-feedback", "feed-forward", "none")


@dataclass
class CallState:
    queries: list[str]
    prompts: list[str]  # prompt in force per sample
    negatives: list[str]  # negative prompt in force per sample ("" where the pipeline's default is in force)
    initial_negative: list[str] | None  # the negative prompts the pipeline was called with (None: its default)
    history: list[list[str]]  # earlier prompts per sample
    trajectories: list[Trajectory]
    refinement_steps: list[int]
    planned: dict[int, PolicyOutput]  # no-feedback: decisions made in advance, by step
    height: int
    width: int
    record_latents: bool
    swap: TableSwap | ConditioningSwap
    pipeline_prompts: list[str] = field(default_factory=list)  # the prompts the pipeline call was given
    negative_acted: bool = False  # a negative-prompt action has happened in this call
    latents: list[torch.Tensor] = field(default_factory=list)
    timesteps: list[float] = field(default_factory=list)
    num_policy_calls: int = 0
    recorder: StepRecorder | None = None
    on_refinement: Callable[[list[Refinement]], None] | None = None  # called with each decision's refinements


def propose(
    policy: RefinementPolicy, state: CallState, progress: float, previews: Sequence[Image.Image] | None
) -> PolicyOutput:
    inputs = PolicyInput(
        queries=list(state.queries),
        current_prompts=list(state.prompts),
        progress=progress,
        previews=previews,
        history=[list(h) for h in state.history],
        current_negative_prompts=list(state.negatives),
    )
    state.num_policy_calls += 1
    return check_policy_output(policy.propose(inputs), len(state.queries))


def plan_in_advance(policy: RefinementPolicy, state: CallState, num_steps: int) -> None:
    """no-feedback: get the prompts for every refinement step before sampling starts."""
    progresses = [(s + 1) / num_steps for s in state.refinement_steps]
    if not progresses:
        return
    propose_schedule = getattr(policy, "propose_schedule", None)
    if callable(propose_schedule):
        inputs = PolicyInput(
            queries=list(state.queries),
            current_prompts=list(state.prompts),
            progress=progresses[0],
            previews=None,
            history=[[] for _ in state.queries],
            current_negative_prompts=list(state.negatives),
        )
        state.num_policy_calls += 1
        outputs = list(propose_schedule(inputs, progresses))
        if len(outputs) != len(progresses):
            raise ValueError(f"propose_schedule returned {len(outputs)} outputs for {len(progresses)} steps")
        for step, out in zip(state.refinement_steps, outputs, strict=True):
            state.planned[step] = check_policy_output(out, len(state.queries))
        return
    for step, progress in zip(state.refinement_steps, progresses, strict=True):
        out = propose(policy, state, progress=progress, previews=None)
        state.planned[step] = out
        advance(state, out)


def advance(state: CallState, out: PolicyOutput) -> tuple[list[bool], list[bool]]:
    """Put the policy's prompts (and negative prompts) in force; return which samples changed each."""
    changed, negative_changed = [], []
    for k, prompt in enumerate(out.prompts):
        changed.append(prompt != state.prompts[k])
        state.history[k].append(state.prompts[k])
        state.prompts[k] = prompt
        negative = out.negative_prompts[k] if out.negative_prompts is not None else None
        negative_changed.append(negative is not None and negative != state.negatives[k])
        if negative is not None:
            state.negatives[k] = negative
    return changed, negative_changed


def record(
    state: CallState,
    out: PolicyOutput,
    step: int,
    timestep: float | None,
    progress: float,
    previews: Sequence[Image.Image] | None = None,
    x0: torch.Tensor | None = None,
) -> tuple[list[bool], list[bool]]:
    """Append each sample's decision to its trajectory, then put the new prompts in force."""
    for k, traj in enumerate(state.trajectories):
        traj.refinements.append(
            Refinement(
                step=step,
                timestep=timestep,
                progress=progress,
                prompt=out.prompts[k],
                previous_prompt=state.prompts[k],
                history=list(state.history[k]),
                raw_text=out.raw_texts[k],
                fallback=out.fallback[k],
                completion_ids=out.completion_ids[k],
                logprobs=out.logprobs[k],
                preview_source=(previews, k) if previews is not None else None,
                x0=x0[k].detach().cpu() if x0 is not None else None,
                negative_prompt=out.negative_prompts[k] if out.negative_prompts is not None else None,
            )
        )
    changed = advance(state, out)
    if state.on_refinement is not None:
        state.on_refinement([traj.refinements[-1] for traj in state.trajectories])
    return changed


def first_not_none(value: int | None, default: int) -> int:
    return default if value is None else value


def check_queries(pipe: Any, queries: Sequence[str], stacklevel: int = 3) -> None:
    """Reject empty queries; warn once when some exceed the (first) text encoder's token window (the warning names
    the caller `stacklevel` frames up: by default the caller of the sampler)."""
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise ValueError(f"query {i} is not a string: {type(q).__name__}")
        if not q.strip():
            raise ValueError(f"query {i} is empty")
    tokenizer = getattr(pipe, "tokenizer", None)
    window = getattr(tokenizer, "model_max_length", None)
    if tokenizer is None or not isinstance(window, int) or window > 100_000:
        return
    too_long = [q for q in queries if len(tokenizer(q).input_ids) > window]
    if too_long:
        warnings.warn(
            f"{len(too_long)} of {len(queries)} queries exceed the text encoder's window of {window} tokens and are "
            f"truncated (e.g. {too_long[0][:60]!r}...)",
            UserWarning,
            stacklevel=stacklevel,
        )


def call_queries(pipe: Any, queries: str | Sequence[str] | None, prompt: str | Sequence[str] | None,
                 negative_prompt: str | list[str] | None,
                 pipeline_kwargs: dict[str, Any]) -> tuple[list[str], str | list[str] | None]:
    """(one query per sample, the negative prompt(s)) of a sampler call: the queries given as the first argument or
    as `prompt=`, each repeated `num_images_per_prompt` times (popped from `pipeline_kwargs`, as is every option the
    sampler sets itself, which is refused), checked by `check_queries`."""
    for reserved in ("prompt_embeds", "pooled_prompt_embeds", "callback_on_step_end_tensor_inputs",
                     "callback", "callback_steps"):
        if reserved in pipeline_kwargs:
            raise ValueError(f"{reserved!r} is set by the sampler; pass the prompts (queries) instead")
    if (queries is None) == (prompt is None):
        raise TypeError("pass the prompts as the first argument (queries) or as prompt=, one of the two"
                        if queries is not None else "no prompts: pass queries (the first argument) or prompt=")
    given = queries if queries is not None else prompt
    out = [given] if isinstance(given, str) else list(given)  # type: ignore[arg-type]
    repeats = int(pipeline_kwargs.pop("num_images_per_prompt", 1) or 1)
    if repeats > 1:
        out = [q for q in out for _ in range(repeats)]
        if isinstance(negative_prompt, list):
            negative_prompt = [n for n in negative_prompt for _ in range(repeats)]
    if not out:
        raise ValueError("no queries")
    check_queries(pipe, out, stacklevel=4)
    if isinstance(negative_prompt, list) and len(negative_prompt) != len(out):
        raise ValueError(f"{len(negative_prompt)} negative prompts for {len(out)} queries")
    return out, negative_prompt


def check_mode(mode: str) -> str:
    normalized = mode.replace("_", "-").lower()
    if normalized not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
    return normalized


def check_policy_output(out: PolicyOutput, batch: int) -> PolicyOutput:
    """Validate the policy's batch size and fill optional fields (empty tokens, no fallback, raw = prompt)."""
    if len(out.prompts) != batch:
        raise ValueError(f"policy returned {len(out.prompts)} prompts for a batch of {batch}")
    negatives = out.negative_prompts
    if negatives is not None and len(negatives) != batch:
        raise ValueError(f"policy returned {len(negatives)} negative prompts for a batch of {batch}")
    return PolicyOutput(
        prompts=list(out.prompts),
        completion_ids=list(out.completion_ids) or [torch.zeros(0, dtype=torch.long) for _ in range(batch)],
        logprobs=list(out.logprobs) or [torch.zeros(0) for _ in range(batch)],
        fallback=list(out.fallback) or [False] * batch,
        raw_texts=list(out.raw_texts) or list(out.prompts),
        fallback_reasons=list(out.fallback_reasons),
        negative_prompts=list(negatives) if negatives is not None else None,
    )
