import pytest
import torch

from minetrain.cli.main import main
from minetrain.models import RocketPolicy, load_checkpoint

BATCH_SHAPE = (2, 8, 32, 32)


def _batch(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    b, t, h, w = BATCH_SHAPE
    return {
        "image": torch.randint(0, 256, (b, t, h, w, 3), dtype=torch.uint8, generator=gen),
        "segment": {
            "obj_id": torch.randint(-1, 7, (b, t), generator=gen),
            "obj_mask": torch.randint(0, 2, (b, t, h, w), dtype=torch.uint8, generator=gen),
        },
    }


def _outputs(policy: RocketPolicy) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        return policy.eval()(_batch())[0]["pi_logits"]


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("ema", [False, True])
def test_export_loads_with_from_pretrained_and_gives_the_same_outputs(full_checkpoint, tmp_path, ema):
    out = tmp_path / "exported"
    assert main(["export", str(full_checkpoint), str(out), *(["--ema"] if ema else [])]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp dirs left"
    loaded = load_checkpoint(full_checkpoint)
    source = loaded.ema if ema else loaded.original
    exported = RocketPolicy.from_pretrained(out)
    assert exported.config == source.config
    for key, value in _outputs(source).items():
        assert torch.equal(_outputs(exported)[key], value), key
    other = loaded.original if ema else loaded.ema
    assert not torch.equal(_outputs(other)["buttons"], _outputs(exported)["buttons"])


def test_export_of_an_exported_dir_round_trips(full_checkpoint, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["export", str(full_checkpoint), str(first)]) == 0
    assert main(["export", str(first), str(second)]) == 0
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()


def test_export_does_not_overwrite_without_force(full_checkpoint, tmp_path, capsys):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(full_checkpoint), str(out)]) == 2
    assert "pass --force" in _error_line(capsys)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["export", str(full_checkpoint), str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]


def test_export_ema_without_ema_weights_is_one_line(full_checkpoint, tmp_path, capsys):
    plain = tmp_path / "plain"
    assert main(["export", str(full_checkpoint), str(plain)]) == 0
    assert main(["export", str(plain), str(tmp_path / "out"), "--ema"]) == 2
    assert "has no EMA weights" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_export_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "out")]) == 2
    assert "missing.ckpt does not exist" in _error_line(capsys)
    assert not (tmp_path / "out").exists()
