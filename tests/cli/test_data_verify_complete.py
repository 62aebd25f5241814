"""`data verify`: episodes a modality lacks, missing modality folders, episode counts, files as dirs."""

import shutil

import numpy as np
import pytest

from minetrain.cli.main import main
from minetrain.data.store import DatasetWriter, Episode
from minetrain.data.synth import write_synthetic_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "ds", episodes=4, frames=40, size=16)


def _verify(capsys, *args):
    code = main(["data", "verify", *map(str, args)])
    return code, capsys.readouterr().out.strip().splitlines()


def test_counts_episodes_not_episode_modality_pairs(dataset, capsys):
    code, lines = _verify(capsys, dataset)
    assert code == 0 and lines[-1].endswith("of 4 episodes in 4 parts: OK"), lines


def test_episodes_a_modality_lacks_are_problems(dataset, tmp_path, capsys):
    copy = shutil.copytree(dataset, tmp_path / "copy")
    # What an interrupted writer leaves: frames and actions committed, masks and meta_info not.
    with DatasetWriter(copy) as writer:
        writer.write(
            Episode(
                "late",
                image=np.zeros((5, 16, 16, 3), dtype=np.uint8),
                action={"forward": np.zeros(5, dtype=int)},
            )
        )
    code, lines = _verify(capsys, copy)
    assert code == 1
    bad = [line for line in lines if line.startswith("BAD")]
    assert sorted(bad) == [
        f"BAD {copy}: {modality}: 1 of 5 episodes missing (late); rerun the writer that was interrupted "
        "(it adds what is missing) or remove these episodes"
        for modality in ("meta_info", "segmentation")
    ]
    assert lines[-1].endswith("of 5 episodes in 6 parts: FAILED: 2 problem(s)")


def test_missing_modality_folders(dataset, tmp_path, capsys):
    copy = shutil.copytree(dataset, tmp_path / "copy")
    shutil.rmtree(copy / "segmentation")
    code, lines = _verify(capsys, copy)
    assert code == 0 and lines[0] == (
        f"WARN {copy}: no segmentation/ folder (pass --require segmentation to make this an error)"
    )
    code, lines = _verify(capsys, copy, "--require", "segmentation")
    assert code == 1 and lines[0] == (
        f"BAD {copy}: segmentation: no segmentation/ folder; the dataset has 4 episodes without segmentation"
    )
    shutil.rmtree(copy / "action")
    code, lines = _verify(capsys, copy)
    assert (
        code == 1
        and f"BAD {copy}: action: no action/ folder; the dataset has 4 episodes without action" in lines
    )


def test_file_passed_as_dataset_dir(dataset, tmp_path, capsys):
    path = tmp_path / "file.mdb"
    path.write_bytes(b"x")
    expected = f"{path}: is a file, not a dataset dir; pass the directory that holds image/, action/"
    code, lines = _verify(capsys, path)
    assert code == 1 and lines[0].startswith(f"BAD {expected}")
    for command in (["inspect"], ["episodes"], ["sample", "--out", str(tmp_path / "p.png")]):
        assert main(["data", command[0], str(path), *command[1:]]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {expected}") and "\n" not in err
