"""Synthetic supervised rewrite data for the Shapes-world refinement policy.

SFT example (`make_example`): a scene and a query (a subset of its facts); the user query is a plain
caption of the query; the current prompt is the query or an earlier rewrite of it (the query with random
edits); the preview is a render of a scene that only partly matches the query (one asserted fact
corrupted: colour leaked from another object or wrong, wrong shape, object missing, wrong size / position
/ background, relation swapped — or no error), optionally blurred and noised like an x0 preview.

The target rewrite (`make_target`) is a near-copy of the user query with a few fact-keeping edits (`edits`:
`apply_edits`, drawn by `sample_edits` from the preview's error where it shows one, at random otherwise); some
targets are the current prompt unchanged. Copying is what a small model learns fast; the random edits give the
diversity GRPO needs. Every target parses under `grammar.parse`, keeps every fact of the query
(`keeps_query_facts`; `make_example` checks both) and fits the backbone's text window (`minilm_length`
at most `TEXT_WINDOW` word pieces) unless the query itself does not. The policy's tokenizer is
`policy_tokenizer`'s (re-exported here).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter

from promptloop.world.shapes import grammar
from promptloop.world.shapes.edits import Edits, apply_edits, caption_keeps_query, keeps_query_facts, sample_edits
from promptloop.world.shapes.policy_tokenizer import (
    CHAT_TEMPLATE,
    TEXT_WINDOW,
    build_world_tokenizer,
    minilm_length,
    world_words,
)
from promptloop.world.shapes.render import object_coverage
from promptloop.world.shapes.scene import (
    BACKGROUNDS,
    COLOURS,
    GRID,
    SHAPES,
    SIZES,
    ObjectQuery,
    Query,
    Scene,
    SceneObject,
    SceneSampler,
)

PREVIEW_SIZE = 32


# ----------------------------------------------------------------------------- previews


def render_objects(objects: list[SceneObject], background: str, resolution: int = PREVIEW_SIZE) -> np.ndarray:
    """Render objects without `Scene`'s rules (two objects may share a colour, as in colour leakage)."""
    img = np.empty((resolution, resolution, 3), dtype=np.float32)
    img[:] = np.asarray(BACKGROUNDS[background], dtype=np.float32) / 255.0
    for obj in objects:
        a = object_coverage(obj, resolution)[..., None]
        col = np.asarray(COLOURS[obj.colour], dtype=np.float32) / 255.0
        img = img * (1.0 - a) + col * a
    return img


def degrade(img: np.ndarray, rng: random.Random) -> Image.Image:
    """An x0-preview-like version of a clean render: optional blur, noise and contrast loss."""
    arr = img
    if rng.random() < 0.5:
        arr = arr * (1 - 0.3 * rng.random()) + 0.15 * rng.random()
    if rng.random() < 0.5:
        noise = np.random.default_rng(rng.randrange(2**31)).normal(0, 0.08 * rng.random(), arr.shape)
        arr = arr + noise.astype(np.float32)
    pil = Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8))
    if rng.random() < 0.5:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=0.4 + 1.2 * rng.random()))
    return pil


ERRORS = ("none", "leak", "colour", "shape", "missing", "size", "position", "background", "relation")


def corrupt(scene: Scene, query: Query, rng: random.Random) -> tuple[list[SceneObject], str, str, int | None]:
    """A preview scene that gets one asserted fact of `query` wrong: (objects, background, error, object)."""
    objs = list(scene.objects)
    bg = scene.background
    possible = ["none", "colour", "shape"]
    if len(objs) >= 2:
        possible += ["leak", "missing", "leak", "missing"]
    if any(o.size for o in query.objects):
        possible.append("size")
    if any(o.column is not None or o.row is not None for o in query.objects):
        possible.append("position")
    if query.background:
        possible.append("background")
    if query.relations:
        possible.append("relation")
    err = rng.choice(possible)
    k = rng.randrange(len(objs))
    if err == "leak":
        j = rng.choice([i for i in range(len(objs)) if i != k])
        objs[k] = replace(objs[k], colour=objs[j].colour)
    elif err == "colour":
        objs[k] = replace(objs[k], colour=rng.choice([c for c in COLOURS if c != objs[k].colour]))
    elif err == "shape":
        objs[k] = replace(objs[k], shape=rng.choice([s for s in SHAPES if s != objs[k].shape]))
    elif err == "missing":
        objs.pop(k)
    elif err == "size":
        k = rng.choice([i for i, o in enumerate(query.objects) if o.size])
        objs[k] = replace(objs[k], size=next(s for s in SIZES if s != objs[k].size))
    elif err == "position":
        k = rng.choice([i for i, o in enumerate(query.objects) if o.column is not None or o.row is not None])
        used = {o.cell for o in objs}
        free = [(c, r) for c in range(GRID) for r in range(GRID) if (c, r) not in used]
        objs[k] = replace(objs[k], cell=rng.choice(free))
    elif err == "background":
        bg = rng.choice([b for b in BACKGROUNDS if b != bg])
    elif err == "relation":
        a, _, b = query.relations[0]
        k = a
        objs[a], objs[b] = replace(objs[a], cell=objs[b].cell), replace(objs[b], cell=objs[a].cell)
    else:
        k = None
    return objs, bg, err, k


