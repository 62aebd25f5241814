"""VPT's recurrence: residual transformer blocks over time with a key/value memory (Transformer-XL).

Each block attends over the last ``mem_len`` steps (``attention_memory_size - timesteps`` in VPT's
terms) through a clipped causal window and forgets everything before a ``first`` flag; the
attention itself is ``minetrain.models.memory.MemoryAttention``, which ROCKET-1 shares. Names
follow OpenAI's ``lib/util.py`` (``blocks.0.r.orc_block.q_layer`` ...).
"""

from __future__ import annotations

import torch
from torch import nn

from minetrain.models.memory import FanInLinear, MemoryAttention, empty_memory


class TransformerBlock(nn.Module):
    """LayerNorm, memory attention (residual around the normalised input), pointwise MLP."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mem_len: int,
        init_scale: float,
        *,
        residual: bool,
        pointwise: bool,
        pointwise_ratio: int,
        pointwise_activation: bool,
    ) -> None:
        super().__init__()
        self.residual = residual
        scale = init_scale * 2**-0.5 if pointwise and residual else init_scale
        if pointwise:
            self.mlp0 = FanInLinear(dim, dim * pointwise_ratio, 1.0, layer_norm=True, relu=True)
            self.mlp1 = FanInLinear(
                dim * pointwise_ratio, dim, scale, layer_norm=False, relu=pointwise_activation
            )
        else:
            self.mlp0 = self.mlp1 = None
        self.pre_r_ln = nn.LayerNorm(dim)
        self.r = MemoryAttention(dim, heads, mem_len, scale)

    def forward(
        self, x: torch.Tensor, first: torch.Tensor, state: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, state = self.r(self.pre_r_ln(x), first, state)
        if self.mlp0 is not None:
            out = self.mlp1(self.mlp0(x))
            x = x + out if self.residual else out
        return x, state


class RecurrentTransformer(nn.Module):
    """A stack of blocks; memory is a flat list of (mask (B,1,mem_len), keys, values) per block."""

    def __init__(
        self,
        dim: int,
        heads: int,
        num_layers: int,
        mem_len: int,
        *,
        residual: bool = True,
        pointwise: bool = True,
        pointwise_ratio: int = 4,
        pointwise_activation: bool = False,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.mem_len = mem_len
        init_scale = num_layers**-0.5 if residual else 1.0
        self.blocks = nn.ModuleList(
            TransformerBlock(
                dim,
                heads,
                mem_len,
                init_scale,
                residual=residual,
                pointwise=pointwise,
                pointwise_ratio=pointwise_ratio,
                pointwise_activation=pointwise_activation,
            )
            for _ in range(num_layers)
        )

    def memory_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample shapes of the memory tensors, for ``check_memory``."""
        return [(1, self.mem_len), (self.mem_len, self.dim), (self.mem_len, self.dim)] * len(self.blocks)

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """Empty memory: all slots invalid, zero keys and values."""
        return empty_memory(len(self.blocks), batch_size, self.mem_len, self.dim, device, dtype)

    def forward(
        self, x: torch.Tensor, first: torch.Tensor, state: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        new_state: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x, block_state = block(x, first, state[3 * i : 3 * i + 3])
            new_state += block_state
        return x, new_state
