"""Bad input fails with one clear line; inference returns env-format actions; DDP-friendly gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import TINY, make_batch

from minetrain.errors import ConfigError
from minetrain.models import RocketPolicy


def _error(policy: RocketPolicy, batch: dict, memory=None) -> str:
    with pytest.raises(ConfigError) as exc:
        policy(batch, memory)
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_wrong_image_shape_or_dtype(tiny_policy):
    batch = make_batch(1, 2)
    assert "expected (B,T,H,W,3) uint8" in _error(tiny_policy, batch | {"image": batch["image"].float()})
    assert "expected (B,T,H,W,3) uint8" in _error(tiny_policy, batch | {"image": batch["image"][0]})
    chw = batch["image"].permute(0, 1, 4, 2, 3).contiguous()
    assert "(1, 2, 3, 32, 32)" in _error(tiny_policy, batch | {"image": chw})


def test_mask_size_mismatch(tiny_policy):
    batch = make_batch(1, 2)
    batch["segment"]["obj_mask"] = batch["segment"]["obj_mask"][..., :16]
    assert "expected (1, 2, 32, 32)" in _error(tiny_policy, batch)


def test_obj_id_out_of_range_or_wrong_shape(tiny_policy):
    batch = make_batch(1, 2)
    batch["segment"]["obj_id"] = torch.tensor([[0, 9]])
    assert "expected interaction types in [-1, 8]" in _error(tiny_policy, batch)
    batch["segment"]["obj_id"] = torch.tensor([0, 1])
    assert "expected (1, 2) integers" in _error(tiny_policy, batch)


def test_memory_from_another_batch_size_or_model(tiny_policy):
    batch = make_batch(2, 2)
    message = _error(tiny_policy, batch, tiny_policy.initial_state(3))
    assert "batch size 3 but the batch has 2" in message and "initial_state(2)" in message
    other = RocketPolicy(**{**TINY, "mem_len": 4}).initial_state(2)
    assert "expected (2, 1, 8)" in _error(tiny_policy, batch, other)
    assert "expected 6 (3 per recurrent layer)" in _error(tiny_policy, batch, other[:3])


def test_invalid_configuration():
    with pytest.raises(ConfigError, match="not divisible"):
        RocketPolicy(**{**TINY, "num_heads": 3})
    with pytest.raises(ConfigError, match="not a timm model"):
        RocketPolicy(**{**TINY, "backbone": "no_such_net"})
    with pytest.raises(ConfigError, match="rebuild_activations='some'; expected one of none, products, all"):
        RocketPolicy(**TINY, rebuild_activations="some")


def test_missing_segment_means_unconditioned(tiny_policy):
    batch = make_batch(1, 3)
    batch["segment"]["obj_id"].fill_(-1)
    batch["segment"]["obj_mask"].zero_()
    with torch.no_grad():
        with_segment, _ = tiny_policy(batch)
        without, _ = tiny_policy({"image": batch["image"]})
    assert torch.equal(with_segment["pi_logits"]["camera"], without["pi_logits"]["camera"])


def test_outputs_are_log_probabilities(tiny_policy):
    with torch.no_grad():
        out, _ = tiny_policy(make_batch(2, 3))
    assert out["pi_logits"]["buttons"].shape == (2, 3, 8641)
    assert out["pi_logits"]["camera"].shape == (2, 3, 121)
    assert "vpred" not in out
    total = out["pi_logits"]["buttons"].logsumexp(-1)
    assert torch.allclose(total, torch.zeros_like(total), atol=1e-5)


def test_get_action_for_one_and_many_environments(tiny_policy):
    frame = np.zeros((32, 32, 3), dtype=np.uint8)
    action, memory = tiny_policy.get_action({"image": frame}, None)
    assert np.shape(action["camera"]) == (2,) and np.shape(action["attack"]) == ()
    assert memory[1].shape[0] == 1
    obs = {
        "image": np.zeros((3, 32, 32, 3), dtype=np.uint8),
        "segment": {"obj_id": np.array([-1, 2, 5]), "obj_mask": np.ones((3, 32, 32), dtype=np.uint8)},
        "first": np.array([True, False, True]),
    }
    a1, memory = tiny_policy.get_action(obs, None, deterministic=True)
    a2, _ = tiny_policy.get_action(obs, None, deterministic=True)
    assert a1["camera"].shape == (3, 2) and a1["forward"].shape == (3,)
    assert all(np.array_equal(a1[k], a2[k]) for k in a1)
    a3, memory = tiny_policy.get_action(obs, memory)
    assert set(a3) == set(a1) and memory[0].shape == (3, 1, TINY["mem_len"])


def test_every_trainable_parameter_gets_a_gradient():
    """With the value head off nothing is unused, so DDP needs no find_unused_parameters."""
    torch.manual_seed(0)
    policy = RocketPolicy(**TINY).train()
    out, _ = policy(make_batch(2, 3))
    loss = sum(-lp[..., 0].mean() for lp in out["pi_logits"].values())
    loss.backward()
    unused = [n for n, p in policy.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


@pytest.mark.parametrize("mode", ["autocast", "bf16-weights"])
def test_runs_in_bfloat16(mode):
    """The seed trains with precision='bf16' (autocast); bf16 weights must work as well."""
    torch.manual_seed(0)
    policy = RocketPolicy(**TINY).train()
    if mode == "bf16-weights":
        policy = policy.to(torch.bfloat16)
    memory = None
    for seed in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
            out, memory = policy(make_batch(2, 3, seed=seed), memory)
        loss = -out["pi_logits"]["buttons"][..., 0].mean()
        loss.backward()
        assert torch.isfinite(loss)
