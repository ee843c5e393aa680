"""One sampling session of the app: validate the request, run the loop, stream what happens.

`stream_session(models, request)` is a generator of `LiveState` snapshots: one per sampling step (progress),
one per policy decision (its x0 preview and prompt, while sampling runs, with what the world reads in the preview
where its world describes previews) and one per finished image (with its reward, the reward's breakdown and the
world's own readings of the image, `Models.world_rows`: world v3's backdrop, contrasts and reward parts). The sampler runs in a worker thread and reports through its
`on_refinement` and step callbacks; the generator hands each report on as it arrives. With `compare`, the
plain backbone, the feed-forward rewriter and PromptLoop run one after the other on the same seed.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from promptloop.app.models import ModelLoadError, Models
from promptloop.loop.sampler import MODES, PromptLoopSampler, Refinement, Trajectory
from promptloop.loop.schedule import SCHEDULE_KINDS
from promptloop.rewards import AlignmentReward, get_reward
from promptloop.validation import LIMITS

MAX_STEPS = 200  # the most sampling steps the page accepts (seed and guidance: validation.LIMITS)
COMPARE_ROWS: tuple[tuple[str, str, str | None], ...] = (  # (label, mode, policy role) of the compare switch
    ("base", "none", None),
    ("feed-forward", "feed-forward", "feed_forward"),
    ("PromptLoop", "feedback", "promptloop"),
)


@dataclass
class SampleRequest:
    query: str  # the user's query
    seed: int = 0  # seed of the initial noise (and of the policy's sampling)
    steps: int = 20  # sampling steps
    guidance: float | str | None = None  # CFG scale (None or "": the models' default, 4.0 on the world backbone)
    mode: str = "feedback"  # one of MODES (ignored with compare)
    refinements: int = 5  # N_R (feedback / no-feedback, and PromptLoop's row of compare)
    schedule: str = "uniform"  # refinement schedule kind: uniform | random (seeded by `seed`)
    negative_prompt: str = ""  # negative prompt ("" : none)
    compare: bool = False  # base, feed-forward and PromptLoop on the same seed, side by side


class RequestError(ValueError):
    """A request the page rejects before sampling (its message is shown in the page)."""


def validate_request(req: SampleRequest) -> SampleRequest:
    """The request normalised, or RequestError saying what is wrong (in the page's words)."""
    query = (req.query or "").strip()
    if not query:
        raise RequestError("Type a query first: the query is empty.")
    mode = (req.mode or "").replace("_", "-")
    if mode not in MODES:
        raise RequestError(f"Unknown mode {req.mode!r}; choose one of {', '.join(MODES)}.")
    if req.schedule not in SCHEDULE_KINDS:
        raise RequestError(f"Unknown schedule {req.schedule!r}; choose one of {', '.join(SCHEDULE_KINDS)}.")
    steps, refinements, seed = _integer(req.steps, "Steps"), _integer(req.refinements, "N_R"), _integer(req.seed, "Seed")
    if not 2 <= steps <= MAX_STEPS:
        raise RequestError(f"Steps must be between 2 and {MAX_STEPS}, got {steps}.")
    if seed < 0:
        raise RequestError(f"Seed must be 0 or more, got {seed}.")
    if seed > LIMITS["seed"].hi:
        raise RequestError(f"Seed must be at most {LIMITS['seed'].hi}, got {seed}.")
    uses_refinements = req.compare or mode in ("feedback", "no-feedback")
    if uses_refinements and not 0 <= refinements <= steps - 1:
        raise RequestError(f"N_R must be between 0 and {steps - 1} (steps - 1) for {steps} steps, got {refinements}.")
    guidance = None if req.guidance is None or str(req.guidance).strip() == "" else req.guidance
    if guidance is not None:
        try:
            guidance = float(guidance)
        except ValueError:
            raise RequestError(f"Guidance must be a number (or empty for the default), got {req.guidance!r}.") from None
        if not math.isfinite(guidance) or guidance < 0:
            raise RequestError(f"Guidance must be a finite number >= 0, got {req.guidance}.")
        if guidance > LIMITS["guidance"].hi:
            raise RequestError(f"Guidance must be at most {LIMITS['guidance'].hi:g}, got {req.guidance}.")
    return replace(req, query=query, mode=mode, steps=steps, refinements=refinements, seed=seed, guidance=guidance)


def _integer(value: Any, label: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{label} must be a whole number, got {value!r}.") from None
    if not math.isfinite(number) or number != int(number):
        raise RequestError(f"{label} must be a whole number, got {value!r}.")
    return int(number)


# ----------------------------------------------------------------------------------------------------------------------
# scoring
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Score:
    total: float | None  # the reward of the image vs the query (None: no reward, or the query cannot be judged)
    parts: list[tuple[str, str]] = field(default_factory=list)  # (part, value) rows of the breakdown
    detections: list[str] = field(default_factory=list)  # world: the objects the analyzer found
    note: str = ""  # why there is no score, where there is none
    world_rows: list[tuple[str, str]] = field(default_factory=list)  # (what, reading): the world's `describe` hook


def score_image(models: Models, image: Image.Image, query: str) -> Score:
    """The reward of one image against the query, with its breakdown (per kind of fact for the world's alignment)
    and the world's own readings of the image (those of a world with a `describe` hook, whatever the reward)."""
    score = _reward_score(models, image, query)
    score.world_rows = models.world_rows(image, query)
    return score


def _reward_score(models: Models, image: Image.Image, query: str) -> Score:
    reward = models.reward
    if reward is None:
        return Score(None, note="no reward chosen")
    world = models.spec.world
    if isinstance(reward, AlignmentReward) or (world is not None and models.spec.reward in getattr(world, "REWARDS", {})):
        return _world_score(reward, world, image, query)
    out = reward([image], [query])
    parts = [(k, f"{float(v[0]):.3f}") for k, v in (getattr(out, "breakdown", None) or {}).items()]
    return Score(float(out.scores[0]), parts)


def _world_score(reward: Any, world: Any, image: Image.Image, query: str) -> Score:
    """A world reward's score with the facts the query asserts (an alignment reward's) and what the world's analyzer
    found."""
    analyzer = reward if isinstance(reward, AlignmentReward) else get_reward(world.ALIGNMENT_REWARD)
    try:
        analyzer.parse(query)
    except ValueError:
        return Score(None, note="not a query of the world's grammar: its facts cannot be checked, so no reward")
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)[None] / 255.0
    analysis = analyzer.analyze(arr)[0]
    total = float(reward(arr, [query]).scores[0])
    parts = []
    if isinstance(reward, AlignmentReward):
        for kind, (sat, asserted) in reward.facts(reward.parse(query), analysis).items():
            if asserted:
                parts.append((kind, f"{sat} / {asserted} {'✓' if sat == asserted else '✗'}"))
    return Score(total, parts, analyzer.describe(analysis))


# ----------------------------------------------------------------------------------------------------------------------
# the live state the page shows
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class RowResult:
    label: str  # "base", "feed-forward", "PromptLoop", or the mode of a single run
    mode: str
    image: Image.Image
    trajectory: Trajectory
    score: Score
    seconds: float


@dataclass
class LiveState:
    rows: list[str]  # the labels of the runs of this session, in order
    row: int = 0  # index of the run in progress
    step: int = 0  # sampling steps done in that run
    num_steps: int = 0
    refinements: list[Refinement] = field(default_factory=list)  # decisions of the run in progress (or the last)
    notes: list[str] = field(default_factory=list)  # per decision: what the world reads in its preview ("": nothing)
    results: list[RowResult] = field(default_factory=list)  # finished runs
    error: str = ""  # a message for the page when the session failed
    done: bool = False

    @property
    def fraction(self) -> float:
        """Fraction of the whole session done."""
        if self.done:
            return 1.0
        per_row = self.step / self.num_steps if self.num_steps else 0.0
        return min(1.0, (len(self.results) + per_row) / max(1, len(self.rows)))

    def status(self) -> str:
        if self.error:
            return self.error
        if self.done:
            return f"done: {', '.join(f'{r.label} {r.seconds:.1f} s' for r in self.results)}"
        label = self.rows[self.row] if self.row < len(self.rows) else ""
        if not self.num_steps:
            return f"{label}: loading models / rewriting before sampling ..."
        return f"{label}: step {self.step} / {self.num_steps}, {len(self.refinements)} refinements so far"


class _Cancelled(Exception):
    """Raised in the step callback to stop a sampling run whose page went away."""


def session_rows(req: SampleRequest) -> list[tuple[str, str, str | None]]:
    """(label, mode, policy role) of each run of the session."""
    if req.compare:
        return list(COMPARE_ROWS)
    role = {"none": None, "feed-forward": "feed_forward"}.get(req.mode, "promptloop")
    return [(req.mode, req.mode, role)]


def _run_rows(models: Models, req: SampleRequest, events: queue.Queue, cancel: threading.Event) -> None:
    """The worker: sample every row, reporting steps, decisions and results to `events`."""
    guidance = req.guidance if req.guidance is not None else models.guidance
    sampler = PromptLoopSampler(models.pipe, None)
    rows = session_rows(req)
    policies = {role: models.policy(role) for _, _, role in rows if role}  # a policy that cannot load: before any row
    for index, (label, mode, role) in enumerate(rows):
        policy = policies[role] if role else None
        events.put(("row", index))

        def on_step(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any], index: int = index) -> dict[str, Any]:
            if cancel.is_set():
                raise _Cancelled
            events.put(("step", index, i + 1, len(_pipe.scheduler.timesteps)))
            return {}

        torch.manual_seed(req.seed)  # the policy samples from torch's global generator
        t0 = time.perf_counter()
        out = sampler(
            [req.query], policy=policy, mode=mode, num_refinements=req.refinements, schedule=req.schedule,
            schedule_seed=req.seed, num_inference_steps=req.steps, guidance_scale=guidance,
            negative_prompt=req.negative_prompt or None, generator=torch.Generator("cpu").manual_seed(req.seed),
            on_refinement=lambda refs: events.put(("refine", refs[0], models.preview_note(refs[0].preview))),
            callback_on_step_end=on_step,
            **models.call_kwargs,
        )
        seconds = time.perf_counter() - t0
        image = out.images[0]
        events.put(("result", RowResult(label, mode, image, out.trajectories[0], score_image(models, image, req.query),
                                        seconds)))


