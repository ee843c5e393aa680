"""A small trainable network on top of the frozen MiniLM that binds words to their neighbours.

Why: all-MiniLM-L6-v2 is a sentence-embedding model; its token states hardly depend on a word's
neighbours. For "a red circle and a blue square" and "a blue circle and a red square" the states at
"circle" and "square" have cosine similarity 0.99-1.00 at every layer: which colour goes with which
shape is only in the tokens' order, and a cross-attention layer reads its keys as a set. The world's
backbone mixed colours up between a scene's objects: in train queries of two or three objects, 28.5 % of
the objects came out only in another queried object's colour (`colour_swap_rate_train` of
`promptloop world backbone-eval`, before the binder).

`TextBinder` adds to each MiniLM token state what a narrow pre-norm transformer computes from the
whole caption: the states are projected down to `width`, given learned positions, passed through
`num_layers` layers (each a local branch, a depthwise convolution over neighbouring tokens since a
colour word and the shape it describes are one or two tokens apart; self-attention over the caption,
e.g. for a relation naming objects described earlier; an MLP) and projected back up. The up-projection
starts at zero, so a new binder is exactly the identity and a backbone trained without one can be
warm-started with it. `BoundTextEncoder` is the frozen MiniLM followed by the binder, in the shape a
diffusers pipeline expects of its text encoder. The binder is saved in a backbone's `text_binder/`
folder (`save_pretrained`, safetensors); MiniLM itself stays in its package.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from transformers.modeling_outputs import BaseModelOutput


class _BinderLayer(nn.Module):
    """Pre-norm residual block: local (depthwise conv over tokens), self-attention, MLP."""

    def __init__(self, width: int, heads: int, kernel: int) -> None:
        super().__init__()
        self.norm0 = nn.LayerNorm(width)
        self.local = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.local_proj = nn.Linear(width, width)
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.local_proj(self.local(self.norm0(h).transpose(1, 2)).transpose(1, 2))
        n = self.norm1(h)
        h = h + self.attn(n, n, n, need_weights=False)[0]
        return h + self.mlp(self.norm2(h))


class TextBinder(ModelMixin, ConfigMixin):
    """Trainable token mixer over frozen text-encoder states; the identity when freshly made."""

    @register_to_config
    def __init__(self, dim: int = 384, width: int = 128, num_layers: int = 2, num_heads: int = 4, kernel: int = 5,
                 max_tokens: int = 48) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, width)
        self.pos = nn.Parameter(torch.randn(max_tokens, width) * 0.02)
        self.layers = nn.ModuleList(_BinderLayer(width, num_heads, kernel) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(width)
        self.up = nn.Linear(width, dim)
        nn.init.zeros_(self.up.weight)  # a new binder adds nothing: exactly the identity
        nn.init.zeros_(self.up.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(B, T, dim) token states -> (B, T, dim), T <= max_tokens."""
        t = states.shape[1]
        if t > self.config.max_tokens:
            raise ValueError(f"{t} tokens exceed the binder's window of {self.config.max_tokens}")
        h = self.down(self.norm_in(states)) + self.pos[:t].to(states.dtype)
        for layer in self.layers:
            h = layer(h)
        return states + self.up(self.norm_out(h))


class BoundTextEncoder(nn.Module):
    """The frozen text encoder followed by a `TextBinder`: a drop-in text encoder for diffusers pipelines.

    Exposes what `StableDiffusionPipeline.encode_prompt` reads: `config` (the encoder's, with
    `use_attention_mask`), `dtype`, and a forward returning the bound states first."""

    def __init__(self, encoder: nn.Module, binder: TextBinder) -> None:
        super().__init__()
        self.encoder = encoder
        self.binder = binder

    @property
    def config(self) -> Any:
        return self.encoder.config

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kwargs: Any) -> BaseModelOutput:
        states = self.encoder(input_ids, attention_mask=attention_mask).last_hidden_state
        return BaseModelOutput(last_hidden_state=self.binder(states.to(self.binder.dtype)).to(states.dtype))
