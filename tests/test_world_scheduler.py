"""The world's sampling scheduler: shifted timesteps, DDIM equivalence at shift 1, config round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from promptloop.world.backbone import build_sampling_scheduler, build_scheduler
from promptloop.world.scheduler import ShiftedEulerScheduler, shifted_timesteps, timestep_shift_of


def test_shift_one_is_trailing_spacing() -> None:
    ddim = build_scheduler()
    ddim.set_timesteps(20)
    assert shifted_timesteps(20, 1.0) == [int(t) for t in ddim.timesteps]


def test_shift_moves_every_step_towards_noise() -> None:
    plain, shifted = np.array(shifted_timesteps(20, 1.0)), np.array(shifted_timesteps(20, 2.5))
    assert shifted[0] == plain[0] == 999  # sampling still starts from pure noise
    assert np.all(shifted >= plain) and np.all(np.diff(shifted) < 0)
    # hand-checked: u = 0.5 -> 2.5 * 0.5 / (1 + 1.5 * 0.5) = 0.714..., t = round(714.3) - 1
    assert shifted_timesteps(2, 2.5) == [999, 713]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_shift_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="timestep_shift"):
        ShiftedEulerScheduler.from_config(build_scheduler().config, timestep_shift=bad)
    with pytest.raises(ValueError, match="timestep_shift"):
        shifted_timesteps(4, bad)


def _x0_path(scheduler, model, x: torch.Tensor) -> list[torch.Tensor]:
    scheduler.set_timesteps(10)
    x = x * scheduler.init_noise_sigma
    path = []
    for t in scheduler.timesteps:
        out = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x)
        x = out.prev_sample
        path.append(out.pred_original_sample)
    return path


def test_shift_one_samples_what_ddim_samples() -> None:
    """Euler in sigma space is DDIM's deterministic update: the same x0 estimates at every step for the same
    v-model (only the end differs: DDIM stops at t = 0's noise level, Euler at sigma = 0)."""
    torch.manual_seed(0)
    mean, std = torch.randn(2, 4, 8, 8), 0.5
    ddim = build_scheduler()

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # the exact v for Gaussian data N(mean, std^2)
        abar = ddim.alphas_cumprod[int(t)]
        a, s = abar.sqrt(), (1 - abar).sqrt()
        x0 = mean + a * std**2 / (a**2 * std**2 + s**2) * (x - a * mean)
        eps = (x - a * x0) / s
        return a * eps - s * x0

    noise = torch.randn(2, 4, 8, 8)
    euler = ShiftedEulerScheduler.from_config(ddim.config, timestep_shift=1.0)
    a, b = _x0_path(ddim, model, noise), _x0_path(euler, model, noise)
    assert len(a) == len(b) == 10
    for x0_ddim, x0_euler in zip(a, b, strict=True):
        torch.testing.assert_close(x0_euler, x0_ddim, atol=1e-3, rtol=1e-3)  # float32 rounding
    assert (a[0] - a[-1]).abs().mean() > 0.05  # the estimates move: the check is not trivial


def test_config_round_trip_and_old_ddim_folders(tmp_path) -> None:
    sched = build_sampling_scheduler(2.5)
    sched.save_pretrained(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "scheduler_config.json").read_text())["timestep_shift"] == 2.5
    loaded = ShiftedEulerScheduler.from_pretrained(tmp_path / "new")
    assert loaded.timestep_shift == 2.5
    loaded.set_timesteps(4)
    assert [int(t) for t in loaded.timesteps] == shifted_timesteps(4, 2.5)
    assert ShiftedEulerScheduler.from_pretrained(tmp_path / "new", timestep_shift=1.5).timestep_shift == 1.5
    build_scheduler().save_pretrained(tmp_path / "old")  # a backbone saved before the shift: DDIM
    old = ShiftedEulerScheduler.from_pretrained(tmp_path / "old")
    assert old.timestep_shift == 1.0 and old.config.prediction_type == "v_prediction"
    assert old.config.timestep_spacing == "trailing"


def test_explicit_timesteps_pass_through() -> None:
    sched = build_sampling_scheduler(3.0)
    sched.set_timesteps(timesteps=[999, 500, 100])
    assert [int(t) for t in sched.timesteps] == [999, 500, 100]


def test_sampling_scheduler_is_ddim_when_unshifted() -> None:
    from diffusers import DDIMScheduler

    assert isinstance(build_sampling_scheduler(1.0), DDIMScheduler)
    assert timestep_shift_of(build_sampling_scheduler(1.0)) == 1.0
    assert timestep_shift_of(build_sampling_scheduler(2.0)) == 2.0


def test_load_backbone_with_a_shift(tmp_path) -> None:
    from diffusers import DDIMScheduler

    from promptloop.world.backbone import load_backbone, save_backbone

    pipe = load_backbone(timestep_shift=2.5)
    assert isinstance(pipe.scheduler, ShiftedEulerScheduler) and pipe.scheduler.timestep_shift == 2.5
    pipe.scheduler.set_timesteps(20)
    assert [int(t) for t in pipe.scheduler.timesteps] == shifted_timesteps(20, 2.5)
    save_backbone(pipe, tmp_path / "shifted")  # the shift is saved with the folder and loaded back
    assert load_backbone(tmp_path / "shifted").scheduler.timestep_shift == 2.5
    assert isinstance(load_backbone(tmp_path / "shifted", timestep_shift=1.0).scheduler, DDIMScheduler)
    with pytest.raises(ValueError, match="timestep_shift"):
        load_backbone(timestep_shift=0.0)