def stream_session(models_fn: Any, req: SampleRequest, lock: threading.Lock | None = None) -> Iterator[LiveState]:
    """Run the session and yield a snapshot after every step, decision and finished image.

    `models_fn()` gives the `Models` (loaded there, so that a load error becomes a message too). Bad input
    and load errors end the stream with `LiveState.error` set; nothing raises to the page."""
    try:
        req = validate_request(req)
    except RequestError as e:
        yield LiveState(rows=[], error=str(e), done=True)
        return
    state = LiveState(rows=[label for label, _, _ in session_rows(req)])
    yield replace(state)
    lock = lock or threading.Lock()
    with lock:
        try:
            models = models_fn()
        except ModelLoadError as e:
            yield replace(state, error=str(e), done=True)
            return
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()

        def work() -> None:
            try:
                _run_rows(models, req, events, cancel)
                events.put(("end",))
            except _Cancelled:
                events.put(("end",))
            except (ValueError, RuntimeError, ModelLoadError, OSError) as e:
                events.put(("error", _message(e)))
            except Exception as e:  # an unexpected failure still ends as a message, the app keeps serving
                events.put(("error", f"sampling failed: {_message(e)}"))

        worker = threading.Thread(target=work, name="promptloop-app-sampling", daemon=True)
        worker.start()
        try:
            while True:
                event = events.get()
                kind = event[0]
                if kind == "row":
                    state = replace(state, row=event[1], step=0, num_steps=0, refinements=[], notes=[])
                elif kind == "step":
                    state = replace(state, step=event[2], num_steps=event[3])
                elif kind == "refine":
                    state = replace(state, refinements=[*state.refinements, event[1]], notes=[*state.notes, event[2]])
                elif kind == "result":
                    state = replace(state, results=[*state.results, event[1]])
                elif kind == "error":
                    yield replace(state, error=event[1], done=True)
                    return
                else:
                    yield replace(state, done=True)
                    return
                yield state
        finally:
            cancel.set()  # the page went away (or the stream ended): stop the worker at its next step
            worker.join()


def _message(e: BaseException) -> str:
    from promptloop.cli_runner import error_line

    return error_line(e)
