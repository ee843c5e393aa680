"""Tests of promptloop.loop on tiny random SD / SDXL / SD3 / FLUX pipelines (offline, CPU, deterministic)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from promptloop.loop import (
    FAMILIES,
    PromptLoopSampler,
    StepRecorder,
    decode_preview,
    detect_family,
    make_schedule,
    predict_x0,
    random_schedule,
    uniform_schedule,
)
from promptloop.policy.base import FixedPromptPolicy, NullPolicy, PolicyInput, PolicyOutput, StagedPolicy
from promptloop.testing.pipelines import TINY_PIPELINES, make_scheduler, tiny_call_kwargs

FAMILY_NAMES = list(TINY_PIPELINES)
QUERIES = ["a red cat", "a green tree"]
NEW_PROMPTS = ["a blue square", "a yellow star"]
STEPS = 6


@pytest.fixture(scope="module")
def pipes() -> dict[str, Any]:
    return {name: build(seed=0) for name, build in TINY_PIPELINES.items()}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _plain(pipe: Any, family: str, prompts: list[str], **kwargs: Any) -> np.ndarray:
    """The pipeline called directly (no sampler)."""
    kw = {**tiny_call_kwargs(family), "num_inference_steps": STEPS, "generator": _gen(), "output_type": "np", **kwargs}
    return pipe(prompts, **kw).images


def _run(pipe: Any, family: str, policy: Any = None, **kwargs: Any) -> Any:
    kw = {**tiny_call_kwargs(family), "num_inference_steps": STEPS, "generator": _gen(), "output_type": "np", **kwargs}
    return PromptLoopSampler(pipe, policy)(list(QUERIES), **kw)


class RecordingPolicy:
    """A FixedPromptPolicy that records every PolicyInput and emits fake tokens/log-probs/fallback flags."""

    def __init__(self, prompts: list[str] | str, log: list[Any] | None = None) -> None:
        self.inner = FixedPromptPolicy(prompts)
        self.inputs: list[PolicyInput] = []
        self.log = log if log is not None else []

    def propose(self, inputs: PolicyInput) -> PolicyOutput:
        self.inputs.append(inputs)
        self.log.append("policy")
        out = self.inner.propose(inputs)
        n = len(out.prompts)
        return PolicyOutput(
            prompts=out.prompts,
            completion_ids=[torch.tensor([7, len(self.inputs)]) for _ in range(n)],
            logprobs=[torch.tensor([-0.5, -0.25]) for _ in range(n)],
            fallback=[k == 1 for k in range(n)],
            raw_texts=[f"raw {p}" for p in out.prompts],
        )


@contextlib.contextmanager
def record_denoiser_calls(pipe: Any, family: str) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Record the conditioning each denoiser forward receives (after any forward pre-hook)."""
    denoiser = getattr(pipe, FAMILIES[family].denoiser)
    calls: list[dict[str, torch.Tensor]] = []
    original = denoiser.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        entry = {"ehs": kwargs["encoder_hidden_states"].clone()}
        if family == "sdxl":
            entry["pooled"] = kwargs["added_cond_kwargs"]["text_embeds"].clone()
        elif family in ("sd3", "flux"):
            entry["pooled"] = kwargs["pooled_projections"].clone()
        calls.append(entry)
        return original(*args, **kwargs)

    denoiser.forward = forward
    try:
        yield calls
    finally:
        del denoiser.forward


