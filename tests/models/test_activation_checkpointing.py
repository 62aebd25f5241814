"""``checkpoint_backbone``: same outputs, gradients and BatchNorm statistics as a plain step."""

from __future__ import annotations

import copy

import pytest
import torch
from model_helpers import TINY, make_batch

from minetrain.errors import ConfigError
from minetrain.models import RocketPolicy


def _train_step(policy: RocketPolicy) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out, _ = policy.train()(make_batch(2, 4, seed=1))
    loss = out["pi_logits"]["buttons"][..., :5].sum() + out["pi_logits"]["camera"][..., :5].sum()
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in policy.named_parameters() if p.grad is not None}


def _policy(checkpoint_backbone: bool) -> RocketPolicy:
    torch.manual_seed(0)
    return RocketPolicy(**TINY, pooling_dropout=0.0, checkpoint_backbone=checkpoint_backbone)


def test_checkpointed_training_step_matches_plain_one() -> None:
    plain, ckpt = _policy(False), _policy(True)
    assert plain.state_dict().keys() == ckpt.state_dict().keys()
    plain_loss, plain_grads = _train_step(plain)
    ckpt_loss, ckpt_grads = _train_step(ckpt)
    torch.testing.assert_close(ckpt_loss, plain_loss)
    assert ckpt_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # The recomputation in backward must not move the running statistics a second time.
    ckpt_buffers = dict(ckpt.named_buffers())
    for name, buffer in plain.named_buffers():
        torch.testing.assert_close(ckpt_buffers[name], buffer, msg=name)


def test_a_copy_checkpoints_its_own_stages() -> None:
    """EMA keeps a deep copy of the policy; its stages must run the copy's weights."""
    policy = _policy(True)
    twin = copy.deepcopy(policy)
    with torch.no_grad():
        for p in twin.backbone.blocks.parameters():
            p.mul_(0.5)
    batch = make_batch(1, 2)
    policy.eval(), twin.eval()
    mine, theirs = policy(batch)[0]["pi_logits"]["camera"], twin(batch)[0]["pi_logits"]["camera"]
    assert not torch.allclose(mine, theirs)
    plain = _policy(False).eval()
    plain.load_state_dict(twin.state_dict())
    torch.testing.assert_close(plain(batch)[0]["pi_logits"]["camera"], theirs)


def test_backbone_without_stages_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="checkpoint_backbone"):
        RocketPolicy(**{**TINY, "backbone": "resnet18"}, checkpoint_backbone=True)
