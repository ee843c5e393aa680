"""The one place that turns filesystem and environment errors into one-line messages.

`describe_os_error(e)` words an OSError by its errno (disk full, read-only, permission, a file where a
folder is wanted, ...) with the path; `output_dir(path, name)` creates an output folder up front and fails
with such a line before any work is done; `check_argv(argv)` rejects command-line bytes that are not UTF-8.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Sequence
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
}


def describe_os_error(e: OSError, doing: str = "") -> str:
    """One line: what failed, on which path, and why (by errno), e.g. 'cannot write x: no space left on device'."""
    why = _WHY.get(e.errno or -1, e.strerror or type(e).__name__)
    path = e.filename if e.filename is not None else ""
    if e.filename2 is not None:
        path = f"{path} -> {e.filename2}"
    hint = ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = " (free some space or choose another output folder)"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = " (choose a writable output folder)"
    head = f"{doing} {path}".strip() if doing else (str(path) or "filesystem")
    return f"{head}: {why}{hint}"


def output_dir(path: str | Path, name: str = "--out") -> Path:
    """Create the output folder `path` (parents too) and check it is writable; InputError naming `name` if not."""
    p = Path(path)
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
        raise InputError(f"{name} {p}: cannot write there: {describe_os_error(e)}") from None
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
