"""Print how much a colour word or a backdrop phrase moves the backdrop of a v3 backbone's samples, per guidance
setting (issue 29, gate G1's word effects; docs/worlds.md, iteration 4): guided throughout at the world's scale,
unguided (scale 1), and guided only from 10 % / 20 % of sampling on (`promptloop.loop.guidance_interval`).

For 128 shape-only heldout queries, each sampled with the same seed with and without the word (a colour word fills
every open colour), the paired mean change of the backdrop's relative luminance; for the phrases, the share of seeds
on which "... on a light background" comes out lighter than "... on a dark background", and the mean difference.

    python benchmarks/backdrop_word_pull.py [BACKBONE]      # default: the shipped v3 backbone
"""

import json
import sys
import time

import numpy as np

from promptloop.world.backbone import load_backbone
from promptloop.world.backdrops import GUIDANCE
from promptloop.world.backdrops.analyzer import analyze_scenes
from promptloop.world.backdrops.backbone import DEFAULT_BACKBONE
from promptloop.world.backdrops.grammar import DARK, LIGHT
from promptloop.world.backdrops.prompts import sample_prompts
from promptloop.world.backdrops.rewrites import fill_colours
from promptloop.world.sampling import sample

SETTINGS = {"guided throughout": (GUIDANCE, 0.0), "unguided": (1.0, 0.0), "guided from 10 %": (GUIDANCE, 0.1),
            "guided from 20 %": (GUIDANCE, 0.2)}
WORDS = ("green", "white", "blue", "black")


def word_pull(backbone: str, n: int = 128) -> dict[str, dict[str, float]]:
    pipe = load_backbone(backbone)
    items = sample_prompts("shape_only", n, 0)
    queries = [it.caption for it in items]
    seeds = list(range(n))
    out: dict[str, dict[str, float]] = {}
    for name, (guidance, start) in SETTINGS.items():
        def lum(texts: list[str], guidance: float = guidance, start: float = start) -> np.ndarray:
            images = sample(pipe, texts, seeds, guidance=guidance, guidance_from=start, progress=False).images
            return np.asarray([a.backdrop_luminance for a in analyze_scenes(images)])

        t0 = time.perf_counter()
        base = lum(queries)
        row = {w: float((lum([fill_colours(it.query, w) for it in items]) - base).mean()) for w in WORDS}
        light, dark = lum([q + LIGHT for q in queries]), lum([q + DARK for q in queries])
        row["light_lighter_than_dark"] = float((light > dark).mean())
        row["light_minus_dark"] = float((light - dark).mean())
        out[name] = {k: round(v, 3) for k, v in row.items()}
        print(f"{name}: {out[name]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    print(json.dumps(word_pull(sys.argv[1] if len(sys.argv) > 1 else str(DEFAULT_BACKBONE)), indent=1))
