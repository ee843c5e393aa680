"""The paper's four claims measured on an embedded world (`promptloop eval claims --world v3 --json`; issue 31).

1. **PromptLoop works**: on backbone A, the feedback policy against the plain backbone and the feed-forward rewriter.
2. **Unseen backbone**: the policies trained on A applied untouched to backbone B (another denoiser and sampler);
   transfer = (gain over B's plain backbone) / (gain over A's), with a paired bootstrap CI over queries.
3. **Composition with weight-level RL**: the plain backbone, DDPO (A's UNet tuned on the task reward), PromptLoop,
   and PromptLoop on the DDPO-tuned backbone (the policy trained on A, untouched); the sum against each alone.
4. **Over-optimisation**: each method tuned on the hackable `proxy` reward (PromptLoop: GRPO of the feedback
   policy from its SFT start; DDPO: A's UNet). Hacking ratio = alignment lost / proxy gained between the method's
   start and its end, with a paired bootstrap CI; the curves along training come from the runs' `metrics.jsonl`.

Every cell is one backbone, one policy (or none) and one mode, sampled once on the same `n` held-out queries and
seeds (`eval.compare.heldout_queries`, so A's rows are `eval compare`'s) and scored per sample by the world's task
reward, its alignment and the proxy; a claim reads the cells it needs. The trained inputs are not shipped (they
are weights): each is a folder made by the command in `INPUTS`, checked before anything loads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from promptloop.cli_runner import json_safe
from promptloop.eval.compare import heldout_queries, load_world_policy, world_adapter
from promptloop.eval.figures import curve_with_bands
from promptloop.fs_errors import atomic_write
from promptloop.rewards import get_reward
from promptloop.world import get_world, task_reward_name
from promptloop.world.backbone import load_backbone
from promptloop.world.fair import bootstrap_ci, bootstrap_ratio_ci
from promptloop.world.sampling import sample

# input -> (what it is, its default folder under the working folder, the command that makes it); {v}: the version
INPUTS: dict[str, tuple[str, str, str]] = {
    "backbone_b": ("backbone B", "runs/{v}bbB_out",
                   "promptloop world train-backbone --world {v} --denoiser b --sampler dpm --vae-from "
                   "{a} --work-dir runs/{v}bbB --out runs/{v}bbB_out --steps 5000 --threads 1"),
    "ddpo": ("DDPO run on the task reward", "runs/{v}ddpo",
             "promptloop world ddpo --world {v} --work-dir runs/{v}ddpo --steps 100 --threads 1"),
    "ddpo_proxy": ("DDPO run on the proxy", "runs/{v}ddpo_proxy",
                   "promptloop world ddpo --world {v} --reward proxy --work-dir runs/{v}ddpo_proxy --steps 100 "
                   "--threads 1"),
    "grpo_proxy": ("GRPO run of the feedback policy on the proxy", "runs/{v}grpo_proxy",
                   "promptloop train {config} 'rewards={{proxy: 1.0}}' output_dir=runs/{v}grpo_proxy steps=100"),
}
# the file each input folder must hold (a run folder: its result and its log)
INPUT_FILES = {"backbone_b": ("model_index.json",), "ddpo": ("backbone/model_index.json", "metrics.jsonl"),
               "ddpo_proxy": ("backbone/model_index.json", "metrics.jsonl"),
               "grpo_proxy": ("policy/adapter_config.json", "metrics.jsonl")}


def input_folders(world: ModuleType, given: dict[str, str | Path | None]) -> dict[str, Path]:
    """The trained inputs' folders (given, else their defaults); FileNotFoundError naming every missing one and
    the command that makes it, before any model loads."""
    v = world.VERSION
    folders, missing = {}, []
    for key, (what, default, command) in INPUTS.items():
        folder = Path(given.get(key) or default.format(v=v)).expanduser()
        folders[key] = folder
        lacking = [f for f in INPUT_FILES[key] if not (folder / f).is_file()]
        if lacking:
            cmd = command.format(v=v, a=Path(world.DEFAULT_BACKBONE), config=f"configs/{world.GRPO_CONFIG}")
            missing.append(f"--{key.replace('_', '-')} {folder}: no {what} (lacks {lacking[0]}); make it with `{cmd}`")
    if missing:
        raise FileNotFoundError("; ".join(missing))
    return folders


def _mean_ci(values: np.ndarray, seed: int) -> dict[str, Any]:
    lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean": float(values.mean()), "ci": [lo, hi]}


def _ratio(num: np.ndarray, den: np.ndarray, seed: int) -> dict[str, Any]:
    """mean(num) / mean(den) with its paired bootstrap CI (None where undefined: a zero denominator; infinite CI
    ends print as null in the JSON too)."""
    lo, hi = bootstrap_ratio_ci(num, den, seed=seed)
    d = float(den.mean())
    return {"ratio": float(num.mean()) / d if d else None, "ci": [lo, hi]}


class Cells:
    """Sample each (backbone, policy, mode) cell once on the comparison's queries and seeds; per-sample scores."""

    def __init__(self, world: ModuleType, n: int, seed: int, steps: int, refinements: int, progress: bool) -> None:
        self.world, self.seed, self.steps, self.refinements, self.progress = world, seed, steps, refinements, progress
        self.queries, self.seeds = heldout_queries(world, n, seed)
        self.task_name = task_reward_name(world)
        self.rewards = {"task": get_reward(self.task_name), "alignment": get_reward(world.ALIGNMENT_REWARD),
                        "proxy": get_reward("proxy")}
        self.scores: dict[str, dict[str, np.ndarray]] = {}
        self.seconds: dict[str, float] = {}
        self._pipes: dict[Path, Any] = {}

    def pipe(self, folder: Path) -> Any:
        if folder not in self._pipes:
            self._pipes = {folder: load_backbone(folder)}  # one backbone in memory at a time
        return self._pipes[folder]

    def get(self, name: str, backbone: Path, adapter: Path | str | None, mode: str) -> dict[str, np.ndarray]:
        """The cell's per-sample scores (task, alignment, proxy); `adapter` "sft": the SFT policy, no adapter."""
        if name in self.scores:
            return self.scores[name]
        t0 = time.perf_counter()
        pipe = self.pipe(backbone)
        policy = None if mode == "none" else load_world_policy(None if adapter == "sft" else adapter, pipe, self.world)
        torch.manual_seed(self.seed)  # the policy samples from the global generator (as eval compare)
        out = sample(pipe, self.queries, self.seeds, policy=policy, mode=mode, steps=self.steps,
                     guidance=self.world.GUIDANCE, num_refinements=self.refinements if mode != "none" else None,
                     progress=self.progress, desc=f"claims {name}")
        self.scores[name] = {k: r(out.images, self.queries).scores.double().cpu().numpy() for k, r in self.rewards.items()}
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        return self.scores[name]

    def row(self, name: str) -> dict[str, Any]:
        return {k: _mean_ci(v, self.seed) for k, v in self.scores[name].items()}


