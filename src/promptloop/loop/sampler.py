"""PromptLoopSampler: rewrite the prompt during diffusion sampling, from x0 previews.

Wraps a diffusers pipeline the user already has (StableDiffusionPipeline, StableDiffusionXLPipeline,
StableDiffusion3Pipeline, FluxPipeline) and runs the pipeline's *own* `__call__`, so its sampling
(CFG, negative prompt, schedulers, guidance, VAE decode) is untouched. Three things are attached for
the duration of one call and removed afterwards:

1. `scheduler.step` is wrapped to keep the step's x0 estimate (or what is needed to compute it);
2. `callback_on_step_end` runs at every step; at a refinement step i it decodes x0 to a preview, asks
   the policy for the next prompts, encodes them with the pipeline's own `encode_prompt` and returns
   the new positive rows of the conditioning tensors (negative rows untouched) -> they condition
   steps i+1 onwards;
3. FLUX only: the pooled CLIP embedding (`pooled_projections`) is not reachable by the callback, so a
   forward pre-hook on the transformer substitutes it in exactly those calls whose
   `encoder_hidden_states` *is* the prompt_embeds tensor the callback returned (the conditional
   call; FLUX's true-CFG negative call passes a different tensor). The sampler checks at the next step
   that the hook fired and raises otherwise: no silent partial swap.

Modes (one code path):
- "feedback":     the method. Policy called at each refinement step with the x0 previews.
- "no-feedback":  "prompts in advance". Before sampling, the policy gets the progress values of all
                  refinement steps and no previews; its prompts are swapped in at those steps.
                  A policy with `propose_schedule(inputs, progresses) -> list[PolicyOutput]` is called
                  once; otherwise `propose` is called once per refinement step, chained, before sampling.
- "feed-forward": one rewrite before sampling (progress 0), used for all steps.
- "none":         the plain pipeline on the queries (no policy call).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from diffusers.utils import logging as diffusers_logging
from PIL import Image

from promptloop.loop.families import FamilySpec, decode_preview, default_size, detect_family, execution_device
from promptloop.loop.schedule import make_schedule
from promptloop.loop.x0 import StepRecorder
from promptloop.policy.base import PolicyInput, PolicyOutput, RefinementPolicy
from promptloop.validation import check_number

Mode = Literal["feedback", "no-feedback", "feed-forward", "none"]
MODES: tuple[str, ...] = ("feedback", "no-feedback", "feed-forward", "none")
PreviewKind = Literal["vae", "vae-lowres"]


# ----------------------------------------------------------------------------------------------------------------------
# outputs
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
    preview: Image.Image | None = None  # decoded x0 preview the policy saw (feedback mode only)
    x0: torch.Tensor | None = None  # the x0 latent of that step (CPU, denoiser space; feedback mode only)


@dataclass
class Trajectory:
    """The prompt trajectory of one sample."""

    query: str
    initial_prompt: str  # the prompt at step 0 (the query, or the feed-forward rewrite)
    refinements: list[Refinement] = field(default_factory=list)

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


# ----------------------------------------------------------------------------------------------------------------------
# internal per-call state
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class _CallState:
    spec: FamilySpec
    queries: list[str]
    prompts: list[str]  # prompt in force per sample
    history: list[list[str]]  # earlier prompts per sample
    trajectories: list[Trajectory]
    refinement_steps: list[int]
    planned: dict[int, PolicyOutput]  # no-feedback: decisions made in advance, by step
    encode_kwargs: dict[str, Any]
    height: int
    width: int
    record_latents: bool
    on_refinement: Callable[[list[Refinement]], None] | None = None  # called with each decision's refinements
    latents: list[torch.Tensor] = field(default_factory=list)
    timesteps: list[float] = field(default_factory=list)
    num_policy_calls: int = 0
    # hook (FLUX pooled) bookkeeping
    hooked_values: dict[str, torch.Tensor] = field(default_factory=dict)  # current positive rows, by kwarg
    hook_key: torch.Tensor | None = None  # the prompt_embeds object the callback returned
    hook_hits: int = 0  # substitutions since the last callback
    seen_calls: list[dict[str, torch.Tensor]] = field(default_factory=list)  # denoiser kwargs since last callback
    recorder: StepRecorder | None = None


class PromptLoopSampler:
    """Run a diffusers pipeline with prompt refinement by a policy during sampling.

    Args:
        pipe: a StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline or FluxPipeline.
        policy: the default RefinementPolicy (can be overridden per call).
        mode: default mode, one of MODES.
        num_refinements: default N_R.
        schedule: default schedule kind, "uniform" (inference) or "random" (training).
        preview: "vae" (full decode) or "vae-lowres" (decode a downsampled latent: cheap, approximate).
        preview_size: longest side of previews in pixels (None: full resolution).
        rewrite_first: in feedback mode, also rewrite the query once before sampling (no preview, as the
            feed-forward mode does), so the layout-deciding first steps already use a rewritten prompt;
            recorded as a refinement at step -1 (trained like the others).

    Example:
        sampler = PromptLoopSampler(pipe, policy, num_refinements=3)
        out = sampler(["a red cube left of a blue ball"], num_inference_steps=30, generator=torch.Generator().manual_seed(0))
        out.images[0], out.trajectories[0].final_prompt
    """

    def __init__(
        self,
        pipe: Any,
        policy: RefinementPolicy | None = None,
        *,
        mode: Mode = "feedback",
        num_refinements: int = 5,
        schedule: str = "uniform",
        preview: PreviewKind = "vae",
        preview_size: int | None = None,
        rewrite_first: bool = False,
    ) -> None:
        self.pipe = pipe
        self.spec = detect_family(pipe)
        self.policy = policy
        self.mode = _check_mode(mode)
        self.num_refinements = num_refinements
        self.schedule = schedule
        if preview not in ("vae", "vae-lowres"):
            raise ValueError(f"preview must be 'vae' or 'vae-lowres', got {preview!r}")
        self.preview = preview
        self.preview_size = preview_size
        self.rewrite_first = rewrite_first

    # ------------------------------------------------------------------------------------------------------------------
    def __call__(
        self,
        queries: str | list[str],
        *,
        policy: RefinementPolicy | None = None,
        mode: Mode | None = None,
        num_refinements: int | None = None,
        refinement_steps: Sequence[int] | None = None,
        schedule: str | None = None,
        schedule_seed: int | random.Random | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        record_latents: bool = False,
        rewrite_first: bool | None = None,
        on_refinement: Callable[[list[Refinement]], None] | None = None,
        **pipeline_kwargs: Any,
    ) -> PromptLoopOutput:
        """Sample one image per query (per-sample queries), refining the prompt at the scheduled steps.

        `refinement_steps` (explicit loop indices) overrides `num_refinements`/`schedule`; `schedule_seed`
        seeds the "random" schedule. `rewrite_first` overrides the sampler's default (feedback mode only).
        `on_refinement(refinements)` is called right after each policy decision is put in force, with that
        decision's `Refinement` of every sample (batch order), while sampling runs: for live display.
        `guidance_scale=None` keeps the pipeline's default. Extra keyword
        arguments go to the pipeline (`max_sequence_length`, `true_cfg_scale`, `clip_skip`, ...);
        `num_images_per_prompt=k` repeats every query (and per-sample negative prompt) k times.
        """
        pipe, spec = self.pipe, self.spec

        # 1. Resolve the call: mode, policy, batch, refinement schedule.
        mode = _check_mode(mode or self.mode)
        policy = policy if policy is not None else self.policy
        if mode != "none" and policy is None:
            raise ValueError(f"mode {mode!r} needs a policy")
        rewrite_first = self.rewrite_first if rewrite_first is None else rewrite_first
        if rewrite_first and mode not in ("feedback", "feed-forward"):
            raise ValueError(f"rewrite_first applies to feedback mode (feed-forward always rewrites first), not {mode!r}")
        for reserved in ("prompt", "prompt_embeds", "pooled_prompt_embeds", "callback_on_step_end_tensor_inputs"):
            if reserved in pipeline_kwargs:
                raise ValueError(f"{reserved!r} is set by the sampler; pass queries instead")
        queries = [queries] if isinstance(queries, str) else list(queries)
        repeats = int(pipeline_kwargs.pop("num_images_per_prompt", 1) or 1)
        if repeats > 1:
            queries = [q for q in queries for _ in range(repeats)]
            if isinstance(negative_prompt, list):
                negative_prompt = [n for n in negative_prompt for _ in range(repeats)]
        if not queries:
            raise ValueError("no queries")
        check_queries(pipe, queries)
        if isinstance(negative_prompt, list) and len(negative_prompt) != len(queries):
            raise ValueError(f"{len(negative_prompt)} negative prompts for {len(queries)} queries")
        if mode in ("feedback", "no-feedback"):
            steps = make_schedule(
                num_inference_steps,
                None if refinement_steps is not None else _first_not_none(num_refinements, self.num_refinements),
                kind=schedule or self.schedule,
                steps=refinement_steps,
                seed=schedule_seed,
            )
        else:
            steps = []
        if height is None or width is None:
            default_h, default_w = default_size(pipe)
            height, width = height or default_h, width or default_w
        user_callback: Callable[..., dict[str, Any]] | None = pipeline_kwargs.pop("callback_on_step_end", None)

        state = _CallState(
            spec=spec,
            queries=queries,
            prompts=list(queries),
            history=[[] for _ in queries],
            trajectories=[Trajectory(q, q) for q in queries],
            refinement_steps=steps,
            planned={},
            encode_kwargs=dict(pipeline_kwargs),
            height=height,
            width=width,
            record_latents=record_latents,
            on_refinement=on_refinement,
        )

        # 2. Decisions made before sampling: the feed-forward rewrite (also feedback's with rewrite_first),
        #    or all prompts in advance.
        if mode == "feed-forward" or rewrite_first:
            out = self._propose(policy, state, progress=0.0, previews=None)
            self._record(state, out, step=-1, timestep=None, progress=0.0)
            for traj, prompt in zip(state.trajectories, state.prompts, strict=True):
                traj.initial_prompt = prompt
        elif mode == "no-feedback":
            self._plan_in_advance(policy, state, num_inference_steps)
            state.prompts, state.history = list(queries), [[] for _ in queries]  # replayed during sampling

        # 3. Attach: x0 recorder on the scheduler, pooled hook on the denoiser (FLUX), step callback.
        callback = self._make_callback(state, policy, mode, user_callback)
        tensor_inputs = ["latents", *spec.callback_tensors]
        if user_callback is not None:
            tensor_inputs += [t for t in getattr(user_callback, "tensor_inputs", []) if t not in tensor_inputs]
        call_kwargs: dict[str, Any] = {
            "prompt": list(state.prompts),
            "num_inference_steps": num_inference_steps,
            "negative_prompt": negative_prompt,
            "generator": generator,
            "height": height,
            "width": width,
            "output_type": output_type,
            "callback_on_step_end": callback,
            "callback_on_step_end_tensor_inputs": tensor_inputs,
            **pipeline_kwargs,
        }
        if guidance_scale is not None:
            call_kwargs["guidance_scale"] = check_number(guidance_scale, "guidance_scale", lo=0.0)
        if negative_prompt is None:
            del call_kwargs["negative_prompt"]
        hook_handle = None
        if spec.hooked_tensors:
            denoiser = getattr(pipe, spec.denoiser)
            hook_handle = denoiser.register_forward_pre_hook(self._make_hook(state), with_kwargs=True)

        # 4. Sample with the pipeline's own loop (its per-encode truncation warnings are silenced:
        #    check_queries warned once already).
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        try:
            with StepRecorder(pipe.scheduler) as recorder:
                state.recorder = recorder
                result = pipe(**call_kwargs)
        finally:
            diffusers_logging.set_verbosity(verbosity)
            if hook_handle is not None:
                hook_handle.remove()

        # 5. Assemble the output.
        latents = torch.stack(state.latents) if record_latents else None
        return PromptLoopOutput(
            images=result.images,
            trajectories=state.trajectories,
            mode=mode,
            refinement_steps=steps,
            timesteps=state.timesteps,
            num_policy_calls=state.num_policy_calls,
            latents=latents,
        )

    # ------------------------------------------------------------------------------------------------------------------
    # policy
    # ------------------------------------------------------------------------------------------------------------------
    def _propose(
        self, policy: RefinementPolicy, state: _CallState, progress: float, previews: list[Image.Image] | None
    ) -> PolicyOutput:
        inputs = PolicyInput(
            queries=list(state.queries),
            current_prompts=list(state.prompts),
            progress=progress,
            previews=previews,
            history=[list(h) for h in state.history],
        )
        state.num_policy_calls += 1
        return _check_policy_output(policy.propose(inputs), len(state.queries))

    def _plan_in_advance(self, policy: RefinementPolicy, state: _CallState, num_steps: int) -> None:
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
            )
            state.num_policy_calls += 1
            outputs = list(propose_schedule(inputs, progresses))
            if len(outputs) != len(progresses):
                raise ValueError(f"propose_schedule returned {len(outputs)} outputs for {len(progresses)} steps")
            for step, out in zip(state.refinement_steps, outputs, strict=True):
                state.planned[step] = _check_policy_output(out, len(state.queries))
            return
        for step, progress in zip(state.refinement_steps, progresses, strict=True):
            out = self._propose(policy, state, progress=progress, previews=None)
            state.planned[step] = out
            self._advance(state, out)

    @staticmethod
    def _advance(state: _CallState, out: PolicyOutput) -> list[bool]:
        """Put the policy's prompts in force; return which samples changed."""
        changed = []
        for k, prompt in enumerate(out.prompts):
            changed.append(prompt != state.prompts[k])
            state.history[k].append(state.prompts[k])
            state.prompts[k] = prompt
        return changed

    @staticmethod
    def _record(
        state: _CallState,
        out: PolicyOutput,
        step: int,
        timestep: float | None,
        progress: float,
        previews: list[Image.Image] | None = None,
        x0: torch.Tensor | None = None,
    ) -> list[bool]:
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
                    preview=previews[k] if previews is not None else None,
                    x0=x0[k].detach().cpu() if x0 is not None else None,
                )
            )
        changed = PromptLoopSampler._advance(state, out)
        if state.on_refinement is not None:
            state.on_refinement([traj.refinements[-1] for traj in state.trajectories])
        return changed

    # ------------------------------------------------------------------------------------------------------------------
    # conditioning swap
    # ------------------------------------------------------------------------------------------------------------------
    def _make_callback(
        self,
        state: _CallState,
        policy: RefinementPolicy | None,
        mode: str,
        user_callback: Callable[..., dict[str, Any]] | None,
    ) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
        spec, pipe = self.spec, self.pipe
        refine_at = set(state.refinement_steps)

        def callback(_pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            num_steps = len(pipe.scheduler.timesteps)
            timestep = float(t)
            state.timesteps.append(timestep)
            if state.record_latents:
                state.latents.append(kwargs["latents"].detach().clone().cpu())
            self._check_hook_fired(state)
            outputs: dict[str, Any] = {}
            if i in refine_at and i < num_steps - 1:
                progress = (i + 1) / num_steps
                if mode == "feedback":
                    assert state.recorder is not None
                    x0 = state.recorder.x0()
                    previews = decode_preview(
                        pipe,
                        spec,
                        x0,
                        state.height,
                        state.width,
                        preview_size=self.preview_size,
                        lowres=self.preview == "vae-lowres",
                    )
                    out = self._propose(policy, state, progress=progress, previews=previews)  # type: ignore[arg-type]
                    changed = self._record(state, out, i, timestep, progress, previews, x0)
                else:  # no-feedback: replay the decision made in advance
                    out = state.planned[i]
                    changed = self._record(state, out, i, timestep, progress)
                outputs = self._swap(state, kwargs, changed)
            elif i in refine_at:
                raise ValueError(f"refinement step {i} is not before the last of {num_steps} loop steps")
            state.seen_calls.clear()  # the denoiser calls of the next step are recorded afresh
            if user_callback is not None:
                merged = {**kwargs, **outputs}
                outputs.update(user_callback(_pipe, i, t, merged) or {})
            return outputs

        return callback

    def _swap(self, state: _CallState, kwargs: dict[str, Any], changed: list[bool]) -> dict[str, torch.Tensor]:
        """New conditioning tensors for the callback to return: positive rows re-encoded where the prompt changed."""
        spec = self.spec
        if not any(changed):
            return {}
        batch = len(state.queries)
        rows = torch.tensor(changed, device="cpu")
        encoded = spec.encode(self.pipe, list(state.prompts), execution_device(self.pipe), state.encode_kwargs)
        outputs: dict[str, torch.Tensor] = {}
        for name in spec.callback_tensors:
            outputs[name] = _replace_positive_rows(name, kwargs[name], encoded[name], rows, batch)
        if spec.hooked_tensors:
            current = self._current_hooked_values(state, kwargs["prompt_embeds"])
            for name in spec.hooked_tensors:
                state.hooked_values[name] = _replace_positive_rows(name, current[name], encoded[name], rows, batch)
            state.hook_key = outputs["prompt_embeds"]
            state.hook_hits = 0
        return outputs

    # FLUX: pooled_projections through a forward pre-hook ------------------------------------------------------------
    def _make_hook(self, state: _CallState) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]:
        names = self.spec.hooked_tensors

        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
            ehs = kwargs.get("encoder_hidden_states")
            if state.hook_key is not None and ehs is state.hook_key:
                kwargs = {**kwargs, **state.hooked_values}
                state.hook_hits += 1
            state.seen_calls.append({"encoder_hidden_states": ehs, **{n: kwargs.get(n) for n in names}})
            return args, kwargs

        return hook

    def _current_hooked_values(self, state: _CallState, prompt_embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """The hooked tensors (e.g. FLUX pooled) that went with the current positive prompt_embeds in this step."""
        for call in reversed(state.seen_calls):
            if call["encoder_hidden_states"] is prompt_embeds:
                return {n: call[n] for n in self.spec.hooked_tensors}
        raise RuntimeError(
            f"could not find the denoiser call conditioned on the current prompt_embeds; cannot swap "
            f"{list(self.spec.hooked_tensors)} consistently"
        )

    def _check_hook_fired(self, state: _CallState) -> None:
        if state.hook_key is not None and state.hook_hits == 0 and state.seen_calls:
            raise RuntimeError(
                f"the {list(self.spec.hooked_tensors)} swap did not reach the denoiser in the last step "
                "(no call received the swapped prompt_embeds); refusing a partial conditioning swap"
            )
        state.hook_hits = 0


# ----------------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------------
def _first_not_none(value: int | None, default: int) -> int:
    return default if value is None else value


def check_queries(pipe: Any, queries: Sequence[str]) -> None:
    """Reject empty queries; warn once when some exceed the (first) text encoder's token window."""
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
            stacklevel=3,
        )


