"""Prompt sources and the deterministic order in which training queries are drawn.

Sources (`load_prompts`):
- `world:train`, `world:heldout`: an embedded world's fixed prompt sets (its `prompt_set`; the default world's
  unless `world` names another);
- a `.txt` file: one prompt per line (blank lines and lines starting with `#` skipped);
- a `.jsonl` file: one JSON object per line holding the prompt under `column` (default: the first of
  prompt / caption / text present), or a JSON string;
- a `.csv` file with a header row naming the prompt column (same default names);
- `hf:NAME[:SPLIT[:COLUMN]]`: a Hugging Face dataset through `datasets` (imported lazily).
A malformed file raises `PromptFileError` naming the file and the line. A prompt over the length limits
(`promptloop.validation`: 200 words, 2000 characters; `skip_overlong_tokens`: 512 policy tokens) is skipped, not
fatal: one over-long caption in a large prompt set should not stop a run. What was skipped is on the returned
`Prompts` (`.skipped`, `.skip_message()`), for the caller to report with a count.

`PromptOrder` gives the queries of step s as positions [s*Q, (s+1)*Q) of an endless sequence of seeded
per-epoch permutations: the data position is a pure function of the step, so resuming is exact.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from promptloop.validation import MAX_PROMPT_TOKENS, InputError, check_prompt
from promptloop.world import DEFAULT_WORLD, get_world

DEFAULT_COLUMNS = ("prompt", "caption", "text")


class PromptFileError(ValueError):
    """A prompt source that cannot be read; the message names the file and line."""


class Prompts(list[str]):
    """The prompts of a source (a list of str) and the over-long ones skipped while loading it.

    `positions`: the 1-based position in the source of each kept prompt; `skipped`: (position, why) of each skipped
    one; `total`: how many prompts were read."""

    def __init__(self, prompts: list[str], source: str, skipped: list[tuple[int, str]] | None = None,
                 positions: list[int] | None = None, total: int | None = None) -> None:
        super().__init__(prompts)
        self.source = source
        self.skipped: list[tuple[int, str]] = list(skipped or [])
        self.positions = list(positions) if positions is not None else list(range(1, len(prompts) + 1))
        self.total = len(prompts) + len(self.skipped) if total is None else total

    def skip_message(self, name: str | None = None, shown: int = 3) -> str | None:
        """One line saying how many prompts were skipped and why (the first `shown` of them); None if none were."""
        if not self.skipped:
            return None
        where = "; ".join(f"prompt {i}: {why}" for i, why in self.skipped[:shown])
        more = f"; and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
        return (f"{name or f'prompt source {self.source!r}'}: skipped {len(self.skipped)} of {self.total} prompts over "
                f"the length limits ({where}{more})")


def _length_problem(e: InputError) -> bool:
    """Whether a check_prompt error is about length (skipped) rather than a malformed prompt (fatal)."""
    return "the limit is" in str(e)


def skip_overlong_tokens(prompts: Prompts, tokenizer: Any, max_tokens: int = MAX_PROMPT_TOKENS) -> Prompts:
    """`prompts` without those longer than `max_tokens` tokens of `tokenizer` (a HF tokenizer), the skipped ones
    added to `.skipped`."""
    kept, kept_positions, skipped = [], [], list(prompts.skipped)
    for pos, p in zip(prompts.positions, prompts, strict=True):
        n = len(tokenizer(p, add_special_tokens=False)["input_ids"])
        if n > max_tokens:
            skipped.append((pos, f"the prompt has {n} tokens, the limit is {max_tokens}"))
        else:
            kept.append(p)
            kept_positions.append(pos)
    return Prompts(kept, prompts.source, sorted(skipped), kept_positions, prompts.total)


def _pick(record: dict, column: str | None, where: str) -> str:
    keys = (column,) if column else DEFAULT_COLUMNS
    for k in keys:
        if k in record:
            v = record[k]
            if not isinstance(v, str):
                raise PromptFileError(f"{where}: field {k!r} is not a string: {v!r}")
            return v
    raise PromptFileError(f"{where}: no field {' / '.join(repr(k) for k in keys)} in {sorted(record)}")


def _load_txt(path: Path) -> list[str]:
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if "\x00" in s:
            raise PromptFileError(f"{path}:{i}: NUL byte in prompt")
        out.append(s)
    return out


def _load_jsonl(path: Path, column: str | None) -> list[str]:
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        if isinstance(rec, str):
            out.append(rec.strip())
        elif isinstance(rec, dict):
            out.append(_pick(rec, column, f"{path}:{i}").strip())
        else:
            raise PromptFileError(f"{path}:{i}: expected a JSON object or string, got {type(rec).__name__}")
    return out


def _load_csv(path: Path, column: str | None) -> list[str]:
    out = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            return []
        names = [h.strip() for h in header]
        keys = (column,) if column else DEFAULT_COLUMNS
        idx = next((names.index(k) for k in keys if k in names), None)
        if idx is None:
            raise PromptFileError(f"{path}:1: header {names} names no column {' / '.join(repr(k) for k in keys)}")
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(names):
                raise PromptFileError(f"{path}:{line}: {len(row)} fields, the header has {len(names)}")
            out.append(row[idx].strip())
    return out


def _load_hf(spec: str, column: str | None) -> list[str]:
    parts = spec.split(":")
    name = parts[0]
    split = parts[1] if len(parts) > 1 and parts[1] else "train"
    col = parts[2] if len(parts) > 2 and parts[2] else column
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise PromptFileError(f"prompt source 'hf:{spec}' needs the `datasets` package (pip install datasets), "
                              "or export the prompts to a .txt/.jsonl/.csv file") from None
    from datasets import load_dataset

    ds = load_dataset(name, split=split)
    cols = (col,) if col else DEFAULT_COLUMNS
    found = next((c for c in cols if c in ds.column_names), None)
    if found is None:
        raise PromptFileError(f"dataset {name!r} ({split}) has no column {' / '.join(cols)}; "
                              f"columns: {ds.column_names}")
    return [str(x).strip() for x in ds[found]]


def load_prompts(source: str, column: str | None = None, limit: int | None = None,
                 world: str = DEFAULT_WORLD) -> Prompts:
    """The prompts of a source (see the module docstring), non-empty, in file order: the first `limit` within the
    length limits (the over-long ones are skipped and listed on the result). `world`: whose prompt sets
    `world:NAME` names."""
    if source.startswith("world:"):
        name = source.split(":", 1)[1]
        try:
            prompts = [it.caption for it in get_world(world).prompt_set(name)]
        except KeyError as e:
            raise PromptFileError(f"prompt source {source!r}: {e.args[0]}") from None
    elif source.startswith("hf:"):
        prompts = _load_hf(source[3:], column)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"prompt file not found: {path}")
        if path.is_dir():
            raise PromptFileError(f"prompt source {source!r}: is a folder, not a prompt file (.txt, .jsonl or .csv)")
        suffix = path.suffix.lower()
        try:
            if suffix == ".txt":
                prompts = _load_txt(path)
            elif suffix == ".jsonl":
                prompts = _load_jsonl(path, column)
            elif suffix == ".csv":
                prompts = _load_csv(path, column)
            else:
                raise PromptFileError(f"{path}: unknown prompt file type {suffix!r}; use .txt, .jsonl or .csv")
        except UnicodeDecodeError as e:
            raise PromptFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    kept: list[str] = []
    positions: list[int] = []
    skipped: list[tuple[int, str]] = []
    for i, p in enumerate((p for p in prompts if p), start=1):
        if limit is not None and len(kept) >= limit:
            break
        try:
            kept.append(check_prompt(p, f"prompt source {source!r}, prompt {i}"))
            positions.append(i)
        except InputError as e:
            if not _length_problem(e):
                raise PromptFileError(str(e)) from None
            skipped.append((i, str(e).rsplit(": ", 1)[-1]))
    if not kept:
        first = f" ({len(skipped)} over the length limits; prompt {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise PromptFileError(f"prompt source {source!r} holds no prompts{first}")
    return Prompts(kept, source, skipped, positions)


def is_world_query(text: str, world: str = DEFAULT_WORLD) -> bool:
    """True when `text` parses as a query of `world` (so the world's alignment reward applies)."""
    try:
        get_world(world).parse(text)
    except Exception:
        return False
    return True


class PromptOrder:
    """Deterministic query order: position p is item perm_e[p mod n] of epoch e = p // n."""

    def __init__(self, prompts: list[str], seed: int, shuffle: bool = True) -> None:
        if not prompts:
            raise ValueError("no prompts")
        self.prompts = list(prompts)
        self.seed = seed
        self.shuffle = shuffle
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            idx = list(range(len(self.prompts)))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(idx)
            self._perms = {epoch: idx}  # keep one epoch in memory
        return self._perms[epoch]

    def take(self, position: int, count: int) -> list[str]:
        """The `count` queries starting at data position `position`."""
        n = len(self.prompts)
        return [self.prompts[self._perm(p // n)[p % n]] for p in range(position, position + count)]