def _difference(a: np.ndarray, b: np.ndarray, seed: int) -> dict[str, Any]:
    return _mean_ci(a - b, seed)


def claim_works(c: Cells, a: Path, adapters: dict[str, Path]) -> dict[str, Any]:
    base = c.get("A/base", a, None, "none")["task"]
    ff = c.get("A/feed_forward", a, adapters["feed-forward"], "feed-forward")["task"]
    pl = c.get("A/promptloop", a, adapters["feedback"], "feedback")["task"]
    return {"rows": {k: c.row(f"A/{k}") for k in ("base", "feed_forward", "promptloop")},
            "promptloop_minus_base": _difference(pl, base, c.seed),
            "promptloop_minus_feed_forward": _difference(pl, ff, c.seed)}


def claim_transfer(c: Cells, a: Path, b: Path, adapters: dict[str, Path]) -> dict[str, Any]:
    out: dict[str, Any] = {"backbone_b": str(b), "rows": {}}
    gains = {}
    for bb, folder in (("A", a), ("B", b)):
        base = c.get(f"{bb}/base", folder, None, "none")["task"]
        for method, mode in (("promptloop", "feedback"), ("feed_forward", "feed-forward")):
            gains[bb, method] = c.get(f"{bb}/{method}", folder, adapters[mode], mode)["task"] - base
        out["rows"][bb] = {k: c.row(f"{bb}/{k}") for k in ("base", "feed_forward", "promptloop")}
    for method in ("promptloop", "feed_forward"):
        out[method] = {"gain_on_A": _mean_ci(gains["A", method], c.seed), "gain_on_B": _mean_ci(gains["B", method], c.seed),
                       "transfer": _ratio(gains["B", method], gains["A", method], c.seed)}
    return out


def claim_composition(c: Cells, a: Path, tuned: Path, adapters: dict[str, Path]) -> dict[str, Any]:
    cells = {"base": ("A/base", a, None, "none"), "weight_rl": ("ddpo/base", tuned, None, "none"),
             "promptloop": ("A/promptloop", a, adapters["feedback"], "feedback"),
             "weight_rl_plus_promptloop": ("ddpo/promptloop", tuned, adapters["feedback"], "feedback")}
    task = {k: c.get(*v)["task"] for k, v in cells.items()}
    both = task["weight_rl_plus_promptloop"]
    return {"ddpo_backbone": str(tuned), "rows": {k: c.row(v[0]) for k, v in cells.items()},
            "sum_minus_weight_rl": _difference(both, task["weight_rl"], c.seed),
            "sum_minus_promptloop": _difference(both, task["promptloop"], c.seed),
            "weight_rl_minus_base": _difference(task["weight_rl"], task["base"], c.seed)}


