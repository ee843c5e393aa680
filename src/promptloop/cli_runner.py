"""Run a CLI command and report its outcome the same way in every entry point.

A known error becomes one `PROG: error: ...` line on stderr and exit code 2 (never a traceback),
Ctrl-C exit code 130, and a result dict is printed as one JSON object (`--json`; then the only thing on stdout,
whatever the command printed meanwhile goes to stderr, and nan / inf print as null) or `key: value` lines.
Filesystem and environment errors (any OSError: disk full, read-only folder, ..., also when another library
wraps it, see `fs_errors.os_error_in`) are worded by `fs_errors.describe_os_error`. The known error classes are
looked up only after a failure, among the modules already imported (`loaded_errors`): a class whose module was
never imported cannot have been raised, so reporting an error needs no heavy import.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

ErrorsLike = tuple[type[BaseException], ...] | Callable[[], tuple[type[BaseException], ...]]


def json_safe(value: Any) -> Any:
    """`value` with every nan / inf float (at any depth) replaced by None, so that it prints as valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """Print a command's result: one JSON object (non-finite numbers as null), or one `key: value` line per
    entry."""
    if as_json:
        print(json.dumps(json_safe(result), allow_nan=False))
        return
    for k, v in result.items():
        print(f"{k}: {json.dumps(v) if isinstance(v, dict | list) else v}")


def error_line(e: BaseException) -> str:
    """The first line of an exception's message (a KeyError's key unquoted), or its class name."""
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return msg.splitlines()[0] if msg.strip() else type(e).__name__


@contextlib.contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Within the block, the warnings promptloop itself issues (e.g. `integrity.UnverifiedFolderWarning`) print as
    one line `PROG: warning: ...` on stderr instead of Python's two lines with the source."""
    original = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if category.__module__.startswith("promptloop."):
            print(f"{prog}: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def loaded_errors(names: Sequence[tuple[str, str]]) -> tuple[type[BaseException], ...]:
    """The exception classes `(module, class name)` of the modules imported so far."""
    out = []
    for module, name in names:
        mod = sys.modules.get(module)
        if mod is not None and isinstance(cls := getattr(mod, name, None), type):
            out.append(cls)
    return tuple(out)


def run_command(prog: str, call: Callable[[], dict[str, Any] | None], errors: ErrorsLike,
                as_json: bool, interrupt_hint: str = "") -> int:
    """Run `call()`, print its result, and return the process exit code (0, 2 or 130).

    `errors`: the exception classes reported as one line, or a function returning them (called on failure)."""
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(one_line_warnings(prog))
            if as_json:  # the JSON object is the only thing on stdout: anything else printed meanwhile goes to stderr
                stack.enter_context(contextlib.redirect_stdout(sys.stderr))
            result = call()
    except Exception as e:
        from promptloop.fs_errors import describe_os_error, os_error_in

        if isinstance(e, OSError) and e.errno is not None:
            line = describe_os_error(e)
        elif isinstance(e, OSError) or isinstance(e, errors() if callable(errors) else errors):
            line = error_line(e)
        elif (found := os_error_in(e)) is not None:  # a library's wrapper of a write error (torch.save, safetensors)
            line = describe_os_error(found)
        else:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{f' ({interrupt_hint})' if interrupt_hint else ''}", file=sys.stderr)
        return 130
    if result:
        print_result(result, as_json)
    return 0
