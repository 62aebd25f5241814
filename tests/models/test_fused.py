"""The lean BatchNorm+SiLU gives timm's values, gradients and running statistics."""

from __future__ import annotations

import copy
import weakref

import pytest
import torch
from model_helpers import make_batch
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


def _record_lean_calls(model: nn.Module, lean_calls: list) -> list:
    """Hooks noting, per BatchNorm+SiLU call in ``model``, whether its output came from the lean path."""

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        lean_calls.append(type(out.grad_fn).__name__ == "_BatchNormSiLUBackward")

    return [
        module.register_forward_hook(hook)
        for module in model.modules()
        if isinstance(module, BatchNormAct2d) and type(module.act) is nn.SiLU
    ]


def _autocast_step(model: nn.Module, x: torch.Tensor, lean_calls: list) -> tuple:
    """``_step`` under bf16 autocast, with ``_record_lean_calls``."""
    handles = _record_lean_calls(model, lean_calls)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step = _step(model, x)
    for handle in handles:
        handle.remove()
    return step


def test_bf16_autocast_takes_the_lean_path_and_matches_timm() -> None:
    """bf16-mixed is the flagship precision: the memory saving must reach it with timm's numerics."""
    plain, lean = _pair()
    x = torch.randn(3, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        plain_calls: list[bool] = []
        lean_calls: list[bool] = []
        y, gx, grads = _autocast_step(plain, x, plain_calls)
        y_lean, gx_lean, grads_lean = _autocast_step(lean, x, lean_calls)
        assert plain_calls == [False] and lean_calls == [True]
        assert y_lean.dtype == y.dtype == torch.bfloat16
        torch.testing.assert_close(y_lean, y, rtol=1.6e-2, atol=1e-5)
        torch.testing.assert_close(gx_lean, gx, rtol=1.6e-2, atol=1e-4)
        for name, grad in grads.items():
            assert grads_lean[name].dtype == grad.dtype, name
            torch.testing.assert_close(grads_lean[name], grad, rtol=1.6e-2, atol=1e-4, msg=name)
        plain.zero_grad(), lean.zero_grad()
    lean_buffers = dict(lean.named_buffers())
    for name, buffer in plain.named_buffers():
        torch.testing.assert_close(lean_buffers[name], buffer, msg=name)


def test_bf16_autocast_rebuilt_outputs_are_not_kept_and_give_the_same_gradients() -> None:
    plain, lean = _pair()
    x = torch.randn(3, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _step(plain, x)
        kept, (y, gx, grads) = _rebuilt_step(lean, x, "all", lean[1])
    assert not kept, "under autocast too the layer's output is rebuilt, not kept"
    torch.testing.assert_close(y, expected[0], rtol=1.6e-2, atol=1e-5)
    torch.testing.assert_close(gx, expected[1], rtol=1.6e-2, atol=1e-4)
    for name, grad in expected[2].items():
        torch.testing.assert_close(grads[name], grad, rtol=1.6e-2, atol=1e-4, msg=name)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-mixed"])
def test_policy_backbone_takes_the_lean_path(tiny_policy, autocast: bool) -> None:
    """Every BatchNorm+SiLU of the policy's backbone is lean in training, fp32 or bf16-mixed alike."""
    tiny_policy.train()
    lean_calls: list[bool] = []
    handles = _record_lean_calls(tiny_policy.backbone, lean_calls)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out, _ = tiny_policy(make_batch(2, 2))
    for handle in handles:
        handle.remove()
    logits = out["pi_logits"]
    loss = sum(value.float().sum() for value in (logits.values() if isinstance(logits, dict) else [logits]))
    loss.backward()
    assert lean_calls and all(lean_calls), lean_calls
