"""Outputs and memory match the reference library's RocketPolicy on the same weights and inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from minetrain.models import RocketPolicy, load_reference_checkpoint

FIXTURE = Path(__file__).parents[1] / "fixtures" / "model_rocket_ref"
TOL = 1e-5


def _windows() -> list[tuple[dict, dict]]:
    """(batch, expected outputs) of the two consecutive reference windows."""
    io = np.load(FIXTURE / "io.npz")
    result = []
    for w in range(2):
        p = f"w{w}_"
        batch = {
            "image": torch.from_numpy(io[p + "image"]),
            "segment": {
                "obj_id": torch.from_numpy(io[p + "obj_id"]),
                "obj_mask": torch.from_numpy(np.unpackbits(io[p + "obj_mask"], axis=-1)),
            },
            "first": torch.from_numpy(io[p + "first"]),
        }
        n_memory = sum(1 for key in io.files if key.startswith(p + "memory"))
        expected = {
            "buttons": torch.from_numpy(io[p + "buttons"]),
            "camera": torch.from_numpy(io[p + "camera"]),
            "vpred": torch.from_numpy(io[p + "vpred"]),
            "memory": [torch.from_numpy(io[f"{p}memory{i}"]) for i in range(n_memory)],
        }
        result.append((batch, expected))
    return result


def _assert_matches_reference(model: RocketPolicy) -> None:
    model.eval()
    memory = None
    windows = _windows()
    assert windows[1][0]["first"].any(), "the fixture must reset an episode inside the second window"
    for batch, expected in windows:
        with torch.no_grad():
            out, memory = model(batch, memory)
        for key in ("buttons", "camera"):
            assert out["pi_logits"][key].shape == expected[key].shape
            assert (out["pi_logits"][key] - expected[key]).abs().max() <= TOL
        assert (out["vpred"] - expected["vpred"]).abs().max() <= TOL
        assert len(memory) == len(expected["memory"])
        for ours, ref in zip(memory, expected["memory"], strict=True):
            assert ours.shape == ref.shape and ours.dtype == ref.dtype
            assert (ours.float() - ref.float()).abs().max() <= TOL


def test_hub_directory_matches_reference_outputs_and_memory():
    model = load_reference_checkpoint(FIXTURE)
    assert model.config["backbone"] == "test_efficientnet" and model.value_head is not None
    _assert_matches_reference(model)


def test_lightning_checkpoint_with_prefix_and_hyperparameters(tmp_path):
    weights = load_file(FIXTURE / "model.safetensors")
    config = json.loads((FIXTURE / "config.json").read_text())
    ckpt = {
        "state_dict": {f"mine_policy.{key}": value for key, value in weights.items()},
        "hyper_parameters": {"model": config, "learning_rate": 4e-5},
        "global_step": 7,
    }
    torch.save(ckpt, tmp_path / "weight-epoch=0-step=7.ckpt")
    _assert_matches_reference(load_reference_checkpoint(tmp_path / "weight-epoch=0-step=7.ckpt"))


def test_checkpoint_without_config_infers_sizes_from_weights(tmp_path):
    weights = load_file(FIXTURE / "model.safetensors")
    torch.save({"state_dict": {f"mine_policy.{k}": v for k, v in weights.items()}}, tmp_path / "bare.ckpt")
    model = load_reference_checkpoint(tmp_path / "bare.ckpt", backbone="test_efficientnet")
    assert {k: model.config[k] for k in ("hiddim", "num_heads", "num_layers", "mem_len")} == {
        "hiddim": 16,
        "num_heads": 2,
        "num_layers": 2,
        "mem_len": 4,
    }
    _assert_matches_reference(model)


@pytest.mark.parametrize("value_head", [True, False])
def test_seed_config_parameter_count_equals_reference(value_head):
    counts = json.loads((FIXTURE / "counts.json").read_text())
    with torch.device("meta"):
        model = RocketPolicy(**counts["seed_config"], value_head=value_head)
    total = sum(p.numel() for p in model.parameters())
    if value_head:
        assert total == counts["total"]
        assert len(model.state_dict()) == counts["state_dict_keys"]
    else:
        assert total == counts["total"] - counts["value_head"]
