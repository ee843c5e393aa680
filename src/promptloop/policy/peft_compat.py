"""A shim for one upstream warning that PromptLoop's own calls cannot avoid.

peft 0.21's `PeftModel.__init__` reads `model.is_gradient_checkpointing`, which transformers 5.2x deprecates in
favour of `is_activation_checkpointing` (a FutureWarning on every LoRA wrap). The call is correct on our side; the
read is peft's. `quiet_peft_wrap()` ignores exactly that FutureWarning, only while PEFT wraps a model.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_peft_wrap() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield
