"""``minetrain export --format minestudio|minestudio-hub``: what the reference library loads back.

The live tests run the reference (MineStudio 1.1.6) in its side venv: it loads the export strictly
and its logits on a fixed input are compared with minetrain's on the same input.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from minetrain.cli.main import main
from minetrain.models import RocketPolicy, load_checkpoint, load_reference_checkpoint

REFERENCE_PYTHON = Path("/tmp/reference-venv/bin/python")
needs_reference = pytest.mark.skipif(
    not REFERENCE_PYTHON.exists(), reason="reference venv /tmp/reference-venv is absent"
)
TOL = 1e-5
VALUE_HEAD_KEYS = [
    "value_head.linear.bias",
    "value_head.linear.weight",
    "value_head.normalizer.debiasing_term",
    "value_head.normalizer.running_mean",
    "value_head.normalizer.running_mean_sq",
]

# Runs in the reference venv: load each export the way a MineStudio user would, strictly, and write
# its log-probabilities on the inputs of IN to OUT/<i>.npz. The reference always asks timm for
# pretrained backbone weights (a download); the loaded state dict replaces them, so timm builds the
# backbone without them here.
REFERENCE_LOAD = """
import sys, numpy as np, timm, torch
create = timm.create_model
timm.create_model = lambda name, pretrained=False, **kw: create(name, pretrained=False, **kw)
from minestudio.models import RocketPolicy, load_rocket_policy
inputs, out, *exports = sys.argv[1:]
io = np.load(inputs)
batch = {"image": torch.from_numpy(io["image"]),
         "segment": {"obj_id": torch.from_numpy(io["obj_id"]), "obj_mask": torch.from_numpy(io["obj_mask"])}}
for i, export in enumerate(exports):
    fmt, path = export.split("=", 1)
    if fmt == "minestudio":
        model = load_rocket_policy(path)
    else:
        model = RocketPolicy.from_pretrained(path, strict=True)
    with torch.no_grad():
        latents, _ = model.eval()(batch)
    logits = {k: v[:, :, 0].numpy() for k, v in latents["pi_logits"].items()}
    np.savez(f"{out}/{i}.npz", **logits, vpred=latents["vpred"].numpy())
