"""Backbone B of world v3 (issue 31): another denoiser and another sampler, trained by `train-backbone` on backbone
A's VAE, saved and loaded back with its DPM-Solver++ scheduler, sampled in feedback mode by the policy trained on A;
bad combinations are one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny_v3_backbone_config as _cfg


@pytest.fixture(scope="module")
def tiny_b_backbone(tiny_v3_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few-step backbone B (denoiser b, sampler dpm) on the tiny backbone A's VAE."""
    from promptloop.world.train_backbone import train_backbone

    root = tmp_path_factory.mktemp("v3b")
    return train_backbone(_cfg(root, "b", denoiser="b", sampler="dpm", vae_from=str(tiny_v3_backbone)))


def test_denoiser_b_differs_from_a_in_widths_and_depth() -> None:
    from promptloop.world.backdrops import build_unet
    from promptloop.world.denoisers import DENOISERS, denoiser_of

    a, b = build_unet(), build_unet("b")
    assert denoiser_of(a.config) == "a" and denoiser_of(b.config) == "b"
    assert len(b.config.block_out_channels) == len(a.config.block_out_channels) + 1
    assert b.config.layers_per_block != a.config.layers_per_block
    assert (b.config.in_channels, b.config.out_channels, b.config.cross_attention_dim) == (8, 8, 384)
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in (("a", a), ("b", b))}
    assert counts == {"a": 6_834_376, "b": 6_411_112}  # the figures in world.denoisers' docstring
    assert set(DENOISERS) == {"a", "b"}


def test_backbone_b_keeps_a_vae_loads_with_dpm_and_samples_in_feedback_mode(
        tiny_v3_backbone: Path, tiny_b_backbone: Path) -> None:
    from diffusers import DPMSolverMultistepScheduler

    from promptloop.eval.compare import load_world_policy
    from promptloop.world import get_world
    from promptloop.world.backbone import load_backbone
    from promptloop.world.denoisers import denoiser_of
    from promptloop.world.sampling import sample

    out = tiny_b_backbone
    index = json.loads((out / "model_index.json").read_text())
    assert index["promptloop_denoiser"] == "b" and index["promptloop_world"] == "backdrops"
    assert index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    a, b = load_backbone(tiny_v3_backbone), load_backbone(out)
    assert type(b.scheduler) is DPMSolverMultistepScheduler
    config = b.scheduler.config
    assert (config.num_train_timesteps, config.beta_schedule, config.prediction_type, config.timestep_spacing) == (
        1000, "squaredcos_cap_v2", "v_prediction", "trailing")
    assert denoiser_of(b.unet.config) == "b"
    assert all(torch.equal(v, b.vae.state_dict()[k]) for k, v in a.vae.state_dict().items())  # A's VAE, kept
    assert b.vae.config.scaling_factor == a.vae.config.scaling_factor
    assert not (out.parent / "b_work" / "vae.pt").exists() and not (out.parent / "b_work" / "decoder.pt").exists()

    policy = load_world_policy(None, b, get_world("v3"), temperature=0.0)  # the policy trained on A, untouched
    queries = ["a red circle left of a blue square", "two green triangles"]
    batch = sample(b, queries, [0, 1], policy=policy, mode="feedback", refinement_steps=[1], steps=4, guidance=4.0,
                   progress=False)
    assert batch.images.shape == (2, 32, 32, 3) and np.isfinite(batch.images).all()
    for trajectory in batch.trajectories:
        (refinement,) = trajectory.refinements
        assert refinement.x0 is not None and torch.isfinite(refinement.x0).all()  # the x0 preview under DPM-Solver++
        assert refinement.preview is not None


def test_backbone_b_snapshot_and_continuation(tiny_b_backbone: Path, tmp_path: Path) -> None:
    """An unfinished B run exports as B (its denoiser and sampler); a B folder continues as denoiser b only."""
    from diffusers import DPMSolverMultistepScheduler

    from promptloop.world.backbone import load_backbone
    from promptloop.world.denoisers import denoiser_of
    from promptloop.world.train_backbone import export_snapshot, train_backbone

    export_snapshot(tiny_b_backbone.parent / "b_work", tmp_path / "snap")
    snap = load_backbone(tmp_path / "snap")
    assert type(snap.scheduler) is DPMSolverMultistepScheduler and denoiser_of(snap.unet.config) == "b"
    cont = train_backbone(_cfg(tmp_path, "cont", denoiser="b", sampler="dpm", init_from=str(tiny_b_backbone)))
    assert denoiser_of(load_backbone(cont).unet.config) == "b"
    with pytest.raises(ValueError, match=r"holds denoiser 'b', not denoiser 'a'"):
        train_backbone(_cfg(tmp_path, "cont_a", init_from=str(tiny_b_backbone)))


