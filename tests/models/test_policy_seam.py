"""The policy seam: the registry by name, the name written into every checkpoint, and load_policy on each
kind of checkpoint minetrain or the reference library writes."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import torch
from model_helpers import TINY, make_batch, save_lightning_checkpoint

from minetrain.errors import CheckpointError, ConfigError
from minetrain.models import (
    Policy,
    RocketPolicy,
    build_policy,
    load_checkpoint,
    load_policy,
    load_reference_checkpoint,
    policy_class,
    registry,
)
from minetrain.models import checkpoint as checkpoint_module
from minetrain.offline import MineLightning
from minetrain.offline.mine_callbacks import BehaviorCloneCallback

REFERENCE_FIXTURE = Path(__file__).parents[1] / "fixtures" / "model_rocket_ref"


class StubPolicy(RocketPolicy):
    """A second policy kind for the tests: ROCKET-1's network under another registry name."""

    policy_name = "stub"


@pytest.fixture
def with_stub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.POLICIES, "stub", f"{__name__}:StubPolicy")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


def _logits(policy: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return policy.eval()(make_batch(1, 3))[0]["pi_logits"]["buttons"]


def _save_lightning(policy: torch.nn.Module, path: Path) -> Path:
    """``policy`` in a Lightning checkpoint as ``minetrain pretrain`` writes it (MineLightning's record)."""
    module = MineLightning(mine_policy=policy, callbacks=[BehaviorCloneCallback()], seed=0)
    return save_lightning_checkpoint(module, path)


def test_unknown_policy_name_is_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError) as exc:
        policy_class("gpt")
    assert "'gpt'" in _one_line(exc) and "rocket, vpt" in str(exc.value)


def test_a_policy_whose_module_cannot_be_imported_is_one_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(registry.POLICIES, "ghost", "minetrain.models.no_such_module:Ghost")
    with pytest.raises(ConfigError) as exc:
        build_policy("ghost")
    assert "policy 'ghost' is not available" in _one_line(exc)


def test_build_policy_by_name_and_bad_arguments():
    policy = build_policy("rocket", **TINY)
    assert type(policy) is RocketPolicy and policy.policy_name == "rocket"
    assert isinstance(policy, Policy)
    with pytest.raises(ConfigError) as exc:
        build_policy("rocket", **TINY, no_such_argument=1)
    assert "cannot build RocketPolicy" in _one_line(exc) and "no_such_argument" in str(exc.value)


def test_checkpoint_module_does_not_import_the_rocket_policy():
    tree = ast.parse(Path(checkpoint_module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert not any("rocket" in name for name in imported), imported


def test_save_pretrained_records_the_name_and_load_policy_reads_it(tiny_policy, tmp_path, with_stub):
    tiny_policy.save_pretrained(tmp_path / "rocket")
    assert json.loads((tmp_path / "rocket" / "config.json").read_text())["name"] == "rocket"
    loaded = load_policy(tmp_path / "rocket")
    assert type(loaded) is RocketPolicy and loaded.config == tiny_policy.config
    assert torch.equal(_logits(loaded), _logits(tiny_policy))

    torch.manual_seed(0)
    stub = StubPolicy(**TINY)
    stub.save_pretrained(tmp_path / "stub")
    assert json.loads((tmp_path / "stub" / "config.json").read_text())["name"] == "stub"
    assert type(load_policy(tmp_path / "stub")) is StubPolicy
    # A class refuses a directory that names another policy instead of loading it as its own.
    with pytest.raises(CheckpointError) as exc:
        RocketPolicy.from_pretrained(tmp_path / "stub")
    assert "holds a 'stub' policy" in _one_line(exc) and "load_policy" in str(exc.value)
    with pytest.raises(CheckpointError, match="holds a 'stub' policy"):
        load_reference_checkpoint(tmp_path / "stub")


def test_lightning_checkpoint_records_the_policy_and_loads_by_name(tiny_policy, tmp_path, with_stub):
    path = _save_lightning(tiny_policy, tmp_path / "rocket.ckpt")
    hyper = torch.load(path, weights_only=True)["hyper_parameters"]
    assert hyper["mine_lightning"]["policy"] == {"name": "rocket", "config": tiny_policy.config}
    loaded = load_policy(path)
    assert type(loaded) is RocketPolicy and loaded.config == tiny_policy.config
    assert torch.equal(_logits(loaded), _logits(tiny_policy))

    torch.manual_seed(1)
    stub = StubPolicy(**TINY)
    stub_path = _save_lightning(stub, tmp_path / "stub.ckpt")
    record = load_checkpoint(stub_path)
    assert record.policy_name == "stub" and type(record.original) is StubPolicy
    assert torch.equal(_logits(record.original), _logits(stub))


def test_config_model_name_is_read_when_minelightning_recorded_none(tiny_policy, tmp_path, with_stub):
    """Older minetrain checkpoints: only the Hydra config's model section, maybe with a name."""
    path = tmp_path / "old.ckpt"
    state = {f"mine_policy.{k}": v for k, v in tiny_policy.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"model": {"name": "stub", **TINY}}}, path)
    assert type(load_policy(path)) is StubPolicy
    torch.save({"state_dict": state, "hyper_parameters": {"model": dict(TINY)}}, path)
    assert type(load_policy(path)) is RocketPolicy


def test_reference_files_without_a_name_load_as_rocket(tmp_path):
    from_dir = load_policy(REFERENCE_FIXTURE)
    assert type(from_dir) is RocketPolicy and from_dir.config["mem_len"] == 4
    reference = load_reference_checkpoint(REFERENCE_FIXTURE)
    assert torch.equal(_logits(from_dir), _logits(reference))
    # A bare weights file records no backbone name: it is given.
    bare = load_policy(REFERENCE_FIXTURE / "model.safetensors", backbone="test_efficientnet", timesteps=6)
    assert type(bare) is RocketPolicy and torch.equal(_logits(bare), _logits(reference))


def test_run_dir_gives_its_newest_full_checkpoint(tiny_policy, tmp_path):
    run = tmp_path / "run"
    old = _save_lightning(RocketPolicy(**TINY), run / "checkpoints" / "ckpt-epoch=0-step=2.ckpt")
    new = _save_lightning(tiny_policy, run / "checkpoints" / "ckpt-epoch=0-step=4.ckpt")
    os.utime(old, (1000, 1000))
    record = load_checkpoint(run)
    assert record.source == new and record.policy_name == "rocket" and record.ema is None
    assert torch.equal(_logits(record.original), _logits(tiny_policy))
    assert torch.equal(_logits(load_policy(run)), _logits(tiny_policy))


def test_unknown_name_in_a_checkpoint_is_one_line(tiny_policy, tmp_path):
    tiny_policy.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "name": "nope"}))
    with pytest.raises(ConfigError) as exc:
        load_policy(tmp_path)
    assert "'nope'" in _one_line(exc) and "rocket" in str(exc.value)
