"""VPT's image encoder: an IMPALA-style residual CNN over 128x128 frames, then two dense layers.

Module and parameter names follow OpenAI's ``lib/impala_cnn.py`` and ``lib/policy.py``
(``cnn.stacks.0.firstconv.layer`` ...), so published ``.weights`` load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from minetrain.errors import ConfigError
from minetrain.models.memory import FanInLinear

# Width of the CNN's dense output, fixed in VPT.
CNN_OUTSIZE = 256
# Residual blocks per down-sampling stack, fixed in VPT.
BLOCKS_PER_STACK = 2


def conv_norm(kind: Mapping[str, Any], channels: int) -> nn.Module | None:
    """The normalisation VPT puts *before* a convolution: GroupNorm, BatchNorm or none."""
    if kind.get("batch_norm"):
        return nn.BatchNorm2d(channels, **kind.get("batch_norm_kwargs", {}))
    if kind.get("group_norm_groups") is not None:
        return nn.GroupNorm(kind["group_norm_groups"], channels)
    if kind.get("layer_norm"):
        raise ConfigError(
            "VPT init_norm_kwargs layer_norm=True applies to dense layers only, not convolutions"
        )
    return None


def dense_layer_norm(kind: Mapping[str, Any]) -> bool:
    """VPT replaces a convolution's GroupNorm/BatchNorm by a LayerNorm in dense layers."""
    return bool(kind.get("group_norm_groups") is not None or kind.get("batch_norm") or kind.get("layer_norm"))


class FanInConv(nn.Module):
    """Optional norm, then a fan-in initialised 3x3 convolution (bias only without norm), then ReLU."""

    def __init__(self, inchan: int, outchan: int, scale: float, norm: Mapping[str, Any]) -> None:
        super().__init__()
        self.norm = conv_norm(norm, inchan)
        self.layer = nn.Conv2d(inchan, outchan, kernel_size=3, padding=1, bias=self.norm is None)
        with torch.no_grad():
            weight = self.layer.weight
            weight.mul_(scale / torch.linalg.vector_norm(weight, dim=(1, 2, 3), keepdim=True))
            if self.layer.bias is not None:
                self.layer.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(self.layer(x))


class ResidualBlock(nn.Module):
    """x + conv1(conv0(x)), shape preserved."""

    def __init__(self, chans: int, scale: float, norm: Mapping[str, Any]) -> None:
        super().__init__()
        root = math.sqrt(scale)
        self.conv0 = FanInConv(chans, chans, root, norm)
        self.conv1 = FanInConv(chans, chans, root, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(self.conv0(x))


class MaxPoolRecomputingIndices(torch.autograd.Function):
    """VPT's 3x3 stride-2 max-pool, whose backward finds the maxima again in its input instead of
    keeping them as int64 indices (four times the size of the bf16 output, about a sixth of the
    CNN's saved activations). The input costs nothing to keep: the ReLU before the pool keeps it.
    Outputs and gradients are exactly those of ``F.max_pool2d``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        _, indices = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, return_indices=True)
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [3, 3], [2, 2], [1, 1], [1, 1], False, indices
        )


class DownStack(nn.Module):
    """Convolution, 3x3 max-pool with stride 2, optional GroupNorm, residual blocks."""

    def __init__(
        self,
        inchan: int,
        outchan: int,
        scale: float,
        norm: Mapping[str, Any],
        first_conv_norm: bool,
        post_pool_groups: int | None,
    ) -> None:
        super().__init__()
        self.firstconv = FanInConv(inchan, outchan, 1.0, norm if first_conv_norm else {})
        self.n = nn.GroupNorm(post_pool_groups, outchan) if post_pool_groups is not None else None
        block_scale = scale / math.sqrt(BLOCKS_PER_STACK)
        self.blocks = nn.ModuleList(
            ResidualBlock(outchan, block_scale, norm) for _ in range(BLOCKS_PER_STACK)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = MaxPoolRecomputingIndices.apply(self.firstconv(x))
        if self.n is not None:
            x = self.n(x)
        for block in self.blocks:
            x = block(x)
        return x


class ImpalaCNN(nn.Module):
    """(N, C, H, W) float frames -> (N, 256) features."""

    def __init__(
        self,
        img_shape: Sequence[int],
        chans: Sequence[int],
        norm: Mapping[str, Any],
        first_conv_norm: bool,
        post_pool_groups: int | None,
    ) -> None:
        super().__init__()
        h, w, c = img_shape
        self.stacks = nn.ModuleList()
        for i, outchan in enumerate(chans):
            self.stacks.append(
                DownStack(
                    c,
                    outchan,
                    math.sqrt(len(chans)),
                    norm,
                    first_conv_norm if i == 0 else True,
                    post_pool_groups,
                )
            )
            c, h, w = outchan, (h + 1) // 2, (w + 1) // 2
        self.dense = FanInLinear(c * h * w, CNN_OUTSIZE, 1.4, layer_norm=dense_layer_norm(norm), relu=True)
        # Training setting: recompute each stack's activations in backward instead of keeping them.
        self.checkpoint_stacks = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recompute = self.checkpoint_stacks and torch.is_grad_enabled()
        for stack in self.stacks:
            x = checkpoint(stack, x, use_reentrant=False) if recompute else stack(x)
        # Flattened in (C, H, W) order, as the published dense weights expect.
        return self.dense(x.flatten(1))


class ImageEncoder(nn.Module):
    """uint8 frames (N, H, W, 3) -> (N, hidsize): scale to [0, 1], ImpalaCNN, dense layer."""

    def __init__(
        self,
        img_shape: Sequence[int],
        chans: Sequence[int],
        hidsize: int,
        norm: Mapping[str, Any],
        first_conv_norm: bool,
        post_pool_groups: int | None,
        scale_input_img: bool,
    ) -> None:
        super().__init__()
        self.ob_scale = 255.0 if scale_input_img else 1.0
        self.cnn = ImpalaCNN(img_shape, chans, norm, first_conv_norm, post_pool_groups)
        self.linear = FanInLinear(CNN_OUTSIZE, hidsize, 1.0, layer_norm=dense_layer_norm(norm), relu=True)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float() / self.ob_scale
        return self.linear(self.cnn(x))
