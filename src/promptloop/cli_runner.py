"""Run a CLI command and report its outcome the same way in every entry point.

A known error becomes one `PROG: error: ...` line on stderr and exit code 2 (never a traceback),
Ctrl-C exit code 130, and a result dict is printed as one JSON object (`--json`) or `key: value` lines.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """Print a command's result: one JSON object, or one `key: value` line per entry."""
    if as_json:
        print(json.dumps(result))
        return
    for k, v in result.items():
        print(f"{k}: {json.dumps(v) if isinstance(v, dict | list) else v}")


def error_line(e: BaseException) -> str:
    """The first line of an exception's message (a KeyError's key unquoted), or its class name."""
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return msg.splitlines()[0] if msg.strip() else type(e).__name__


def run_command(prog: str, call: Callable[[], dict[str, Any] | None], errors: tuple[type[BaseException], ...],
                as_json: bool, interrupt_hint: str = "") -> int:
    """Run `call()`, print its result, and return the process exit code (0, 2 or 130)."""
    try:
        result = call()
    except errors as e:
        print(f"{prog}: error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{f' ({interrupt_hint})' if interrupt_hint else ''}", file=sys.stderr)
        return 130
    if result:
        print_result(result, as_json)
    return 0
