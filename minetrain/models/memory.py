"""Transformer-XL style recurrence: the VPT residual recurrent blocks ROCKET-1 uses over time.

Each block keeps the keys and values of the last ``mem_len`` steps (plus a validity mask) as its
memory, attends with a learnt relative-position bias and a clipped causal window of ``mem_len``
steps, and forgets everything before a ``first`` flag. Module and parameter names follow the
reference checkpoints (``r.orc_block.q_layer`` ...), so their state dicts load unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Scales of the fan-in initialisation the VPT recipe uses for each projection.
_Q_SCALE, _K_SCALE, _R_SCALE, _BIAS_STD = 0.1, 0.2, 0.1, 0.2
# Number of basis functions of the relative-position bias, per head.
N_BASIS = 10


def fan_in_(layer: nn.Linear, scale: float) -> None:
    """Rescale every output row to L2 norm ``scale`` and zero the bias (unit-variance fan-in init)."""
    with torch.no_grad():
        layer.weight.mul_(scale / layer.weight.norm(dim=1, keepdim=True))
        if layer.bias is not None:
            layer.bias.zero_()


def attention_mask(
    first: torch.Tensor, state_mask: torch.Tensor, mem_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which keys each query may see, and the memory validity to carry to the next call.

    Keys are the ``mem_len`` remembered steps followed by the ``t`` new ones. Query ``i`` sees
    the keys ``0 .. mem_len - 1`` steps back (itself included) that belong to its own episode:
    remembered keys only while no ``first`` flag occurred up to ``i`` and the key is valid.

    first: (B, t) bool; state_mask: (B, mem_len) bool. Returns (B, t, mem_len + t) bool and
    (B, mem_len) bool.
    """
    t = first.shape[1]
    segment = first.long().cumsum(dim=1)
    steps_back = (
        mem_len
        + torch.arange(t, device=first.device)[:, None]
        - torch.arange(t + mem_len, device=first.device)
    )
    in_window = (steps_back >= 0) & (steps_back < mem_len)
    same_episode = torch.cat(
        [
            (segment == 0)[:, :, None] & state_mask[:, None, :],
            segment[:, :, None] == segment[:, None, :],
        ],
        dim=2,
    )
    still_valid = torch.cat([state_mask & (segment[:, -1:] == 0), segment == segment[:, -1:]], dim=1)
    return same_episode & in_window, still_valid[:, -mem_len:]


def empty_memory(
    layers: int, batch_size: int, mem_len: int, dim: int, device: torch.device, dtype: torch.dtype
) -> list[torch.Tensor]:
    """Memory of ``layers`` attention layers before any step: (mask, keys, values) per layer, every
    slot invalid, keys and values zero."""
    state = []
    for _ in range(layers):
        state += [
            torch.zeros(batch_size, 1, mem_len, dtype=torch.bool, device=device),
            torch.zeros(batch_size, mem_len, dim, dtype=dtype, device=device),
            torch.zeros(batch_size, mem_len, dim, dtype=dtype, device=device),
        ]
    return state


