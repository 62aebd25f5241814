"""BatchNorm followed by SiLU that keeps one activation for backward instead of two or three.

In timm's ``BatchNormAct2d`` autograd keeps the BatchNorm input (for BatchNorm's backward) and
the normalised output (for SiLU's backward): two full tensors per layer, about a third of a conv
net's training memory. The normalised output is a per-channel affine map of the input, so here it
is recomputed in backward from the input and the batch statistics (one cheap pass) instead.

The layer's output is a third full tensor, which the next layer keeps for its own backward.
Inside ``rebuilt_activations`` autograd keeps a recipe instead (the layer's saved input
and statistics) when that next layer is a convolution, and the output is rebuilt the moment the
convolution's backward needs it; the normalised tensor computed for that is kept until this
layer's own backward, which runs soon after and needs it too. A rebuild costs one SiLU pass.

Squeeze-excitation multiplies such an output by a per-channel gate and keeps both for backward;
its product, the next convolution's input, is another full tensor. There the output is kept
(the product's backward needs it) and the product is rebuilt instead, by one multiplication.
Per EfficientNet block, two of the five full-size tensors autograd would keep are rebuilt.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import nn


class _BatchNormSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):
        z, mean, invstd = torch.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps
        )
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps = eps
        # Set when the output was rebuilt for a later layer's backward; this backward then reuses it.
        ctx.normalised = None
        return F.silu(z)

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        z = _normalised(x, weight, bias, mean, invstd) if ctx.normalised is None else ctx.normalised
        ctx.normalised = None
        grad_z = torch.ops.aten.silu_backward(grad, z)
        del z
        grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad_z, x, weight, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3])
        )
        return grad_x, grad_w, grad_b, None, None, None, None


def _normalised(x, weight, bias, mean, invstd):
    """BatchNorm's output again, in fp32 like its kernel and rounded to ``x``'s dtype like its output."""
    scale = invstd * weight
    return torch.addcmul((bias - mean * scale).view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1)).to(x.dtype)


class _Rebuild:
    """A BatchNorm+SiLU output autograd did not keep: its node's saved input and statistics."""

    __slots__ = ("node",)

    def __init__(self, node: Any) -> None:
        self.node = node

    def __call__(self) -> torch.Tensor:
        node = self.node
        if node.normalised is None:
            node.normalised = _normalised(*node.saved_tensors)
        return F.silu(node.normalised)


class _RebuildProduct:
    """A squeeze-excitation product autograd did not keep: the factors its own node keeps."""

    __slots__ = ("node",)

    def __init__(self, node: Any) -> None:
        self.node = node

    def __call__(self) -> torch.Tensor:
        return self.node._saved_self * self.node._saved_other


_Recipe = _Rebuild | _RebuildProduct

REBUILD = ("none", "products", "all")

# id(output) -> (weak reference to the output, its recipe), while rebuilding is on.
_outputs: contextvars.ContextVar[dict[int, tuple[weakref.ref, _Recipe]] | None] = contextvars.ContextVar(
    "rebuilt_outputs", default=None
)
_rebuild_silu = contextvars.ContextVar("rebuild_silu_outputs", default=False)


@contextlib.contextmanager
def rebuilt_activations(which: str = "all") -> Iterator[None]:
    """Outputs made inside are rebuilt in backward rather than kept: ``which`` of ``REBUILD``.

    ``products``: squeeze-excitation products (one multiplication each); ``all``: also the lean
    BatchNorm+SiLU outputs that convolutions keep (one SiLU pass each); ``none``: nothing.
    """
    if which == "none":
        yield
        return
    outputs: dict[int, tuple[weakref.ref, _Recipe]] = {}

    def pack(tensor: torch.Tensor) -> Any:
        entry = outputs.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else tensor

    def unpack(packed: Any) -> torch.Tensor:
        return packed() if isinstance(packed, _Recipe) else packed

    token, silu_token = _outputs.set(outputs), _rebuild_silu.set(which == "all")
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield
    finally:
        _outputs.reset(token)
        _rebuild_silu.reset(silu_token)


def _register(output: torch.Tensor, recipe: type[_Recipe]) -> torch.Tensor:
    outputs = _outputs.get()
    if outputs is not None and (recipe is _RebuildProduct or _rebuild_silu.get()):
        key = id(output)
        outputs[key] = (weakref.ref(output, lambda _: outputs.pop(key, None)), recipe(output.grad_fn))
    return output


def _forward_squeeze_excite(module: SqueezeExcite, forward: Callable, x: torch.Tensor) -> torch.Tensor:
    outputs = _outputs.get()
    if outputs is None:
        return forward(module, x)
    # The product keeps x for its backward anyway: x is kept, the product is rebuilt.
    outputs.pop(id(x), None)
    out = forward(module, x)
    if type(out.grad_fn).__name__ == "MulBackward0" and _keeps_both_factors(out.grad_fn):
        _register(out, _RebuildProduct)
    return out


def _keeps_both_factors(node: Any) -> bool:
    """A product keeps each factor only if the other needs a gradient (e.g. not with frozen layers)."""
    try:
        _ = node._saved_self, node._saved_other
    except RuntimeError:
        return False
    return True


def fuse_batchnorm_silu(model: nn.Module) -> None:
    """Make every timm ``BatchNormAct2d`` with SiLU in ``model`` use the lean backward in training.

    That is fp32 training and bf16 autocast (``bf16-mixed``), where the convolutions hand BatchNorm
    bf16 inputs and it keeps fp32 parameters and statistics, as timm's layer does under autocast.

    Also lets its squeeze-excitation products be rebuilt (``rebuilt_activations``).
    """
    for module in model.modules():
        if (
            isinstance(module, BatchNormAct2d)
            and type(module.act) is nn.SiLU
            and isinstance(module.drop, nn.Identity)
            and module.affine
            and module.track_running_stats
        ):
            module.forward = functools.partial(_forward, module, type(module).forward)
        elif type(module) is SqueezeExcite:
            module.forward = functools.partial(_forward_squeeze_excite, module, type(module).forward)


def _forward(norm: BatchNormAct2d, forward: Callable, x: torch.Tensor) -> torch.Tensor:
    # Autocast leaves batch_norm and silu alone, so under it the ops here are the ones timm calls.
    if not (
        norm.training
        and torch.is_grad_enabled()
        and x.dtype in (torch.float32, torch.bfloat16)
        and norm.weight.dtype == torch.float32
    ):
        return forward(norm, x)
    norm.num_batches_tracked.add_(1)
    momentum = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
    stats = (norm.running_mean, norm.running_var)
    return _register(_BatchNormSiLU.apply(x, norm.weight, norm.bias, *stats, momentum, norm.eps), _Rebuild)
