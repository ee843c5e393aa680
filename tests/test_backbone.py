"""Backbone A: loads from the shipped folder, samples deterministically, round-trips save/load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from promptloop.world.backbone import (
    DEFAULT_BACKBONE,
    TEXT_MAX_TOKENS,
    BackboneLoadError,
    load_backbone,
    save_backbone,
)


@pytest.fixture(scope="module")
def pipe():
    return load_backbone()


def _sample(pipe, prompts: list[str], seed: int) -> np.ndarray:
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    out = pipe(prompts, num_inference_steps=4, guidance_scale=4.0, height=32, width=32, generator=gens,
               output_type="np")
    return np.asarray(out.images)


def test_shipped_backbone_is_a_stable_diffusion_pipeline(pipe) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    assert isinstance(pipe, StableDiffusionPipeline)
    assert isinstance(pipe.scheduler, DDIMScheduler)  # the shipped schedule is unshifted
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert type(pipe.text_encoder).__name__ == "BoundTextEncoder"  # MiniLM, then the shipped text binder
    assert type(pipe.text_encoder.encoder).__name__ == "BertModel"
    assert pipe.tokenizer.model_max_length == TEXT_MAX_TOKENS
    assert not (DEFAULT_BACKBONE / "text_encoder").exists()  # MiniLM comes from its package


def test_seeded_sampling_is_deterministic(pipe) -> None:
    prompts = ["a red circle left of a blue box", "a small green triangle"]
    a, b = _sample(pipe, prompts, 0), _sample(pipe, prompts, 0)
    assert a.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    c = _sample(pipe, prompts, 100)
    assert np.abs(a - c).mean() > 1e-3


def test_sample_does_not_depend_on_batch_composition(pipe) -> None:
    both = _sample(pipe, ["a red circle", "a yellow square"], 0)
    alone = _sample(pipe, ["a red circle"], 0)
    np.testing.assert_allclose(both[0], alone[0], atol=1e-4)


def test_save_load_round_trip(pipe, tmp_path: Path) -> None:
    save_backbone(pipe, tmp_path / "bb", dtype=torch.float32)
    again = load_backbone(tmp_path / "bb")
    prompts = ["a purple diamond above a cyan disc"]
    np.testing.assert_allclose(_sample(pipe, prompts, 3), _sample(again, prompts, 3), atol=1e-5)


def test_missing_or_corrupt_folders_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BackboneLoadError, match="not found"):
        load_backbone(tmp_path / "nope")
    partial = tmp_path / "partial"
    shutil.copytree(DEFAULT_BACKBONE, partial)
    shutil.rmtree(partial / "vae")
    with pytest.raises(BackboneLoadError, match="lacks 'vae/'"):
        load_backbone(partial)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(DEFAULT_BACKBONE, corrupt)
    weights = corrupt / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(BackboneLoadError, match=r"unet/diffusion_pytorch_model.safetensors has 1000 bytes"):
        load_backbone(corrupt)


def test_decoder_stage_keeps_the_encoder_and_finishes_once(tmp_path: Path) -> None:
    """Stage 4 trains only the decoder (latents the UNet learned stay valid) and is marked done."""
    from promptloop.world.backbone import build_vae
    from promptloop.world.train_backbone import BackboneTrainConfig, train_decoder

    torch.manual_seed(0)
    vae = build_vae()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    cfg = BackboneTrainConfig(work_dir=str(tmp_path), decoder_steps=3, vae_batch=2, checkpoint_every=2)
    vae = train_decoder(cfg, tmp_path, vae)
    after = vae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("decoder."))
    assert not any(p.requires_grad for p in vae.parameters())
    again = train_decoder(cfg, tmp_path, build_vae())  # done: loads the result, trains nothing
    assert all(torch.equal(again.state_dict()[k], after[k]) for k in after)


def test_warm_start_keeps_the_vae_and_trains_the_unet_further(tmp_path: Path) -> None:
    """`init_from` continues a backbone: same VAE, a UNet moved from its weights, saved as a backbone."""
    from promptloop.world.train_backbone import BackboneTrainConfig, check_work_dir, train_backbone

    cfg = BackboneTrainConfig(work_dir=str(tmp_path / "work"), out_dir=str(tmp_path / "out"), init_from=str(DEFAULT_BACKBONE),
                              pool_size=16, unet_steps=2, batch=4, lr=1e-2, warmup=1, ema_decay=0.5)
    out = train_backbone(cfg)
    init, new = load_backbone(DEFAULT_BACKBONE), load_backbone(out)
    assert all(torch.equal(v, new.vae.state_dict()[k]) for k, v in init.vae.state_dict().items())
    assert new.vae.config.scaling_factor == init.vae.config.scaling_factor
    moved = [k for k, v in init.unet.state_dict().items() if not torch.equal(v, new.unet.state_dict()[k])]
    assert moved and not (tmp_path / "work" / "vae.pt").exists()
    other = BackboneTrainConfig(work_dir=cfg.work_dir, out_dir=cfg.out_dir, pool_size=16, unet_steps=2, batch=4)
    with pytest.raises(ValueError, match="another config"):
        train_backbone(other)  # a from-scratch run cannot reuse a warm-started work dir
    config = json.loads((tmp_path / "work" / "config.json").read_text())
    config.pop("init_from")  # as a from-scratch work dir written before the field existed
    (tmp_path / "work" / "config.json").write_text(json.dumps(config))
    check_work_dir(other, tmp_path / "work")  # read as init_from="" (the default): the same run, resumable
    with pytest.raises(ValueError, match="another config"):
        check_work_dir(cfg, tmp_path / "work")
    bad = BackboneTrainConfig(work_dir=str(tmp_path / "bad"), init_from=str(tmp_path / "missing"))
    with pytest.raises(BackboneLoadError, match="not found"):
        train_backbone(bad)
    assert not (tmp_path / "bad").exists()  # nothing written for a bad starting folder


def test_backbone_eval_reports_the_quality_window() -> None:
    from promptloop.world.shapes.evaluation import backbone_eval

    r = backbone_eval(n=2, seed=0, steps=4)
    for key in ("alignment_train", "full_correct_train", "alignment_heldout", "full_correct_heldout", "count_accuracy"):
        assert 0.0 <= r[key] <= 1.0, key
    assert set(r["preview_accuracy"]) == {"0.25", "0.5", "0.75"}
    assert all(0.0 <= v <= 1.0 for v in r["preview_verdict_agreement"].values())
    assert r["images_per_second"] > 0
    assert 0.0 <= r["colour_swap_rate_train"] <= 1.0 and 0.0 <= r["colour_swap_rate_heldout"] <= 1.0
    assert set(r["full_correct_by_objects_train"]) <= {"1", "2", "3"}
    assert all(0.0 <= v <= 1.0 for v in r["full_correct_by_objects_train"].values())


def test_colour_swaps_count_shapes_found_only_in_another_queried_colour() -> None:
    from promptloop.world.shapes.analyzer import analyze_scenes
    from promptloop.world.shapes.evaluation import colour_swaps
    from promptloop.world.shapes.render import render
    from promptloop.world.shapes.rewards import parse_query
    from promptloop.world.shapes.scene import Scene, SceneObject

    def scene(*objs: tuple[str, str, tuple[int, int]]) -> Scene:
        return Scene(tuple(SceneObject(shape=s, colour=c, size="large", cell=cell) for s, c, cell in objs), "black")

    query = parse_query("a red circle and a blue square")
    images = np.stack([
        render(scene(("circle", "red", (0, 1)), ("square", "blue", (2, 1)))),  # right: no swap
        render(scene(("circle", "blue", (0, 1)), ("square", "red", (2, 1)))),  # both swapped
        render(scene(("circle", "green", (0, 1)), ("square", "blue", (2, 1)))),  # wrong colour, not a swap
        render(scene(("circle", "blue", (0, 1)), ("circle", "red", (1, 1)), ("square", "green", (2, 1)))),  # a red one exists
    ])
    analyses = analyze_scenes(images)
    assert colour_swaps([query] * 4, analyses) == (2, 8)  # both objects of the second image
    assert colour_swaps([parse_query("a red circle")], analyses[1:2]) == (0, 0)  # single objects are not counted


def test_room_reports_bounds_and_oracles() -> None:
    from promptloop.world.shapes.fair_room import room

    r = room(n=2, seeds=2, candidates=3, steps=4, anchored=True)
    for pct in (25, 50):
        for prefix in ("", "anchored_"):
            oracle = r[f"midway_{prefix}oracle_{pct}"]
            assert oracle >= r["base"] - 1e-9 and oracle >= r[f"midway_{prefix}random_{pct}"] - 1e-9
            assert oracle >= r[f"midway_{prefix}fair_{pct}"] - 1e-9  # hindsight per sample beats any fixed choice
            assert r[f"gap_{prefix}{pct}"] == pytest.approx(oracle - r["feed_forward_bound"])
    assert r["feed_forward_in_sample"] >= r["feed_forward_bound"] - 1e-9
    with pytest.raises(ValueError, match="at least 2 seeds"):
        room(n=2, seeds=1)