def claim_overoptimisation(c: Cells, a: Path, ddpo_proxy: Path, grpo_proxy: Path) -> dict[str, Any]:
    ends = {"promptloop": (("A/promptloop_sft", a, "sft", "feedback"),
                           ("A/promptloop_proxy", a, grpo_proxy / "policy", "feedback")),
            "ddpo": (("A/base", a, None, "none"), ("ddpo_proxy/base", ddpo_proxy / "backbone", None, "none"))}
    out: dict[str, Any] = {}
    for method, (start, end) in ends.items():
        s, e = c.get(*start), c.get(*end)
        proxy_gain, alignment_lost = e["proxy"] - s["proxy"], s["alignment"] - e["alignment"]
        out[method] = {"start": start[0], "end": end[0], "proxy_gained": _mean_ci(proxy_gain, c.seed),
                       "alignment_lost": _mean_ci(alignment_lost, c.seed),
                       "task_change": _difference(e["task"], s["task"], c.seed),
                       "hacking_ratio": _ratio(alignment_lost, proxy_gain, c.seed)}
    return out


def training_curves(runs: dict[str, Path]) -> dict[str, dict[str, list[float]]]:
    """Per run: the held-out proxy and alignment (mean, CI) at each evaluation of its metrics.jsonl."""
    from promptloop.train.logging import read_metrics

    curves = {}
    for name, folder in runs.items():
        rows = [r for r in read_metrics(folder / "metrics.jsonl") if r.get("kind") == "eval" and "eval/proxy/mean" in r]
        curves[name] = {"step": [r["step"] for r in rows]} | {
            f"{m}_{k}": [r[f"eval/{m}/{k}"] for r in rows] for m in ("proxy", "alignment") for k in ("mean", "ci_low", "ci_high")}
    return curves


def overoptimisation_figure(curves: dict[str, dict[str, list[float]]], path: Path) -> Path:
    """Alignment lost against proxy gained along each run's training (its held-out evaluations; bands: the
    alignment's 95 % CI), from each run's first evaluation."""
    series = {}
    for name, cv in curves.items():
        p0, a0 = cv["proxy_mean"][0], cv["alignment_mean"][0]
        series[name] = ([p - p0 for p in cv["proxy_mean"]], [a0 - a for a in cv["alignment_mean"]],
                        [a0 - a for a in cv["alignment_ci_high"]], [a0 - a for a in cv["alignment_ci_low"]])
    return curve_with_bands(series, path, xlabel="proxy gained (held-out)", ylabel="alignment lost (held-out)",
                            title="tuned on the proxy: alignment lost per unit of proxy gained, along training")


def eval_claims(world: str = "v3", n: int = 256, seed: int = 0, steps: int = 20, refinements: int = 5,
                inputs: dict[str, str | Path | None] | None = None, results_dir: str | Path = "docs/results",
                figures_dir: str | Path = "docs/figures", progress: bool = True) -> dict[str, Any]:
    """Measure the four claims (module docstring) and write RESULTS_DIR/{v}_claims.json and
    FIGURES_DIR/{v}_claims_overoptimisation.png. Returns the JSON's content."""
    t0 = time.perf_counter()
    w = get_world(world)
    folders = input_folders(w, inputs or {})
    adapters = {m: world_adapter(w, m) for m in ("feedback", "feed-forward")}
    if any(a is None for a in adapters.values()):
        raise ValueError(f"world {w.VERSION} ships no feedback and feed-forward adapters to measure")
    results, figures = Path(results_dir), Path(figures_dir)
    results.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    a = Path(w.DEFAULT_BACKBONE)
    c = Cells(w, n, seed, steps, refinements, progress)
    claims: dict[str, Callable[[], dict[str, Any]]] = {
        "i_promptloop_works": lambda: claim_works(c, a, adapters),
        "ii_unseen_backbone": lambda: claim_transfer(c, a, folders["backbone_b"], adapters),
        "iii_composition": lambda: claim_composition(c, a, folders["ddpo"] / "backbone", adapters),
        "iv_overoptimisation": lambda: claim_overoptimisation(c, a, folders["ddpo_proxy"], folders["grpo_proxy"]),
    }
    out: dict[str, Any] = {"world": w.NAME, "n": n, "seed": seed, "steps": steps, "refinements": refinements,
                           "task_reward": c.task_name, "inputs": {k: str(v) for k, v in folders.items()}}
    for name, measure in claims.items():
        out[name] = measure()
    curves = training_curves({"PromptLoop (GRPO, feedback policy)": folders["grpo_proxy"],
                              "DDPO (UNet weights)": folders["ddpo_proxy"]})
    out["iv_overoptimisation"]["curves"] = curves
    figure = overoptimisation_figure(curves, figures / f"{w.VERSION}_claims_overoptimisation.png")
    out["figures"] = [str(figure)]
    out["seconds_per_cell"] = c.seconds
    out["seconds"] = round(time.perf_counter() - t0, 1)
    path = results / f"{w.VERSION}_claims.json"
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(json_safe(out), indent=2, allow_nan=False) + "\n"))
    out["written"] = str(path)
    return out


__all__ = ["INPUTS", "Cells", "eval_claims", "input_folders", "overoptimisation_figure", "training_curves"]