# ----------------------------------------------------------------------------------------------------------------------
# the swap
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_swap_keeps_latents_until_swap_step_then_diverges(pipes: dict[str, Any], family: str) -> None:
    """Latents equal plain sampling up to and including the refinement step, differ after; 'none' == pipeline."""
    pipe = pipes[family]
    plain = _run(pipe, family, mode="none", record_latents=True)
    np.testing.assert_array_equal(plain.images, _plain(pipe, family, QUERIES))  # the wrapper changes nothing

    swap = 2
    out = _run(
        pipe, family, FixedPromptPolicy(NEW_PROMPTS), mode="feedback", refinement_steps=[swap], record_latents=True
    )
    assert out.latents.shape[0] == STEPS and out.num_policy_calls == 1
    assert torch.equal(out.latents[: swap + 1], plain.latents[: swap + 1])
    for later in range(swap + 1, STEPS):
        for k in range(len(QUERIES)):  # every sample (each got its own new prompt) diverges
            assert not torch.equal(out.latents[later, k], plain.latents[later, k]), (later, k)
    for k, traj in enumerate(out.trajectories):
        (ref,) = traj.refinements
        assert (ref.step, ref.prompt, ref.previous_prompt) == (swap, NEW_PROMPTS[k], QUERIES[k])
        assert ref.progress == pytest.approx((swap + 1) / STEPS)
        assert ref.timestep == out.timesteps[swap]
        assert ref.preview is not None and ref.preview.size == (32, 32)
        assert traj.prompt_at(swap) == QUERIES[k] and traj.prompt_at(swap + 1) == NEW_PROMPTS[k]


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_only_changed_samples_are_swapped(pipes: dict[str, Any], family: str) -> None:
    """Per-sample prompts: a sample whose prompt is kept stays bit-identical to plain sampling."""
    pipe = pipes[family]
    plain = _run(pipe, family, mode="none", record_latents=True)
    policy = FixedPromptPolicy([NEW_PROMPTS[0], QUERIES[1]])
    out = _run(pipe, family, policy, mode="feedback", refinement_steps=[1], record_latents=True)
    assert torch.equal(out.latents[:, 1], plain.latents[:, 1])
    assert not torch.equal(out.latents[-1, 0], plain.latents[-1, 0])