class RelativeAttention(nn.Module):
    """Multi-head attention with a learnt bias per (head, time difference), in ``mem_len`` buckets."""

    def __init__(self, dim: int, heads: int, mem_len: int, init_scale: float) -> None:
        super().__init__()
        self.heads = heads
        self.mem_len = mem_len
        self.q_layer = nn.Linear(dim, dim)
        self.k_layer = nn.Linear(dim, dim, bias=False)
        self.v_layer = nn.Linear(dim, dim, bias=False)
        self.proj_layer = nn.Linear(dim, dim)
        self.r_layer = nn.Linear(dim, N_BASIS * heads)
        self.b_nd = nn.Parameter(torch.randn(N_BASIS, mem_len) * _BIAS_STD)
        root = math.sqrt(init_scale)
        for layer, scale in (
            (self.q_layer, _Q_SCALE),
            (self.k_layer, _K_SCALE),
            (self.v_layer, root),
            (self.proj_layer, root),
            (self.r_layer, _R_SCALE),
        ):
            fan_in_(layer, scale)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)

    def position_bias(self, x: torch.Tensor, total: int) -> torch.Tensor:
        """(B, heads, t, total) bias: query i, key j gets sum_n r[i, n] * b_nd[n, i - j + mem_len]."""
        t = x.shape[1]
        per_delta = self._split(self.r_layer(x)) @ self.b_nd
        steps_back = (
            self.mem_len + torch.arange(t, device=x.device)[:, None] - torch.arange(total, device=x.device)
        )
        index = steps_back.clamp(0, self.mem_len - 1).expand(*per_delta.shape[:2], t, total)
        return per_delta.gather(-1, index)

    def forward(
        self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor, allowed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attend from ``x`` (B, t, D) over the remembered and new keys; returns (out, keys, values)."""
        q = self.q_layer(x)
        k = torch.cat([past_k.to(q.dtype), self.k_layer(x)], dim=1)
        v = torch.cat([past_v.to(q.dtype), self.v_layer(x)], dim=1)
        bias = self.position_bias(x, k.shape[1]).to(q.dtype)
        bias = bias.masked_fill(~allowed[:, None], float("-inf"))
        head_dim = q.shape[-1] // self.heads
        out = F.scaled_dot_product_attention(
            self._split(q), self._split(k), self._split(v), attn_mask=bias, scale=1.0 / head_dim
        )
        out = out.transpose(1, 2).reshape(x.shape)
        return self.proj_layer(out), k, v


class MemoryAttention(nn.Module):
    """Residual self-attention over a window plus the carried key/value memory."""

    def __init__(self, dim: int, heads: int, mem_len: int, init_scale: float) -> None:
        super().__init__()
        self.mem_len = mem_len
        self.orc_block = RelativeAttention(dim, heads, mem_len, init_scale)

    def forward(
        self, x: torch.Tensor, first: torch.Tensor, state: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        state_mask, past_k, past_v = state
        allowed, new_mask = attention_mask(first, state_mask[:, 0], self.mem_len)
        out, k, v = self.orc_block(x, past_k, past_v, allowed)
        return x + out, [new_mask[:, None], k[:, -self.mem_len :], v[:, -self.mem_len :]]


class FanInLinear(nn.Module):
    """Optional LayerNorm, then a fan-in initialised linear layer, then an optional ReLU."""

    def __init__(self, dim_in: int, dim_out: int, scale: float, layer_norm: bool, relu: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim_in) if layer_norm else None
        self.layer = nn.Linear(dim_in, dim_out, bias=not layer_norm)
        self.relu = relu
        fan_in_(self.layer, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        x = self.layer(x)
        return F.relu(x) if self.relu else x


class FiLM(nn.Module):
    """Feature-wise modulation of the frame features by the interaction embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 2 * dim)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, 2 * dim, bias=False),
            nn.GELU(),
            nn.Linear(2 * dim, dim, bias=False),
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = self.ff(cond) + cond
        gamma, beta = self.fc(cond).chunk(2, dim=-1)
        return self.norm(x * (1 + gamma) + beta)


class RecurrentBlock(nn.Module):
    """LayerNorm, condition injection, memory attention (residual), pointwise MLP (residual)."""

    def __init__(self, dim: int, heads: int, mem_len: int, init_scale: float, mlp_ratio: int = 4) -> None:
        super().__init__()
        scale = init_scale * 2**-0.5
        self.mlp0 = FanInLinear(dim, dim * mlp_ratio, 1.0, layer_norm=True, relu=True)
        self.mlp1 = FanInLinear(dim * mlp_ratio, dim, scale, layer_norm=False, relu=False)
        self.pre_r_ln = nn.LayerNorm(dim)
        self.r = MemoryAttention(dim, heads, mem_len, scale)
        self.injection = FiLM(dim)

    def forward(
        self, x: torch.Tensor, first: torch.Tensor, state: list[torch.Tensor], cond: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.injection(self.pre_r_ln(x), cond)
        x, state = self.r(x, first, state)
        return x + self.mlp1(self.mlp0(x)), state


class RecurrentBlocks(nn.Module):
    """A stack of recurrent blocks; memory is a flat list of (mask, keys, values) per block."""

    def __init__(self, dim: int, heads: int, num_layers: int, mem_len: int) -> None:
        super().__init__()
        self.dim = dim
        self.mem_len = mem_len
        self.blocks = nn.ModuleList(
            RecurrentBlock(dim, heads, mem_len, num_layers**-0.5) for _ in range(num_layers)
        )

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """Empty memory: all slots invalid, zero keys and values."""
        return empty_memory(len(self.blocks), batch_size, self.mem_len, self.dim, device, dtype)

    def forward(
        self, x: torch.Tensor, first: torch.Tensor, state: list[torch.Tensor], cond: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        new_state: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x, block_state = block(x, first, state[3 * i : 3 * i + 3], cond)
            new_state += block_state
        return x, new_state
