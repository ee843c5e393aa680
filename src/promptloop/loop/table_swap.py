"""The table swap route (SD 1.x, SDXL, SD3, FLUX.1; see `families.py`): tensors returned by the callback.

At a refinement the changed prompts are encoded with the family's encoder (each distinct prompt once per
sampler call: a prompt met again, in another row or at a later refinement, reuses its encoding) and returned from
`callback_on_step_end` as the new rows of the loop's conditioning tensors: the positive rows (the last
`batch` rows of cat([negative, positive]) under CFG), and, for a negative-prompt action, the negative
rows (the first `batch`; CFG only). FLUX's pooled projection is not reachable by the callback: a
forward pre-hook on the transformer substitutes it in exactly those calls whose `encoder_hidden_states`
*is* the prompt_embeds tensor the callback returned, and `check_reached` raises at the next step when
that hook did not fire (no silent partial swap).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from promptloop.loop.families import FamilySpec, execution_device


class TableSwap:
    """Conditioning swap for a pipeline in the family table."""

    def __init__(self, pipe: Any, spec: FamilySpec, batch: int, encode_kwargs: dict[str, Any]) -> None:
        self.pipe = pipe
        self.spec = spec
        self.batch = batch
        self.encode_kwargs = encode_kwargs
        self.hooked_values: dict[str, torch.Tensor] = {}  # current positive rows of the hooked tensors, by kwarg
        self.hook_key: torch.Tensor | None = None  # the prompt_embeds object the callback returned
        self.hook_hits = 0  # substitutions since the last callback
        self.seen_calls: list[dict[str, Any]] = []  # denoiser kwargs since the last callback
        self.encoded: dict[str, dict[str, torch.Tensor]] = {}  # prompt -> its one-row encodings, for this call
        self._handle: Any = None

    # lifecycle ---------------------------------------------------------------------------------------------------------
    def attach(self) -> None:
        if self.spec.hooked_tensors:
            denoiser = getattr(self.pipe, self.spec.denoiser)
            self._handle = denoiser.register_forward_pre_hook(self._hook, with_kwargs=True)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def step_done(self) -> None:
        self.seen_calls.clear()  # the denoiser calls of the next step are recorded afresh

    # swap ---------------------------------------------------------------------------------------------------------------
    def swap(
        self,
        kwargs: dict[str, Any],
        prompts: list[str],
        negatives: list[str],
        changed: Sequence[bool],
        negative_changed: Sequence[bool],
    ) -> dict[str, torch.Tensor]:
        """New conditioning tensors for the callback to return (rows re-encoded where their prompt changed)."""
        outputs: dict[str, torch.Tensor] = {}
        device = execution_device(self.pipe)
        if any(negative_changed):
            rows = kwargs[self.spec.callback_tensors[0]].shape[0]
            if self.spec.hooked_tensors or rows != 2 * self.batch:
                raise ValueError(
                    f"{type(self.pipe).__name__}: a negative prompt acts only under classifier-free guidance, and this "
                    "call has none (guidance-distilled model or guidance_scale <= 1)"
                )
            encoded = self._encode_negatives(negatives, device)
            mask = torch.tensor(list(negative_changed))
            for name in self.spec.callback_tensors:
                outputs[name] = _replace_rows(name, kwargs[name], encoded[name], mask, self.batch, negative=True)
        if any(changed):
            encoded = self._encode_changed(prompts, changed, device)
            mask = torch.tensor(list(changed))
            for name in self.spec.callback_tensors:
                current = outputs.get(name, kwargs[name])
                outputs[name] = _replace_rows(name, current, encoded[name], mask, self.batch, negative=False)
            if self.spec.hooked_tensors:
                current_hooked = self._current_hooked_values(kwargs["prompt_embeds"])
                for name in self.spec.hooked_tensors:
                    self.hooked_values[name] = _replace_rows(
                        name, current_hooked[name], encoded[name], mask, self.batch, negative=False
                    )
                self.hook_key = outputs["prompt_embeds"]
                self.hook_hits = 0
        return outputs

    def _encode_changed(self, prompts: list[str], changed: Sequence[bool], device: torch.device) -> dict[str, torch.Tensor]:
        """Full-batch encodings whose changed rows hold their prompt's encoding (the other rows repeat one of them
        and are masked out by `_replace_rows`). Only prompts not yet encoded in this call go through the encoder,
        each once: the family encoders pad to a fixed length, so a prompt's rows do not depend on its batch."""
        wanted = [p for p, c in zip(prompts, changed, strict=True) if c]
        new = list(dict.fromkeys(p for p in wanted if p not in self.encoded))
        if new:
            fresh = self.spec.encode(self.pipe, new, device, self.encode_kwargs)
            for k, prompt in enumerate(new):
                self.encoded[prompt] = {name: value[k:k + 1] for name, value in fresh.items()}
        rows = [self.encoded[p if c else wanted[0]] for p, c in zip(prompts, changed, strict=True)]
        return {name: torch.cat([row[name] for row in rows]) for name in rows[0]}

    def _encode_negatives(self, negatives: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        encoded = self.spec.encode(self.pipe, list(negatives), device, self.encode_kwargs)
        if getattr(self.pipe.config, "force_zeros_for_empty_prompt", False):  # SDXL encodes "" as zeros
            empty = torch.tensor([not n.strip() for n in negatives])
            for name, value in encoded.items():
                zero = empty.to(value.device).view(-1, *([1] * (value.ndim - 1)))
                encoded[name] = torch.where(zero, torch.zeros_like(value), value)
        return encoded

    # FLUX: pooled_projections through a forward pre-hook -------------------------------------------------------------
    def _hook(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        ehs = kwargs.get("encoder_hidden_states")
        if self.hook_key is not None and ehs is self.hook_key:
            kwargs = {**kwargs, **self.hooked_values}
            self.hook_hits += 1
        self.seen_calls.append({"encoder_hidden_states": ehs, **{n: kwargs.get(n) for n in self.spec.hooked_tensors}})
        return args, kwargs

    def _current_hooked_values(self, prompt_embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """The hooked tensors (e.g. FLUX pooled) that went with the current positive prompt_embeds in this step."""
        for call in reversed(self.seen_calls):
            if call["encoder_hidden_states"] is prompt_embeds:
                return {n: call[n] for n in self.spec.hooked_tensors}
        raise RuntimeError(
            f"could not find the denoiser call conditioned on the current prompt_embeds; cannot swap "
            f"{list(self.spec.hooked_tensors)} consistently"
        )

    def check_reached(self) -> None:
        if self.hook_key is not None and self.hook_hits == 0 and self.seen_calls:
            raise RuntimeError(
                f"the {list(self.spec.hooked_tensors)} swap did not reach the denoiser in the last step "
                "(no call received the swapped prompt_embeds); refusing a partial conditioning swap"
            )
        self.hook_hits = 0


def _replace_rows(
    name: str, current: torch.Tensor, encoded: torch.Tensor, rows: torch.Tensor, batch: int, *, negative: bool
) -> torch.Tensor:
    """Replace the positive rows of `current` (the last `batch`: [neg; pos] under CFG), or its negative rows
    (the first `batch`, CFG only), where `rows` is True."""
    if current.shape[0] not in (batch, 2 * batch):
        raise RuntimeError(f"{name}: expected {batch} or {2 * batch} rows in the loop, found {current.shape[0]}")
    if tuple(encoded.shape[1:]) != tuple(current.shape[1:]):
        raise RuntimeError(
            f"{name}: re-encoded prompt has shape {tuple(encoded.shape[1:])} but the loop holds {tuple(current.shape[1:])} "
            "(pass the same max_sequence_length/clip_skip to the sampler as the pipeline uses)"
        )
    mask = rows.to(current.device).view(-1, *([1] * (current.ndim - 1)))
    block = current[:batch] if negative else current[-batch:]
    new = torch.where(mask, encoded.to(device=current.device, dtype=current.dtype), block)
    if current.shape[0] == batch:
        return new
    return torch.cat([new, current[batch:]] if negative else [current[:-batch], new], dim=0)
