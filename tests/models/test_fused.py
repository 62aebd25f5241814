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


def _rebuilt_step(model: nn.Module, x: torch.Tensor, which: str, watched: nn.Module) -> tuple[bool, tuple]:
    """``_step`` inside ``rebuilt_activations(which)``, and whether autograd kept ``watched``'s output."""
    refs = []
    handle = watched.register_forward_hook(lambda module, args, out: refs.append(weakref.ref(out)))
    x = x.clone().requires_grad_()
    with rebuilt_activations(which):
        y = model(x)
    handle.remove()
    kept = refs[0]() is not None
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return kept, (y.detach(), x.grad, {name: p.grad for name, p in model.named_parameters()})


def _assert_same_step(step: tuple, expected: tuple) -> None:
    (y, gx, grads), (y_ref, gx_ref, grads_ref) = step, expected
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-6)
    for name, grad in grads_ref.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_outputs_rebuilt_in_backward_are_not_kept_and_give_the_same_gradients() -> None:
    plain, lean = _pair()
    x = torch.randn(3, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    expected = _step(plain, x)
    kept, _ = _rebuilt_step(lean, x, "none", lean[1])
    assert kept, "without rebuilding, the next conv keeps the layer's output"
    lean.zero_grad(set_to_none=True)
    kept, step = _rebuilt_step(lean, x, "all", lean[1])
    assert not kept, "the graph was alive but the layer's output was not kept"
    _assert_same_step(step, expected)


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
    x = torch.randn(2, 4, 5, 5)
    kept, step = _rebuilt_step(lean, x, "products", lean[2])
    assert not kept, "the product is rebuilt for the last conv's backward, not kept"
    _assert_same_step(step, _step(plain, x))
