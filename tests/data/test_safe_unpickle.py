"""Reading a dataset never runs code from it: store pickles load through a data-only unpickler."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lmdb
import numpy as np
import pytest

from minetrain.data import RawDataset
from minetrain.data.store import layout
from minetrain.data.store.safe_pickle import load_pickle
from minetrain.data.synth import write_synthetic_dataset
from minetrain.errors import DataError, UnsafeDataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class _Payload:
    """A pickle that, loaded by a plain ``pickle.loads``, creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("safe") / "d", episodes=2, frames=40, size=16)


def _poisoned(clean: Path, tmp_path: Path, modality: str, key: bytes, marker: Path) -> Path:
    """A copy of ``clean`` whose ``modality`` part holds the payload under ``key``."""
    out = tmp_path / "poisoned"
    subprocess.run(["cp", "-r", str(clean), str(out)], check=True)
    part = out / modality / "part-0"
    with lmdb.open(str(part), subdir=part.is_dir()) as env, env.begin(write=True) as txn:
        original = pickle.loads(txn.get(key))
        # Inside the data, as an attacker would hide it: next to real values.
        hidden = [*original[:1], _Payload(marker)] if isinstance(original, list) else _Payload(marker)
        if isinstance(original, dict):
            hidden = {**original, "attack": _Payload(marker)}
        txn.put(key, pickle.dumps(hidden, protocol=4))
    return out


# (modality, key, whether `data inspect --interactions` reads it: episodes and interactions, not actions)
CASES = {
    "action chunk": ("action", b"(0, 0)", False),
    "segmentation chunk": ("segmentation", b"(0, 0)", True),
    "__chunk_infos__": ("action", layout.CHUNK_INFOS_KEY, True),
}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "minetrain.cli.main", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("case", CASES)
def test_poisoned_store_is_refused_without_running_it(clean_dataset, tmp_path, case):
    modality, key, inspected = CASES[case]
    marker = tmp_path / "marker"
    data = _poisoned(clean_dataset, tmp_path, modality, key, marker)
    named = key.decode()

    def names_part_and_key(line: str) -> bool:
        """The part as a path, or as the store's ``<dataset>: <modality> part-0`` with the episode."""
        return named in line and (
            str(data / modality / "part-0") in line or f"{data}: {modality} part-0" in line
        )

    inspect = ("data", "inspect", str(data), "--interactions")
    reading = [] if inspected else [inspect]
    refusing = [("data", "verify", str(data), "--jobs", "2"), (*inspect, "--jobs", "2")][: 1 + inspected]
    # The commands only read the store: run them at once (each is mostly Python start-up, one core).
    with ThreadPoolExecutor() as pool:
        results = list(pool.map(lambda command: _run(*command), reading + refusing))
    for command, result in zip(reading, results, strict=False):
        assert result.returncode == 0, (command, result.stderr)
    for command, result in zip(refusing, results[len(reading) :], strict=True):
        lines = result.stderr.strip().splitlines()
        assert not marker.exists(), command
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert lines and lines[-1].startswith("error: "), (command, result.stderr)
        assert "Traceback" not in result.stderr and "posix.system" in lines[-1]
        assert names_part_and_key(lines[-1]), (command, lines[-1])
    on_error = "skip" if case != "__chunk_infos__" else "raise"
    with pytest.raises(UnsafeDataError, match=r"posix\.system") as caught:
        dataset = RawDataset(
            dataset_dirs=[data], frame_width=16, frame_height=16, win_len=8, on_error=on_error
        )
        for index in range(len(dataset)):
            dataset[index]
    assert names_part_and_key(str(caught.value)), caught.value
    assert not marker.exists()


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "numpy1_pickles").glob("*.pkl")))
def test_numpy_1_pickles_load(name):
    """Chunks pickled by numpy 1.26 (``numpy.core`` names) with protocols 2, 4 and 5."""
    data = (FIXTURES / "numpy1_pickles" / name).read_bytes()
    value = load_pickle(data, name)
    if name.startswith("action"):
        assert value["camera"].shape == (32, 2) and value["camera"].dtype == np.float32
        assert value["hotbar.1"].tolist() == [1] * 32
    else:
        interaction = next(iter(value[0].values()))
        assert len(value) == 32 and value[1:] == [{}] * 31
        assert interaction["obj_id"] == 2 and isinstance(interaction["obj_id"], np.int64)
        assert interaction["frame_range"].tolist() == [0, 31]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_data_of_every_protocol_loads(protocol):
    value = {
        "a": np.arange(6.0).reshape(2, 3),
        "b": [np.float32(1.5), (1, "x"), {2, 3}, frozenset([4]), b"raw", bytearray(b"y"), 1j, None, True],
        "c": np.array(["ab", "c"]),
        "d": np.array([{"x": 1}], dtype=object),
        "e": np.zeros(2, dtype=[("a", "i4"), ("b", "f8")]),
    }
    assert repr(load_pickle(pickle.dumps(value, protocol=protocol), "here")) == repr(value)


def test_corrupt_pickle_is_a_data_error():
    with pytest.raises(DataError, match=r"^part-0 key k: does not unpickle \(UnpicklingError") as caught:
        load_pickle(b"\x80\x04garbage", "part-0 key k")
    assert not isinstance(caught.value, UnsafeDataError)


@pytest.mark.parametrize(
    "pickled",
    [
        b"cbuiltins\neval\n(S'1'\ntR.",
        b"cbuiltins\ngetattr\n(cnumpy\nndarray\nS'tofile'\ntR.",
        b"cnumpy\nload\n(S'x.npy'\ntR.",
        b"csubprocess\nPopen\n(S'true'\ntR.",
        b"(lp0\nPpid\na.",
    ],
    ids=["eval", "getattr", "numpy.load", "Popen", "persistent id"],
)
def test_anything_but_data_is_unsafe(pickled):
    with pytest.raises(UnsafeDataError, match=r"^part-0 key k: the pickle calls "):
        load_pickle(pickled, "part-0 key k")