"""


def _batch(timesteps: int) -> dict:
    gen = torch.Generator().manual_seed(3)
    b, h, w = 2, 32, 32
    return {
        "image": torch.randint(0, 256, (b, timesteps, h, w, 3), dtype=torch.uint8, generator=gen),
        "segment": {
            "obj_id": torch.randint(-1, 7, (b, timesteps), generator=gen),
            "obj_mask": torch.randint(0, 2, (b, timesteps, h, w), dtype=torch.uint8, generator=gen),
        },
    }


def _reference_outputs(exports: list[tuple[str, Path]], batch: dict, tmp_path: Path) -> list[dict]:
    """The reference's outputs on ``batch`` for each (format, path), from one reference process."""
    inputs, out = tmp_path / "inputs.npz", tmp_path / "reference-out"
    out.mkdir()
    np.savez(inputs, image=batch["image"].numpy(), **{k: v.numpy() for k, v in batch["segment"].items()})
    result = subprocess.run(
        [str(REFERENCE_PYTHON), "-c", REFERENCE_LOAD, str(inputs), str(out)]
        + [f"{fmt}={path}" for fmt, path in exports],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [dict(np.load(out / f"{i}.npz")) for i in range(len(exports))]


def _source(full_checkpoint: Path, ema: bool) -> RocketPolicy:
    loaded = load_checkpoint(full_checkpoint)
    return loaded.ema if ema else loaded.original


@pytest.mark.slow
@needs_reference
def test_the_reference_loads_the_exports_strictly_with_the_same_logits(full_checkpoint, tmp_path):
    """Both formats, trained and EMA weights: loaded by the reference, same logits within 1e-5."""
    cases = [(fmt, ema) for fmt in ("minestudio", "minestudio-hub") for ema in (False, True)]
    exports = []
    for fmt, ema in cases:
        out = tmp_path / f"{fmt}-{'ema' if ema else 'trained'}{'.ckpt' if fmt == 'minestudio' else ''}"
        assert main(["export", str(full_checkpoint), str(out), "--format", fmt, *(["--ema"] * ema)]) == 0
        exports.append((fmt, out))
    timesteps = _source(full_checkpoint, False).config["timesteps"]
    batch = _batch(timesteps)
    reference = _reference_outputs(exports, batch, tmp_path)
    for (fmt, ema), ref in zip(cases, reference, strict=True):
        policy = _source(full_checkpoint, ema)
        assert policy.value_head is None, "the export must add the value head the reference requires"
        with torch.no_grad():
            ours = policy.eval()(batch)[0]["pi_logits"]
        for key in ("buttons", "camera"):
            assert ref[key].shape == tuple(ours[key].shape)
            assert np.abs(ref[key] - ours[key].numpy()).max() <= TOL, (fmt, ema, key)
        assert not ref["vpred"].any(), "the added value head predicts 0"
    trained, ema = reference[0]["buttons"], reference[1]["buttons"]
    assert not np.array_equal(trained, ema), "--ema exports other weights"


@pytest.mark.parametrize("ema", [False, True])
def test_the_minestudio_ckpt_holds_the_reference_layout_and_reads_back(full_checkpoint, tmp_path, ema):
    out = tmp_path / "policy.ckpt"
    assert main(["export", str(full_checkpoint), str(out), "--format", "minestudio", *(["--ema"] * ema)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.ckpt"], "no temp file left"
    ckpt = torch.load(out, weights_only=True)
    source = _source(full_checkpoint, ema)
    assert ckpt["hyper_parameters"] == {
        "model": {**{k: source.config[k] for k in ("backbone", "hiddim", "num_heads", "num_layers")},
                  "timesteps": source.config["timesteps"], "mem_len": source.config["mem_len"],
                  "action_space": None, "nucleus_prob": source.config["nucleus_prob"]},
    }  # fmt: skip
    keys = {key.removeprefix("mine_policy.") for key in ckpt["state_dict"]}
    assert all(key.startswith("mine_policy.") for key in ckpt["state_dict"])
    assert keys == set(source.state_dict()) | set(VALUE_HEAD_KEYS)
    for key, value in source.state_dict().items():
        assert torch.equal(ckpt["state_dict"]["mine_policy." + key], value), key
    back = load_reference_checkpoint(out).eval()
    assert back.value_head is not None
    batch = _batch(source.config["timesteps"])
    with torch.no_grad():
        for key, value in source.eval()(batch)[0]["pi_logits"].items():
            assert torch.equal(back(batch)[0]["pi_logits"][key], value), key


def test_the_minestudio_hub_dir_holds_the_reference_config(full_checkpoint, tmp_path):
    out = tmp_path / "hub"
    assert main(["export", str(full_checkpoint), str(out), "--format", "minestudio-hub"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert sorted(config) == sorted(
        [
            "action_space",
            "backbone",
            "hiddim",
            "mem_len",
            "nucleus_prob",
            "num_heads",
            "num_layers",
            "timesteps",
        ]
    )
    assert set(VALUE_HEAD_KEYS) <= set(RocketPolicy.from_pretrained(out).state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub"], "no temp dir left"


def test_minestudio_export_refuses_to_overwrite_without_force(full_checkpoint, tmp_path, capsys):
    out = tmp_path / "policy.ckpt"
    out.write_bytes(b"mine")
    assert main(["export", str(full_checkpoint), str(out), "--format", "minestudio"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "pass --force" in err and "\n" not in err
    assert out.read_bytes() == b"mine"
    assert main(["export", str(full_checkpoint), str(out), "--format", "minestudio", "--force"]) == 0
    assert "mine_policy.interaction.weight" in torch.load(out, weights_only=True)["state_dict"]


def test_minestudio_export_to_a_directory_is_one_line(full_checkpoint, tmp_path, capsys):
    assert main(["export", str(full_checkpoint), str(tmp_path), "--format", "minestudio"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "is a directory" in err and "\n" not in err


def test_a_policy_with_a_value_head_keeps_it_in_the_minestudio_export(tmp_path):
    torch.manual_seed(0)
    policy = RocketPolicy(
        backbone="test_efficientnet",
        hiddim=16,
        num_heads=2,
        num_layers=1,
        timesteps=4,
        mem_len=4,
        value_head=True,
    )
    with torch.no_grad():
        policy.value_head.normalizer.running_mean.fill_(0.3)
    policy.save_pretrained(tmp_path / "src")
    out = tmp_path / "policy.ckpt"
    assert main(["export", str(tmp_path / "src"), str(out), "--format", "minestudio"]) == 0
    state = torch.load(out, weights_only=True)["state_dict"]
    for key in VALUE_HEAD_KEYS:
        assert torch.equal(state["mine_policy." + key], policy.state_dict()[key]), key
