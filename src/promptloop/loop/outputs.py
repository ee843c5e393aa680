"""Typed outputs of a PromptLoopSampler call: one Refinement per policy decision, a Trajectory per sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image


# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Refinement:
    """One policy decision for one sample."""

    step: int  # loop index after which the new prompt is in force (-1: before sampling, feed-forward)
    timestep: float | None  # scheduler timestep of that step (None before sampling)
    progress: float  # fraction of sampling done when the decision applies, as given to the policy
    prompt: str  # the chosen (sanitised) prompt, in force from step + 1
    previous_prompt: str  # the prompt in force before (PolicyInput.current_prompts)
    history: list[str]  # prompts in force before previous_prompt (PolicyInput.history)
    raw_text: str  # the policy's raw output
    fallback: bool  # True where the raw output was rejected and previous_prompt kept
    completion_ids: torch.Tensor  # sampled token ids (1-D long; empty for non-LM policies)
    logprobs: torch.Tensor  # per-token log-probs at sampling time (1-D float)
    preview_source: tuple[Sequence[Image.Image], int] | None = None  # (the step's previews, this sample's index)
    x0: torch.Tensor | None = None  # the x0 latent of that step (CPU, denoiser space; feedback mode only)
    negative_prompt: str | None = None  # the negative prompt in force from step + 1 (None: no negative action)

    @property
    def preview(self) -> Image.Image | None:
        """The decoded x0 preview of this step (feedback mode only); decoded on first access, batch-wise."""
        if self.preview_source is None:
            return None
        previews, index = self.preview_source
        return previews[index]


@dataclass
class Trajectory:
    """The prompt trajectory of one sample."""

    query: str
    initial_prompt: str  # the prompt at step 0 (the query, or the feed-forward rewrite)
    refinements: list[Refinement] = field(default_factory=list)
    initial_negative_prompt: str | None = None  # the negative prompt at step 0 (None: the pipeline's default)

    @property
    def final_prompt(self) -> str:
        return self.refinements[-1].prompt if self.refinements else self.initial_prompt

    def prompt_at(self, step: int) -> str:
        """The prompt conditioning loop step `step`."""
        prompt = self.initial_prompt
        for r in self.refinements:
            if r.step < step:
                prompt = r.prompt
        return prompt

    def negative_prompt_at(self, step: int) -> str | None:
        """The negative prompt conditioning loop step `step` (None: the pipeline's default)."""
        negative = self.initial_negative_prompt
        for r in self.refinements:
            if r.step < step and r.negative_prompt is not None:
                negative = r.negative_prompt
        return negative


@dataclass
class PromptLoopOutput:
    """Result of one PromptLoopSampler call."""

    images: Any  # as the pipeline returns them for output_type (list of PIL by default)
    trajectories: list[Trajectory]  # one per sample, in batch order
    mode: str
    refinement_steps: list[int]
    timesteps: list[float]  # the scheduler timestep of every loop step
    num_policy_calls: int
    latents: torch.Tensor | None = None  # (num_steps, batch, ...) latents after each step, if record_latents