# ----------------------------------------------------------------------------- targets


def make_target(query: Query, scene: Scene, focus: int | None, err: str, rng: random.Random,
                query_text: str | None = None, current: str | None = None, p_keep: float = 0.1,
                max_tokens: int | None = None) -> str:
    """A near-copy of the user query: its own words in order plus a few fact-keeping edits
    (`sample_edits`); with probability `p_keep` (more when the preview has no error) the current prompt
    unchanged. Edits that break the grammar, drop a query fact or push the caption past `max_tokens`
    MiniLM word pieces are dropped one by one (checked; the bare query is the last resort)."""
    if query_text is None:
        query_text = grammar.realise(query, rng)
    if current is not None and rng.random() < (p_keep * 3 if err == "none" else p_keep):
        if caption_keeps_query(current, query) == (True, True):
            return current
    edits = sample_edits(query, scene, focus, err, rng)
    while True:
        text = apply_edits(query_text, edits)
        ok, keeps = caption_keeps_query(text, query)
        if ok and keeps and (max_tokens is None or minilm_length(text) <= max_tokens):
            return text
        if not edits:
            return query_text
        # drop one edit and retry
        if edits.background is not None:
            edits.background = None
        elif edits.positions:
            edits.positions.pop(next(iter(edits.positions)))
        elif edits.sizes:
            edits.sizes.pop(next(iter(edits.sizes)))
        else:
            edits.emphasis.pop(next(iter(edits.emphasis)))


@dataclass
class RewriteExample:
    """One supervised rewrite: (preview, query, current prompt, progress) -> target."""

    query: Query
    query_text: str
    current_prompt: str
    progress: float
    preview: Image.Image | None
    target: str
    error: str


def make_example(scene: Scene, rng: random.Random, progress: float | None = None,
                 with_preview: bool = True, max_tokens: int | None = TEXT_WINDOW) -> RewriteExample:
    """A synthetic SFT example from a scene (see the module docstring)."""
    query = grammar.query_from_scene(scene, rng)
    query_text = grammar.realise(query, rng)
    current = query_text
    if rng.random() < 0.5:  # an earlier rewrite of the policy: the query with random edits
        edited = apply_edits(query_text, sample_edits(query, None, None, "none", rng, rate=0.3))
        if caption_keeps_query(edited, query) == (True, True):
            current = edited
    objs, bg, err, k = corrupt(scene, query, rng)
    preview = degrade(render_objects(objs, bg), rng) if with_preview else None
    if progress is None:
        progress = rng.choice([0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8])
    if not with_preview:  # nothing to condition on: random edits only
        err, k = "none", None
    target = make_target(query, scene, k, err, rng, query_text=query_text, current=current, max_tokens=max_tokens)
    ok, keeps = caption_keeps_query(target, query)
    if not (ok and keeps):
        raise AssertionError(f"target {target!r} does not keep the query {query}")
    return RewriteExample(query, query_text, current, progress, preview, target, err)


def example_stream(seed: int, split: str = "train", p_no_preview: float = 0.15):
    """An endless stream of examples from `SceneSampler(seed, split)` scenes."""
    sampler = SceneSampler(seed, split)  # type: ignore[arg-type]
    rng = random.Random(seed + 1)
    while True:
        yield make_example(sampler.sample(), rng, with_preview=rng.random() >= p_no_preview)


__all__ = [  # the tokenizer's and the edits' names too, as before the split
    "CHAT_TEMPLATE",
    "ERRORS",
    "Edits",
    "ObjectQuery",
    "PREVIEW_SIZE",
    "RewriteExample",
    "TEXT_WINDOW",
    "build_world_tokenizer",
    "caption_keeps_query",
    "corrupt",
    "degrade",
    "example_stream",
    "keeps_query_facts",
    "make_example",
    "make_target",
    "minilm_length",
    "apply_edits",
    "sample_edits",
    "render_objects",
    "world_words",
]
