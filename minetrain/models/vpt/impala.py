"""VPT's image encoder: an IMPALA-style residual CNN over 128x128 frames, then two dense layers.

Module and parameter names follow OpenAI's ``lib/impala_cnn.py`` and ``lib/policy.py``
(``cnn.stacks.0.firstconv.layer`` ...), so published ``.weights`` load unchanged.
"""

from __future__ import annotations

import functools
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

    def forward(self, x: torch.Tensor, keep_output: bool = True, relu: bool = True) -> torch.Tensor:
        """``keep_output=False`` when the caller does not keep the output for its own backward (a
        residual sum): the fused path then keeps a 1-byte ReLU mask instead of the output.
        ``relu=False`` leaves the ReLU to the caller (DownStack applies it after pooling)."""
        if isinstance(self.norm, nn.GroupNorm) and torch.is_grad_enabled():
            norm, conv = self.norm, self.layer
            return GroupNormConvReLU.apply(
                x,
                norm.weight,
                norm.bias,
                conv.weight,
                conv.bias,
                norm.num_groups,
                norm.eps,
                keep_output,
                relu,
            )
        if self.norm is not None:
            x = self.norm(x)
        x = self.layer(x)
        return F.relu_(x) if relu else x


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast runs convolutions in on ``device``, None when autocast is off."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


@functools.cache
def _autocast_upcasts_group_norm(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether autocast to ``dtype`` on ``device`` runs GroupNorm in float32 (CUDA does) rather than in
    its input's dtype (CPU does): asked of autocast itself once, so the fused path matches it."""
    probe = torch.ones(1, 2, 1, 1, device=device, dtype=dtype)
    with torch.autocast(device.type, dtype=dtype), torch.no_grad():
        return F.group_norm(probe, 1).dtype == torch.float32


class GroupNormConvReLU(torch.autograd.Function):
    """GroupNorm, 3x3 convolution, optional ReLU, keeping for backward only the input and the output (or
    the output's ReLU mask) instead of also the normalised tensor and the pre-ReLU output.

    The normalised tensor is a per-sample affine map of the input, so backward rebuilds it in one
    pass from the input and the saved statistics. The input is kept anyway (the previous layer's
    output, or a residual sum the next block needs), so per convolution one full activation less is
    kept, and the ReLU runs in place. Under autocast the ops run in the dtypes autocast gives them
    (GroupNorm in float32 on CUDA, in its input's dtype on CPU; the convolution in the autocast
    dtype), without extra float32 copies. Outputs and gradients equal the unfused modules'.
    """

    @staticmethod
    def forward(
        ctx, x, norm_weight, norm_bias, weight, bias, groups: int, eps: float, keep_output: bool, relu: bool
    ):
        conv_dtype = _autocast_dtype(x.device)
        upcast = conv_dtype is not None and _autocast_upcasts_group_norm(x.device, conv_dtype)
        norm_dtype = torch.float32 if upcast else x.dtype
        n, c = x.shape[:2]
        with torch.autocast(x.device.type, enabled=False):
            z, mean, rstd = torch.native_group_norm(
                x.to(norm_dtype), norm_weight, norm_bias, n, c, x[0, 0].numel(), groups, eps
            )
            w, b = weight, bias
            if conv_dtype is not None:
                z, w = z.to(conv_dtype), weight.to(conv_dtype)
                b = None if bias is None else bias.to(conv_dtype)
            y = F.conv2d(z, w, b, padding=1)
        del z
        kept = (y if keep_output else y > 0) if relu else None
        if relu:
            y = F.relu_(y)
        ctx.save_for_backward(x, norm_weight, norm_bias, weight, mean, rstd, kept)
        ctx.conv_dtype, ctx.norm_dtype = conv_dtype, norm_dtype
        ctx.groups, ctx.eps, ctx.has_bias = groups, eps, bias is not None
        return y

    @staticmethod
    def backward(ctx, grad):
        x, norm_weight, norm_bias, weight, mean, rstd, kept = ctx.saved_tensors
        need_x, need_nw, need_nb, need_w, need_b = ctx.needs_input_grad[:5]
        if kept is None:
            grad_c = grad
        elif kept.dtype == torch.bool:
            grad_c = grad * kept
        else:
            grad_c = torch.ops.aten.threshold_backward(grad, kept, 0)
        del kept
        n, c = x.shape[:2]
        hw = x[0, 0].numel()
        xn = x.to(ctx.norm_dtype)
        if xn.dtype == mean.dtype:
            z = _group_norm_from_stats(xn, norm_weight, norm_bias, mean, rstd, ctx.groups)
        else:
            # A low-precision input: rerunning the (mixed-dtype) kernel is cheaper than the float32
            # copies the rebuild would make, and gives the same rounding.
            z = torch.native_group_norm(xn, norm_weight, norm_bias, n, c, hw, ctx.groups, ctx.eps)[0]
        w = weight
        if ctx.conv_dtype is not None:
            z, w = z.to(ctx.conv_dtype), weight.to(ctx.conv_dtype)
        grad_z, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_c.to(z.dtype),
            z,
            w,
            [weight.shape[0]] if ctx.has_bias else None,
            [1, 1],
            [1, 1],
            [1, 1],
            False,
            [0, 0],
            1,
            [need_x or need_nw or need_nb, need_w, need_b and ctx.has_bias],
        )
        del z, grad_c
        grad_x = grad_nw = grad_nb = None
        if grad_z is not None:
            grad_x, grad_nw, grad_nb = torch.ops.aten.native_group_norm_backward(
                grad_z.to(xn.dtype),
                xn,
                mean,
                rstd,
                norm_weight,
                n,
                c,
                hw,
                ctx.groups,
                [need_x, need_nw, need_nb],
            )
            if grad_x is not None:
                grad_x = grad_x.to(x.dtype)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(weight.dtype)
        return grad_x, grad_nw, grad_nb, grad_w, grad_b, None, None, None, None


