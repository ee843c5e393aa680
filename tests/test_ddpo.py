"""DDPO (promptloop.weightrl): the DDIM step density against diffusers' own step, the rollout against the pipeline's
own stochastic sampling, the trainer's resume, and the CLI's input checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from promptloop.weightrl.config import DDPOConfig
from promptloop.weightrl.ddim_logprob import ddim_step_with_logprob


def _scheduler(prediction_type: str, clip_sample: bool) -> DDIMScheduler:
    s = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type,
                      clip_sample=clip_sample, set_alpha_to_one=False, timestep_spacing="trailing")
    s.set_timesteps(10)
    return s


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("clip_sample", [False, True])
def test_step_and_density_match_diffusers_ddim(prediction_type: str, clip_sample: bool) -> None:
    s = _scheduler(prediction_type, clip_sample)
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    eta = 0.7
    for t in (s.timesteps[0], s.timesteps[4], s.timesteps[-1]):  # the last step's previous alpha is the final one
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
        ref = s.step(out, t, x, eta=eta, variance_noise=noise).prev_sample
        prev, lp = ddim_step_with_logprob(s, out, int(t), x, eta, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(prev, ref, rtol=1e-5, atol=1e-5)
        mean = s.step(out, t, x, eta=eta, variance_noise=torch.zeros_like(x)).prev_sample
        std = eta * float(s._get_variance(t, t - 1000 // 10)) ** 0.5
        expected = torch.distributions.Normal(mean, std).log_prob(prev).mean(dim=(1, 2, 3))
        torch.testing.assert_close(lp, expected.to(lp.dtype), rtol=1e-4, atol=1e-4)
        # the density of a given sample, differentiable in the model output
        out_g = out.clone().requires_grad_(True)
        _, lp2 = ddim_step_with_logprob(s, out_g, int(t), x, eta, prev_sample=prev)
        torch.testing.assert_close(lp2.detach(), lp)
        lp2.sum().backward()
        assert out_g.grad is not None and torch.isfinite(out_g.grad).all() and out_g.grad.abs().sum() > 0


def test_a_timestep_per_sample_is_each_samples_own_step() -> None:
    s = _scheduler("v_prediction", False)
    g = torch.Generator().manual_seed(1)
    x, out, nxt = (torch.randn(3, 4, 8, 8, generator=g) for _ in range(3))
    ts = torch.tensor([int(s.timesteps[0]), int(s.timesteps[3]), int(s.timesteps[-1])])
    _, lp = ddim_step_with_logprob(s, out, ts, x, 1.0, prev_sample=nxt)
    for i in range(3):
        _, one = ddim_step_with_logprob(s, out[i : i + 1], int(ts[i]), x[i : i + 1], 1.0, prev_sample=nxt[i : i + 1])
        torch.testing.assert_close(lp[i : i + 1], one)


def test_density_needs_ddim_and_eta() -> None:
    s = _scheduler("epsilon", False)
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="eta > 0"):
        ddim_step_with_logprob(s, x, int(s.timesteps[0]), x, 0.0)
    dpm = DPMSolverMultistepScheduler()
    dpm.set_timesteps(10)
    with pytest.raises(TypeError, match="DPMSolverMultistepScheduler"):
        ddim_step_with_logprob(dpm, x, 999, x, 1.0)


def test_rollout_is_the_pipelines_own_stochastic_sampling(tiny_v3_backbone: Path) -> None:
    """The rollout's final latents are what the diffusers pipeline samples with the same generators and eta: the
    policy DDPO trains is the sampler users run."""
    from promptloop.weightrl.ddpo import rollout
    from promptloop.world.backbone import load_backbone

    pipe = load_backbone(tiny_v3_backbone)
    queries = ["a red circle", "two squares"]
    ro = rollout(pipe, queries, [3, 4], steps=10, guidance=4.0, eta=1.0)
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    ref = pipe(queries, num_inference_steps=10, guidance_scale=4.0, eta=1.0, generator=gens, output_type="latent").images
    torch.testing.assert_close(ro.latents[-1], ref, rtol=1e-4, atol=1e-4)
    assert ro.latents.shape[0] == 11 and ro.log_probs.shape == (10, 2) and torch.isfinite(ro.log_probs).all()
    assert ro.images.shape == (2, 32, 32, 3) and 0.0 <= ro.images.min() and ro.images.max() <= 1.0


def _cfg(backbone: Path, work: Path, steps: int) -> DDPOConfig:
    return DDPOConfig(world="v3", backbone=str(backbone), work_dir=str(work), steps=steps, prompts_per_step=2,
                      images_per_prompt=2, num_inference_steps=4, eval_every=1, eval_queries=2, checkpoint_every=1,
                      updates_per_epoch=2, micro_batch=2, timestep_fraction=0.5, threads=1)


def _train_rows(work: Path) -> list[dict]:
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_ddpo_trains_resumes_identically_and_saves_a_backbone(tiny_v3_backbone: Path, tmp_path: Path) -> None:
    from promptloop.weightrl.ddpo import train_ddpo
    from promptloop.world.backbone import load_backbone
    from promptloop.world.train_autoencoder import load_state

    whole = train_ddpo(_cfg(tiny_v3_backbone, tmp_path / "whole", 2), progress=False)
    train_ddpo(_cfg(tiny_v3_backbone, tmp_path / "split", 1), progress=False)
    with (tmp_path / "split" / "metrics.jsonl").open("a") as f:  # a row written after the checkpoint, then a crash
        f.write(json.dumps({"step": 2, "kind": "train", "reward": -1.0}) + "\n" + '{"step": 2, "ki')  # torn by the crash
    train_ddpo(_cfg(tiny_v3_backbone, tmp_path / "split", 2), progress=False)
    a, b = (load_state(tmp_path / d / "checkpoint.pt")["unet"] for d in ("whole", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _train_rows(tmp_path / "whole") == _train_rows(tmp_path / "split")
    rows = _train_rows(tmp_path / "whole")
    assert [r["step"] for r in rows] == [0, 1, 1, 2, 2] and {"eval/alignment/mean", "eval/proxy/mean"} <= set(rows[0])
    train = [r for r in rows if r["kind"] == "train"]
    assert all(r["approx_kl_on_policy"] < 1e-6 for r in train)  # the first chunk recomputes the rollout's densities
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in train)
    tuned, base = load_backbone(whole["backbone"]).unet, load_backbone(tiny_v3_backbone).unet
    assert any(not torch.equal(p, q) for p, q in zip(tuned.state_dict().values(), base.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="other settings .*eta"):
        train_ddpo(DDPOConfig(**{**_cfg(tiny_v3_backbone, tmp_path / "whole", 3).__dict__, "eta": 0.5}), progress=False)


@pytest.mark.parametrize(("argv", "message"), [
    (["--eta", "0"], "eta: DDPO samples its rollouts stochastically"),
    (["--reward", "nosuch"], "--reward nosuch: no such reward"),
    (["--images-per-prompt", "1"], "images_per_prompt must be >= 2"),
    (["--backbone", "no/such/folder"], "--backbone no/such/folder: no such backbone folder"),
    (["--lr", "nan"], "--lr"),
])
def test_cli_refuses_bad_input_in_one_line(run_cli, tmp_path: Path, argv: list[str], message: str) -> None:
    code, out, err = run_cli("world", "ddpo", "--world", "v3", "--work-dir", str(tmp_path / "w"), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "w" / "checkpoint.pt").exists()


def test_cli_runs_ddpo(run_cli, tiny_v3_backbone: Path, tmp_path: Path) -> None:
    code, out, err = run_cli("world", "ddpo", "--world", "v3", "--backbone", str(tiny_v3_backbone), "--work-dir",
                             str(tmp_path / "w"), "--steps", "1", "--prompts-per-step", "1", "--images-per-prompt", "2",
                             "--eval-queries", "1", "--reward", "proxy", "--threads", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["reward"] == "proxy" and Path(result["backbone"], "model_index.json").is_file()
    assert set(result["last_eval"]) >= {"eval/proxy/mean", "eval/alignment/mean", "eval/backdrops_legible/mean"}


def test_every_numeric_config_field_has_a_range() -> None:
    import dataclasses
    import typing

    from promptloop.validation import LIMITS
    from promptloop.weightrl.config import FIELD_LIMITS

    hints = typing.get_type_hints(DDPOConfig)
    numeric = {f.name for f in dataclasses.fields(DDPOConfig) if {int, float} & set(typing.get_args(hints[f.name]) or (hints[f.name],))}
    assert numeric == set(FIELD_LIMITS) and all(kind in LIMITS for kind in FIELD_LIMITS.values())
    with pytest.raises(ValueError, match="learning_rate"):
        DDPOConfig(learning_rate=float("nan")).check()
    with pytest.raises(ValueError, match="scale_rewards"):
        DDPOConfig(scale_rewards="per-prompt").check()
