"""Metrics: `metrics.jsonl` (always), Accelerate trackers (TensorBoard / W&B), and the reward-curve PNG.

Each line of `metrics.jsonl` is one JSON object with "step" and "kind" ("train" or "eval"). Only the main
process writes. Each line is flushed and fsynced, and after a resume the file is cut back to the
checkpoint's step, so a killed and resumed run ends with the same file as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from promptloop.fs_errors import atomic_write

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "reward_curve.png"
TIMING_KEYS = ("time/rollout_s", "time/score_s", "time/update_s", "time/eval_s", "time/step_s")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (a torn last line is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


class MetricsLogger:
    """Appends records to OUTPUT_DIR/metrics.jsonl and forwards them to the Accelerate trackers."""

    def __init__(self, output_dir: str | Path, accelerator: Any, use_trackers: bool) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        self.accelerator = accelerator
        self.use_trackers = use_trackers
        self.is_main = accelerator.is_main_process

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after `step` (written by a run that was killed before its next checkpoint)."""
        if not self.is_main or not self.path.exists():
            return
        keep = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        atomic_write(self.path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in keep)))

    def reset(self) -> None:
        if self.is_main and self.path.exists():
            self.path.unlink()

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (main process only; every process may call this)."""
        if not self.is_main:
            return
        rec = {k: _clean(v) for k, v in record.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with self.path.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as e:  # a full disk: cut the torn row off again and name the file
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        if self.use_trackers:
            kind = rec.get("kind", "train")
            numeric = {f"{kind}/{k}": v for k, v in rec.items()
                       if k not in ("step", "kind") and isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.accelerator.log(numeric, step=int(rec["step"]))


def plot_reward_curve(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Plot per-step training rewards (and evaluation points) from metrics.jsonl to a PNG (matplotlib Agg)."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    keys = sorted({k for r in train for k in r if k.startswith("reward/") and k.endswith("/mean")})
    for k in keys:
        pts = [(r["step"], r[k]) for r in train if r.get(k) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=f"train {k[len('reward/'):-len('/mean')]}",
                    lw=2 if "total" in k else 1)
    ekeys = sorted({k for r in evals for k in r if k.startswith("eval/") and k.endswith("/mean")})
    for k in ekeys:
        pts = [(r["step"], r[k]) for r in evals if r.get(k) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o--", label=k[: -len("/mean")])
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_path)
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=100))
    finally:
        plt.close(fig)
    return out


def query_means(values: list[float], per_query: int) -> np.ndarray:
    """Per-query means of query-major trajectory values (`per_query` consecutive values per query)."""
    v = np.asarray(values, dtype=np.float64)
    if per_query < 1 or v.size % per_query:
        raise ValueError(f"{v.size} values do not split into queries of {per_query}")
    return v.reshape(-1, per_query).mean(axis=1)


def mean_ci(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of per-query `values` (NaNs with fewer than 2 queries)."""
    from promptloop.world.fair import bootstrap_ci

    if len(values) < 2:
        return math.nan, math.nan
    lo, hi = bootstrap_ci(values, seed=seed)
    return float(lo), float(hi)
