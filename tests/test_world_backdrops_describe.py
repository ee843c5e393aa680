"""World v3's `describe` hooks (what the app shows of an image): checked on rendered scenes, whose truth is known."""

from __future__ import annotations

import re

import numpy as np
import pytest

from promptloop.rewards import get_reward
from promptloop.world import get_world, world_describer
from promptloop.world.imaging import gaussian_blur

V3 = get_world("v3")
DESCRIBE = world_describer(V3)


def _scene(value: float, *objects: tuple[str, str, tuple[int, int]], tint: str = "neutral", gradient: float = 0.0):
    from promptloop.world.backdrops.scene import Backdrop, Scene, SceneObject

    return Scene(tuple(SceneObject(s, c, cell) for s, c, cell in objects), Backdrop(value, tint, gradient, 0.7))


def _number(text: str, name: str) -> float:
    """The number after `name` in a reading ('luminance 0.033' -> 0.033; 'contrast 11.15:1' -> 11.15)."""
    m = re.search(rf"{name} ([0-9.]+)", text)
    assert m, (name, text)
    return float(m.group(1))


def test_worlds_declare_the_hook_through_the_interface() -> None:
    assert DESCRIBE is not None and callable(DESCRIBE.describe) and callable(DESCRIBE.describe_preview)
    assert world_describer(get_world("v1")) is None  # the Shapes world keeps its own facts display


def test_a_white_circle_on_a_dark_backdrop_stands_out_and_a_black_square_does_not() -> None:
    scene = _scene(0.2, ("circle", "white", (0, 1)), ("square", "black", (2, 1)))
    rows = dict(DESCRIBE.describe(V3.render(scene), None))
    truth = float(np.asarray(scene.backdrop.rgb()).mean())
    assert _number(rows["backdrop"], "value") == pytest.approx(truth, abs=0.01)
    assert rows["backdrop"].endswith("dark") and rows["most legible colour on it"] == "white"
    white, black = rows["white circle at column 0, row 1"], rows["black square at column 2, row 1"]
    assert _number(white, "contrast") > 10 and _number(white, "legibility") == 1.0
    assert _number(black, "contrast") < 2 and _number(black, "legibility") < 0.3
    assert "alignment" not in rows  # no query: the image's readings only


def test_on_a_light_backdrop_black_is_the_legible_colour() -> None:
    scene = _scene(0.8, ("diamond", "black", (1, 1)), tint="warm", gradient=0.04)
    rows = dict(DESCRIBE.describe(V3.render(scene), None))
    assert rows["backdrop"].endswith("light") and rows["most legible colour on it"] == "black"
    from promptloop.world.backdrops.legibility import relative_luminance

    luminance = float(relative_luminance(scene.backdrop.rgb()))  # a tinted backdrop with a gradient, at its centre
    assert _number(rows["backdrop"], "luminance") == pytest.approx(luminance, abs=0.02)
    assert _number(rows["black diamond at column 1, row 1"], "legibility") == 1.0


def test_the_reward_parts_are_the_task_rewards_own() -> None:
    query = "a circle left of a red square"
    images = [V3.render(_scene(v, ("circle", c, (0, 1)), ("square", "red", (2, 1))))
              for v, c in ((0.25, "white"), (0.3, "black"), (0.75, "yellow"))]
    out = get_reward("backdrops_legible")(np.stack(images), [query] * 3)
    for k, image in enumerate(images):
        rows = dict(DESCRIBE.describe(image, query))
        assert float(rows["alignment"]) == pytest.approx(float(out.breakdown["alignment"][k]), abs=1e-3)
        assert _number("x " + rows["legibility"], "x") == pytest.approx(float(out.breakdown["legibility"][k]), abs=1e-3)
        assert _number("x " + rows["backdrops_legible"], "x") == pytest.approx(float(out.scores[k]), abs=1e-3)
    legible = [_number("x " + dict(DESCRIBE.describe(im, query))["backdrops_legible"], "x") for im in images]
    assert legible[0] > legible[1]  # white on dark beats black on dark, both aligned


def test_a_query_outside_the_grammar_gets_the_readings_without_a_reward() -> None:
    rows = dict(DESCRIBE.describe(V3.render(_scene(0.5, ("triangle", "blue", (1, 0)))), "a cat on the moon"))
    assert "no reward" in rows["backdrops_legible"] and "alignment" not in rows
    assert "blue triangle at column 1, row 0" in rows
    from promptloop.world.backdrops.render import render_backdrop

    empty = dict(DESCRIBE.describe(render_backdrop(_scene(0.5, ("circle", "red", (0, 0))).backdrop), "a circle"))
    assert empty["objects"] == "none found" and float(empty["alignment"]) < 1.0


def test_the_preview_line_reads_the_backdrop_of_a_blurred_noisy_preview() -> None:
    """An x0 preview early in sampling is blurry and noisy; its backdrop is what a v3 policy can read from it."""
    rng = np.random.default_rng(0)
    for value, tone in ((0.2, "dark"), (0.55, "light"), (0.85, "light")):
        scene = _scene(value, ("circle", "white", (0, 0)), ("square", "black", (2, 2)), tint="cool")
        blurred = gaussian_blur(V3.render(scene)[None].astype(np.float64), 1.2)[0]
        preview = np.clip(blurred + rng.normal(0.0, 0.03, blurred.shape), 0.0, 1.0)
        line = DESCRIBE.describe_preview(preview)
        assert line.startswith("backdrop #") and line.endswith(tone)
        assert _number(line, "value") == pytest.approx(float(np.mean(scene.backdrop.rgb())), abs=0.03)
    with pytest.raises(ValueError, match="one image"):
        DESCRIBE.describe_preview(np.zeros((2, 32, 32, 3)))
