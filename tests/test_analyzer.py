"""Tests of the classical Shapes-world analyzer: render -> analyze round trip, inputs, accuracy check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from promptloop.world.shapes.analyzer import (
    AnalyzerInputError,
    DetectedObject,
    analyze,
    analyze_batch,
    analyze_scene,
    gaussian_blur,
    label_components,
    to_image_batch,
)
from promptloop.world.shapes.analyzer_accuracy import analyzer_check, render_shaded
from promptloop.world.shapes.render import render, render_batch
from promptloop.world.shapes.scene import BACKGROUNDS, COLOURS, GRID, SHAPES, SIZES, Scene, SceneObject


@st.composite
def scenes(draw: st.DrawFn) -> Scene:
    n = draw(st.integers(1, 3))
    colours = draw(st.lists(st.sampled_from(sorted(COLOURS)), min_size=n, max_size=n, unique=True))
    all_cells = [(c, r) for c in range(GRID) for r in range(GRID)]
    cells = draw(st.lists(st.sampled_from(all_cells), min_size=n, max_size=n, unique=True))
    objs = tuple(
        SceneObject(draw(st.sampled_from(SHAPES)), colour, draw(st.sampled_from(SIZES)), cell)
        for colour, cell in zip(colours, cells, strict=True)
    )
    return Scene(objs, draw(st.sampled_from(sorted(BACKGROUNDS))))


def _facts(objs: tuple[SceneObject, ...] | list[DetectedObject]) -> list[tuple[str, str, str, tuple[int, int]]]:
    return sorted((o.colour, o.shape, o.size, o.cell) for o in objs)


PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(scenes())
def test_round_trip_recovers_every_attribute(scene: Scene) -> None:
    analysis = analyze_scene(render(scene))
    assert _facts(analysis.objects) == _facts(scene.objects)
    assert analysis.background == scene.background


@settings(max_examples=25, deadline=None, derandomize=True)
@given(scenes(), st.sampled_from([48, 64]))
def test_round_trip_other_resolutions(scene: Scene, resolution: int) -> None:
    assert _facts(analyze(render(scene, resolution))) == _facts(scene.objects)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(scenes(), st.integers(0, 2**16))
def test_round_trip_under_mild_blur_and_noise(scene: Scene, seed: int) -> None:
    img = gaussian_blur(render(scene).astype(np.float64), 0.5)
    img = np.clip(img + np.random.default_rng(seed).normal(0, 0.02, img.shape), 0, 1)
    assert _facts(analyze(img)) == _facts(scene.objects)


def test_detected_object_geometry() -> None:
    scene = Scene((SceneObject("square", "blue", "large", (1, 1)),), "white")
    (obj,) = analyze(render(scene))
    assert obj.centroid == pytest.approx((16.0, 16.0), abs=0.05)
    side = 2 * 0.86 * 5.0
    assert obj.area == pytest.approx(side * side, rel=0.03)
    assert obj.fit_error < 1e-3


def test_empty_image_has_no_objects() -> None:
    img = np.full((32, 32, 3), 12 / 255, dtype=np.float32)
    analysis = analyze_scene(img)
    assert analysis.objects == ()
    assert analysis.background == "black"


def test_input_formats_agree() -> None:
    scene = Scene((SceneObject("triangle", "pink", "small", (0, 2)), SceneObject("circle", "cyan", "large", (2, 0))))
    img = render(scene)
    expected = _facts(scene.objects)
    u8 = np.round(img * 255).astype(np.uint8)
    pil = Image.fromarray(u8)
    chw = torch.from_numpy(img).permute(2, 0, 1)
    assert _facts(analyze(img)) == expected
    assert _facts(analyze(u8)) == expected
    assert _facts(analyze(pil)) == expected
    assert _facts(analyze(chw)) == expected
    assert _facts(analyze(chw.to(torch.float16))) == expected
    batch = render_batch([scene, scene])
    for b in (batch, torch.from_numpy(batch).permute(0, 3, 1, 2), [pil, pil], list(batch)):
        out = analyze_batch(b)
        assert len(out) == 2 and all(_facts(o) == expected for o in out)
    assert analyze_batch([]) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((32, 32)), "shape \\(H, W, 3\\) or \\(N, H, W, 3\\), got 2 dims"),
        (np.zeros((1, 1, 32, 32, 3)), "got 5 dims"),
        (np.zeros((32, 32, 4)), "3 channels in the last axis"),
        (np.zeros((2, 3, 32, 32)), "channels-first\\? numpy input must be channels-last"),
        (torch.zeros(2, 32, 32, 3), "channels-last\\? torch input must be channels-first"),
        (torch.zeros(32, 32), "torch images must have shape"),
        (np.zeros((32, 32, 3), dtype=np.int64), "unsupported image dtype int64"),
        (np.zeros((32, 32, 3), dtype=bool), "unsupported image dtype bool"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.int32), "unsupported tensor dtype torch.int32"),
        (np.full((32, 32, 3), np.nan), "non-finite values \\(3072 NaN, 0 inf\\)"),
        (np.full((32, 32, 3), np.inf), "non-finite values \\(0 NaN, 3072 inf\\)"),
        (np.full((32, 32, 3), 200.0), "must lie in \\[0, 1\\].*looks like 0..255"),
        (np.full((32, 32, 3), -0.8), "must lie in \\[0, 1\\].*looks like -1..1"),
        (np.full((32, 32, 3), 1.2), "must lie in \\[0, 1\\], got range \\[1.2, 1.2\\]"),
        (np.zeros((8, 8, 3)), "too small"),
        ([np.zeros((32, 32, 3)), np.zeros((16, 16, 3))], "must share a size"),
        ([np.zeros((32, 32, 3)), np.zeros((32, 32))], "image 1 of the list"),
        ("an image", "unsupported image type str"),
        (Image.new("F", (32, 32)), "unsupported PIL image mode 'F'"),
    ],
)
def test_bad_inputs_raise_specific_errors(bad: object, message: str) -> None:
    with pytest.raises(AnalyzerInputError, match=message):
        analyze_batch(bad)


def test_error_is_a_value_error_and_single_image_api_rejects_batches() -> None:
    assert issubclass(AnalyzerInputError, ValueError)
    with pytest.raises(AnalyzerInputError, match="takes one image, got a batch of 2"):
        analyze(np.zeros((2, 32, 32, 3)))


def test_tiny_overshoot_is_clipped() -> None:
    batch = to_image_batch(np.full((32, 32, 3), 1.0 + 5e-5))
    assert batch.max() == 1.0


def test_label_components_8_connectivity_and_classes() -> None:
    cls = np.full((6, 6), -1)
    cls[0, 0] = cls[1, 1] = 2  # diagonal neighbours: one component
    cls[4:6, 4:6] = 1
    cls[4, 3] = 0  # touches the class-1 block but is another class
    labels = label_components(cls)
    assert labels[0, 0] == labels[1, 1] >= 0
    assert len({labels[0, 0], labels[4, 4], labels[4, 3]}) == 3
    assert (labels[cls < 0] == -1).all()
    assert labels.max() == 2


def test_specks_are_ignored() -> None:
    img = np.full((32, 32, 3), 12 / 255)
    img[20, 5] = (220 / 255, 35 / 255, 35 / 255)  # one red pixel
    img[3:5, 25] = (40 / 255, 170 / 255, 60 / 255)  # two green pixels
    assert analyze(img) == []


def test_analyzer_check_small() -> None:
    result = analyzer_check(n=60, seed=3)
    assert result["attribute_accuracy"] >= 0.99
    assert result["count_accuracy"] >= 0.99
    assert set(result["per_attribute"]) == {"shape", "colour", "size", "cell", "count"}
    assert all(v >= 0.99 for v in result["per_attribute"].values())
    assert set(result["robustness"]) == {"blur_0.5", "blur_0.8", "noise_0.03", "noise_0.06", "shading_0.45"}
    assert all(v >= 0.95 for v in result["robustness"].values())
    assert result["seconds"] > 0


def test_shaded_object_is_one_object() -> None:
    """An object whose colour drifts across it (orange to red) is split by colour label, then merged."""
    scene = Scene((SceneObject("circle", "orange", "large", (1, 1)),), "black")
    objs = analyze(render_shaded(scene, np.random.default_rng(0), strength=0.6))
    assert [(o.shape, o.colour, o.size, o.cell) for o in objs] == [("circle", "orange", "large", (1, 1))]


def test_touching_objects_of_different_colours_stay_apart() -> None:
    """Two large objects in adjacent cells touch; one template cannot explain them, so no merge."""
    scene = Scene(
        (SceneObject("square", "orange", "large", (0, 1)), SceneObject("square", "red", "large", (1, 1))), "black"
    )
    img = gaussian_blur(render(scene)[None].astype(np.float64), 0.8)[0]
    found = sorted((o.shape, o.colour, o.cell) for o in analyze(img))
    assert found == [("square", "orange", (0, 1)), ("square", "red", (1, 1))]
