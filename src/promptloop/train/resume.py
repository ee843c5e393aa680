"""Which checkpoint a run resumes from, and whether its metrics.jsonl still matches it.

- An explicit `resume: PATH` wins; a broken PATH is an error that names the newest valid checkpoint.
- `resume: true` takes the newest checkpoint that passes its integrity check; newer broken or stray
  folders are reported in a warning (the run continues from the valid one).
- `steps` below the checkpoint's step is an error (the trainer checks it once the state is read).
- `metrics_problems` lists what is wrong with metrics.jsonl against the checkpoint's step: unreadable
  rows in the middle of the file and missing train rows (a file cut or edited by hand).
"""

from __future__ import annotations

import json
from pathlib import Path

from promptloop.train import checkpoint as ckpt


def _newest_valid(output_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint of `output_dir` that reads back intact, and one line per newer broken folder."""
    broken: list[str] = []
    for path in reversed(ckpt.list_checkpoints(output_dir)):
        try:
            ckpt.read_state(path)
        except ckpt.CheckpointError as e:
            broken.append(str(e))
            continue
        return path, broken
    return None, broken


def resume_checkpoint(resume: bool | str, output_dir: Path) -> tuple[Path | None, list[str]]:
    """(checkpoint to resume from or None, warnings) for the config's `resume` value."""
    if isinstance(resume, str):
        path = Path(resume)
        if not path.is_dir():
            raise ckpt.CheckpointError(f"resume: checkpoint not found: {path}")
        try:
            ckpt.read_state(path)
        except ckpt.CheckpointError as e:
            valid, _ = _newest_valid(output_dir)
            offer = f"; the newest valid checkpoint is {valid} (resume=true uses it)" if valid and valid != path else ""
            raise ckpt.CheckpointError(f"{e}{offer}") from None
        return path, []
    if not resume:
        return None, []
    valid, broken = _newest_valid(output_dir)
    if broken and valid is None:
        raise ckpt.CheckpointError(f"no valid checkpoint in {ckpt.checkpoint_root(output_dir)} to resume from: "
                                   + "; ".join(broken))
    warnings = [f"skipping a broken checkpoint: {b}" for b in broken]
    if broken:
        warnings.append(f"resuming from the newest valid checkpoint {valid}")
    return valid, warnings


def metrics_problems(path: Path, step: int) -> list[str]:
    """What is wrong with metrics.jsonl for a run resumed at `step` (empty when nothing is)."""
    if not path.is_file():
        return [f"{path} is missing: the rows of steps 1..{step} are lost"] if step > 0 else []
    lines = path.read_text(errors="replace").splitlines()
    steps: set[int] = set()
    bad = []
    for i, line in enumerate(lines, start=1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if line.strip() and i < len(lines):  # a torn last line is the normal trace of a kill
                bad.append(i)
            continue
        if isinstance(rec, dict) and rec.get("kind") == "train" and isinstance(rec.get("step"), int):
            steps.add(rec["step"])
    out = []
    if bad:
        out.append(f"{path}: line(s) {', '.join(map(str, bad[:5]))} are not valid JSON (dropped)")
    missing = [s for s in range(1, step + 1) if s not in steps]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        out.append(f"{path} lacks the train rows of step(s) {shown} of the checkpoint at step {step} (those rows "
                   "are lost)")
    return out
