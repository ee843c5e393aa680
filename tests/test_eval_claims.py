"""`promptloop eval claims`: the paired ratio interval, the inputs' check, and the four claims end to end on tiny v3
models standing in for the shipped and trained ones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from promptloop.world.fair import bootstrap_ratio_ci


def test_ratio_interval_is_paired_and_holds_the_ratio() -> None:
    rng = np.random.default_rng(0)
    den = rng.normal(1.0, 0.5, 400)
    num = 0.6 * den + rng.normal(0.0, 0.05, 400)  # strongly paired: the ratio is known tightly
    lo, hi = bootstrap_ratio_ci(num, den)
    assert lo < num.mean() / den.mean() < hi and hi - lo < 0.1
    unpaired = bootstrap_ratio_ci(num, rng.permutation(den))
    assert unpaired[1] - unpaired[0] > hi - lo  # pairing is what makes it tight
    with pytest.raises(ValueError, match="equal, non-empty"):
        bootstrap_ratio_ci(num, den[:10])
    lo0, hi0 = bootstrap_ratio_ci(np.ones(5), np.zeros(5))  # a denominator of 0: an infinite ratio, not NaN
    assert lo0 == hi0 == math.inf


def test_missing_inputs_fail_at_once_naming_the_command_that_makes_each(tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli("eval", "claims", "--world", "v3", "--backbone-b", str(tmp_path / "b"),
                             "--ddpo", str(tmp_path / "d"), "--ddpo-proxy", str(tmp_path / "dp"),
                             "--grpo-proxy", str(tmp_path / "gp"), "--results", str(tmp_path / "r"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    for flag, command in (("--backbone-b", "world train-backbone --world v3 --denoiser b"),
                          ("--ddpo", "world ddpo --world v3 --work-dir"), ("--ddpo-proxy", "--reward proxy"),
                          ("--grpo-proxy", "promptloop train configs/world_v3.yaml 'rewards={proxy: 1.0}'")):
        assert flag in err and command in err
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def claim_inputs(tiny_v3_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny stand-ins of the four trained inputs and the world's policy: a GRPO run on the proxy (its adapter also
    plays the shipped adapters), two one-step DDPO runs, and backbone B (the tiny backbone itself)."""
    from conftest import tiny_v3_grpo

    from promptloop.weightrl.config import DDPOConfig
    from promptloop.weightrl.ddpo import train_ddpo
    from promptloop.world.backdrops.train_policy import build_backdrops_policy

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("claims")
    policy = build_backdrops_policy(seed=0, hidden=32, layers=1, heads=2, vision_hidden=32, vision_layers=1)
    base, run = tiny_v3_grpo(root, policy, tiny_v3_backbone, "rewards={proxy: 1.0}")
    folders = {"policy": base, "grpo_proxy": run, "backbone_b": tiny_v3_backbone}
    for key, reward in (("ddpo", ""), ("ddpo_proxy", "proxy")):
        folders[key] = root / key
        train_ddpo(DDPOConfig(world="v3", backbone=str(tiny_v3_backbone), reward=reward, work_dir=str(root / key),
                              steps=1, prompts_per_step=1, images_per_prompt=2, num_inference_steps=4,
                              eval_queries=2, threads=1), progress=False)
    return folders


def test_claims_end_to_end_on_tiny_models(claim_inputs: dict[str, Path], tiny_v3_backbone: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from promptloop.cli_runner import json_safe
    from promptloop.eval.claims import eval_claims
    from promptloop.world import get_world

    v3 = get_world("v3")
    adapter = str(claim_inputs["grpo_proxy"] / "policy")
    monkeypatch.setattr(v3, "DEFAULT_BACKBONE", tiny_v3_backbone)
    monkeypatch.setattr(v3, "DEFAULT_POLICY", claim_inputs["policy"])
    monkeypatch.setattr(v3, "POLICY_ADAPTERS", {m: adapter for m in ("feedback", "no-feedback", "feed-forward")})
    inputs = {k: claim_inputs[k] for k in ("backbone_b", "ddpo", "ddpo_proxy", "grpo_proxy")}
    res = eval_claims(world="v3", n=3, steps=4, refinements=2, inputs=inputs, results_dir=tmp_path / "results",
                      figures_dir=tmp_path / "figures", progress=False)
    written = json.loads((tmp_path / "results" / "v3_claims.json").read_text())
    assert written["iii_composition"] == json_safe(res["iii_composition"])  # inf / nan: null in the file

    def within(d: dict) -> bool:
        return d["ci"][0] - 1e-6 <= d["mean"] <= d["ci"][1] + 1e-6

    works = res["i_promptloop_works"]
    assert set(works["rows"]) == {"base", "feed_forward", "promptloop"} and within(works["promptloop_minus_base"])
    transfer = res["ii_unseen_backbone"]
    # B is A here: the same samples, so each method's gain on B is its gain on A
    assert transfer["promptloop"]["gain_on_A"] == transfer["promptloop"]["gain_on_B"]
    comp = res["iii_composition"]
    assert set(comp["rows"]) == {"base", "weight_rl", "promptloop", "weight_rl_plus_promptloop"}
    assert all(within(comp[k]) for k in ("sum_minus_weight_rl", "sum_minus_promptloop", "weight_rl_minus_base"))
    over = res["iv_overoptimisation"]
    for method in ("promptloop", "ddpo"):
        assert within(over[method]["proxy_gained"]) and within(over[method]["alignment_lost"])
        assert len(over[method]["hacking_ratio"]["ci"]) == 2
    assert set(over["curves"]) == {"PromptLoop (GRPO, feedback policy)", "DDPO (UNet weights)"}
    assert over["curves"]["DDPO (UNet weights)"]["step"] == [0, 1]
    assert Path(res["figures"][0]).stat().st_size > 0
    # A's plain and feedback rows are `eval compare`'s own cells, sampled once and shared by the claims
    assert comp["rows"]["base"] == works["rows"]["base"] and "A/base" in res["seconds_per_cell"]
