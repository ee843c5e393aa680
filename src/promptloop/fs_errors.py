"""The one place that turns filesystem and environment errors into one-line messages.

`describe_os_error(e)` words an OSError by its errno (disk full, read-only, permission, a file where a
folder is wanted, ...) with the path; `os_error_in(e)` finds the OSError behind another library's error (torch.save
raises `RuntimeError: [enforce fail at inline_container.cc:...]` with the OSError as its context, safetensors a
`SafetensorError` ending in "(os error 28)"); `atomic_write(path, write)` writes a file through a temporary sibling
and a rename, so a full disk leaves no partial file; `output_dir(path, name)` creates an output folder up front
and fails with such a line before any work is done; `check_argv(argv)` rejects command-line bytes that are not
UTF-8.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from promptloop.validation import InputError

_WHY = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EEXIST: "exists already",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.EMFILE: "too many open files",
    errno.EIO: "input/output error",
    errno.EFBIG: "file too large (the file-size limit)",
}
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def describe_os_error(e: OSError, doing: str = "", writing: bool | None = None) -> str:
    """One line: what failed, on which path, and why (by errno), e.g. 'cannot write x: no space left on device'.
    `writing`: whether the failed operation wrote (True), read (False) or is not known (None); it picks the hint."""
    why = _WHY.get(e.errno or -1, e.strerror or type(e).__name__)
    path = e.filename if e.filename is not None else ""
    if e.filename2 is not None:
        path = f"{path} -> {e.filename2}"
    hint = ""
    if e.errno in _FULL:
        hint = " (free some space or choose another output folder)"
    elif e.errno == errno.EROFS or (e.errno in (errno.EACCES, errno.EPERM) and writing):
        hint = " (choose a writable output folder)"
    elif e.errno in (errno.EACCES, errno.EPERM):
        hint = " (this user may not read it)" if writing is False else " (check its permissions)"
    head = f"{doing} {path}".strip() if doing else (str(path) or "filesystem")
    return f"{head}: {why}{hint}"


def os_error_in(e: BaseException, path: str | Path | None = None) -> OSError | None:
    """The filesystem error behind `e` (itself, its cause or context chain, or an errno its message names), with
    `path` as its file name when it names none; None when `e` is not a filesystem error."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None:
            if cur.filename is None and path is not None:
                return OSError(cur.errno, cur.strerror or os.strerror(cur.errno), str(path))
            return cur
        cur = cur.__cause__ or cur.__context__
    text = str(e)
    code = None
    if m := re.search(r"\(os error (\d+)\)", text):  # a Rust io::Error (safetensors)
        code = int(m.group(1))
    else:
        code = next((c for c in (*_FULL, errno.EROFS, errno.EACCES) if os.strerror(c) in text), None)
    if code is None:
        return None
    return OSError(code, os.strerror(code), None if path is None else str(path))


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary sibling of `path` (same suffix, so writers that go by it work), then rename
    it onto `path`. On any failure the temporary file is removed (no partial file stays behind) and a filesystem
    error is raised as an OSError naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        found = os_error_in(e) if isinstance(e, Exception) else None
        if found is not None:
            raise OSError(found.errno, found.strerror, str(path)) from e
        raise
    return path


def output_dir(path: str | Path, name: str = "--out") -> Path:
    """Create the output folder `path` (parents too; '~' is the home folder) and check it is writable; InputError
    naming `name` if not (also for an empty path or one with a NUL byte)."""
    if not str(path).strip():
        raise InputError(f"{name}: the path is empty (give a folder, e.g. {name} outputs/run1)")
    if "\x00" in str(path):
        raise InputError(f"{name}: NUL byte in the path {str(path)!r}")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{name} {p}: exists and is a file, not a folder")
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"{name} {p}: {parent} is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"{name} {p}: cannot write there: {describe_os_error(e, writing=True)}") from None
    return p


def check_argv(argv: Sequence[str]) -> None:
    """InputError naming the first argument holding bytes that are not UTF-8 (decoded by Python as surrogates)."""
    for i, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as e:
            bad = arg.encode("utf-8", "surrogateescape")[e.start : e.start + 1]
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise InputError(f"argument {i} ({shown!r}) is not valid UTF-8 (byte {bad!r} at {e.start})") from None
