"""The generic swap route: any diffusers pipeline, through its own `encode_prompt` and a denoiser hook.

No per-family knowledge. For a pipeline that is not in the family table (`families.py`):

1. `PromptEncoder` (`pipeline_api.py`) calls the pipeline's *own* `encode_prompt`, found by signature, with the
   options the pipeline call used (`max_sequence_length`, `clip_skip`, `complex_human_instruction`, LoRA scale
   from the attention kwargs, ...; an option the call left out takes `__call__`'s default, which is not
   always `encode_prompt`'s: Sana's complex human instruction is on in one and off in the other), classifier-free
   guidance as the pipeline has it, and the negative prompts in force (through its `negative_prompt` parameter, or by a second call for pipelines that
   encode the negative separately: FLUX-style true CFG). Its outputs are flattened to a list.
2. `ConditioningSwap` encodes the prompts the pipeline started with once (the *originals*, identical to
   what the pipeline computed itself) and the prompts in force after each refinement. A forward
   pre-hook on every denoising module (unet / transformer / controlnet) compares each tensor input
   with the originals -- the whole tensor, either half of a CFG batch `cat([negative, positive])`,
   each element of a list of per-sample tensors, the prefix of a mask the pipeline extended by the
   image tokens, one level into dicts (`added_cond_kwargs`), keyword or positional (Z-Image) -- and
   substitutes the new encoding where it matches. The batch axis of each output (axis 0, but axis 1 for
   HiDream's stacked Llama layers) is the one whose size doubles in a probe encode of the prompts given
   twice; per-sample rows and CFG halves are taken along it. Sequence embeddings, pooled embeddings, attention masks and text ids are all just
   outputs of `encode_prompt`, so all of them are swapped the same way.
3. Variable-length encoders (Gemma, Qwen, GLM, T5 with dynamic length): a new encoding whose length
   differs from the one in force is zero-padded or truncated to it along the one differing axis; masks
   get zeros on the padded positions, so embeddings and mask stay consistent (a one-time warning).
4. After each swap the sampler calls `check_reached` at the next step: every output of `encode_prompt`
   that the swap changed must have been substituted in at least one denoiser call, else a
   RuntimeError (no silent partial swap: e.g. a pipeline that derives a tensor from the embeddings
   before the denoiser sees it). The one exception is an attention mask that no denoiser takes
   (AuraFlow multiplies it into the embeddings inside encode_prompt): a one-time warning says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from promptloop.loop.pipeline_api import Encoded, PromptEncoder, UnsupportedPipelineError, denoisers


# ----------------------------------------------------------------------------------------------------------------------
# matching and substitution
# ----------------------------------------------------------------------------------------------------------------------
def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """a (a denoiser input) equals b (an encode_prompt output) after the pipeline's own dtype/device cast."""
    if a.shape != b.shape:
        return False
    return torch.equal(a, b.to(device=a.device, dtype=a.dtype))


def _is_mask(value: Any) -> bool:
    """A (batch, length) tensor of 0/1 values: an attention mask."""
    return isinstance(value, torch.Tensor) and value.ndim == 2 and bool(((value == 0) | (value == 1)).all())


