"""VPTPolicy loads OpenAI's and MineStudio's files and matches the reference's outputs and memory.

Fixtures: scripts/make_vpt_fixtures.py, run with the reference library (MineStudio 1.1.6).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from minetrain.errors import CheckpointError
from minetrain.models import load_policy
from minetrain.models.vpt import VPTPolicy, load_vpt_policy

FIXTURE = Path(__file__).parents[1] / "fixtures" / "model_vpt_ref"
TOL = 1e-5

pytestmark = pytest.mark.skipif(
    not (FIXTURE / "io.npz").is_file(),
    reason=f"VPT fixtures missing in {FIXTURE}; run scripts/make_vpt_fixtures.py in the reference venv",
)


def unpack(name: str, directory: Path) -> Path:
    """Write fixture ``name`` (stored gzipped to keep the repository small) into ``directory``."""
    target = directory / name.removesuffix(".gz")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(gzip.decompress((FIXTURE / name).read_bytes()))
    return target


def openai_pair(directory: Path) -> tuple[Path, Path]:
    model = directory / "small.model"
    shutil.copy(FIXTURE / "small.model", model)
    return model, unpack("small.weights.gz", directory)


def windows() -> tuple[torch.Tensor, list[tuple[dict, dict]]]:
    io = np.load(FIXTURE / "io.npz")
    result = []
    for w in range(2):
        p = f"w{w}_"
        batch = {"image": torch.from_numpy(io[p + "image"]), "first": torch.from_numpy(io[p + "first"])}
        n_memory = sum(1 for key in io.files if key.startswith(p + "memory"))
        expected = {key: torch.from_numpy(io[p + key]) for key in ("buttons", "camera", "vpred")} | {
            "memory": [torch.from_numpy(io[f"{p}memory{i}"]) for i in range(n_memory)]
        }
        result.append((batch, expected))
    return torch.from_numpy(io["button_index"]), result


def assert_matches_reference(model: VPTPolicy) -> None:
    model.eval()
    kept, steps = windows()
    assert steps[1][0]["first"].any(), "the fixture must start an episode inside the second window"
    memory = None
    for batch, expected in steps:
        with torch.no_grad():
            out, memory = model(batch, memory)
        buttons = out["pi_logits"]["buttons"]
        assert buttons.shape[-1] == 8641
        assert (buttons[..., kept] - expected["buttons"]).abs().max() <= TOL
        assert (out["pi_logits"]["camera"] - expected["camera"]).abs().max() <= TOL
        assert (out["vpred"] - expected["vpred"]).abs().max() <= TOL
        assert len(memory) == len(expected["memory"])
        for ours, ref in zip(memory, expected["memory"], strict=True):
            assert ours.shape == ref.shape and ours.dtype == ref.dtype
            assert (ours.float() - ref.float()).abs().max() <= TOL


def test_openai_model_and_weights_match_reference(tmp_path):
    model_file, weights = openai_pair(tmp_path)
    model = load_vpt_policy(model_file, weights)
    assert model.config["temperature"] == 2.0 and model.config["hidsize"] == 4
    assert_matches_reference(model)


def test_minestudio_lightning_checkpoint_matches_reference(tmp_path):
    model_file, _ = openai_pair(tmp_path)
    assert_matches_reference(load_vpt_policy(model_file, unpack("small_minestudio.ckpt.gz", tmp_path)))


def test_minestudio_hub_directory_matches_reference(tmp_path):
    hub = tmp_path / "hub"
    unpack("hub/model.safetensors.gz", tmp_path)
    shutil.copy(FIXTURE / "hub" / "config.json", hub / "config.json")
    assert_matches_reference(load_vpt_policy(hub))
    assert_matches_reference(VPTPolicy.from_pretrained(hub))


def test_load_policy_opens_the_hub_directory_and_explains_the_lightning_checkpoint(tmp_path):
    hub = tmp_path / "hub"
    unpack("hub/model.safetensors.gz", tmp_path)
    shutil.copy(FIXTURE / "hub" / "config.json", hub / "config.json")
    policy = load_policy(hub)
    assert type(policy) is VPTPolicy and policy.policy_name == "vpt"
    assert_matches_reference(policy)
    # MineStudio's .ckpt holds the weights only; the attention heads cannot be read off them.
    ckpt = unpack("small_minestudio.ckpt.gz", tmp_path)
    with pytest.raises(CheckpointError) as caught:
        load_policy(ckpt)
    message = str(caught.value)
    assert "\n" not in message and str(ckpt) in message
    assert "records no VPT architecture" in message and "minetrain.models.vpt.load_vpt_policy(" in message


def test_save_pretrained_round_trip_keeps_outputs(tmp_path):
    model = load_vpt_policy(*openai_pair(tmp_path))
    model.save_pretrained(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["name"] == "vpt" and config["hidsize"] == 4
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["config.json", "model.safetensors"]
    assert_matches_reference(VPTPolicy.from_pretrained(tmp_path / "ours"))
    assert VPTPolicy.from_pretrained(tmp_path / "ours", nucleus_prob=0.9).config["nucleus_prob"] == 0.9


def test_parameter_counts_equal_reference():
    counts = json.loads((FIXTURE / "counts.json").read_text())
    model = load_vpt_policy(FIXTURE / "small.model")
    assert sum(p.numel() for p in model.parameters()) == counts["small"]["total"]
    assert len(model.state_dict()) == counts["small"]["state_dict_keys"]
    for name in ("1x", "2x", "3x"):
        with torch.device("meta"):
            model = VPTPolicy(**counts[name]["shape"])
        assert sum(p.numel() for p in model.parameters()) == counts[name]["total"], name
        assert sum(p.numel() for p in model.net.parameters()) == counts[name]["net"], name
        assert len(model.state_dict()) == counts[name]["state_dict_keys"], name
