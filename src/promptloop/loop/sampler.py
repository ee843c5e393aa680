"""PromptLoopSampler: rewrite the prompt during diffusion sampling, from x0 previews.

Wraps any diffusers text-to-image pipeline the user already has and runs the pipeline's *own*
`__call__`, so its sampling (CFG, negative prompt, schedulers, guidance, VAE decode) is untouched.
For the duration of one call:

1. `scheduler.step` is wrapped to keep the step's x0 estimate (or what is needed to compute it);
2. a step callback (`callback_on_step_end`, or the legacy `callback` where a pipeline has only that)
   runs after every step; at a refinement step i it decodes x0 to previews (batched; through a tiny
   autoencoder when given), asks the policy for the next prompts (and optionally negative prompts),
   and puts them in force from step i+1;
3. the new conditioning reaches the denoiser by one of two routes:
   - table route (`table_swap.py`; SD 1.x, SDXL, SD3, FLUX.1): the callback returns the new rows of the
     conditioning tensors; FLUX's pooled projection goes through a transformer pre-hook;
   - generic route (`generic.py`; every other pipeline): the pipeline's own `encode_prompt`, found by
     signature, and forward pre-hooks on the denoisers that substitute every tensor equal to an
     original encoding (embeddings, pooled, masks, text ids) by the new one.
   Either route checks at the next step that the denoiser saw the new conditioning, else raises.

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

import functools
import inspect
import random
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from diffusers.utils import logging as diffusers_logging

from promptloop.loop.decisions import (
    MODES,
    CallState,
    call_queries,
    check_mode,
    check_queries,
    first_not_none,
    plan_in_advance,
    propose,
    record,
)
from promptloop.loop.families import default_size, execution_device, table_family
from promptloop.loop.generic import ConditioningSwap
from promptloop.loop.outputs import PromptLoopOutput, Refinement, Trajectory
from promptloop.loop.pipeline_api import PromptEncoder, UnsupportedPipelineError, denoisers, make_step_trigger
from promptloop.loop.preview import LazyPreviews, decode_preview
from promptloop.loop.schedule import make_schedule
from promptloop.loop.table_swap import TableSwap
from promptloop.loop.x0 import StepRecorder
from promptloop.policy.base import RefinementPolicy
from promptloop.validation import check_limit, check_number

__all__ = ["MODES", "PromptLoopOutput", "PromptLoopSampler", "Refinement", "Trajectory", "check_queries"]

Mode = Literal["feedback", "no-feedback", "feed-forward", "none"]
PreviewKind = Literal["vae", "vae-lowres"]


# ----------------------------------------------------------------------------------------------------------------------
# internal per-call state
# ----------------------------------------------------------------------------------------------------------------------
class PromptLoopSampler:
    """Run a diffusers pipeline with prompt refinement by a policy during sampling.

    Args:
        pipe: any diffusers text-to-image pipeline whose `__call__` takes `callback_on_step_end` (or the legacy
            `callback`) and that has an `encode_prompt` (see the table of supported pipelines in docs/pipelines.md).
        policy: the default RefinementPolicy (can be overridden per call).
        mode: default mode, one of MODES.
        num_refinements: default N_R.
        schedule: default schedule kind, "uniform" (inference) or "random" (training).
        preview: "vae" (full decode) or "vae-lowres" (decode a downsampled latent: cheap, approximate).
        preview_size: longest side of previews in pixels (None: full resolution).
        preview_vae: a tiny autoencoder for previews (diffusers `AutoencoderTiny`, TAESD-style), None: the pipeline's VAE.
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
        preview_vae: Any = None,
        rewrite_first: bool = False,
    ) -> None:
        self.pipe = pipe
        self.spec = table_family(pipe)
        self.install_trigger = make_step_trigger(pipe)
        if self.spec is None:
            if not callable(getattr(pipe, "encode_prompt", None)):
                raise UnsupportedPipelineError(f"{type(pipe).__name__} has no encode_prompt to encode new prompts")
            if not denoisers(pipe):
                raise UnsupportedPipelineError(f"{type(pipe).__name__} has no unet/transformer to hook the conditioning into")
        self.route = "table" if self.spec is not None else "generic"
        self.policy = policy
        self.mode = check_mode(mode)
        self.num_refinements = num_refinements
        self.schedule = schedule
        if preview not in ("vae", "vae-lowres"):
            raise ValueError(f"preview must be 'vae' or 'vae-lowres', got {preview!r}")
        self.preview = preview
        self.preview_size = preview_size
        self.preview_vae = preview_vae
        self.rewrite_first = rewrite_first

    # ------------------------------------------------------------------------------------------------------------------
    def __call__(
        self,
        queries: str | list[str] | None = None,
        *,
        prompt: str | list[str] | None = None,
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

        The queries are the first argument, or `prompt=` as a diffusers pipeline takes them (one of the two).

        `refinement_steps` (explicit loop indices) overrides `num_refinements`/`schedule`; `schedule_seed`
        seeds the "random" schedule. `rewrite_first` overrides the sampler's default (feedback mode only).
        `on_refinement(refinements)` is called right after each policy decision is put in force, with that
        decision's `Refinement` of every sample (batch order), while sampling runs: for live display.
        `guidance_scale=None` keeps the pipeline's default. Extra keyword
        arguments go to the pipeline (`max_sequence_length`, `true_cfg_scale`, `clip_skip`, `image`, ...);
        `num_images_per_prompt=k` repeats every query (and per-sample negative prompt) k times.
        """
        pipe = self.pipe

        # 1. Resolve the call: mode, policy, batch, refinement schedule.
        mode = check_mode(mode or self.mode)
        policy = policy if policy is not None else self.policy
        if mode != "none" and policy is None:
            raise ValueError(f"mode {mode!r} needs a policy")
        rewrite_first = self.rewrite_first if rewrite_first is None else rewrite_first
        if rewrite_first and mode not in ("feedback", "feed-forward"):
            raise ValueError(f"rewrite_first applies to feedback mode (feed-forward always rewrites first), not {mode!r}")
        queries, negative_prompt = call_queries(pipe, queries, prompt, negative_prompt, pipeline_kwargs)
        if mode in ("feedback", "no-feedback"):
            steps = make_schedule(
                num_inference_steps,
                None if refinement_steps is not None else first_not_none(num_refinements, self.num_refinements),
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
        initial_negative = (
            None if negative_prompt is None
            else [negative_prompt] * len(queries) if isinstance(negative_prompt, str) else list(negative_prompt)
        )
        encode_kwargs = {**pipeline_kwargs, "height": height, "width": width, "guidance_scale": guidance_scale}
        if self.spec is not None:
            swap: TableSwap | ConditioningSwap = TableSwap(pipe, self.spec, len(queries), encode_kwargs)
        else:
            swap = ConditioningSwap(pipe, PromptEncoder(pipe, encode_kwargs, execution_device(pipe)), len(queries))
        state = CallState(
            queries=queries,
            prompts=list(queries),
            negatives=list(initial_negative) if initial_negative is not None else [""] * len(queries),
            initial_negative=initial_negative,
            history=[[] for _ in queries],
            trajectories=[Trajectory(q, q, initial_negative_prompt=n) for q, n in
                          zip(queries, initial_negative or [None] * len(queries), strict=True)],
            refinement_steps=steps,
            planned={},
            height=height,
            width=width,
            record_latents=record_latents,
            swap=swap,
            on_refinement=on_refinement,
        )

        # 2. Decisions made before sampling: the feed-forward rewrite (also feedback's with rewrite_first),
        #    or all prompts in advance.
        if mode == "feed-forward" or rewrite_first:
            out = propose(policy, state, progress=0.0, previews=None)
            record(state, out, step=-1, timestep=None, progress=0.0)
            for traj, prompt, negative in zip(state.trajectories, state.prompts, state.negatives, strict=True):
                traj.initial_prompt = prompt
                if out.negative_prompts is not None:
                    traj.initial_negative_prompt = negative
            if out.negative_prompts is not None:
                initial_negative = list(state.negatives)
                state.initial_negative = initial_negative
        elif mode == "no-feedback":
            plan_in_advance(policy, state, num_inference_steps)
            state.prompts, state.history = list(queries), [[] for _ in queries]  # replayed during sampling
            state.negatives = list(initial_negative) if initial_negative is not None else [""] * len(queries)

        # 3. Attach: x0 recorder on the scheduler, the swap route's hooks, the step callback.
        state.pipeline_prompts = list(state.prompts)
        call_kwargs: dict[str, Any] = {
            "prompt": list(state.prompts),
            "num_inference_steps": num_inference_steps,
            "negative_prompt": None if initial_negative is None else list(initial_negative),  # Z-Image edits it in place
            "generator": generator,
            "height": height,
            "width": width,
            "output_type": output_type,
            **pipeline_kwargs,
        }
        self.install_trigger(call_kwargs, self._make_on_step(state, policy, mode, user_callback))
        if "callback_on_step_end" in call_kwargs:
            tensor_inputs = ["latents", *(self.spec.callback_tensors if self.spec is not None else ())]
            if user_callback is not None:
                tensor_inputs += [t for t in getattr(user_callback, "tensor_inputs", []) if t not in tensor_inputs]
            call_kwargs["callback_on_step_end_tensor_inputs"] = tensor_inputs
        elif user_callback is not None:
            raise ValueError(f"{type(pipe).__name__} has no callback_on_step_end to pass yours to")
        if guidance_scale is not None:
            call_kwargs["guidance_scale"] = check_limit(check_number(guidance_scale, "guidance_scale", lo=0.0),
                                                        "guidance", "guidance_scale")
        if initial_negative is None:
            del call_kwargs["negative_prompt"]
        accepted = inspect.signature(pipe.__call__).parameters
        for size_arg in ("height", "width"):  # img2img pipelines take the size from their input image
            if size_arg not in accepted:
                del call_kwargs[size_arg]

        # 4. Sample with the pipeline's own loop (its per-encode truncation warnings are silenced:
        #    check_queries warned once already).
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        swap.attach()
        try:
            with StepRecorder(pipe.scheduler) as recorder:
                state.recorder = recorder
                result = pipe(**call_kwargs)
        finally:
            diffusers_logging.set_verbosity(verbosity)
            swap.detach()

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
    # the step callback
    # ------------------------------------------------------------------------------------------------------------------
    def _make_on_step(
        self,
        state: CallState,
        policy: RefinementPolicy | None,
        mode: str,
        user_callback: Callable[..., dict[str, Any]] | None,
    ) -> Callable[[int, Any, dict[str, Any]], dict[str, Any]]:
        pipe = self.pipe
        refine_at = set(state.refinement_steps)

        def on_step(i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            num_steps = getattr(pipe, "_num_timesteps", None) or len(pipe.scheduler.timesteps) // max(
                1, int(getattr(pipe.scheduler, "order", 1) or 1)
            )
            state.timesteps.append(float(t))
            if state.record_latents:
                state.latents.append(kwargs["latents"].detach().clone().cpu())
            state.swap.check_reached()
            outputs: dict[str, Any] = {}
            if i in refine_at and i < num_steps - 1:
                outputs = self._refine(state, policy, mode, i, float(t), (i + 1) / num_steps, kwargs)
            elif i in refine_at:
                raise ValueError(f"refinement step {i} is not before the last of {num_steps} loop steps")
            if isinstance(state.swap, TableSwap):
                state.swap.step_done()
            if user_callback is not None:
                merged = {**kwargs, **outputs}
                outputs.update(user_callback(pipe, i, t, merged) or {})
            return outputs

        return on_step

    def _refine(
        self,
        state: CallState,
        policy: RefinementPolicy | None,
        mode: str,
        i: int,
        timestep: float,
        progress: float,
        kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        """One refinement step: previews -> policy (or the plan) -> the new conditioning in force from i + 1."""
        if mode == "feedback":
            assert state.recorder is not None and policy is not None
            x0 = state.recorder.x0()
            previews = LazyPreviews(
                functools.partial(
                    decode_preview,
                    self.pipe,
                    x0,
                    state.height,
                    state.width,
                    preview_size=self.preview_size,
                    lowres=self.preview == "vae-lowres",
                    preview_vae=self.preview_vae,
                ),
                len(state.queries),
            )
            out = propose(policy, state, progress=progress, previews=previews)
            changed, negative_changed = record(state, out, i, timestep, progress, previews, x0)
        else:  # no-feedback: replay the decision made in advance
            changed, negative_changed = record(state, state.planned[i], i, timestep, progress)
        if not any(changed) and not any(negative_changed):
            return {}
        if isinstance(state.swap, TableSwap):
            if self.spec is not None and self.spec.hooked_tensors and any(negative_changed):
                raise ValueError(
                    f"{type(self.pipe).__name__} is guidance-distilled: a negative-prompt action has no "
                    "classifier-free guidance to act through on the table route"
                )
            return state.swap.swap(kwargs, state.prompts, state.negatives, changed, negative_changed)
        if any(negative_changed):
            self._check_negative_possible(state)
            state.negative_acted = True
        rows = [c or n for c, n in zip(changed, negative_changed, strict=True)]
        acted = state.initial_negative is not None or state.negative_acted
        negatives_now = list(state.negatives) if acted else None
        state.swap.update((state.pipeline_prompts, state.initial_negative), (list(state.prompts), negatives_now), rows)
        return {}

    def _check_negative_possible(self, state: CallState) -> None:
        """Refuse a negative-prompt action where the running call has no negative branch to act through."""
        name = type(self.pipe).__name__
        assert isinstance(state.swap, ConditioningSwap)
        encoder = state.swap.encoder
        if "negative_prompt" not in inspect.signature(self.pipe.__call__).parameters:
            raise ValueError(
                f"{name} takes no negative prompt (no classifier-free guidance): a negative-prompt action cannot act"
            )
        if encoder.takes_negative and not encoder.cfg():
            raise ValueError(
                f"{name}: a negative prompt acts only under classifier-free guidance, and this call has none "
                "(guidance-distilled model or guidance_scale <= 1)"
            )
        if not encoder.takes_negative and state.initial_negative is None:
            raise ValueError(
                f"{name} encodes the negative prompt in a separate true-CFG call: start the call with a "
                "negative_prompt (and a true-CFG scale > 1) for a negative-prompt action to act through"
            )

