"""`VLMPolicy`: a transformers image-text-to-text model as a PromptLoop refinement policy.

At each refinement step the sampler calls `propose(PolicyInput)`. The policy renders one chat turn per
sample (an `InstructionTemplate` stating the user's query, the current prompt and the progress through
sampling, after the decoded x0 preview when there is one), samples one completion per sample in a batch
(left padding), decodes it and sanitises it (`Sanitizer`: empty, garbage, overlong or invalid output
falls back to the current prompt and is flagged in `PolicyOutput.fallback`).

Log-probabilities (a definition GRPO relies on). For both `propose` and `logprobs`, the log-prob of a
completion token is taken under the *temperature-scaled* distribution the sampler draws from,

    log softmax(mask(logits) / T)[token],

where `mask` sets the suppressed tokens (image, video and special tokens other than end-of-turn) to
-inf and `T` is the sampling temperature (`T = 1` for greedy decoding). Top-p truncation is NOT part of
the definition (as in TRL's GRPO): the sampled token always lies in the nucleus, and a definition that
depended on the nucleus would give -inf ratios once the policy moves. GRPO must therefore call
`logprobs(..., temperature=T)` with the same `T` for the old, new and reference policies; the ratio
new/old is then 1 exactly on the first iteration. The completion includes its end-of-turn token (its
log-prob counts: stopping is part of the action); a completion cut by `max_new_tokens` has none.

Families. Each family's processor is loaded by `promptloop.policy.processors` (stand-ins where the real one needs
torchvision). Images go to the processor one list per sample; when the chat template writes BOS itself (Gemma 3) the
tokenizer is told not to add a second one.

Position ids for the one-pass forward are computed exactly as `generate` computes them (the model's
own `_prepare_position_ids_for_generation`, i.e. cumsum of the attention mask under left padding, or
Qwen's 3-D rope index), so one forward reproduces generation's log-probs (tested to 1e-5 in fp32).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from promptloop.fs_errors import atomic_write
from promptloop.integrity import verify_folder, write_manifest
from promptloop.policy.base import PolicyInput, PolicyOutput
from promptloop.policy.base_ref import base_model_ref
from promptloop.policy.callables import callable_ref
from promptloop.policy.constraint import ConstraintLogitsProcessor, DecodingConstraint, allowed_mask
from promptloop.policy.forced_decode import forced_decode, supports_forced_decoding
from promptloop.policy.instruction import InstructionTemplate
from promptloop.policy.model_files import check_finite_weights
from promptloop.policy.peft_compat import quiet_peft_wrap
from promptloop.policy.sanitize import Sanitizer

POLICY_CONFIG = "promptloop_policy.json"
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
_MEDIA_TOKEN_ATTRS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index",
                      "vision_start_token_id", "vision_end_token_id", "vision_token_id")


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    if isinstance(x, (list, tuple, set)):
        return [int(v) for v in x if v is not None]
    return [int(x)]


class VLMPolicy:
    """A transformers VLM (`AutoModelForImageTextToText`) as a `RefinementPolicy`; see the module docstring.

    Args:
        model: an image-text-to-text model (LLaVA family, Qwen2.5-VL, ...), optionally PEFT-wrapped.
        tokenizer: its tokenizer (its `padding_side` is set to "left").
        processor: a callable `processor(text=[...], images=[...] | None, padding=True, return_tensors="pt")`
            (a transformers processor or `QwenVLComponentProcessor`).
        instruction: the instruction template (default: `InstructionTemplate()`).
        temperature, top_p, max_new_tokens: sampling defaults of `propose` (temperature 0: greedy).
        max_prompt_tokens, prompt_length_fn: the diffusion text encoder's window and a token counter for
            it; longer rewrites fall back (see `Sanitizer`).
        validator: optional callable rejecting invalid prompts (return False or raise).
        constraint: optional `DecodingConstraint` restricting the tokens of a completion, applied alike when
            sampling and when scoring (see `promptloop.policy.constraint`); saved by class reference.
        system_prompt: optional system turn.
        image_size: previews are resized to this square size before the processor (None: as given).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        processor: Any,
        *,
        instruction: InstructionTemplate | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 48,
        max_prompt_tokens: int | None = None,
        prompt_length_fn: Callable[[str], int] | None = None,
        validator: Callable[[str], object] | None = None,
        constraint: DecodingConstraint | None = None,
        system_prompt: str | None = None,
        image_size: int | None = None,
        name_or_path: str | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        inner_tok = getattr(processor, "tokenizer", None)
        if inner_tok is not None:
            inner_tok.padding_side = "left"
        self.processor = processor
        self.instruction = instruction or InstructionTemplate()
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        # generate()'s synced_gpus: None lets transformers decide (True for a sharded model on several processes);
        # False where the sharded weights are gathered for sampling (train.sharding.gathered), so each process
        # decodes alone
        self.synced_gpus: bool | None = None
        # constrained sampling skips the model on forced tokens (`policy.forced_decode`; same samples as
        # transformers' `generate` for a seed); False: always `generate` (a reference for tests)
        self.fast_decoding = True
        self.sanitizer = Sanitizer(max_prompt_tokens, prompt_length_fn, validator)
        self.constraint = constraint
        self.system_prompt = system_prompt
        self.image_size = image_size
        self.name_or_path = name_or_path or getattr(self.base_model.config, "_name_or_path", None) or None
        self.model.eval()
        self.eos_token_ids = self._eos_ids()
        self.pad_token_id = self._pad_id()
        self.suppressed_token_ids = self._suppressed_ids()

    # ------------------------------------------------------------------ configuration

    @property
    def base_model(self) -> Any:
        """The transformers model under any PEFT wrapper."""
        m = self.model
        if hasattr(m, "get_base_model"):
            m = m.get_base_model()
        return m

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, *args: Any, **kwargs: Any) -> VLMPolicy:
        """Move (and/or cast) the model as `torch.nn.Module.to` does: `.to("cuda")`, `.to(torch.bfloat16)`,
        `.to("cuda", torch.bfloat16)`, `.to(device=..., dtype=...)`; returns the policy, as a pipeline's `.to` does.
        A model loaded with a `device_map` spread over devices, or quantized, stays where it is (transformers
        refuses to move it): load those with `device=` / `device_map=` instead."""
        self.model.to(*args, **kwargs)
        return self

    @property
    def max_prompt_tokens(self) -> int | None:
        return self.sanitizer.max_prompt_tokens

    @max_prompt_tokens.setter
    def max_prompt_tokens(self, value: int | None) -> None:
        self.sanitizer.max_prompt_tokens = value

    @property
    def prompt_length_fn(self) -> Callable[[str], int] | None:
        return self.sanitizer.prompt_length_fn

    @prompt_length_fn.setter
    def prompt_length_fn(self, fn: Callable[[str], int] | None) -> None:
        self.sanitizer.prompt_length_fn = fn

    @property
    def validator(self) -> Callable[[str], object] | None:
        return self.sanitizer.validator

    @validator.setter
    def validator(self, fn: Callable[[str], object] | None) -> None:
        self.sanitizer.validator = fn

    def _token_id(self, token: str) -> int | None:
        vocab = self.tokenizer.get_vocab()
        return vocab.get(token)

    def _eos_ids(self) -> list[int]:
        ids = set(_as_list(getattr(self.base_model.generation_config, "eos_token_id", None)))
        ids.update(_as_list(self.tokenizer.eos_token_id))
        for tok in _END_OF_TURN_TOKENS:
            tid = self._token_id(tok)
            if tid is not None:
                ids.add(tid)
        if not ids:
            raise ValueError("the tokenizer and the generation config name no end-of-sequence token")
        return sorted(ids)

    def _pad_id(self) -> int:
        if self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        return self.eos_token_ids[0]

    def _suppressed_ids(self) -> list[int]:
        ids = set(_as_list(getattr(self.tokenizer, "all_special_ids", [])))
        for tid, added in getattr(self.tokenizer, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                ids.add(int(tid))
        for cfg in (self.base_model.config, getattr(self.base_model.config, "text_config", None)):
            for attr in _MEDIA_TOKEN_ATTRS:
                ids.update(_as_list(getattr(cfg, attr, None)))
        for tok in ("<image>", "<video>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"):
            tid = self._token_id(tok)
            if tid is not None:
                ids.add(tid)
        ids -= set(self.eos_token_ids)
        vocab_size = self._vocab_size()
        return sorted(i for i in ids if 0 <= i < vocab_size)

    def _vocab_size(self) -> int:
        emb = self.base_model.get_output_embeddings()
        if emb is not None:
            return int(emb.weight.shape[0])
        cfg = getattr(self.base_model.config, "text_config", self.base_model.config)
        return int(cfg.vocab_size)

    # ------------------------------------------------------------------ encoding

    def render_texts(self, inputs: PolicyInput) -> list[str]:
        """The chat-formatted prompt text of each sample (image placeholder included when previews exist)."""
        has_image = inputs.previews is not None
        texts = []
        owner = self.tokenizer if getattr(self.tokenizer, "chat_template", None) else self.processor
        for i, (q, p) in enumerate(zip(inputs.queries, inputs.current_prompts, strict=True)):
            hist = inputs.history[i] if inputs.history is not None else None
            negative = inputs.current_negative_prompts[i] if inputs.current_negative_prompts is not None else None
            instr = self.instruction.render(q, p, inputs.progress, has_image, hist, negative)
            content: list[dict[str, str]] = [{"type": "image"}] if has_image else []
            content.append({"type": "text", "text": instr})
            messages: list[dict[str, Any]] = []
            if self.system_prompt:
                messages.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
            messages.append({"role": "user", "content": content})
            texts.append(owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return texts

    def _images(self, previews: Sequence[Image.Image]) -> list[Image.Image]:
        out = []
        for im in previews:
            im = im.convert("RGB")
            if self.image_size is not None and im.size != (self.image_size, self.image_size):
                im = im.resize((self.image_size, self.image_size), Image.BICUBIC)
            out.append(im)
        return out

    def encode(self, inputs: PolicyInput) -> dict[str, torch.Tensor]:
        """Left-padded model inputs for a batch (on the model's device; pixel values in its dtype)."""
        n = len(inputs.queries)
        if inputs.previews is not None and len(inputs.previews) != n:
            raise ValueError(f"{len(inputs.previews)} previews for {n} queries")
        texts = self.render_texts(inputs)
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if inputs.previews is not None:  # one list per sample: processors that nest images (Gemma 3) need it
            kwargs["images"] = [[im] for im in self._images(inputs.previews)]
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and all(t.startswith(bos) for t in texts):  # the template wrote BOS: the tokenizer must not add one
            kwargs["add_special_tokens"] = False
        enc = dict(self.processor(**kwargs))
        out: dict[str, torch.Tensor] = {}
        for k, v in enc.items():
            if not isinstance(v, torch.Tensor):
                continue
            v = v.to(self.device)
            if v.is_floating_point():
                v = v.to(self.dtype)
            out[k] = v
        return out

    def _position_ids(self, model_kwargs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Position ids exactly as `generate` builds them for these inputs."""
        fn = getattr(self.base_model, "_prepare_position_ids_for_generation", None)
        if fn is not None:
            return fn(model_kwargs["input_ids"], dict(model_kwargs))
        mask = model_kwargs["attention_mask"]
        return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)

    # ------------------------------------------------------------------ log-probs

    def _token_logprobs(self, logits: torch.Tensor, tokens: torch.Tensor, temperature: float,
                        queries: Sequence[str]) -> torch.Tensor:
        """log softmax(mask(logits) / T) gathered at `tokens`; logits (B, S, V), tokens (B, S). The mask
        holds the suppressed tokens and, with a constraint, the tokens it disallows after each prefix."""
        logits = logits.float()
        if self.suppressed_token_ids:
            sup = torch.tensor(self.suppressed_token_ids, device=logits.device)
            logits = logits.index_fill(-1, sup, float("-inf"))
        if self.constraint is not None:
            allowed = allowed_mask(self.constraint, queries, tokens, logits.shape[-1], self.eos_token_ids,
                                   self.suppressed_token_ids)
            logits = logits.masked_fill(~allowed, float("-inf"))
        t = temperature if temperature > 0 else 1.0
        logp = torch.log_softmax(logits / t, dim=-1)
        return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    def logprobs(
        self,
        inputs: PolicyInput,
        completion_ids: Sequence[torch.Tensor],
        requires_grad: bool = False,
        temperature: float | None = None,
    ) -> list[torch.Tensor]:
        """Per-token log-probs of the given completions, in one forward pass over the batch.

        `temperature` defaults to the policy's sampling temperature (see the module docstring for the
        definition). With `requires_grad` the result carries gradients to the (trainable) parameters.
        """
        temperature = self.temperature if temperature is None else temperature
        lengths = [int(c.numel()) for c in completion_ids]
        if len(lengths) != len(inputs.queries):
            raise ValueError(f"{len(lengths)} completions for {len(inputs.queries)} queries")
        ctx = torch.enable_grad() if requires_grad else torch.no_grad()
        with ctx:
            enc = self.encode(inputs)
            n_comp = max(lengths, default=0)
            if n_comp == 0:
                return [torch.zeros(0, device=self.device) for _ in lengths]
            b, p = enc["input_ids"].shape
            comp = torch.full((b, n_comp), self.pad_token_id, dtype=torch.long, device=self.device)
            comp_mask = torch.zeros((b, n_comp), dtype=enc["attention_mask"].dtype, device=self.device)
            for i, c in enumerate(completion_ids):
                comp[i, : lengths[i]] = c.to(self.device, torch.long).view(-1)
                comp_mask[i, : lengths[i]] = 1
            model_kwargs = dict(enc)
            model_kwargs["input_ids"] = torch.cat([enc["input_ids"], comp], dim=1)
            model_kwargs["attention_mask"] = torch.cat([enc["attention_mask"], comp_mask], dim=1)
            for key in ("mm_token_type_ids", "token_type_ids"):
                if key in enc:
                    model_kwargs[key] = torch.cat([enc[key], torch.zeros_like(comp, dtype=enc[key].dtype)], dim=1)
            model_kwargs["position_ids"] = self._position_ids(model_kwargs)
            out = self.model(**model_kwargs, use_cache=False, logits_to_keep=n_comp + 1)
            logits = out.logits[:, -(n_comp + 1): -1]
            lp = self._token_logprobs(logits, comp, temperature, inputs.queries)
            return [lp[i, : lengths[i]] for i in range(b)]

    # ------------------------------------------------------------------ sampling

    def _generation_config(self, temperature: float, top_p: float, max_new_tokens: int) -> Any:
        from transformers import GenerationConfig

        kw: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_ids,
            "output_logits": True,
            "return_dict_in_generate": True,
            "use_cache": True,
        }
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kw.update(do_sample=False)
        return GenerationConfig(**kw)

    def _logits_processor(self, queries: Sequence[str], prompt_length: int) -> Any:
        from transformers import LogitsProcessor, LogitsProcessorList

        suppressed = self.suppressed_token_ids

        class _Suppress(LogitsProcessor):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                if suppressed:
                    scores = scores.index_fill(-1, torch.tensor(suppressed, device=scores.device), float("-inf"))
                return scores

        processors: list[Any] = [_Suppress()]
        if self.constraint is not None:
            processors.append(ConstraintLogitsProcessor(self.constraint, queries, prompt_length, self.eos_token_ids,
                                                        suppressed))
        return LogitsProcessorList(processors)

    def _forced_decoding(self, enc: dict[str, torch.Tensor]) -> bool:
        """Whether `generate` samples with `forced_decode` (a constraint, a model it supports, no synced
        processes) rather than transformers' `generate`."""
        if not self.fast_decoding or self.constraint is None or self.synced_gpus:
            return False
        if self.synced_gpus is None and torch.distributed.is_available() and torch.distributed.is_initialized():
            return False  # transformers may sync the processes step by step: keep its loop
        return supports_forced_decoding(self.base_model, enc)

    def generate(
        self,
        inputs: PolicyInput,
        temperature: float | None = None,
        top_p: float | None = None,
        max_new_tokens: int | None = None,
        seed: int | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Sample one completion per sample: (token ids incl. end-of-turn, per-token log-probs)."""
        temperature = self.temperature if temperature is None else temperature
        top_p = self.top_p if top_p is None else top_p
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        enc = self.encode(inputs)
        gen_cfg = self._generation_config(temperature, top_p, max_new_tokens)
        devices = [self.device] if self.device.type == "cuda" else []
        rng = torch.random.fork_rng(devices=devices) if seed is not None else contextlib.nullcontext()
        with torch.no_grad(), rng:
            if seed is not None:
                torch.manual_seed(seed)
            if self._forced_decoding(enc):
                return forced_decode(
                    self.model, self.base_model, enc, inputs.queries, self.constraint,  # type: ignore[arg-type]
                    eos_ids=self.eos_token_ids, suppressed_ids=self.suppressed_token_ids,
                    vocab_size=self._vocab_size(), temperature=temperature, top_p=top_p,
                    max_new_tokens=max_new_tokens, position_ids=self._position_ids(enc))
            p = enc["input_ids"].shape[1]
            out = self.model.generate(**enc, generation_config=gen_cfg, synced_gpus=self.synced_gpus,
                                      logits_processor=self._logits_processor(inputs.queries, p))
        seq = out.sequences[:, p:]
        if seq.shape[1] == 0:
            return [seq[i] for i in range(seq.shape[0])], [torch.zeros(0, device=seq.device)] * seq.shape[0]
        logits = torch.stack(list(out.logits), dim=1)[:, : seq.shape[1]]
        lp = self._token_logprobs(logits, seq, temperature, inputs.queries)
        eos = torch.tensor(self.eos_token_ids, device=seq.device)
        ids, lps = [], []
        for i in range(seq.shape[0]):
            hits = torch.isin(seq[i], eos).nonzero()
            n = int(hits[0]) + 1 if len(hits) else seq.shape[1]
            ids.append(seq[i, :n].clone())
            lps.append(lp[i, :n].clone())
        return ids, lps

    def decode(self, completion_ids: torch.Tensor) -> str:
        """Text of a completion (end-of-turn and special tokens dropped)."""
        ids = [int(t) for t in completion_ids if int(t) not in self.eos_token_ids]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def propose(
        self,
        inputs: PolicyInput,
        temperature: float | None = None,
        top_p: float | None = None,
        max_new_tokens: int | None = None,
        seed: int | None = None,
    ) -> PolicyOutput:
        """Sample, decode and sanitise one rewrite per sample (never raises on bad model output)."""
        ids, lps = self.generate(inputs, temperature, top_p, max_new_tokens, seed)
        prompts, fallback, raws, reasons = [], [], [], []
        negatives: list[str | None] = []
        for c, cur in zip(ids, inputs.current_prompts, strict=True):
            try:
                raw = self.decode(c)
            except Exception:  # decoding must never crash the sampler
                raw = ""
            # with a negative note the completion may carry a "Negative: ..." line (sanitize.py's format)
            parsed = self.sanitizer.parse_completion(raw, cur)
            prompts.append(parsed.prompt)
            fallback.append(parsed.fallback)
            raws.append(raw)
            reasons.append(parsed.reason)
            negatives.append(parsed.negative)
        return PolicyOutput(
            prompts=prompts, completion_ids=[c.cpu() for c in ids], logprobs=[x.cpu() for x in lps],
            fallback=fallback, raw_texts=raws, fallback_reasons=reasons,
            negative_prompts=negatives if self.instruction.negative_note else None,
        )

    # ------------------------------------------------------------------ LoRA

    @property
    def has_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    def enable_lora(
        self,
        r: int = 8,
        alpha: int = 16,
        target_modules: Sequence[str] | str | None = None,
        dropout: float = 0.0,
    ) -> VLMPolicy:
        """Attach a LoRA adapter (default: attention projections of the language model only)."""
        from peft import LoraConfig, get_peft_model

        if self.has_lora:
            raise RuntimeError("a LoRA adapter is already attached")
        if target_modules is None:
            target_modules = r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj)"  # text_model: SmolVLM
        cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules if isinstance(target_modules, str)
                         else list(target_modules), lora_dropout=dropout, bias="none")
        with quiet_peft_wrap():
            self.model = get_peft_model(self.model, cfg)
        self.model.eval()
        return self

    def load_adapter(self, path: str | Path, is_trainable: bool = True) -> VLMPolicy:
        """Attach a saved LoRA adapter."""
        from peft import PeftModel

        from promptloop.hub import resolve_policy

        if self.has_lora:
            raise RuntimeError("a LoRA adapter is already attached")
        path = resolve_policy(path)  # an adapter repo on the Hub: its local snapshot, checked like a folder
        if Path(path).is_dir():
            verify_folder(path, "adapter folder")
        with quiet_peft_wrap():
            self.model = PeftModel.from_pretrained(self.model, str(path), is_trainable=is_trainable)
        self.model.eval()
        check_finite_weights(self.model, f"adapter folder {path}", only=("lora_",))
        return self

    @contextlib.contextmanager
    def disabled_adapter(self) -> Iterator[VLMPolicy]:
        """Within the block the policy is the reference policy (LoRA off); a no-op without LoRA."""
        if not self.has_lora:
            yield self
            return
        with self.model.disable_adapter():
            yield self

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ persistence

    def policy_config(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction.to_dict(),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "max_prompt_tokens": self.max_prompt_tokens,
            "system_prompt": self.system_prompt,
            "image_size": self.image_size,
            "base_model": self.name_or_path,
            "base_model_kind": None,
            "validator": callable_ref("validator", self.validator),
            "prompt_length_fn": callable_ref("prompt_length_fn", self.prompt_length_fn),
            "constraint": callable_ref("constraint", type(self.constraint)) if self.constraint is not None else None,
        }

    def save_pretrained(self, path: str | Path, merge_lora: bool = False, dtype: torch.dtype | None = None,
                        state_dict: dict[str, torch.Tensor] | None = None, model_card: str | None = None) -> None:
        """Save (safetensors) the model — or only the LoRA adapter when one is attached — with the
        tokenizer, the processor, `promptloop_policy.json` and a model card (README.md: `model_card`, or a short
        one saying what the folder is and how to load it). `merge_lora` saves a merged full model;
        `dtype` (e.g. torch.float16) casts a copy of the saved weights; `state_dict`: the weights to write instead
        of the model's own (a sharded model's gathered state, see `promptloop.train.sharding`)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model = self.model
        if merge_lora and self.has_lora:
            import copy

            model = copy.deepcopy(self.model).merge_and_unload()
        if dtype is not None:
            import copy

            model = copy.deepcopy(model).to(dtype)
        if state_dict is not None:
            if merge_lora or dtype is not None:
                raise ValueError("save_pretrained: state_dict cannot be combined with merge_lora or dtype")
            model.save_pretrained(path, safe_serialization=True, state_dict=state_dict)
        else:
            model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        if hasattr(self.processor, "save_pretrained"):
            self.processor.save_pretrained(path)
        adapter = self.has_lora and not merge_lora
        if model_card is None:  # instead of PEFT's empty template
            from promptloop.hub import model_card as card

            model_card = card(base_model=self.name_or_path, adapter=adapter)
        text = model_card
        atomic_write(path / "README.md", lambda tmp: tmp.write_text(text))
        self.save_metadata(path, with_base=adapter)

    def save_metadata(self, path: str | Path, with_base: bool | None = None) -> None:
        """Write `promptloop_policy.json` (and, in an adapter folder, the base recorded in `adapter_config.json`)
        and the integrity manifest into `path`, leaving the weights as they are. `with_base` (default: whether the
        folder holds an adapter) records the base model, relative to `path` or by registered name
        (`promptloop.policy.base_ref`), so that the adapter loads from any working folder."""
        path = Path(path)
        is_adapter = (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()
        cfg = self.policy_config()
        base, kind = base_model_ref(self.name_or_path, path) if (is_adapter if with_base is None else with_base) \
            else (None, None)
        cfg["base_model"], cfg["base_model_kind"] = base, kind  # a full model needs no base
        if is_adapter:  # PEFT's own record of the base: the same value, never a path of this machine
            adapter_cfg = json.loads((path / "adapter_config.json").read_text())
            adapter_cfg["base_model_name_or_path"] = base
            text = json.dumps(adapter_cfg, indent=2, sort_keys=True)
            atomic_write(path / "adapter_config.json", lambda tmp: tmp.write_text(text))
        atomic_write(path / POLICY_CONFIG, lambda tmp: tmp.write_text(json.dumps(cfg, indent=2)))
        write_manifest(path)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, commit_message: str | None = None,
                    token: str | None = None, merge_lora: bool = False, model_card: str | None = None) -> str:
        """Save the policy (as `save_pretrained`) and upload it to the Hub model repo `repo_id` (created when
        missing) in one commit; returns the repo URL. `VLMPolicy.from_pretrained(repo_id)` loads it back through the
        same loader as a folder (policy JSON, adapter base, integrity manifest)."""
        import tempfile

        from promptloop.hub import model_card as card
        from promptloop.hub import push_folder

        with tempfile.TemporaryDirectory(prefix="promptloop-push-") as tmp:
            adapter = self.has_lora and not merge_lora
            self.save_pretrained(tmp, merge_lora=merge_lora, model_card=model_card or card(
                base_model=self.name_or_path, adapter=adapter, repo_id=repo_id))
            return push_folder(tmp, repo_id, private=private, commit_message=commit_message, token=token)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        adapter_path: str | Path | None = None,
        trust_remote_code: bool = False,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        is_trainable: bool = False,
        revision: str | None = None,
        attn_implementation: str | None = None,
        device_map: str | dict[str, Any] | None = None,
        quantization_config: Any = None,
        torch_dtype: torch.dtype | str | None = None,
        **policy_kwargs: Any,
    ) -> VLMPolicy:
        """Load a policy saved by `save_pretrained` (full model, or an adapter folder whose
        `promptloop_policy.json` / adapter config names its base) or any hub-format VLM folder; `path` may be a Hub
        id: a PromptLoop policy repo (see `promptloop.hub.resolve_policy`) loads from its local snapshot through the
        same steps as a folder, any other VLM repo through transformers.

        `dtype` defaults to float32 on CPU and to the checkpoint's dtype ("auto") elsewhere (`torch_dtype`, the
        name older transformers and diffusers releases use, is accepted for it); `device`
        defaults to CPU; the weights load straight onto it (``device_map=device``) unless `device_map`
        (e.g. "auto", to spread a large model over GPUs) is given. `revision` (a Hub branch, tag or commit)
        applies to the model and tokenizer; `attn_implementation` ("eager", "sdpa", "flash_attention_2")
        is passed to transformers as is; `quantization_config` (a transformers `BitsAndBytesConfig`) loads the
        model's weights in 8 / 4 bit, for a frozen base under a LoRA adapter (QLoRA); `trust_remote_code` stays
        off unless asked for. Keyword
        arguments override the saved policy settings (`temperature`, ...).
        """
        from promptloop.policy.vlm_loading import load_pretrained

        return load_pretrained(cls, path, adapter_path=adapter_path, trust_remote_code=trust_remote_code, dtype=dtype,
                               device=device, is_trainable=is_trainable, revision=revision,
                               attn_implementation=attn_implementation, device_map=device_map,
                               quantization_config=quantization_config, torch_dtype=torch_dtype, **policy_kwargs)