def _check_mode(mode: str) -> str:
    normalized = mode.replace("_", "-").lower()
    if normalized not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
    return normalized


def _check_policy_output(out: PolicyOutput, batch: int) -> PolicyOutput:
    """Validate the policy's batch size and fill optional fields (empty tokens, no fallback, raw = prompt)."""
    if len(out.prompts) != batch:
        raise ValueError(f"policy returned {len(out.prompts)} prompts for a batch of {batch}")
    return PolicyOutput(
        prompts=list(out.prompts),
        completion_ids=list(out.completion_ids) or [torch.zeros(0, dtype=torch.long) for _ in range(batch)],
        logprobs=list(out.logprobs) or [torch.zeros(0) for _ in range(batch)],
        fallback=list(out.fallback) or [False] * batch,
        raw_texts=list(out.raw_texts) or list(out.prompts),
    )


def _replace_positive_rows(
    name: str, current: torch.Tensor, encoded: torch.Tensor, rows: torch.Tensor, batch: int
) -> torch.Tensor:
    """Replace the positive rows of `current` (the last `batch` rows: [neg; pos] under CFG) where `rows` is True."""
    if current.shape[0] not in (batch, 2 * batch):
        raise RuntimeError(f"{name}: expected {batch} or {2 * batch} rows in the loop, found {current.shape[0]}")
    if tuple(encoded.shape[1:]) != tuple(current.shape[1:]):
        raise RuntimeError(
            f"{name}: re-encoded prompt has shape {tuple(encoded.shape[1:])} but the loop holds {tuple(current.shape[1:])} "
            "(pass the same max_sequence_length/clip_skip to the sampler as the pipeline uses)"
        )
    mask = rows.to(current.device).view(-1, *([1] * (current.ndim - 1)))
    positive = torch.where(mask, encoded.to(device=current.device, dtype=current.dtype), current[-batch:])
    if current.shape[0] == batch:
        return positive
    return torch.cat([current[:-batch], positive], dim=0)
