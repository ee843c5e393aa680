"""Print how the running environment differs from a pip-compile lock file (used by `make test-latest`).

Usage: python requirements/diff_lock.py requirements/lock.txt
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if match:
            pins[_norm(match.group(1))] = match.group(2)
    return pins


def installed() -> dict[str, str]:
    return {_norm(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: diff_lock.py LOCKFILE", file=sys.stderr)
        return 2
    lock, env = locked(Path(argv[0])), installed()
    rows = [(n, lock.get(n, "-"), env.get(n, "-")) for n in sorted(set(lock) | set(env))]
    rows = [r for r in rows if r[1] != r[2] and r[0] not in ("promptloop", "torch")]
    print(f"{len(rows)} package(s) differ from {argv[0]} (name: lock -> installed):")
    for name, old, new in rows:
        print(f"  {name}: {old} -> {new}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
