"""The lean BatchNorm+SiLU gives timm's values, gradients and running statistics."""

from __future__ import annotations

import copy
import weakref

import torch
from timm.layers import BatchNormAct2d
from timm.models._efficientnet_blocks import SqueezeExcite
from torch import nn

from minetrain.models.fused import fuse_batchnorm_silu, rebuilt_activations


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(4, 6, 3), BatchNormAct2d(6, act_layer=nn.SiLU), nn.Conv2d(6, 2, 1))
    with torch.no_grad():
        plain[1].weight.uniform_(0.5, 1.5)
        plain[1].bias.uniform_(-0.5, 0.5)
    lean = copy.deepcopy(plain)
    fuse_batchnorm_silu(lean)
    return plain, lean


def _step(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    x = x.clone().requires_grad_()
    y = model(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y.detach(), x.grad, {name: p.grad for name, p in model.named_parameters()}


def test_training_step_matches_timm() -> None:
    plain, lean = _pair()
    x = torch.randn(3, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        y, gx, grads = _step(plain, x)
        y_lean, gx_lean, grads_lean = _step(lean, x)
        torch.testing.assert_close(y_lean, y)
        torch.testing.assert_close(gx_lean, gx, rtol=1e-4, atol=1e-6)
        for name, grad in grads.items():
            torch.testing.assert_close(grads_lean[name], grad, rtol=1e-4, atol=1e-6, msg=name)
        plain.zero_grad(), lean.zero_grad()
    lean_buffers = dict(lean.named_buffers())
    for name, buffer in plain.named_buffers():
        torch.testing.assert_close(lean_buffers[name], buffer, msg=name)


def test_eval_and_no_grad_use_timm_forward() -> None:
    plain, lean = _pair()
    x = torch.randn(2, 4, 7, 7)
    plain.eval(), lean.eval()
    torch.testing.assert_close(lean(x), plain(x))
    plain.train(), lean.train()
    with torch.no_grad():
        torch.testing.assert_close(lean(x), plain(x))


def test_outputs_rebuilt_in_backward_are_not_kept_and_give_the_same_gradients() -> None:
    plain, lean = _pair()
    x = torch.randn(3, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    outputs = []
    lean[1].register_forward_hook(lambda module, args, out: outputs.append(weakref.ref(out)))

    y, gx, grads = _step(plain, x)
    kept = lean(x.clone().requires_grad_())
    assert outputs.pop()() is not None, "without rebuilding, the next conv keeps the layer's output"
    del kept
    x_lean = x.clone().requires_grad_()
    with rebuilt_activations("all"):
        y_lean = lean(x_lean)
    assert outputs.pop()() is None, "the graph is alive but the layer's output is not kept"
    (y_lean * torch.linspace(-1, 1, y_lean.numel()).view_as(y_lean)).sum().backward()
    torch.testing.assert_close(y_lean.detach(), y)
    torch.testing.assert_close(x_lean.grad, gx, rtol=1e-4, atol=1e-6)
    for name, param in lean.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_squeeze_excitation_products_are_rebuilt_and_give_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.Conv2d(4, 8, 1),
        BatchNormAct2d(8, act_layer=nn.SiLU),
        SqueezeExcite(8, rd_ratio=0.25),
        nn.Conv2d(8, 3, 1),
    )
    lean = copy.deepcopy(plain)
    fuse_batchnorm_silu(lean)
    products = []
    lean[2].register_forward_hook(lambda module, args, out: products.append(weakref.ref(out)))
    x = torch.randn(2, 4, 5, 5)
    y, gx, grads = _step(plain, x)
    x_lean = x.clone().requires_grad_()
    with rebuilt_activations("products"):
        y_lean = lean(x_lean)
    assert products.pop()() is None, "the product is rebuilt for the last conv's backward, not kept"
    (y_lean * torch.linspace(-1, 1, y_lean.numel()).view_as(y_lean)).sum().backward()
    torch.testing.assert_close(y_lean.detach(), y)
    torch.testing.assert_close(x_lean.grad, gx, rtol=1e-4, atol=1e-6)
    for name, param in lean.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)
