"""The runs browser: read what a run directory holds, for the app's Runs tab.

A run directory is what `promptloop train` writes (`metrics.jsonl`, `config.json`, `checkpoints/`,
`reward_curve.png`), what `promptloop demo` writes (`summary.json`, `report.md`, figures, and its GRPO run
in `grpo/`), or what `promptloop generate` writes (`record.json`, `trajectory.png`). Everything is read
from files; nothing is unpickled.

Prompts with their rewards come from any JSON / JSONL file of the directory holding records with a query
and a prompt (`query` and `final_prompt` or `prompt`; numeric fields such as `alignment`, `reward` or
`score` become columns), which covers `record.json` of `promptloop generate` and per-step trajectory
records saved next to the trajectory grids.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from promptloop.train.checkpoint import list_checkpoints
from promptloop.train.logging import METRICS_FILE, read_metrics

RUN_MARKERS = (METRICS_FILE, "summary.json", "record.json", "config.json")  # a folder holding one is a run
MAX_DEPTH = 3  # how deep below a run directory files are looked for
MAX_IMAGES = 64  # trajectory grids / figures shown at most
MIN_FIGURE_SIDE = 64  # PNGs smaller than this (single samples and previews) are not figures
MAX_JSON_BYTES = 20 * 2**20  # JSON files larger than this are not read for prompts
SKIP_DIRS = {"checkpoints", "policy", "rng", "__pycache__"}  # folders of weights and state, never browsed
PROMPT_COLUMNS = ("step", "query", "prompt")  # the first columns of the prompts table


class RunError(ValueError):
    """A run directory that cannot be read (its message is shown in the page)."""


@dataclass
class RunView:
    path: Path
    train: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl records of kind "train"
    evals: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl records of kind "eval"
    config: dict[str, Any] = field(default_factory=dict)  # config.json (train) or summary.json (demo)
    images: list[tuple[Path, str]] = field(default_factory=list)  # (PNG, caption), in step order
    prompts: list[dict[str, Any]] = field(default_factory=list)  # one row per (query, prompt) record
    checkpoints: list[str] = field(default_factory=list)  # checkpoint folder names
    report: str = ""  # report.md where there is one

    def summary(self) -> str:
        """One line on what the run holds."""
        parts = [f"{len(self.train)} training steps", f"{len(self.evals)} evaluations",
                 f"{len(self.checkpoints)} checkpoints", f"{len(self.images)} figures", f"{len(self.prompts)} prompts"]
        last = next((r for r in reversed(self.train) if r.get("reward/total/mean") is not None), None)
        if last is not None:
            parts.append(f"last batch reward {last['reward/total/mean']:.3f} (step {last['step']})")
        return f"{self.path}: " + ", ".join(parts)


def _walk(root: Path, depth: int = MAX_DEPTH) -> Iterator[Path]:
    """Files under root, depth-first in name order, skipping weights / state folders and hidden entries."""
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return
    for p in entries:
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if depth > 0 and p.name not in SKIP_DIRS:
                yield from _walk(p, depth - 1)
        elif p.is_file():
            yield p


def find_runs(roots: Sequence[str | Path] = ("runs", "outputs")) -> list[str]:
    """Run directories under the roots (a folder holding one of RUN_MARKERS), newest first."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        real_root = [root.resolve()]
        for f in _walk(root):
            if f.name in RUN_MARKERS and _inside(f.parent, real_root):  # not through a link leading out
                found.add(f.parent)
    # a run nested in a run (the demo's grpo/) is listed under its parent only
    tops = [p for p in found if not any(q != p and q in p.parents for q in found)]
    return [str(p) for p in sorted(tops, key=lambda p: p.stat().st_mtime, reverse=True)]


_STEP = re.compile(r"(\d+)")


def _step_key(path: Path, root: Path) -> tuple[str, int, str]:
    """Folder by folder; within a folder by the step number in the file's name (figures without one first)."""
    rel = path.relative_to(root)
    numbers = _STEP.findall(path.stem)
    return (str(rel.parent), int(numbers[-1]) if numbers else -1, path.name)


def _is_figure(path: Path) -> bool:
    """A PNG at least MIN_FIGURE_SIDE pixels on its longer side (reads the header only)."""
    try:
        with Image.open(path) as im:
            return max(im.size) >= MIN_FIGURE_SIDE
    except OSError:
        return False