def _group_norm_from_stats(x, weight, bias, mean, rstd, groups: int) -> torch.Tensor:
    """GroupNorm's output rebuilt from its input and the (N, groups) statistics it computed, as
    ``x * a + b`` with per-(sample, channel) ``a``, ``b`` (as PyTorch's kernel computes it), in the
    input's memory layout."""
    n, c = x.shape[:2]
    per_channel = (n, c) + (1,) * (x.ndim - 2)
    scale = (rstd.repeat_interleave(c // groups, dim=1) * weight).view(per_channel)
    shift = (
        bias.view(1, c, *per_channel[2:])
        - mean.repeat_interleave(c // groups, dim=1).view(per_channel) * scale
    )
    return torch.addcmul(shift, x, scale)


class ResidualBlock(nn.Module):
    """x + conv1(conv0(x)), shape preserved."""

    def __init__(self, chans: int, scale: float, norm: Mapping[str, Any]) -> None:
        super().__init__()
        root = math.sqrt(scale)
        self.conv0 = FanInConv(chans, chans, root, norm)
        self.conv1 = FanInConv(chans, chans, root, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(self.conv0(x), keep_output=False)


class MaxPoolCompactIndices(torch.autograd.Function):
    """VPT's 3x3 stride-2 max-pool keeping for backward only where the maxima were, as int32
    offsets: not its input (four times the output's size), nor int64 indices. The pool computes
    the indices anyway; backward scatters the gradient to them. Outputs and gradients equal
    ``F.max_pool2d``'s (the same kernel picks the same maxima, also among ties)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y, indices = F.max_pool2d(x, kernel_size=3, stride=2, padding=1, return_indices=True)
        ctx.save_for_backward(indices.to(torch.int32))
        ctx.input_shape, ctx.channels_last = x.shape, x.is_contiguous(memory_format=torch.channels_last)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (indices,) = ctx.saved_tensors
        layout = torch.channels_last if ctx.channels_last else torch.contiguous_format
        # The kernel reads only the input's shape and layout (on CPU these pages are never touched).
        like = torch.empty(ctx.input_shape, dtype=grad.dtype, device=grad.device, memory_format=layout)
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, like, [3, 3], [2, 2], [1, 1], [1, 1], False, indices.long()
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
        # ReLU after the max-pool instead of before (they commute: both monotone), on a quarter of
        # the values; outputs and gradients are unchanged.
        x = F.relu_(MaxPoolCompactIndices.apply(self.firstconv(x, relu=False)))
        if self.n is not None:
            x = self.n(x)
        for block in self.blocks:
            x = block(x)
        return x


class ImpalaCNN(nn.Module):
    """(N, C, H, W) float frames (channels-last in memory: the fast layout) -> (N, 256) features."""

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
        # Flattened in (C, H, W) order, as the published dense weights expect: one copy of the
        # channels-last activations into that order. A stated copy, not ``flatten``'s implicit one: a
        # compiled graph would take a view there (torch's shape rules give GroupNorm an NCHW output).
        return self.dense(x.clone(memory_format=torch.contiguous_format).flatten(1))


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
        # Frames arrive (H, W, C): the convolutions run channels-last from the input on (1.4-1.5x
        # faster than NCHW on CPU at VPT's shapes), their weights too, so the weight gradients come
        # out in the parameters' layout; the state dict's keys and values are unchanged.
        self.cnn.to(memory_format=torch.channels_last)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.channels_last, copy=True)
        x = x.div_(self.ob_scale)
        return self.linear(self.cnn(x))
