"""The app's non-UI logic: request checks, the streamed session on the world, model-load errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptloop.app.models import ModelLoadError, ModelSpec, ModelStore
from promptloop.app.session import RequestError, SampleRequest, stream_session, validate_request
from promptloop.loop.sampler import PromptLoopSampler
from promptloop.policy.base import FixedPromptPolicy
from promptloop.testing.pipelines import tiny_sd_pipeline

QUERY = "a crimson disc left of a blue box"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"query": "   "}, "query is empty"),
        ({"steps": 1}, "Steps must be between 2 and 200"),
        ({"steps": 500}, "Steps must be between 2 and 200"),
        ({"steps": 2.5}, "Steps must be a whole number"),
        ({"steps": None}, "Steps must be a whole number"),
        ({"refinements": 8, "steps": 8}, "N_R must be between 0 and 7"),
        ({"refinements": 30, "steps": 20, "compare": True, "mode": "none"}, "N_R must be between 0 and 19"),
        ({"seed": -1}, "Seed must be 0 or more"),
        ({"mode": "sideways"}, "Unknown mode"),
        ({"schedule": "every"}, "Unknown schedule"),
        ({"guidance": "lots"}, "Guidance must be a number"),
        ({"guidance": "nan"}, "Guidance must be a finite number"),
        ({"guidance": -1.0}, "Guidance must be a finite number >= 0"),
    ],
)
def test_bad_requests_are_rejected_with_a_message(changes: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        validate_request(SampleRequest(**{"query": QUERY, "steps": 20, **changes}))


def test_request_is_normalised() -> None:
    req = validate_request(SampleRequest(query=f"  {QUERY} ", steps=12.0, refinements=3, mode="no_feedback",
                                         guidance=" "))  # type: ignore[arg-type]
    assert (req.query, req.steps, req.mode, req.guidance) == (QUERY, 12, "no-feedback", None)
    # N_R does not matter for a mode without refinements
    assert validate_request(SampleRequest(query=QUERY, steps=4, refinements=9, mode="none")).refinements == 9


def test_bad_request_ends_the_stream_with_the_message_without_loading() -> None:
    def never() -> None:
        raise AssertionError("models must not load for a bad request")

    states = list(stream_session(never, SampleRequest(query="", steps=10)))
    assert len(states) == 1 and states[0].done and "query is empty" in states[0].error


def test_load_error_is_a_message_and_the_previous_models_stay(tmp_path: Path) -> None:
    store = ModelStore()
    states = list(stream_session(lambda: ModelStore(ModelSpec(pipeline=str(tmp_path / "missing"))).get(),
                                 SampleRequest(query=QUERY, steps=4, refinements=2)))
    assert states[-1].done and "no such folder" in states[-1].error
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="cannot load pipeline"):
        store.load(ModelSpec(pipeline=str(tmp_path / "empty")))
    assert store.spec == ModelSpec()  # still the world


@pytest.fixture(scope="module")
def world_store() -> ModelStore:
    store = ModelStore()
    store.get()
    return store


def test_feedback_session_streams_each_refinement_before_the_final_image(world_store: ModelStore) -> None:
    states = list(stream_session(world_store.get, SampleRequest(query=QUERY, steps=8, refinements=3)))
    last = states[-1]
    assert last.done and not last.error, last.error
    counts = [len(s.refinements) for s in states if not s.results]
    assert set(counts) >= {0, 1, 2, 3}  # each decision arrived on its own, while sampling ran
    steps_seen = [s.step for s in states if s.num_steps]
    assert steps_seen == sorted(steps_seen) and max(steps_seen) == 8
    assert [r.step for r in last.refinements] == [1, 3, 5]  # uniform schedule of 3 in 8 steps
    assert all(r.preview is not None and r.prompt for r in last.refinements)
    (result,) = last.results
    assert result.trajectory.refinements == last.refinements
    assert result.image.size == (32, 32)
    assert result.score.total is not None and 0.0 <= result.score.total <= 1.0
    kinds = [k for k, _ in result.score.parts]
    assert {"colour", "shape", "count", "relation"} <= set(kinds)
    assert result.score.detections[-1].startswith("background")
    assert last.fraction == 1.0 and last.status().startswith("done")


def test_session_matches_the_sampler_called_directly(world_store: ModelStore) -> None:
    """Streaming changes nothing: the same seed gives the same image and prompts as a plain sampler call."""
    import numpy as np
    import torch

    models = world_store.get()
    req = SampleRequest(query=QUERY, steps=6, refinements=2, seed=3)
    result = list(stream_session(world_store.get, req))[-1].results[0]
    torch.manual_seed(3)
    out = PromptLoopSampler(models.pipe, models.policy("promptloop"), num_refinements=2)(
        [QUERY], num_inference_steps=6, guidance_scale=4.0, generator=torch.Generator().manual_seed(3),
        **models.call_kwargs)
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(result.image))
    assert [r.prompt for r in out.trajectories[0].refinements] == [r.prompt for r in result.trajectory.refinements]


def test_compare_runs_three_rows_on_the_same_seed(world_store: ModelStore) -> None:
    last = list(stream_session(world_store.get, SampleRequest(query=QUERY, steps=5, refinements=2, compare=True)))[-1]
    assert [r.label for r in last.results] == ["base", "feed-forward", "PromptLoop"]
    base, ff, loop = last.results
    assert base.trajectory.refinements == [] and base.trajectory.final_prompt == QUERY
    assert [r.step for r in ff.trajectory.refinements] == [-1]  # one rewrite before sampling
    assert len(loop.trajectory.refinements) == 2


def test_query_outside_the_grammar_has_no_reward_but_an_image(world_store: ModelStore) -> None:
    last = list(stream_session(world_store.get, SampleRequest(query="a cat on the moon", steps=3, mode="none")))[-1]
    assert not last.error and last.results[0].score.total is None
    assert "grammar" in last.results[0].score.note


def test_on_refinement_reports_every_decision_in_batch_order() -> None:
    pipe = tiny_sd_pipeline(seed=0)
    seen: list[list[str]] = []
    out = PromptLoopSampler(pipe, FixedPromptPolicy(["x one", "y two"]), num_refinements=2)(
        ["a", "b"], num_inference_steps=4, height=32, width=32, on_refinement=lambda refs: seen.append(
            [r.prompt for r in refs]))
    assert seen == [["x one", "y two"], ["x one", "y two"]]
    assert len(out.trajectories[0].refinements) == 2
