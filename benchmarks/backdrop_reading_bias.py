"""Print how much the v3 analyzer's backdrop luminance reading moves with the objects' colour (issue 29, gate G1's
word effects): 200 random scenes rendered with every object in each palette colour, exact and under blur + noise.
A caption word's effect on the backbone's backdrops that exceeds these figures is the backbone's, not the reader's.

    python benchmarks/backdrop_reading_bias.py
"""

import json

import numpy as np

from promptloop.world.backdrops.analyzer import analyze_scenes
from promptloop.world.backdrops.render import render
from promptloop.world.backdrops.scene import COLOURS, Scene, SceneObject, SceneSampler
from promptloop.world.imaging import gaussian_blur


def reading_bias(n: int = 200, seed: int = 0, blur: float = 1.0, noise: float = 0.04) -> dict[str, dict[str, float]]:
    """Per condition and colour: the mean backdrop luminance read with every object in that colour, minus the mean
    over the colours (the same scenes, backdrops and noise draws)."""
    sampler = SceneSampler(seed)
    scenes = [sampler.sample() for _ in range(n)]
    out: dict[str, dict[str, float]] = {}
    for name, degrade in (("exact", False), (f"blur {blur} + noise {noise}", True)):
        reads = {}
        for colour in COLOURS:
            imgs = np.stack([render(Scene(tuple(SceneObject(o.shape, colour, o.cell) for o in sc.objects), sc.backdrop))
                             for sc in scenes])
            if degrade:
                rng = np.random.default_rng(seed)  # the same noise for every colour
                imgs = np.clip(gaussian_blur(imgs, blur) + rng.normal(0.0, noise, imgs.shape), 0.0, 1.0)
            reads[colour] = np.array([a.backdrop_luminance for a in analyze_scenes(imgs)])
        mean = np.mean(list(reads.values()), axis=0)
        out[name] = {c: round(float((r - mean).mean()), 4) for c, r in reads.items()}
    return out


if __name__ == "__main__":
    print(json.dumps(reading_bias(), indent=2))