def test_bad_combinations_fail_before_anything_is_written(tiny_v3_backbone: Path, tmp_path: Path) -> None:
    from promptloop.world.train_backbone import train_backbone

    cases = [
        (dict(denoiser="b", init_from=str(tiny_v3_backbone)), r"holds denoiser 'a', not denoiser 'b'.*--vae-from"),
        (dict(init_from=str(tiny_v3_backbone), vae_from=str(tiny_v3_backbone)), "give one of the two"),
        (dict(world="shapes", denoiser="b"), "world 'shapes' has only its own denoiser"),
        (dict(denoiser="c"), r"unknown denoiser 'c'; expected one of \['a', 'b'\]"),
        (dict(sampler="euler"), r"unknown sampler 'euler'; expected one of \['ddim', 'dpm'\]"),
    ]
    for i, (kw, message) in enumerate(cases):
        with pytest.raises(ValueError, match=message):
            train_backbone(_cfg(tmp_path, f"bad{i}", **kw))
        assert not (tmp_path / f"bad{i}_work").exists()


def test_load_backbone_takes_only_the_allowed_scheduler_classes(tiny_b_backbone: Path, tmp_path: Path) -> None:
    from promptloop.integrity import write_manifest
    from promptloop.world.backbone import BackboneLoadError, load_backbone

    with pytest.raises(BackboneLoadError, match=r"samples with DPMSolverMultistepScheduler: a timestep shift \(2.0\)"):
        load_backbone(tiny_b_backbone, timestep_shift=2.0)
    other = tmp_path / "pndm"
    shutil.copytree(tiny_b_backbone, other)
    f = other / "scheduler" / "scheduler_config.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "_class_name": "PNDMScheduler"}))
    write_manifest(other)
    with pytest.raises(BackboneLoadError, match=r"scheduler class 'PNDMScheduler' is not one a world backbone samples "
                                                r"with \(one of DDIMScheduler, ShiftedEulerScheduler, DPMSolver"):
        load_backbone(other)


def test_cli_backbone_b_errors_and_backbone_eval(run_cli: Any, tiny_v3_backbone: Path, tiny_b_backbone: Path,
                                                 tmp_path: Path) -> None:
    run = run_cli

    train = ["world", "train-backbone", "--world", "v3", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "o")]
    for argv, message in [
        ([*train, "--denoiser", "b", "--init-from", str(tiny_v3_backbone)], "holds denoiser 'a', not denoiser 'b'"),
        ([*train, "--denoiser", "b", "--init-from", str(tiny_v3_backbone), "--vae-from", str(tiny_v3_backbone)],
         "give one of the two"),
        ([*train, "--vae-from", str(tmp_path / "missing")], "--vae-from"),
        ([*train, "--vae-from", "", "--steps", "1", "--vae-steps", "1", "--decoder-steps", "0"],
         "--vae-from: the path is empty"),
        ([*train, "--init-from", " ", "--steps", "1", "--vae-steps", "1", "--decoder-steps", "0"],
         "--init-from: the path is empty"),
        ([*train, "--denoiser", "c"], "invalid choice: 'c'"),
        ([*train, "--sampler", "euler"], "invalid choice: 'euler'"),
        (["world", "backbone-eval", "--world", "v3", "--backbone", str(tiny_b_backbone), "--timestep-shift", "2",
          "--n", "2"], "a timestep shift (2.0) applies to its DDIM sampling only"),
    ]:
        code, _, err = run(*argv)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, (argv, err)
    code, out, err = run("world", "backbone-eval", "--world", "v3", "--backbone", str(tiny_b_backbone), "--n", "2",
                         "--steps", "3", "--fractions", "0.5", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert 0.0 <= result["train_alignment"] <= 1.0 and result["timestep_shift"] == 1.0
