"""World v2 backbone: trained from scratch by the shared training code, saved, evaluated and roomed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tiny_v2_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from promptloop.world.train_backbone import BackboneTrainConfig, train_backbone

    root = tmp_path_factory.mktemp("v2")
    cfg = BackboneTrainConfig(world="v2", work_dir=str(root / "work"), out_dir=str(root / "out"), vae_steps=2, vae_batch=2, scale_renders=8,
                              pool_size=8, unet_steps=2, batch=2, warmup=1, decoder_steps=1, checkpoint_every=1)
    return train_backbone(cfg)


def test_a_v2_backbone_is_a_64_px_pipeline_that_records_its_world(tiny_v2_backbone: Path) -> None:
    import torch

    from promptloop.world.backbone import load_backbone

    index = json.loads((tiny_v2_backbone / "model_index.json").read_text())
    assert index["promptloop_world"] == "patterns"
    pipe = load_backbone(tiny_v2_backbone)
    assert pipe.unet.config.sample_size == 16 and pipe.vae.config.sample_size == 64
    out = pipe("a striped red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, 64, 64, 3)
    work = json.loads((tiny_v2_backbone.parent / "work" / "config.json").read_text())
    assert work["world"] == "patterns"


def test_binding_loss_is_refused_outside_the_shapes_world(tmp_path: Path) -> None:
    from promptloop.world.train_backbone import BackboneTrainConfig, train_backbone

    with pytest.raises(ValueError, match="binding loss"):
        train_backbone(BackboneTrainConfig(world="patterns", work_dir=str(tmp_path), binding_loss=0.1))


def test_backbone_eval_v2_reports_competence_and_temporal_structure(tiny_v2_backbone: Path) -> None:
    from promptloop.world.patterns.evaluation import backbone_eval_patterns

    r = backbone_eval_patterns(backbone=str(tiny_v2_backbone), n=2, steps=4)
    for key in ("alignment_train", "alignment_heldout", "count_accuracy", "pattern_accuracy"):
        assert 0.0 <= r[key] <= 1.0, key
    assert set(r["preview_agreement"]) == {"cell", "colour", "shape", "pattern", "pattern_patterned"}
    assert all(set(v) == {"0.25", "0.5", "0.75"} for v in r["preview_agreement"].values())
    assert set(r["temporal_structure"]) == {"cell_at_50", "pattern_at_50", "patterned_at_50", "pattern_final"}


def test_room_v2_cross_fits_rules_and_reports_cis(tiny_v2_backbone: Path) -> None:
    from promptloop.world.patterns.fair_room import room_patterns
    from promptloop.world.patterns.rewrites import RULES

    r = room_patterns(backbone=str(tiny_v2_backbone), n=4, seeds=2, candidates=2, steps=4, fractions=(0.5,),
                      rules=("anchor", "emphasis"))
    for key in ("base", "feed_forward_bound", "oracle", "best_rule", "best_rule_margin", "upfront_oracle"):
        assert 0.0 <= r[key] <= 1.0 or key == "best_rule_margin", key
    lo, hi = r["best_rule_margin_ci"]
    assert lo <= r["best_rule_margin"] <= hi
    assert r["oracle"] >= r["base"] - 1e-9  # the hindsight oracle may always keep the query
    assert set(r["rules"]) == {"anchor_50", "emphasis_50"} and set(r["blind"]) == {"anchor_50"}
    assert r["best_rule_chosen"] == ["anchor_50", "anchor_50"]  # the only rule that reads the preview
    assert RULES["anchor"][1] is not None and RULES["emphasis"][1] is None
    assert "best_rule_blind_margin" in r and set(r["rules"]["anchor_50"]["facts"]["pattern"]) == {"fixes", "breaks"}
    with pytest.raises(ValueError, match="at least 2 seeds"):
        room_patterns(backbone=str(tiny_v2_backbone), n=2, seeds=1)
    with pytest.raises(ValueError, match="unknown rule"):
        room_patterns(backbone=str(tiny_v2_backbone), rules=("guess",))
    with pytest.raises(ValueError, match="reads the preview"):
        room_patterns(backbone=str(tiny_v2_backbone), rules=("emphasis",))
