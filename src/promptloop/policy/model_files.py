"""Checks of a model folder's files and weights before and after transformers loads them: clear one-line
errors (`ModelFileError`) naming the file and the field instead of a traceback from deep inside transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from promptloop.integrity import ModelFileError, read_json_object
from promptloop.model_json import FieldSpec, check_fields, check_sizes, describe_config_error

_TOKEN_ID_FIELDS = ("eos_token_id", "bos_token_id", "pad_token_id", "decoder_start_token_id")


def check_model_files(path: Path) -> None:
    """The JSON files of a local model folder, before transformers reads them: valid JSON objects, sizes in
    config.json >= 0, token ids in generation_config.json integers, tokenizer.json with its `model` and
    `added_tokens`; ModelFileError naming the file and the field."""
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "processor_config.json", "preprocessor_config.json", "special_tokens_map.json", "chat_template.json"):
        f = path / name
        if not f.is_file():
            continue
        data = read_json_object(f)
        if name == "config.json":
            check_sizes(f, data)
        elif name == "generation_config.json":
            for key in _TOKEN_ID_FIELDS:
                ids = data.get(key)
                for v in ids if isinstance(ids, list) else [ids]:
                    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                        raise ModelFileError(f"{f}: field {key!r}: expected a token id (an integer >= 0), a list of "
                                             f"them or null, got {ids!r}")
        elif name == "tokenizer.json":
            spec: dict[str, FieldSpec] = {"model": ((dict,), None), "added_tokens": ((list,), None)}
            missing = [key for key in spec if key not in data]
            if missing:
                raise ModelFileError(f"{f}: field {missing[0]!r} is missing")
            check_fields(f, data, spec)


def load_error(path: Path, files: str, what: str, e: BaseException) -> str:
    """One line for a failure to build `what` from the folder's `files`."""
    from promptloop.cli_runner import error_line

    if "Validation error for field" in str(e):  # transformers' strict config check: the field and the reason
        return describe_config_error(path / files.split(" ")[0], e)
    line = f"missing field {e.args[0]!r}" if isinstance(e, KeyError) and e.args else error_line(e)
    return f"policy {path}: cannot load {what} ({files}): {type(e).__name__}: {line}"


@torch.no_grad()
def check_finite_weights(model: Any, where: str, only: tuple[str, ...] = ()) -> None:
    """ModelFileError naming the first floating-point weight of `model` (whose name contains one of `only`, when
    given) that holds nan or inf: such weights come from a diverged run, and sampling from them fails later."""
    for name, p in model.named_parameters():
        if (only and not any(o in name for o in only)) or not p.is_floating_point() or p.device.type == "meta":
            continue
        bad = int((~torch.isfinite(p)).sum())
        if bad:
            raise ModelFileError(f"{where}: weight {name} holds {bad} nan/inf value(s) of {p.numel()} (saved by a "
                                 "diverged run?); not loaded")
