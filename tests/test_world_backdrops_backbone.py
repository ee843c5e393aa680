"""World v3 backbone: trained by the shared training code (from scratch and as a warm start with VAE fine-tuning),
then gate G1 (backbone-eval) and gate G2 (room) run end to end on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_v3_backbone_config as _cfg
from PIL import Image


def test_warm_start_fine_tunes_the_kept_vae_on_this_worlds_renders(tiny_v3_backbone: Path, tmp_path: Path) -> None:
    import torch

    from promptloop.world.backbone import load_backbone
    from promptloop.world.train_backbone import export_snapshot, train_backbone

    out = train_backbone(_cfg(tmp_path, "warm", init_from=str(tiny_v3_backbone), vae_finetune_steps=2))
    assert json.loads((out / "model_index.json").read_text())["promptloop_world"] == "backdrops"
    old, new = load_backbone(tiny_v3_backbone).vae, load_backbone(out).vae
    assert new.config.scaling_factor == old.config.scaling_factor  # the latent scale is kept
    changed = [k for k, v in new.state_dict().items() if not torch.equal(v, old.state_dict()[k])]
    assert changed  # the VAE was fine-tuned
    assert (tmp_path / "warm_work" / "vae_finetune.pt").exists()
    again = train_backbone(_cfg(tmp_path, "warm", init_from=str(tiny_v3_backbone), vae_finetune_steps=2))  # resumes
    assert again == out
    export_snapshot(tmp_path / "warm_work", tmp_path / "snap")  # an unfinished run's snapshot: the fine-tuned VAE
    snap = load_backbone(tmp_path / "snap").vae.state_dict()
    assert all(torch.equal(v, snap[k]) for k, v in new.state_dict().items())
    with pytest.raises(ValueError, match="another config"):
        train_backbone(_cfg(tmp_path, "warm", init_from=str(tiny_v3_backbone), vae_finetune_steps=3))


def test_backbone_eval_v3_reports_every_g1_figure(tiny_v3_backbone: Path) -> None:
    from promptloop.world.backdrops.evaluation import backbone_eval_backdrops

    r = backbone_eval_backdrops(backbone=str(tiny_v3_backbone), n=2, steps=2, fractions=(0.5,), guidance_from=0.5)
    assert r["guidance_from"] == 0.5
    for key in ("train_alignment", "heldout_alignment", "count", "colour_followed"):
        assert 0.0 <= r[key] <= 1.0, key
    assert {"black", "white", "left of", "circle"} <= set(r["word_effects"])
    assert r["max_word_effect"] == max(abs(e["effect"]) for e in r["word_effects"].values())
    phrase = r["backdrop_phrase"]
    shares = phrase["light_half_share"]
    assert all(0.0 <= v <= 1.0 for v in shares.values()) and set(shares) == {"no_phrase", "light_phrase", "dark_phrase"}
    diff = phrase["light_half_share_difference"]
    assert diff["light_minus_dark"] == pytest.approx(shares["light_phrase"] - shares["dark_phrase"])
    assert diff["ci"][0] <= diff["light_minus_dark"] <= diff["ci"][1]
    assert len(r["backdrop_quarters"]) == 4 and abs(sum(r["backdrop_quarters"]) - 1.0) < 1e-9
    assert set(r["window"]) == {"0.50"} and set(r["window"]["0.50"]) == {
        "backdrop_agreement", "backdrop_value_error", "colour_steerability"}
    assert isinstance(r["g1_pass"], bool) and set(r["g1_checks"]) >= {"window", "max_word_effect<=0.03"}


def test_room_v3_cross_fits_the_legible_rule_against_every_fixed_colour(tiny_v3_backbone: Path) -> None:
    from promptloop.world.backdrops.fair_room import room_backdrops

    r = room_backdrops(backbone=str(tiny_v3_backbone), n=4, seeds=2, steps=2, fractions=(0.5,), phrases=True)
    assert set(r["fixed_colours"]) == {"black", "blue", "red", "green", "orange", "yellow", "white"}
    assert r["upfront_oracle"] >= r["feed_forward_bound"] - 1e-9
    assert set(r["rules"]) == set(r["blind"]) == {"legible_50"}
    assert r["best_rule_chosen"] == ["legible_50", "legible_50"]
    lo, hi = r["best_rule_margin_ci"]
    assert lo <= r["best_rule_margin"] <= hi
    assert "best_rule_blind_margin_ci" in r and isinstance(r["g2_pass"], bool)
    assert r["arithmetic"]["gap"] > 0.2
    assert set(r["phrase_candidates"]) == {f"{c} on a {tone} background" for c in r["fixed_colours"]
                                           for tone in ("light", "dark")}
    assert r["upfront_oracle_with_phrases"] >= r["upfront_oracle"] - 1e-9  # a max over more candidates
    assert r["best_rule_margin_over_phrases"] == pytest.approx(r["best_rule"] - r["feed_forward_bound_with_phrases"])
    lo, hi = r["best_rule_margin_over_phrases_ci"]
    assert lo <= r["best_rule_margin_over_phrases"] <= hi
    with pytest.raises(ValueError, match="at least 2 seeds"):
        room_backdrops(backbone=str(tiny_v3_backbone), n=2, seeds=1)


def test_generate_reads_the_world_from_the_backbone_folder(tiny_v3_backbone: Path, tmp_path: Path) -> None:
    """A v3 backbone given to `generate` is sampled at its world's size and scored by its world's alignment."""
    from promptloop.generate import GenerateRequest, generate
    from promptloop.rewards import get_reward
    from promptloop.world.backbone import backbone_world

    assert backbone_world(tiny_v3_backbone) == "backdrops"
    record = generate(GenerateRequest(query="a circle left of a red square", pipeline=f"world:{tiny_v3_backbone}",
                                      mode="none", steps=2, num_images=2, out=str(tmp_path / "gen"), device="cpu"))
    images = [np.asarray(Image.open(tmp_path / "gen" / f"image_{k}.png"), dtype=np.float32) / 255.0 for k in range(2)]
    assert images[0].shape == (32, 32, 3)
    expected = get_reward("backdrops_alignment")(np.stack(images), ["a circle left of a red square"] * 2).scores
    assert [s["alignment"] for s in record["samples"]] == pytest.approx([float(v) for v in expected])
