"""BatchNorm followed by SiLU that keeps one activation for backward instead of two.

In timm's ``BatchNormAct2d`` autograd keeps the BatchNorm input (for BatchNorm's backward) and
the normalised output (for SiLU's backward): two full tensors per layer, about a third of a conv
net's training memory. The normalised output is a per-channel affine map of the input, so here it
is recomputed in backward from the input and the batch statistics (one cheap pass) instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import nn


class _BatchNormSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):
        z, mean, invstd = torch.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps
        )
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps = eps
        return F.silu(z)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        scale = invstd * weight
        z = torch.addcmul((bias - mean * scale).view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1))
        grad_z = torch.ops.aten.silu_backward(grad, z)
        del z
        grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad_z, x, weight, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3])
        )
        return grad_x, grad_w, grad_b, None, None, None, None


def fuse_batchnorm_silu(model: nn.Module) -> None:
    """Make every timm ``BatchNormAct2d`` with SiLU in ``model`` use the lean backward in fp32 training."""
    for module in model.modules():
        if (
            isinstance(module, BatchNormAct2d)
            and type(module.act) is nn.SiLU
            and isinstance(module.drop, nn.Identity)
            and module.affine
            and module.track_running_stats
        ):
            module.forward = functools.partial(_forward, module, type(module).forward)


def _forward(norm: BatchNormAct2d, forward: Callable, x: torch.Tensor) -> torch.Tensor:
    if not (
        norm.training
        and torch.is_grad_enabled()
        and x.dtype == torch.float32
        and norm.weight.dtype == torch.float32
        and not torch.is_autocast_enabled(x.device.type)
    ):
        return forward(norm, x)
    norm.num_batches_tracked.add_(1)
    momentum = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    stats = (norm.running_mean, norm.running_var)
    return _BatchNormSiLU.apply(x, norm.weight, norm.bias, *stats, momentum, norm.eps)
