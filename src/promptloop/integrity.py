"""Integrity of model folders: a manifest of file sizes and sha256, written on save and checked on load.

`promptloop_manifest.json` in a model folder (world backbone, policy, adapter) lists every file below it
with its size and sha256, except the model card (`README.md`, free to edit, on the Hub too).
`write_manifest(folder)` writes it (savers call it last); `verify_folder(folder)` checks it (loaders call it first) and raises `IntegrityError` naming the first file that is missing, has
another size or another hash. Every `.safetensors` file is also checked against its own header, so a
truncated weights file is one clear line even in a folder without a manifest (e.g. from the hub).
Checkpoints record the same manifest (`file_manifest`) in their trainer_state.json.

Regenerate the manifests of the shipped folders with `promptloop world write-manifests`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

MANIFEST_FILE = "promptloop_manifest.json"
MANIFEST_FORMAT = 1
UNLOCKED = ("README.md",)  # the model card: edited on the Hub, so neither listed nor checked (also in old manifests)


class IntegrityError(ValueError):
    """A model folder whose files do not match its manifest, or a truncated/corrupt safetensors file."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_manifest(folder: Path, exclude: tuple[str, ...] = (), hash_limit: int | None = None) -> dict[str, dict[str, Any]]:
    """{relative path: {"size", "sha256"}} of the files below `folder` (`exclude`d names and dot-files left out;
    files above `hash_limit` bytes get no hash)."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if (not p.is_file() or p.name in exclude or p.name == MANIFEST_FILE or rel in UNLOCKED
                or any(s.startswith(".") for s in rel.split("/"))):
            continue
        size = p.stat().st_size
        out[rel] = {"size": size, **({"sha256": sha256_file(p)} if hash_limit is None or size <= hash_limit else {})}
    return out


def check_files(folder: Path, files: dict[str, dict[str, Any]], what: str) -> None:
    """IntegrityError naming the first listed file that is missing or differs in size or sha256."""
    for rel, info in files.items():
        if rel in UNLOCKED:
            continue
        f = folder / rel
        if not f.is_file():
            raise IntegrityError(f"{what} {folder}: file {rel} is missing")
        size = f.stat().st_size
        if size != info["size"]:
            raise IntegrityError(f"{what} {folder}: {rel} has {size} bytes, expected {info['size']} (truncated or "
                                 "replaced)")
        if "sha256" in info and sha256_file(f) != info["sha256"]:
            raise IntegrityError(f"{what} {folder}: {rel} does not match its recorded sha256 (corrupted)")


def check_safetensors(path: Path) -> None:
    """IntegrityError when a .safetensors file is shorter or longer than its header says (or has no header)."""
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{path}: not a valid safetensors file ({type(e).__name__}: {e})") from None
    if 8 + n + end != size:
        raise IntegrityError(f"{path}: safetensors file has {size} bytes, its header describes {8 + n + end} "
                             f"({'truncated' if size < 8 + n + end else 'trailing bytes'})")


def write_manifest(folder: str | Path) -> Path:
    """Write `folder/promptloop_manifest.json` over every file below `folder`; returns its path."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    path.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": file_manifest(folder)}, indent=1) + "\n")
    return path


def verify_folder(folder: str | Path, what: str = "model folder") -> bool:
    """Check `folder` against its manifest (when it has one) and every safetensors file against its header.

    Returns whether a manifest was found; raises IntegrityError naming the bad file."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    found = path.is_file()
    if found:
        try:
            manifest = json.loads(path.read_text())
            files = manifest["files"]
            if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
                raise ValueError(f"format {manifest.get('format')!r}")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise IntegrityError(f"{what} {folder}: {MANIFEST_FILE} is not a valid manifest ({e})") from None
        check_files(folder, files, what)
    for f in sorted(folder.rglob("*.safetensors")):
        check_safetensors(f)
    return found
