"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

# transformers' and diffusers' log handlers are made on first use, on the sys.stderr of that moment: make them now,
# on pytest's stream, not inside a test on its capsys stream (closed after that test: a later warning would print
# '--- Logging error' with a traceback into another test's stderr)
transformers_logging.get_logger("transformers")
diffusers_logging.get_logger("diffusers")


@pytest.fixture
def size_limit() -> Iterator[Any]:
    """`size_limit(n)` caps the size of the files this process writes from then on at n bytes (None: no cap again;
    the cap ends with the test too; RLIMIT_FSIZE): a write past it fails inside torch.save, safetensors or PIL with EFBIG, as a full disk fails
    with ENOSPC."""
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing us

    def arm(nbytes: int | None) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft if nbytes is None else nbytes, hard))

    yield arm
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)
