"""The app on world v3 (Backdrops): a v3 backbone by folder, the world's readings next to the facts (backdrop,
per-object contrast and legibility, the reward's parts), the backdrop of each preview, and a clear message while
the world ships no refinement policy. The backbone is a tiny one trained for two steps (random-like weights: the
display path is what is checked; the readings themselves are checked on renders in test_world_backdrops_describe)."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptloop.app.models import ModelSpec, load_models, world_choices, world_pipeline
from promptloop.app.session import LiveState, RowResult, SampleRequest, Score, stream_session
from promptloop.world import get_world, world_describer

QUERY = "a circle left of a red square"
V3 = get_world("v3")


@pytest.fixture(scope="module")
def v3_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from promptloop.world.train_backbone import BackboneTrainConfig, train_backbone

    root = tmp_path_factory.mktemp("v3_app")
    return train_backbone(BackboneTrainConfig(
        world="v3", work_dir=str(root / "work"), out_dir=str(root / "backbone"), vae_steps=2, vae_batch=2,
        scale_renders=8, pool_size=8, unet_steps=2, batch=2, warmup=1, decoder_steps=1, checkpoint_every=1))


@pytest.fixture(scope="module")
def v3_session(v3_backbone: Path) -> tuple[object, LiveState]:
    models = load_models(ModelSpec(pipeline=f"world:{v3_backbone}", policy="tiny:llava", device="cpu"))
    states = list(stream_session(lambda: models, SampleRequest(query=QUERY, steps=4, refinements=2, seed=1)))
    return models, states[-1]


def _rows(score: Score) -> dict[str, str]:
    return dict(score.world_rows)


def test_a_v3_backbone_by_folder_loads_with_its_worlds_reward_and_readings(v3_session: tuple) -> None:
    models, last = v3_session
    assert models.spec.world.NAME == "backdrops" and models.spec.reward == "backdrops_alignment"
    assert models.describer is world_describer(V3)
    assert last.done and not last.error, last.error
    (result,) = last.results
    rows = _rows(result.score)
    assert list(rows)[:2] == ["backdrop", "most legible colour on it"]
    assert {"alignment", "legibility", "backdrops_legible"} <= set(rows)
    alignment, legible = float(rows["alignment"]), float(rows["legibility"].split()[0])
    assert float(rows["backdrops_legible"].split()[0]) == pytest.approx(alignment * legible, abs=2e-3)
    assert float(rows["alignment"]) == pytest.approx(result.score.total, abs=1e-3)  # the facts' reward, same image
    assert {k for k, _ in result.score.parts} >= {"shape", "count", "relation"}  # the query's facts stay as they were
    assert rows == dict(models.world_rows(result.image, QUERY))


def test_each_preview_is_shown_with_the_backdrop_it_shows(v3_session: tuple) -> None:
    models, last = v3_session
    assert len(last.refinements) == len(last.notes) == 2
    for ref, note in zip(last.refinements, last.notes, strict=True):
        assert note.startswith("backdrop #") and note == models.preview_note(ref.preview)  # the preview's, not the image's


def test_the_policy_world_on_v3_says_the_world_ships_none_yet(v3_backbone: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(V3, "DEFAULT_POLICY", tmp_path / "not_shipped")  # a world that ships no policy (yet)
    spec = ModelSpec(pipeline=f"world:{v3_backbone}", device="cpu")
    assert "backdrops (v3) ships no refinement policy yet" in spec.missing_policy()
    resolved = spec.resolved()
    assert resolved.adapter is None and resolved.feed_forward_adapter is None  # not the Shapes world's adapters
    models = load_models(spec)
    for req in (SampleRequest(query=QUERY, steps=3, refinements=1),
                SampleRequest(query=QUERY, steps=3, refinements=1, compare=True)):
        last = list(stream_session(lambda: models, req))[-1]
        assert last.done and "ships no refinement policy yet" in last.error and "mode 'none'" in last.error
        assert last.results == []  # said before any row sampled
    plain = list(stream_session(lambda: models, SampleRequest(query=QUERY, steps=3, mode="none")))[-1]
    assert not plain.error and plain.results[0].image.size == (32, 32) and plain.results[0].score.world_rows


def test_a_world_declaring_its_policy_gets_it_for_the_policy_world(v3_backbone: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(V3, "DEFAULT_POLICY", tmp_path / "v3_policy", raising=False)
    spec = ModelSpec(pipeline=f"world:{v3_backbone}")
    assert spec.missing_policy()  # declared, but no such folder yet
    (tmp_path / "v3_policy").mkdir()
    assert spec.missing_policy() == "" and spec.resolved().policy == str(tmp_path / "v3_policy")
    default = ModelSpec().resolved()  # the default world keeps its shipped policy and adapters
    assert default.policy == "world" and default.adapter and default.adapter.endswith("policy_grpo")


def test_the_world_picker_offers_v3_and_says_when_it_ships_no_backbone(v3_backbone: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert ("backdrops (v3)", "backdrops") in world_choices() and ("shapes (v1)", "shapes") in world_choices()
    assert world_pipeline("v1")[0] == "world"
    monkeypatch.setattr(V3, "DEFAULT_BACKBONE", tmp_path / "not_yet")
    pipeline, note = world_pipeline("backdrops")
    assert pipeline is None and "ships no backbone yet" in note and "world:PATH" in note
    monkeypatch.setattr(V3, "DEFAULT_BACKBONE", v3_backbone)
    monkeypatch.setattr(V3, "DEFAULT_POLICY", tmp_path / "not_shipped")
    pipeline, note = world_pipeline("backdrops")
    assert pipeline == f"world:{v3_backbone}" and "no refinement policy yet" in note


def test_the_page_shows_the_readings_and_each_previews_backdrop(v3_session: tuple, v3_backbone: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gradio", reason="the app extra is not installed (pip install 'promptloop[app]')")
    from promptloop.app.layout import PREVIEW_HEADER, ImageFiles, _describe, render

    _, last = v3_session
    out = render(last, ImageFiles())
    previews, prompts, world_facts = out[1], out[2], out[6]
    assert all("| preview: backdrop #" in caption for _, caption in previews) and len(previews) == 2
    assert prompts.headers[-1] == PREVIEW_HEADER and len(prompts.value["data"]) == 2
    assert world_facts.visible and world_facts.value["data"][0][0] == "backdrop"
    monkeypatch.setattr(V3, "DEFAULT_POLICY", tmp_path / "not_shipped")
    assert "ships no refinement policy yet" in _describe(ModelSpec(pipeline=f"world:{v3_backbone}"))
    # a world without the hook (the Shapes world's facts display as before): no readings table, no preview column
    image = last.results[0].image
    plain = LiveState(rows=["none"], refinements=last.refinements, done=True,
                      results=[RowResult("none", "none", image, last.results[0].trajectory, Score(0.5), 1.0)])
    out = render(plain, ImageFiles())
    assert not out[6].visible and isinstance(out[2], list) and len(out[2][0]) == 6
