"""BatchNorm folded into the preceding convolution, for inference.

In eval mode a BatchNorm is a fixed per-channel affine map, so a convolution followed by one is a
single convolution with scaled weights and a bias. Streaming inference runs one frame at a time,
where the separate BatchNorm pass costs about a fifth of the step. The folded network is a derived
copy: the module itself (its parameters, buffers and state-dict keys) is never changed, and the copy
is rebuilt whenever the module's weights change.
"""

from __future__ import annotations

import copy

import torch
import torch.fx
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights


class _LeafTracer(torch.fx.Tracer):
    """Keeps convolutions and BatchNorms (timm's BatchNorm+activation included) as single nodes."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, (nn.Conv2d, _BatchNorm)) or super().is_leaf_module(module, qualified_name)


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, norm) names where the norm's only input is the conv's output and nothing else reads it."""
    try:
        graph = _LeafTracer().trace(model)
    except (torch.fx.proxy.TraceError, TypeError, RuntimeError, AttributeError, NotImplementedError):
        return []  # not traceable: inference runs unfolded, only slower
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _BatchNorm) or not node.args:
            continue
        source = node.args[0]
        if (
            isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and type(modules[source.target]) is nn.Conv2d
            and len(source.users) == 1
            and len(node.args) == 1
            and not node.kwargs
        ):
            pairs.append((source.target, node.target))
    return pairs


def _foldable(norm: _BatchNorm) -> bool:
    stats = norm.running_mean is not None and norm.running_var is not None
    return stats and type(norm) in (nn.BatchNorm2d, BatchNormAct2d)


def _after_norm(norm: _BatchNorm) -> nn.Module:
    """What remains of a folded norm: timm's dropout and activation, else nothing."""
    if not isinstance(norm, BatchNormAct2d):
        return nn.Identity()
    return norm.act if isinstance(norm.drop, nn.Identity) else nn.Sequential(norm.drop, norm.act)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm that directly follows a Conv2d folded into it.

    The fold is computed in float64 and stored in the convolution's dtype, so outputs match the
    unfolded network up to float rounding. timm's ``BatchNormAct2d`` keeps its dropout and
    activation.
    """
    folded = copy.deepcopy(model).eval()
    for conv_name, norm_name in _conv_bn_pairs(folded):
        conv, norm = folded.get_submodule(conv_name), folded.get_submodule(norm_name)
        if not _foldable(norm):
            continue
        weight, bias = fuse_conv_bn_weights(
            conv.weight.double(),
            None if conv.bias is None else conv.bias.double(),
            norm.running_mean.double(),
            norm.running_var.double(),
            norm.eps,
            None if norm.weight is None else norm.weight.double(),
            None if norm.bias is None else norm.bias.double(),
        )
        # empty_like keeps the convolution's weight layout (channels-last or not).
        conv.weight = nn.Parameter(torch.empty_like(conv.weight).copy_(weight), requires_grad=False)
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        folded.set_submodule(norm_name, _after_norm(norm))
    return folded.requires_grad_(False)


class FoldedCopy:
    """The folded copy of a module, rebuilt when any of its parameters or buffers has changed.

    A change is seen through each tensor's storage address, dtype and version counter, which every
    in-place update (optimizer steps, ``load_state_dict``) and every move (``.to()``) alters.
    Inference tensors have no version counter; a module holding them gets no folded copy.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._folded: nn.Module | None = None

    def get(self, module: nn.Module) -> nn.Module:
        key = []
        # Straight over each submodule's own tensors: parameters()/buffers() cost twice as much per step.
        for submodule in module.modules():
            for tensor in (*submodule._parameters.values(), *submodule._buffers.values()):
                if tensor is None:
                    continue
                if tensor.is_inference():
                    return module
                key.append((tensor.data_ptr(), tensor.device, tensor.dtype, tensor._version))
        key_tuple = tuple(key)
        if self._folded is None or key_tuple != self._key:
            # Under inference_mode the copy would be made of inference tensors; keep them ordinary.
            with torch.inference_mode(False), torch.no_grad():
                self._folded, self._key = fold_batchnorm(module), key_tuple
        return self._folded

    def clear(self) -> None:
        self._key = self._folded = None
