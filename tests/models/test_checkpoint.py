"""save_pretrained/from_pretrained round trips; checkpoints that do not fit fail with one clear line."""

from __future__ import annotations

import json

import lightning as L
import pytest
import timm
import torch
from model_helpers import TINY, make_batch, save_lightning_checkpoint
from safetensors.torch import load_file, save_file

from minetrain.errors import CheckpointError
from minetrain.models import RocketPolicy, load_reference_checkpoint


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_save_and_load_pretrained_round_trip(tiny_policy, tmp_path):
    tiny_policy.save_pretrained(tmp_path / "policy")
    assert sorted(p.name for p in (tmp_path / "policy").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "policy" / "config.json").read_text())
    assert {k: config[k] for k in TINY} == TINY and config["value_head"] is False
    loaded = RocketPolicy.from_pretrained(tmp_path / "policy").eval()
    batch = make_batch(2, 3)
    with torch.no_grad():
        a, mem_a = tiny_policy(batch)
        b, mem_b = loaded(batch)
    assert torch.equal(a["pi_logits"]["buttons"], b["pi_logits"]["buttons"])
    assert all(torch.equal(x, y) for x, y in zip(mem_a, mem_b, strict=True))


def test_save_pretrained_overwrites_in_place(tiny_policy, tmp_path):
    tiny_policy.save_pretrained(tmp_path)
    with torch.no_grad():
        tiny_policy.final_ln.bias.fill_(0.5)
    tiny_policy.save_pretrained(tmp_path)
    assert torch.all(load_file(tmp_path / "model.safetensors")["final_ln.bias"] == 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_value_head_is_optional_and_kept_on_load(tmp_path):
    torch.manual_seed(0)
    policy = RocketPolicy(**TINY, value_head=True).eval()
    out, _ = policy(make_batch(1, 2))
    assert out["vpred"].shape == (1, 2, 1)
    policy.save_pretrained(tmp_path)
    assert RocketPolicy.from_pretrained(tmp_path).value_head is not None
    # Dropping the value head of a checkpoint that has one is a mismatch, not a silent loss.
    with pytest.raises(CheckpointError, match="unexpected keys"):
        RocketPolicy.from_pretrained(tmp_path, value_head=False)


def test_missing_and_unexpected_keys_are_named(tiny_policy, tmp_path):
    tiny_policy.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["final_ln.weight"]
    weights["extra.weight"] = torch.zeros(1)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as exc:
        RocketPolicy.from_pretrained(tmp_path)
    message = _one_line(exc)
    assert "1 missing keys: final_ln.weight" in message
    assert "1 unexpected keys: extra.weight" in message


def test_checkpoint_of_another_architecture(tiny_policy, tmp_path):
    tiny_policy.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as exc:
        load_reference_checkpoint(tmp_path, backbone="test_resnet")
    assert "does not fit RocketPolicy(backbone='test_resnet'" in _one_line(exc)
    torch.save({"state_dict": {"model.conv.weight": torch.zeros(2, 2)}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError) as exc:
        load_reference_checkpoint(tmp_path / "other.ckpt")
    assert "is not a RocketPolicy checkpoint" in _one_line(exc)


def test_unreadable_or_absent_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_reference_checkpoint(tmp_path / "nope.ckpt")
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as exc:
        load_reference_checkpoint(tmp_path / "broken.ckpt")
    _one_line(exc)
    with pytest.raises(CheckpointError, match=r"has no model\.safetensors"):
        RocketPolicy.from_pretrained(tmp_path)


def test_backbone_weights_from_a_local_file_without_network(tmp_path):
    torch.manual_seed(1)
    donor = timm.create_model("test_efficientnet", pretrained=False)
    save_file(donor.state_dict(), tmp_path / "backbone.safetensors")
    policy = RocketPolicy(**TINY, backbone_weights=tmp_path / "backbone.safetensors")
    ours = policy.backbone.state_dict()
    assert torch.equal(ours["blocks.0.0.conv.weight"], donor.state_dict()["blocks.0.0.conv.weight"])
    assert ours["conv_stem.weight"].shape[1] == 4  # the 3-channel stem was adapted to RGB + mask
    with pytest.raises(CheckpointError, match="does not exist"):
        RocketPolicy(**TINY, backbone_weights=tmp_path / "missing.safetensors")


def test_backbone_weights_of_another_model_are_refused(tmp_path):
    save_file(
        timm.create_model("test_resnet", pretrained=False).state_dict(), tmp_path / "resnet.safetensors"
    )
    with pytest.raises(CheckpointError) as exc:
        RocketPolicy(**TINY, backbone_weights=tmp_path / "resnet.safetensors")
    assert "test_efficientnet" in _one_line(exc)


class _Wrapper(L.LightningModule):
    """Stands in for the reference's MineLightning: the policy lives under ``mine_policy``."""

    def __init__(self, policy: RocketPolicy, hyper: dict) -> None:
        super().__init__()
        self.mine_policy = policy
        self.save_hyperparameters(hyper, ignore=["policy"])


def test_checkpoint_written_by_lightning_loads(tiny_policy, tmp_path):
    save_lightning_checkpoint(
        _Wrapper(tiny_policy, {"model": TINY, "learning_rate": 4e-5}), tmp_path / "last.ckpt"
    )
    loaded = load_reference_checkpoint(tmp_path / "last.ckpt").eval()
    assert {k: loaded.config[k] for k in TINY} == TINY
    batch = make_batch(1, 2)
    with torch.no_grad():
        assert torch.equal(
            tiny_policy(batch)[0]["pi_logits"]["camera"], loaded(batch)[0]["pi_logits"]["camera"]
        )
