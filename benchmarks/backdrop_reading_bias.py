"""Print how much the v3 analyzer's backdrop luminance reading moves with the objects' colour (issue 29, gate G1's
word effects): 200 random scenes rendered with every object in each palette colour, exact, under blur + noise, and
after a round trip through the shipped v3 backbone's VAE. A caption word's effect on the backbone's backdrops that
exceeds these figures is the denoiser's, neither the reader's nor the autoencoder's.

    python benchmarks/backdrop_reading_bias.py
"""

import json

import numpy as np
import torch

from promptloop.world import get_world
from promptloop.world.backbone import load_backbone
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
    vae = load_backbone(get_world("v3").DEFAULT_BACKBONE).vae
    for name in ("exact", f"blur {blur} + noise {noise}", "VAE round trip"):
        reads = {}
        for colour in COLOURS:
            imgs = np.stack([render(Scene(tuple(SceneObject(o.shape, colour, o.cell) for o in sc.objects), sc.backdrop))
                             for sc in scenes])
            if name.startswith("blur"):
                rng = np.random.default_rng(seed)  # the same noise for every colour
                imgs = np.clip(gaussian_blur(imgs, blur) + rng.normal(0.0, noise, imgs.shape), 0.0, 1.0)
            elif name.startswith("VAE"):
                with torch.no_grad():
                    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() * 2 - 1
                    rec = vae.decode(vae.encode(x).latent_dist.mean).sample
                imgs = ((rec.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy().astype(np.float64)
            reads[colour] = np.array([a.backdrop_luminance for a in analyze_scenes(imgs)])
        mean = np.mean(list(reads.values()), axis=0)
        out[name] = {c: round(float((r - mean).mean()), 4) for c, r in reads.items()}
    return out


if __name__ == "__main__":
    print(json.dumps(reading_bias(), indent=2))
