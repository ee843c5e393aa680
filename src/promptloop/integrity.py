"""Integrity of model folders: a manifest of file sizes and sha256, written on save and checked on load.

`promptloop_manifest.json` in a model folder (world backbone, policy, adapter) lists every file below it
with its size and sha256, except the model card (`README.md`, free to edit, on the Hub too).
`write_manifest(folder)` writes it (savers call it last); `verify_folder(folder)` checks it (loaders call it first)
and raises `IntegrityError` naming the first file that is missing, has another size or another hash; manifest
entries must name paths inside the folder (nothing outside it is read). Every `.safetensors` file is also checked
against its own header, so a truncated weights file is one clear line even in a folder without a manifest (e.g.
from the hub). A folder without a manifest is refused where promptloop wrote it (deleting the manifest must not
turn the checks off) and loads with an `UnverifiedFolderWarning` otherwise.
Checkpoints record the same manifest (`file_manifest`) in their trainer_state.json.

Regenerate the manifests of the shipped folders with `promptloop world write-manifests`.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import warnings
from pathlib import Path
from typing import Any

from promptloop.fs_errors import atomic_write

MANIFEST_FILE = "promptloop_manifest.json"
MANIFEST_FORMAT = 1
UNLOCKED = ("README.md",)  # the model card: edited on the Hub, so neither listed nor checked (also in old manifests)


class IntegrityError(ValueError):
    """A model folder whose files do not match its manifest, or a truncated/corrupt safetensors file."""


class ModelFileError(ValueError):
    """A model folder's JSON file that is not valid JSON or holds a field of the wrong type (the message names
    the file and the field)."""


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in `path`; ModelFileError naming the file when it is not valid JSON or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


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


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _entry(folder: Path, rel: Any, info: Any, what: str) -> Path:
    """The file a manifest entry names, after checking the entry: a relative path that stays inside `folder` (no
    '..', no absolute path, no link leading out), a size and, when given, a sha256."""
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel or \
            ".." in rel.split("/") or re.match(r"^[A-Za-z]:", rel):
        raise IntegrityError(f"{what} {folder}: manifest entry {rel!r} is not a relative path inside the folder")
    if not isinstance(info, dict) or not isinstance(info.get("size"), int) or isinstance(info.get("size"), bool) \
            or info["size"] < 0:
        raise IntegrityError(f"{what} {folder}: manifest entry {rel!r}: field 'size': expected a byte count, got "
                             f"{info.get('size') if isinstance(info, dict) else info!r}")
    if "sha256" in info and not (isinstance(info["sha256"], str) and _SHA256.match(info["sha256"])):
        raise IntegrityError(f"{what} {folder}: manifest entry {rel!r}: field 'sha256': expected 64 hex digits, got "
                             f"{info['sha256']!r}")
    f = folder / rel
    try:
        inside = f.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a link loop
        inside = False
    if not inside:
        raise IntegrityError(f"{what} {folder}: manifest entry {rel!r} leads outside the folder (a link)")
    return f


def check_files(folder: Path, files: dict[str, dict[str, Any]], what: str) -> None:
    """IntegrityError naming the first listed file that is missing or differs in size or sha256 (or an entry that
    is malformed or names a path outside `folder`: nothing outside it is read); the model card is not checked."""
    if not isinstance(files, dict):
        raise IntegrityError(f"{what} {folder}: the file list is not an object")
    checked = [(rel, _entry(folder, rel, info, what), info) for rel, info in files.items() if rel not in UNLOCKED]
    for rel, f, info in checked:
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
    text = json.dumps({"format": MANIFEST_FORMAT, "files": file_manifest(folder)}, indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


class UnverifiedFolderWarning(UserWarning):
    """A model folder without a manifest: its files cannot be checked (the CLI prints it as one warning line)."""


def written_by_promptloop(folder: Path) -> bool:
    """Whether `folder` is one promptloop saved (a policy, adapter or world backbone): those always carry a manifest."""
    if (folder / "promptloop_policy.json").is_file():
        return True
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(index, dict) and any(str(k).startswith("promptloop_") for k in index)


def verify_folder(folder: str | Path, what: str = "model folder", missing: str = "auto") -> bool:
    """Check `folder` against its manifest and every safetensors file against its header.

    Without a manifest (`missing`): "auto" refuses a folder promptloop wrote (`written_by_promptloop`: its manifest
    was deleted, which would turn the checks off) and warns for any other (`UnverifiedFolderWarning`, e.g. a
    folder from the Hub); "error" / "warn" / "ignore" do that whatever wrote it. Returns whether a manifest was
    found; raises IntegrityError naming the bad file."""
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
    if not found:
        refuse = missing == "error" or (missing == "auto" and written_by_promptloop(folder))
        if refuse:
            raise IntegrityError(f"{what} {folder}: {MANIFEST_FILE} is missing, so its files cannot be verified "
                                 "(promptloop writes one into every folder it saves); if you trust the folder, write "
                                 f"a new one with `promptloop world write-manifests {folder}`")
        if missing != "ignore":
            warnings.warn(f"{what} {folder} has no {MANIFEST_FILE}: its files cannot be verified",
                          UnverifiedFolderWarning, stacklevel=2)
    return found