def _fit(new: torch.Tensor, old: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """`new` zero-padded or truncated to `old`'s shape along the single axis where they differ."""
    if new.shape == old.shape:
        return new, False
    differing = [d for d in range(new.ndim) if new.ndim == old.ndim and new.shape[d] != old.shape[d]]
    if len(differing) != 1:
        raise RuntimeError(
            f"a new prompt encodes to shape {tuple(new.shape)} where the pipeline holds {tuple(old.shape)}; "
            "cannot pad or truncate along one sequence axis"
        )
    axis = differing[0]
    length = old.shape[axis]
    if new.shape[axis] > length:
        return new.narrow(axis, 0, length), True
    pad_shape = list(new.shape)
    pad_shape[axis] = length - new.shape[axis]
    return torch.cat([new, new.new_zeros(pad_shape)], dim=axis), True


class ConditioningSwap:
    """Maps encode_prompt outputs onto denoiser inputs through forward pre-hooks (see module docstring)."""

    def __init__(self, pipe: Any, encoder: PromptEncoder, batch: int) -> None:
        self.pipe = pipe
        self.encoder = encoder
        self.batch = batch
        self.modules = denoisers(pipe)
        if not self.modules:
            raise UnsupportedPipelineError(
                f"{type(pipe).__name__} has no denoiser (unet/transformer) to hook the new conditioning into"
            )
        self.originals: Encoded | None = None
        self.axes: list[int | None] = []  # per output: the axis the batch runs along (None: no batch axis)
        self.pairs: list[tuple[int, Any, Any, int | None]] = []  # (output index, original, replacement, batch axis)
        self.hits: set[int] = set()
        self.pending = False  # a swap happened and has not been checked yet
        self.calls_since_swap = 0
        self.warned_length = False
        self.warned_mask = False
        self._cache: dict[int, tuple[Any, Any]] = {}
        self._handles: list[Any] = []

    # lifecycle ---------------------------------------------------------------------------------------------------------
    def attach(self) -> None:
        for _, module in self.modules:
            self._handles.append(module.register_forward_pre_hook(self._hook, with_kwargs=True))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # swap ---------------------------------------------------------------------------------------------------------------
    def update(
        self,
        initial: tuple[list[str], list[str] | None],
        current: tuple[list[str], list[str] | None],
        changed_rows: Sequence[bool],
    ) -> None:
        """Put `current` (prompts, negatives) in force; `initial` is what the pipeline was called with."""
        if self.originals is None:
            self.originals = self.encoder(*initial)
            self.axes = self._batch_axes(initial)
        new = self.encoder(*current)
        if len(new) != len(self.originals):
            raise RuntimeError(f"encode_prompt returned {len(new)} outputs now and {len(self.originals)} before")
        rows = torch.tensor(list(changed_rows))
        pairs = []
        for index, (old, fresh) in enumerate(zip(self.originals, new, strict=True)):
            old, fresh = self._explicit_mask(index, old, fresh, new)
            replacement = self._replacement(old, fresh, rows, self.axes[index])
            if replacement is not None:
                pairs.append((index, self.originals[index], replacement, self.axes[index]))
        self.pairs = pairs
        self._cache.clear()
        self.hits.clear()
        self.pending = bool(pairs)
        self.calls_since_swap = 0

    def _batch_axes(self, initial: tuple[list[str], list[str] | None]) -> list[int | None]:
        """The batch axis of every output: the one axis whose size doubles when every prompt is given twice.

        Axis 0 for most encoders; HiDream stacks its Llama layers on axis 0 and the batch on axis 1. Outputs
        that keep their shape (text position ids shared by the batch) have none. One extra encode per call."""
        prompts, negatives = initial
        probe = self.encoder(prompts * 2, None if negatives is None else negatives * 2)
        axes: list[int | None] = []
        for old, doubled in zip(self.originals or [], probe, strict=True):
            axis = None
            if isinstance(old, torch.Tensor) and isinstance(doubled, torch.Tensor) and old.ndim == doubled.ndim:
                differing = [d for d in range(old.ndim) if old.shape[d] != doubled.shape[d]]
                if len(differing) == 1 and doubled.shape[differing[0]] == 2 * old.shape[differing[0]]:
                    axis = differing[0]
            axes.append(axis)
        return axes

    def _explicit_mask(self, index: int, old: Any, fresh: Any, new: Encoded) -> tuple[Any, Any]:
        """Pipelines that return no mask when every prompt fills it (Qwen-Image: all ones -> None): the mask a
        None stands for, where the other encoding of the same output has one."""
        if old is None and _is_mask(fresh):
            embeds = self.originals[index - 1] if index > 0 and self.originals else None
            length = embeds.shape[1] if isinstance(embeds, torch.Tensor) and embeds.ndim >= 2 else fresh.shape[1]
            fitted, _ = _fit(fresh, fresh.new_ones(fresh.shape[0], length))
            if bool(fitted.all()):  # the new prompts fill the length in force: still no mask needed
                return None, None
            raise RuntimeError(
                f"{type(self.pipe).__name__}: the prompts in force encode without an attention mask (all of one length) "
                "and a shorter new prompt needs one, but the denoiser gets no mask input to swap; refusing the swap"
            )
        if _is_mask(old) and fresh is None:
            embeds = new[index - 1] if index > 0 else None
            length = embeds.shape[1] if isinstance(embeds, torch.Tensor) and embeds.ndim >= 2 else old.shape[1]
            return old, old.new_ones(old.shape[0], length)
        return old, fresh

    def _replacement(self, old: Any, fresh: Any, rows: torch.Tensor, axis: int | None) -> Any:
        """The value to substitute for `old` (None: nothing changed)."""
        if isinstance(old, torch.Tensor) and isinstance(fresh, torch.Tensor):
            fitted, resized = _fit(fresh.to(device=old.device, dtype=old.dtype), old)
            if resized and not self.warned_length:
                warnings.warn(
                    f"{type(self.pipe).__name__}: a new prompt encodes to {tuple(fresh.shape)} where the pipeline "
                    f"holds {tuple(old.shape)}; zero-padded/truncated to the length in force (masks padded with 0)",
                    UserWarning,
                    stacklevel=4,
                )
                self.warned_length = True
            if axis is not None and old.shape[axis] == self.batch:
                shape = [1] * old.ndim
                shape[axis] = -1
                fitted = torch.where(rows.to(old.device).view(shape), fitted, old)
            return None if torch.equal(fitted, old) else fitted
        if isinstance(old, list) and isinstance(fresh, list) and len(old) == len(fresh):
            merged = [f.to(device=o.device, dtype=o.dtype) if bool(rows[k]) else o for k, (o, f) in enumerate(zip(old, fresh, strict=True))]
            return None if all(m is o or torch.equal(m, o) for m, o in zip(merged, old, strict=True)) else merged
        if old is None and fresh is None:
            return None
        if type(old) is not type(fresh):
            raise RuntimeError(f"encode_prompt returned {type(fresh).__name__} where it returned {type(old).__name__}")
        return None if old == fresh else fresh  # non-tensor outputs (e.g. sequence lengths) are not swapped

    # hook ---------------------------------------------------------------------------------------------------------------
    def _hook(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if not self.pairs:
            return args, kwargs
        self.calls_since_swap += 1
        new_args = tuple(self._substitute(value, depth=0) for value in args)  # Z-Image passes them positionally
        new_kwargs = {key: self._substitute(value, depth=0) for key, value in kwargs.items()}
        return new_args, new_kwargs

    def _substitute(self, value: Any, depth: int) -> Any:
        if isinstance(value, torch.Tensor):
            cached = self._cache.get(id(value))
            if cached is not None and cached[0] is value:
                hit_ids, out = cached[1]
                self.hits.update(hit_ids)
                return out
            hit_ids, out = self._match_tensor(value)
            self._cache[id(value)] = (value, (hit_ids, out))  # holds `value`: its id cannot be reused meanwhile
            self.hits.update(hit_ids)
            return out
        if isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
            return self._match_list(value)
        if isinstance(value, dict) and depth == 0:
            return {k: self._substitute(v, depth=1) for k, v in value.items()}
        return value

    def _match_tensor(self, x: torch.Tensor) -> tuple[set[int], torch.Tensor]:
        hits: set[int] = set()
        for index, old, new, _ in self.pairs:
            if not isinstance(old, torch.Tensor):
                continue
            if _same(x, old):
                return {index}, new.to(device=x.device, dtype=x.dtype)
        # a CFG batch: cat([negative, positive]) along the batch axis (or any stack of two blocks of originals)
        for axis in sorted({a for _, old, _, a in self.pairs if a is not None and isinstance(old, torch.Tensor)}):
            if x.ndim <= axis or x.shape[axis] != 2 * self.batch:
                continue
            halves = list(x.chunk(2, dim=axis))
            for h, half in enumerate(halves):
                for index, old, new, _ in self.pairs:
                    if isinstance(old, torch.Tensor) and _same(half, old):
                        halves[h] = new.to(device=x.device, dtype=x.dtype)
                        hits.add(index)
                        break
            if hits:
                return hits, torch.cat(halves, dim=axis)
        # a mask the pipeline extended by the image tokens (e.g. Chroma): the original is its prefix
        if x.ndim == 2:
            for index, old, new, _ in self.pairs:
                if (
                    isinstance(old, torch.Tensor)
                    and old.ndim == 2
                    and old.shape[0] == x.shape[0]
                    and old.shape[1] < x.shape[1]
                    and _same(x[:, : old.shape[1]], old)
                ):
                    out = x.clone()
                    out[:, : old.shape[1]] = new.to(device=x.device, dtype=x.dtype)
                    return {index}, out
        return hits, x

    def _match_list(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """A list of per-sample tensors (Z-Image: `positives + negatives`): whole original lists, in order, are
        replaced block by block (so equal elements, e.g. two empty negatives, keep their own rows); other
        elements one by one."""
        out: list[torch.Tensor] = []
        i = 0
        while i < len(xs):
            for index, old, new, _ in self.pairs:
                if isinstance(old, list) and old and all(
                    i + k < len(xs) and _same(xs[i + k], o) for k, o in enumerate(old)
                ):
                    out += [n.to(device=x.device, dtype=x.dtype) for n, x in zip(new, xs[i : i + len(old)], strict=True)]
                    self.hits.add(index)
                    i += len(old)
                    break
            else:
                out.append(self._match_element(xs[i]))
                i += 1
        return out

    def _match_element(self, x: torch.Tensor) -> torch.Tensor:
        for index, old, new, _ in self.pairs:
            if isinstance(old, list):
                for o, n in zip(old, new, strict=True):
                    if _same(x, o):
                        self.hits.add(index)
                        return n.to(device=x.device, dtype=x.dtype)
        return x

    # check --------------------------------------------------------------------------------------------------------------
    def check_reached(self) -> None:
        """After the step that followed a swap: every changed output must have reached a denoiser call."""
        if not self.pending or self.calls_since_swap == 0:
            return
        missing = [(index, old) for index, old, _, _ in self.pairs if index not in self.hits]
        self.pending = False
        masks = [(index, old) for index, old in missing if _is_mask(old)]
        if masks and not self.warned_mask:
            warnings.warn(
                f"{type(self.pipe).__name__}: the attention mask from encode_prompt (output {masks[0][0]}) is not an "
                "input of the denoiser; assuming the pipeline folds it into the embeddings (they were swapped)",
                UserWarning,
                stacklevel=2,
            )
            self.warned_mask = True
        missing = [(index, old) for index, old in missing if not _is_mask(old)]
        if missing:
            index, old = missing[0]
            shape = tuple(old.shape) if isinstance(old, torch.Tensor) else type(old).__name__
            raise RuntimeError(
                f"{type(self.pipe).__name__}: output {index} of encode_prompt (shape {shape}) changed with the new "
                f"prompt but reached none of the denoiser's inputs in the next step (the pipeline transforms it "
                f"before the denoiser); refusing a partial conditioning swap"
            )