def _load_json(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None
        text = path.read_text()
    except OSError:
        return None
    if path.suffix == ".jsonl":
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def prompt_records(data: Any, step: int | None = None, query: str | None = None) -> list[dict[str, Any]]:
    """Rows (step, query, prompt, numeric fields...) of every record in `data` with a query and a prompt
    (a record without its own `query` or `step` takes its parent's, as the samples of `record.json` do)."""
    rows: list[dict[str, Any]] = []
    if isinstance(data, list):
        for item in data:
            rows += prompt_records(item, step, query)
    elif isinstance(data, dict):
        own_step = data.get("step")
        step = own_step if isinstance(own_step, int) and not isinstance(own_step, bool) else step
        query = data["query"] if isinstance(data.get("query"), str) else query
        prompt = data.get("final_prompt", data.get("prompt"))
        if isinstance(query, str) and isinstance(prompt, str):
            row: dict[str, Any] = {"step": step, "query": query, "prompt": prompt}
            for k, v in data.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("step", "seed"):
                    row[k] = v
            rows.append(row)
        for k, v in data.items():
            if isinstance(v, list | dict) and k != "refinements":
                rows += prompt_records(v, step, query)
    return rows


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a link loop
        return False
    return any(real == r or real.is_relative_to(r) for r in roots)


def read_run(path: str | Path, roots: Sequence[str | Path] | None = None) -> RunView:
    """Everything the Runs tab shows of one run directory; RunError when it is missing or holds no run. With
    `roots`, only a directory under one of them is read (links resolved: a link leading out is refused, and files
    linked from outside the roots are skipped); anything else is 'no such directory under the runs root', whether
    it exists or not (the page does not tell what exists elsewhere)."""
    text = str(path or "").strip()
    if not text:
        raise RunError("Pick a run directory first (or type its path).")
    root = Path(text).expanduser()
    real_roots = [Path(r).expanduser().resolve() for r in roots] if roots is not None else None
    if real_roots is not None and not _inside(root, real_roots):
        shown = ", ".join(str(r) for r in (roots or []))
        raise RunError(f"No such directory under the runs root ({shown}): {text}")
    if not root.exists():
        raise RunError(f"No such directory: {text}")
    if not root.is_dir():
        raise RunError(f"Not a directory: {text}")
    files = list(_walk(root))
    if real_roots is not None:
        files = [f for f in files if _inside(f, real_roots)]
    names = {f.name for f in files}
    if not names & {*RUN_MARKERS, "trajectory.png"}:
        raise RunError(f"{text} holds no run: none of {', '.join(RUN_MARKERS)} found in it or its sub-folders")
    view = RunView(path=root)
    metrics = next((f for f in files if f.name == METRICS_FILE), None)
    if metrics is not None:
        records = read_metrics(metrics)
        view.train = [r for r in records if r.get("kind") == "train"]
        view.evals = [r for r in records if r.get("kind") == "eval"]
        view.checkpoints = [p.name for p in list_checkpoints(metrics.parent)]
    for name in ("config.json", "summary.json"):
        f = next((f for f in files if f.name == name), None)
        data = _load_json(f) if f is not None else None
        if isinstance(data, dict):
            view.config[name] = data
    pngs = sorted((f for f in files if f.suffix.lower() == ".png" and _is_figure(f)), key=lambda f: _step_key(f, root))
    view.images = [(f, str(f.relative_to(root))) for f in pngs[:MAX_IMAGES]]
    for f in files:
        if f.suffix in (".json", ".jsonl") and f.name not in (METRICS_FILE, "config.json", "summary.json"):
            view.prompts += prompt_records(_load_json(f))
    report = next((f for f in files if f.name == "report.md"), None)
    if report is not None:
        view.report = report.read_text(errors="replace")
    return view


def prompt_table(rows: list[dict[str, Any]], text: str = "", min_reward: float | None = None) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows) of the prompts whose query or prompt contains `text` (case-insensitive) and whose
    first reward column is at least `min_reward`."""
    extra = sorted({k for r in rows for k in r} - set(PROMPT_COLUMNS))
    headers = [*PROMPT_COLUMNS, *extra]
    needle = (text or "").strip().lower()
    out = []
    for r in rows:
        if needle and needle not in f"{r.get('query', '')} {r.get('prompt', '')}".lower():
            continue
        reward = next((r[k] for k in extra if isinstance(r.get(k), int | float)), None)
        if min_reward is not None and (reward is None or reward < min_reward):
            continue
        out.append([_cell(r.get(h)) for h in headers])
    return headers, out


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4)
    return "" if v is None else v


def curves_figure(train: list[dict[str, Any]], evals: list[dict[str, Any]]) -> Image.Image | None:
    """Reward (train batches and evaluations) and KL against the GRPO step, as one image; None without metrics."""
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for key in sorted({k for r in train for k in r if k.startswith("reward/") and k.endswith("/mean")}):
        pts = [(r["step"], r[key]) for r in train if r.get(key) is not None]
        if pts:
            ax_r.plot(*zip(*pts, strict=True), label=f"train {key[7:-5]}", lw=2 if "total" in key else 1)
    for key in sorted({k for r in evals for k in r if k.startswith("eval/") and k.endswith("/mean")}):
        pts = [(r["step"], r[key]) for r in evals if r.get(key) is not None]
        if pts:
            ax_r.plot(*zip(*pts, strict=True), "o--", label=key[:-5])
    kl = [(r["step"], r["kl"]) for r in train if r.get("kl") is not None]
    if kl:
        ax_kl.plot(*zip(*kl, strict=True), color="tab:red")
    else:
        ax_kl.text(0.5, 0.5, "no KL logged", ha="center", va="center", transform=ax_kl.transAxes)
    for ax, title in ((ax_r, "reward"), (ax_kl, "KL to the reference policy")):
        ax.set_xlabel("GRPO step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if ax_r.lines:
        ax_r.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")
