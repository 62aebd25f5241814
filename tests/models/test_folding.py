"""Inference with BatchNorm folded into the convolutions: unfolded outputs, follows weight changes."""

from __future__ import annotations

import torch
from model_helpers import TINY, make_batch
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from minetrain.models import RocketPolicy
from minetrain.models.folding import fold_batchnorm

TOL = 1e-5


def _randomise_norms(model: nn.Module, seed: int) -> None:
    """Running statistics and affine weights away from the identity, so a wrong fold shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.5)


def _policy(seed: int = 0) -> RocketPolicy:
    torch.manual_seed(seed)
    policy = RocketPolicy(**TINY)
    _randomise_norms(policy, seed)
    return policy.eval()


def test_fold_matches_unfolded_and_leaves_the_module_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 6, 3, bias=False),
        BatchNormAct2d(6, act_layer=nn.SiLU),
        nn.Conv2d(6, 5, 1),
        nn.BatchNorm2d(5),
    ).eval()
    _randomise_norms(model, 1)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, _BatchNorm) for m in folded.modules())
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=0, atol=TOL)
    assert model.state_dict().keys() == before.keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_norm_reading_a_shared_conv_output_is_not_folded() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.norm = nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.norm(y) + y

    model = Shared().eval()
    _randomise_norms(model, 2)
    folded = fold_batchnorm(model)
    assert isinstance(folded.norm, nn.BatchNorm2d)
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


def test_policy_inference_matches_the_unfolded_backbone() -> None:
    policy = _policy()
    assert not any(isinstance(m, _BatchNorm) for m in fold_batchnorm(policy.backbone).modules())
    batch = make_batch(2, 4)
    with torch.no_grad():
        folded_out, folded_memory = policy(batch)
    # Grad enabled in eval mode runs the module's own backbone.
    unfolded_out, unfolded_memory = policy(batch)
    for key, value in unfolded_out["pi_logits"].items():
        assert (folded_out["pi_logits"][key] - value.detach()).abs().max() <= TOL
    for ours, ref in zip(folded_memory, unfolded_memory, strict=True):
        assert (ours.float() - ref.float()).abs().max() <= TOL


def test_folded_copy_follows_weight_changes_and_adds_no_state() -> None:
    policy, other = _policy(0), _policy(1)
    keys = set(policy.state_dict())
    batch = make_batch(1, 2)
    with torch.inference_mode():
        policy(batch)
        policy.load_state_dict(other.state_dict())
        loaded, _ = policy(batch)
        expected, _ = other(batch)
    for key, value in expected["pi_logits"].items():
        assert (loaded["pi_logits"][key] - value).abs().max() <= TOL
    assert set(policy.state_dict()) == keys

    # An optimizer step changes the weights in place: the next inference uses the new ones.
    policy.train()
    out, _ = policy(batch)
    out["pi_logits"]["buttons"][..., 0].mean().backward()
    torch.optim.SGD(policy.parameters(), lr=10.0).step()
    policy.eval()
    with torch.no_grad():
        stepped, _ = policy(batch)
    unfolded, _ = policy(batch)
    for key, value in unfolded["pi_logits"].items():
        torch.testing.assert_close(stepped["pi_logits"][key], value.detach(), rtol=TOL, atol=TOL)