class SequencePolicy:
    """Returns the k-th list of prompts at the k-th call."""

    def __init__(self, *prompts: list[str]) -> None:
        self.prompts, self.calls = list(prompts), 0

    def propose(self, inputs: PolicyInput) -> PolicyOutput:
        self.calls += 1
        return FixedPromptPolicy(self.prompts[self.calls - 1]).propose(inputs)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_each_distinct_new_prompt_is_encoded_once_per_call(pipes: dict[str, Any], family: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A refinement encodes only the prompts that changed, each distinct one once; one met again at a later
    refinement reuses its encoding, and the images are those of re-encoding the whole batch at each refinement."""
    from promptloop.loop.table_swap import TableSwap

    pipe = pipes[family]
    sequence = ([NEW_PROMPTS[0], NEW_PROMPTS[0]], [NEW_PROMPTS[1], NEW_PROMPTS[0]], [NEW_PROMPTS[0], NEW_PROMPTS[1]])
    encoded: list[list[str]] = []
    original = pipe.encode_prompt

    def recording(*args: Any, **kwargs: Any) -> Any:
        encoded.append(list(args[0] if args else kwargs["prompt"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(pipe, "encode_prompt", recording)
    out = _run(pipe, family, SequencePolicy(*sequence), mode="feedback", refinement_steps=[1, 2, 3])
    # the pipeline's own encoding of the queries, then: both rows' new prompt once; only row 0's new prompt;
    # nothing at the third refinement (both prompts met before)
    assert encoded == [QUERIES, [NEW_PROMPTS[0]], [NEW_PROMPTS[1]]]

    def whole_batch(self: TableSwap, prompts: list[str], changed: Any, device: torch.device) -> dict[str, Any]:
        return self.spec.encode(self.pipe, list(prompts), device, self.encode_kwargs)

    monkeypatch.setattr(pipe, "encode_prompt", original)
    monkeypatch.setattr(TableSwap, "_encode_changed", whole_batch)
    reference = _run(pipe, family, SequencePolicy(*sequence), mode="feedback", refinement_steps=[1, 2, 3])
    np.testing.assert_allclose(out.images, reference.images, atol=1e-5)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_conditioning_and_pooled_embedding_really_change(pipes: dict[str, Any], family: str) -> None:
    """After each swap the denoiser receives the new prompt's embeddings -- token states AND the pooled
    embedding (SDXL text_embeds, SD3/FLUX pooled_projections) -- while negative rows stay untouched."""
    pipe, spec = pipes[family], FAMILIES[family]
    extra: dict[str, Any] = {}
    if family == "flux":  # exercise FLUX true CFG: a separate negative call that must NOT be touched
        extra = {"negative_prompt": "blurry", "true_cfg_scale": 2.0}
    second = ["a white box", "a black ball"]
    swaps, batch = [1, 3], len(QUERIES)
    policy = SequencePolicy(NEW_PROMPTS, second)
    with record_denoiser_calls(pipe, family) as calls:
        _run(pipe, family, policy, mode="feedback", refinement_steps=swaps, **extra)
    per_step = len(calls) // STEPS
    assert per_step * STEPS == len(calls) and per_step == (2 if family == "flux" else 1)
    names = {"ehs": "prompt_embeds"}
    if family != "sd":
        names["pooled"] = {"sdxl": "add_text_embeds", "sd3": "pooled_prompt_embeds", "flux": "pooled_projections"}[
            family
        ]

    for swap, prompts in zip(swaps, [NEW_PROMPTS, second], strict=True):
        with torch.no_grad():  # as inside the pipeline (SDPA may pick another kernel with autograd on)
            expected = spec.encode(pipe, prompts, torch.device("cpu"), tiny_call_kwargs(family))
        before, after = calls[swap * per_step], calls[(swap + 1) * per_step]  # the conditional call of each step
        for key, name in names.items():
            torch.testing.assert_close(after[key][-batch:], expected[name].to(after[key].dtype), rtol=0, atol=0)
            assert not torch.equal(after[key][-batch:], before[key][-batch:]), key
            if after[key].shape[0] == 2 * batch:  # CFG-concatenated: the negative half is unchanged
                assert torch.equal(after[key][:batch], before[key][:batch])
            assert torch.equal(calls[(swap + 2) * per_step][key], after[key])  # stays in force
    if family == "flux":  # the true-CFG negative call: the same embeddings throughout
        for key in names:
            for call in calls[1::per_step]:
                assert torch.equal(call[key], calls[1][key])


def test_flux_refuses_partial_swap(pipes: dict[str, Any]) -> None:
    """If something else replaces FLUX's prompt_embeds after the swap, the pooled hook cannot fire: error, not silence."""

    def meddle(_pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"prompt_embeds": kwargs["prompt_embeds"].clone()}

    with pytest.raises(RuntimeError, match="partial"):
        _run(pipes["flux"], "flux", FixedPromptPolicy(NEW_PROMPTS), refinement_steps=[1], callback_on_step_end=meddle)
    # the hook was removed again: a plain run afterwards is unaffected
    np.testing.assert_array_equal(
        _run(pipes["flux"], "flux", mode="none").images, _plain(pipes["flux"], "flux", QUERIES)
    )


class NegativePolicy:
    """Keeps the prompts, sets a negative prompt per sample."""

    def __init__(self, negatives: list[str]) -> None:
        self.negatives = negatives

    def propose(self, inputs: PolicyInput) -> PolicyOutput:
        return PolicyOutput(prompts=list(inputs.current_prompts), negative_prompts=list(self.negatives))


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3"])
def test_negative_prompt_action_on_the_table_route(pipes: dict[str, Any], family: str) -> None:
    """The negative rows of the CFG batch become the new negative prompt's encoding; positive rows untouched."""
    pipe, spec = pipes[family], FAMILIES[family]
    negatives, batch, swap = ["blurry dark", "gray sky"], len(QUERIES), 2
    with record_denoiser_calls(pipe, family) as calls:
        out = _run(pipe, family, NegativePolicy(negatives), refinement_steps=[swap], guidance_scale=5.0, record_latents=True)
    plain = _run(pipe, family, mode="none", guidance_scale=5.0, record_latents=True)
    with torch.no_grad():
        expected = spec.encode(pipe, negatives, torch.device("cpu"), tiny_call_kwargs(family))
    before, after = calls[swap], calls[swap + 1]
    assert torch.equal(after["ehs"][batch:], before["ehs"][batch:])  # positive rows intact
    torch.testing.assert_close(after["ehs"][:batch], expected["prompt_embeds"], rtol=0, atol=0)
    assert not torch.equal(after["ehs"][:batch], before["ehs"][:batch])
    if family != "sd":
        assert torch.equal(after["pooled"][batch:], before["pooled"][batch:])
        assert not torch.equal(after["pooled"][:batch], before["pooled"][:batch])
    assert torch.equal(out.latents[: swap + 1], plain.latents[: swap + 1])
    assert not torch.equal(out.latents[-1], plain.latents[-1])
    assert out.trajectories[1].refinements[0].negative_prompt == negatives[1]
    with pytest.raises(ValueError, match="classifier-free guidance"):  # CFG off: nothing to act through
        _run(pipe, family, NegativePolicy(negatives), refinement_steps=[swap], guidance_scale=1.0)


def test_negative_prompt_refused_on_guidance_distilled_flux(pipes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="guidance-distilled"):
        _run(pipes["flux"], "flux", NegativePolicy(["blurry", "dark"]), refinement_steps=[1])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_null_policy_gives_plain_images(pipes: dict[str, Any], family: str) -> None:
    pipe = pipes[family]
    out = _run(pipe, family, NullPolicy(), mode="feedback", num_refinements=3)
    assert out.num_policy_calls == 3 and out.refinement_steps == [1, 2, 3]
    np.testing.assert_array_equal(out.images, _plain(pipe, family, QUERIES))


# ----------------------------------------------------------------------------------------------------------------------
# modes
# ----------------------------------------------------------------------------------------------------------------------
def test_modes_policy_calls_and_records(pipes: dict[str, Any]) -> None:
    pipe, family = pipes["sd"], "sd"
    log: list[Any] = []

    def step_marker(_pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        log.append(i)
        return {}

    # feedback: one call per refinement step, during sampling, with previews
    policy = RecordingPolicy(NEW_PROMPTS, log)
    out = _run(pipe, family, policy, mode="feedback", refinement_steps=[1, 3], callback_on_step_end=step_marker)
    assert out.num_policy_calls == 2 and len(policy.inputs) == 2
    assert log == [0, "policy", 1, 2, "policy", 3, 4, 5]  # the user callback runs after ours
    assert [i.progress for i in policy.inputs] == pytest.approx([2 / STEPS, 4 / STEPS])
    assert all(i.previews is not None and len(i.previews) == 2 for i in policy.inputs)
    assert policy.inputs[1].current_prompts == NEW_PROMPTS and policy.inputs[1].history == [[q] for q in QUERIES]
    refs = out.trajectories[1].refinements
    assert [r.fallback for r in refs] == [True, True] and refs[1].raw_text == "raw a yellow star"
    assert torch.equal(refs[1].completion_ids, torch.tensor([7, 2])) and torch.equal(
        refs[0].logprobs, torch.tensor([-0.5, -0.25])
    )
    assert refs[0].x0 is not None and refs[0].x0.shape == (4, 16, 16)

    # no-feedback: same number of calls, all before sampling, no previews; prompts swapped in at the same steps
    log.clear()
    policy = RecordingPolicy(NEW_PROMPTS, log)
    nofb = _run(pipe, family, policy, mode="no-feedback", refinement_steps=[1, 3], callback_on_step_end=step_marker)
    assert nofb.num_policy_calls == 2 and log == ["policy", "policy", 0, 1, 2, 3, 4, 5]
    assert all(i.previews is None for i in policy.inputs)
    assert [i.progress for i in policy.inputs] == pytest.approx([2 / STEPS, 4 / STEPS])
    assert all(r.preview is None for r in nofb.trajectories[0].refinements)
    np.testing.assert_array_equal(nofb.images, out.images)  # same prompts at the same steps -> same images

    # no-feedback with a policy that emits all prompts in one pass
    class SchedulePolicy(RecordingPolicy):
        def propose_schedule(self, inputs: PolicyInput, progresses: list[float]) -> list[PolicyOutput]:
            self.progresses = progresses
            return [self.inner.propose(inputs) for _ in progresses]

    sched_policy = SchedulePolicy(NEW_PROMPTS)
    one = _run(pipe, family, sched_policy, mode="no-feedback", refinement_steps=[1, 3])
    assert one.num_policy_calls == 1 and sched_policy.progresses == pytest.approx([2 / STEPS, 4 / STEPS])
    assert len(one.trajectories[0].refinements) == 2

    # feed-forward: one call before sampling at progress 0 == the pipeline run on the rewritten prompts
    policy = RecordingPolicy(NEW_PROMPTS)
    ff = _run(pipe, family, policy, mode="feed-forward")
    assert ff.num_policy_calls == 1 and policy.inputs[0].progress == 0.0 and policy.inputs[0].previews is None
    assert ff.trajectories[0].initial_prompt == NEW_PROMPTS[0] and ff.trajectories[0].refinements[0].step == -1
    np.testing.assert_array_equal(ff.images, _plain(pipe, family, NEW_PROMPTS))

    # feedback with rewrite_first: the feed-forward call, then the feedback calls; with the same prompts at
    # every call nothing changes after the first rewrite, so the images are the feed-forward ones
    log.clear()
    policy = RecordingPolicy(NEW_PROMPTS, log)
    both = _run(pipe, family, policy, mode="feedback", refinement_steps=[1, 3], rewrite_first=True,
                callback_on_step_end=step_marker)
    assert both.num_policy_calls == 3 and log == ["policy", 0, "policy", 1, 2, "policy", 3, 4, 5]
    assert policy.inputs[0].previews is None and policy.inputs[0].progress == 0.0
    assert [r.step for r in both.trajectories[0].refinements] == [-1, 1, 3]
    assert both.trajectories[0].initial_prompt == NEW_PROMPTS[0]
    np.testing.assert_array_equal(both.images, ff.images)
    with pytest.raises(ValueError, match="rewrite_first"):
        _run(pipe, family, policy, mode="no-feedback", refinement_steps=[1], rewrite_first=True)

    # a staged policy: one policy for the rewrite before sampling, another for the feedback calls
    first, later = RecordingPolicy(NEW_PROMPTS), RecordingPolicy(list(QUERIES))
    staged = _run(pipe, family, StagedPolicy(first, later), mode="feedback", refinement_steps=[1, 3], rewrite_first=True)
    assert len(first.inputs) == 1 and first.inputs[0].previews is None
    assert len(later.inputs) == 2 and all(i.previews is not None for i in later.inputs)
    assert [r.prompt for r in staged.trajectories[0].refinements] == [NEW_PROMPTS[0], QUERIES[0], QUERIES[0]]

    # none: no call at all
    policy = RecordingPolicy(NEW_PROMPTS)
    assert _run(pipe, family, policy, mode="none").num_policy_calls == 0 and not policy.inputs


def test_seeded_runs_are_deterministic_and_cfg_negative_prompt_kept(pipes: dict[str, Any]) -> None:
    pipe, family = pipes["sdxl"], "sdxl"
    kw = {"mode": "feedback", "num_refinements": 2, "schedule": "random", "schedule_seed": 3, "negative_prompt": "ugly"}
    a = _run(pipe, family, FixedPromptPolicy(NEW_PROMPTS), **kw)
    b = _run(pipe, family, FixedPromptPolicy(NEW_PROMPTS), **kw)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.refinement_steps == b.refinement_steps == random_schedule(STEPS, 2, 3)
    # with NullPolicy the negative prompt and guidance scale act exactly as in the plain pipeline
    null = _run(pipe, family, NullPolicy(), num_refinements=2, negative_prompt="ugly", guidance_scale=3.0)
    np.testing.assert_array_equal(
        null.images, _plain(pipe, family, QUERIES, negative_prompt="ugly", guidance_scale=3.0)
    )


# ----------------------------------------------------------------------------------------------------------------------
# schedules
# ----------------------------------------------------------------------------------------------------------------------
def test_schedules_and_validation(pipes: dict[str, Any]) -> None:
    assert uniform_schedule(50, 5) == [7, 16, 24, 32, 41]
    assert uniform_schedule(6, 5) == [0, 1, 2, 3, 4]
    assert make_schedule(10, 0) == []
    r = random_schedule(20, 4, seed=1)
    assert r == random_schedule(20, 4, seed=1) and r == sorted(set(r)) and all(0 <= s <= 18 for s in r)
    assert make_schedule(10, steps=[5, 2]) == [2, 5]
    for bad in [
        {"num_refinements": 10},  # more refinements than fit
        {"num_refinements": -1},
        {"steps": [9]},  # after the last step
        {"steps": [-1]},
        {"steps": [2, 2]},
        {"steps": [1.5]},
        {"num_refinements": 2, "steps": [1]},
        {"num_refinements": 2, "kind": "cosine"},
        {},
    ]:
        with pytest.raises(ValueError):
            make_schedule(10, **bad)

    policy = RecordingPolicy(NEW_PROMPTS)
    with pytest.raises(ValueError, match="do not fit"):
        _run(pipes["sd"], "sd", policy, num_refinements=STEPS)
    with pytest.raises(ValueError, match="out of range"):
        _run(pipes["sd"], "sd", policy, refinement_steps=[STEPS])
    with pytest.raises(ValueError, match="unknown mode"):
        _run(pipes["sd"], "sd", policy, mode="closed-loop")
    with pytest.raises(ValueError, match="needs a policy"):
        _run(pipes["sd"], "sd", None, mode="feedback")
    assert not policy.inputs  # rejected before any sampling
    zero = _run(pipes["sd"], "sd", policy, num_refinements=0)  # N_R = 0 is allowed: plain sampling
    assert zero.num_policy_calls == 0 and zero.refinement_steps == []
    with pytest.raises(TypeError, match="not in the family table"):
        detect_family(object())


# ----------------------------------------------------------------------------------------------------------------------
# x0
# ----------------------------------------------------------------------------------------------------------------------
def _xt(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_x0_ddpm_family_matches_ddim_pred_original_sample(prediction_type: str) -> None:
    """alphas_cumprod formula (used for PNDM) == DDIM's own pred_original_sample; PNDM gets the same x0."""
    ddim = make_scheduler("ddim", prediction_type=prediction_type)
    pndm = make_scheduler("pndm", prediction_type=prediction_type)
    ddim.set_timesteps(10)
    pndm.set_timesteps(10)
    x, out = _xt()
    for t in ddim.timesteps[:3]:
        truth = ddim.step(out, t, x).pred_original_sample
        torch.testing.assert_close(predict_x0(ddim, out, t, x), truth, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(predict_x0(pndm, out, t, x), truth, rtol=1e-5, atol=1e-5)


def test_x0_flow_matching_is_x_minus_sigma_v() -> None:
    """x0 = x_t - sigma v: the point where the Euler step's straight line reaches sigma = 0."""
    sched = make_scheduler("flow", shift=3.0)
    sched.set_timesteps(5)
    x, v = _xt()
    with StepRecorder(sched) as rec:
        for i, t in enumerate(sched.timesteps):
            sigma, sigma_next = sched.sigmas[i], sched.sigmas[i + 1]
            prev = sched.step(v, t, x, return_dict=False)[0]
            truth = x + (0 - sigma) * (prev - x) / (sigma_next - sigma)
            torch.testing.assert_close(rec.x0(), truth, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(rec.x0(), x - sigma * v)
            if i == len(sched.timesteps) - 1:  # last step lands on sigma = 0: the step's result is x0
                torch.testing.assert_close(rec.x0(), prev, rtol=1e-5, atol=1e-5)
            x = prev


@pytest.mark.parametrize(
    "name,config",
    [
        ("dpm", {"prediction_type": "epsilon"}),
        ("dpm", {"prediction_type": "v_prediction", "use_karras_sigmas": True}),
        ("unipc", {"prediction_type": "epsilon"}),
        ("unipc", {"prediction_type": "v_prediction"}),
    ],
)
def test_x0_multistep_solvers_match_their_data_prediction(name: str, config: dict[str, Any]) -> None:
    """DPMSolver++ / UniPC convert the model output to x0 internally: the recorder's x0 equals that, step by step."""
    sched = make_scheduler(name, **config)
    truth_sched = make_scheduler(name, **config)
    sched.set_timesteps(6)
    truth_sched.set_timesteps(6)
    x, out = _xt(1)
    with StepRecorder(sched) as rec:
        for t in sched.timesteps[:4]:
            if truth_sched.step_index is None:
                truth_sched._init_step_index(t)
            truth = truth_sched.convert_model_output(out, sample=x)
            truth_sched._step_index += 1
            prev = sched.step(out, t, x).prev_sample
            torch.testing.assert_close(rec.x0(), truth, rtol=1e-4, atol=1e-4)
            x = prev


@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_recorder_inside_pipeline(pipes: dict[str, Any], family: str) -> None:
    """Inside a real pipeline: DDIM's recorded x0 equals our formula; flow matching's last x0 equals the result."""
    pipe = pipes[family]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    with StepRecorder(pipe.scheduler) as rec:

        def grab(_pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            last = rec.last
            own = predict_x0(pipe.scheduler, last.model_output, last.timestep, last.sample, last.step_index)
            seen.append((rec.x0(), own, kwargs["latents"]))
            return {}

        pipe(
            QUERIES,
            num_inference_steps=STEPS,
            generator=_gen(),
            callback_on_step_end=grab,
            output_type="latent",
            **tiny_call_kwargs(family),
        )
    assert "step" not in vars(pipe.scheduler)  # unwrapped again
    for x0, own, _ in seen:
        torch.testing.assert_close(x0, own, rtol=1e-4, atol=1e-4)
    if family == "sd3":
        torch.testing.assert_close(seen[-1][0], seen[-1][2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("scheduler", "call_kwargs"), [("ddim", {"eta": 1.0}), ("euler_a", {}), ("ddpm", {})])
def test_stochastic_schedulers_keep_eta_and_generator(pipes: dict[str, Any], scheduler: str,
                                                      call_kwargs: dict[str, Any]) -> None:
    """The recorder's wrapped step keeps the step's signature, so the pipeline still passes `eta` and the
    user's `generator` to a stochastic step: the loop with NullPolicy samples exactly what the plain
    pipeline samples, and DDIM's eta = 1 is not silently eta = 0."""
    pipe = pipes["sd"]
    saved = pipe.scheduler
    pipe.scheduler = make_scheduler(scheduler)
    try:
        with StepRecorder(pipe.scheduler):
            params = inspect.signature(pipe.scheduler.step).parameters
        assert "generator" in params
        plain = _plain(pipe, "sd", QUERIES, **call_kwargs)
        looped = _run(pipe, "sd", NullPolicy(), mode="feedback", num_refinements=2, **call_kwargs).images
        np.testing.assert_array_equal(looped, plain)
        if call_kwargs:
            deterministic = _run(pipe, "sd", NullPolicy(), mode="feedback", num_refinements=2).images
            assert np.abs(looped - deterministic).max() > 1e-3
    finally:
        pipe.scheduler = saved


# ----------------------------------------------------------------------------------------------------------------------
# previews
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_preview_decode_matches_pipeline_decode(pipes: dict[str, Any], family: str) -> None:
    """decode_preview of the final latents == the pipeline's own decoded image (scaling, shift, FLUX unpacking)."""
    pipe = pipes[family]
    latents = pipe(
        QUERIES, num_inference_steps=2, generator=_gen(), output_type="latent", **tiny_call_kwargs(family)
    ).images
    images = pipe(QUERIES, num_inference_steps=2, generator=_gen(), output_type="np", **tiny_call_kwargs(family)).images
    previews = decode_preview(pipe, latents, 32, 32)
    decoded = np.stack([np.asarray(p, dtype=np.float32) / 255 for p in previews])
    np.testing.assert_allclose(decoded, images, atol=1 / 255 + 1e-6)
    small = decode_preview(pipe, latents, 32, 32, preview_size=16)
    cheap = decode_preview(pipe, latents, 32, 32, preview_size=16, lowres=True)
    assert [p.size for p in small] == [(16, 16)] * 2 and [p.size for p in cheap] == [(16, 16)] * 2


def test_follows_pipeline_dtype(pipes: dict[str, Any]) -> None:
    """A bf16 FLUX pipeline: the swapped embeddings and previews follow the pipeline's dtype, no error."""
    from promptloop.testing.pipelines import tiny_flux_pipeline

    pipe = tiny_flux_pipeline(dtype=torch.bfloat16)
    out = PromptLoopSampler(pipe, FixedPromptPolicy(NEW_PROMPTS))(
        QUERIES,
        num_inference_steps=4,
        num_refinements=2,
        generator=_gen(),
        output_type="pt",
        **tiny_call_kwargs("flux"),
    )
    assert out.images.dtype == torch.bfloat16 and out.trajectories[0].refinements[0].x0.dtype == torch.bfloat16
    assert out.trajectories[1].final_prompt == NEW_PROMPTS[1]


def test_sampler_preview_options(pipes: dict[str, Any]) -> None:
    policy = RecordingPolicy(NEW_PROMPTS)
    out = PromptLoopSampler(pipes["flux"], policy, preview="vae-lowres", preview_size=16)(
        QUERIES, num_inference_steps=STEPS, generator=_gen(), num_refinements=1, **tiny_call_kwargs("flux")
    )
    assert policy.inputs[0].previews[0].size == (16, 16)
    assert out.trajectories[0].refinements[0].preview.size == (16, 16)
    with pytest.raises(ValueError):
        PromptLoopSampler(pipes["flux"], policy, preview="latent-magic")  # type: ignore[arg-type]


def test_empty_and_overlong_queries() -> None:
    import warnings

    from promptloop.testing.pipelines import tiny_call_kwargs, tiny_sd_pipeline

    pipe = tiny_sd_pipeline()
    sampler = PromptLoopSampler(pipe, None, mode="none")
    with pytest.raises(ValueError, match="query 1 is empty"):
        sampler(["a cat", "  "], num_inference_steps=2, **tiny_call_kwargs("sd"))
    long = " ".join(["cat"] * 200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler([long, "a dog"], num_inference_steps=2, **tiny_call_kwargs("sd"))
    messages = [str(w.message) for w in caught if "window" in str(w.message)]
    assert len(messages) == 1 and "1 of 2 queries" in messages[0]


def test_prompt_keyword_as_a_diffusers_pipeline_takes_it(pipes: dict[str, Any]) -> None:
    """`sampler(prompt=...)` is `sampler(queries)`: the same images and trajectories; both, or neither, is an error."""
    pipe, kw = pipes["sdxl"], {**tiny_call_kwargs("sdxl"), "num_inference_steps": STEPS, "output_type": "np"}
    sampler = PromptLoopSampler(pipe, FixedPromptPolicy(NEW_PROMPTS), num_refinements=2)
    a = sampler(list(QUERIES), generator=_gen(), **kw)
    b = sampler(prompt=list(QUERIES), generator=_gen(), **kw)
    np.testing.assert_array_equal(a.images, b.images)
    assert [t.query for t in b.trajectories] == QUERIES and b.trajectories[0].final_prompt == NEW_PROMPTS[0]
    one = sampler(prompt="a red cat", mode="none", generator=_gen(), **kw)
    assert len(one.images) == 1 and one.trajectories[0].query == "a red cat"
    with pytest.raises(TypeError, match="one of the two"):
        sampler(list(QUERIES), prompt=list(QUERIES), **kw)
    with pytest.raises(TypeError, match="no prompts"):
        sampler(**kw)
