"""The contract between the sampler (promptloop.loop) and any refinement policy.

The sampler calls `policy.propose(PolicyInput)` at each refinement step with a batch of previews and
gets back one prompt per sample plus what GRPO needs (token ids and per-token log-probs of the
sampled completion). A policy never raises on bad model output: it falls back to the current prompt
and flags the sample in `fallback`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image


@dataclass
class PolicyInput:
    queries: list[str]  # the user's original query per sample
    current_prompts: list[str]  # the prompt in force per sample
    progress: float  # fraction of sampling done, in [0, 1] (0 = before sampling)
    previews: Sequence[Image.Image] | None = None  # x0 preview per sample (decoded on first access); None without feedback
    history: list[list[str]] | None = None  # earlier prompts per sample (optional context)
    current_negative_prompts: list[str] | None = None  # the negative prompt in force per sample ("": the default)


@dataclass
class PolicyOutput:
    prompts: list[str]  # the prompt to condition on from now on, per sample (sanitised)
    completion_ids: list[torch.Tensor] = field(default_factory=list)  # sampled token ids per sample (1-D, long)
    logprobs: list[torch.Tensor] = field(default_factory=list)  # log-prob of each sampled token (1-D, float)
    fallback: list[bool] = field(default_factory=list)  # True where the raw output was rejected
    raw_texts: list[str] = field(default_factory=list)  # the decoded raw output before sanitation
    # why each sample fell back ("empty", "garbage", "overlong", "invalid"), None where it did not
    fallback_reasons: list[str | None] = field(default_factory=list)
    # optional second action: the negative prompt per sample from now on (None for the batch, or a None
    # entry for a sample: keep the one in force). Only pipelines with classifier-free guidance accept it.
    negative_prompts: list[str | None] | None = None


@runtime_checkable
class RefinementPolicy(Protocol):
    """Anything that proposes refined prompts from (previews, queries, current prompts, progress)."""

    def propose(self, inputs: PolicyInput) -> PolicyOutput: ...


class _Weightless:
    """`.to(...)` of a policy without weights: nothing to move (as every policy has `.to`, like a pipeline)."""

    def to(self, *args: Any, **kwargs: Any) -> Any:
        return self


class NullPolicy(_Weightless):
    """Returns the current prompt unchanged, at no cost: measures the loop mechanism's own overhead."""

    def propose(self, inputs: PolicyInput) -> PolicyOutput:
        n = len(inputs.queries)
        return PolicyOutput(
            prompts=list(inputs.current_prompts),
            completion_ids=[torch.zeros(0, dtype=torch.long) for _ in range(n)],
            logprobs=[torch.zeros(0) for _ in range(n)],
            fallback=[False] * n,
            raw_texts=list(inputs.current_prompts),
        )


class FixedPromptPolicy(_Weightless):
    """Returns a fixed prompt per sample (or one for all): for tests and oracle experiments."""

    def __init__(self, prompts: list[str] | str) -> None:
        self.prompts = prompts

    def propose(self, inputs: PolicyInput) -> PolicyOutput:
        n = len(inputs.queries)
        prompts = [self.prompts] * n if isinstance(self.prompts, str) else list(self.prompts)
        if len(prompts) != n:
            raise ValueError(f"FixedPromptPolicy holds {len(prompts)} prompts for a batch of {n}")
        return PolicyOutput(
            prompts=prompts,
            completion_ids=[torch.zeros(0, dtype=torch.long) for _ in range(n)],
            logprobs=[torch.zeros(0) for _ in range(n)],
            fallback=[False] * n,
            raw_texts=prompts,
        )


class StagedPolicy:
    """Two policies in one loop: `first` answers the calls made without previews (the rewrite before
    sampling, e.g. a feed-forward rewriter), `later` the feedback calls that see x0 previews.

    For evaluation (e.g. a feed-forward rewrite, then PromptLoop's refinements on top); not trainable as one.
    """

    def __init__(self, first: RefinementPolicy, later: RefinementPolicy) -> None:
        self.first = first
        self.later = later

    def propose(self, inputs: PolicyInput) -> PolicyOutput:
        return (self.first if inputs.previews is None else self.later).propose(inputs)

    def to(self, *args: Any, **kwargs: Any) -> StagedPolicy:
        """Move both policies (those that have `.to`)."""
        for policy in (self.first, self.later):
            if callable(getattr(policy, "to", None)):
                policy.to(*args, **kwargs)
        return self
