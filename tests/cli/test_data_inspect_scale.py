"""`data inspect` reads only bookkeeping by default; `--interactions` counts what the chunks hold."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from minetrain.cli.main import main
from minetrain.data.render import interaction_name
from minetrain.data.store import TrajectoryStore
from minetrain.data.synth import write_synthetic_dataset

_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "make_index_only.py"


def _write_index_only(out: Path, episodes: int, frames: int, parts: int) -> Path:
    spec = importlib.util.spec_from_file_location("make_index_only", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_index_only(out, episodes, frames, parts=parts)


def _inspect(capsys, *args: str) -> dict:
    assert main(["data", "inspect", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_default_inspect_reads_bookkeeping_only(tmp_path, capsys):
    data = _write_index_only(tmp_path / "index-only", episodes=7, frames=5000, parts=3)
    summary = _inspect(capsys, str(data))
    assert summary["episodes"] == 7 and summary["frames"] == 5000
    assert summary["frames_per_modality"] == {"image": 5000, "action": 5000, "segmentation": 5000}
    # No chunk exists: the only reads tried are the resolution samples, one per image part.
    assert summary["unreadable_chunks"] == 3 and summary["interaction_frames"] == {}
    chunks = sum(-(-n // 32) for n in TrajectoryStore(data).episodes.values())
    assert _inspect(capsys, str(data), "--interactions")["unreadable_chunks"] == 3 + chunks
    assert main(["data", "inspect", str(data), "--jobs", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --jobs only speeds up --interactions (the default reads no chunks); add --interactions"
    )


def _histogram(data: Path) -> tuple[Counter, Counter]:
    """The interaction histogram as inspect computed it before it went parallel: episode by episode."""
    store = TrajectoryStore(data)
    frames, interactions = Counter(), Counter()
    for episode, num_frames in store.modality_episodes("segmentation").items():
        seen = set()
        for frame in store.read(episode, "segmentation", 0, num_frames):
            for key, value in frame.items():
                name = interaction_name(value["obj_id"])
                frames[name] += 1
                if key not in seen:
                    seen.add(key)
                    interactions[name] += 1
    return frames, interactions


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_interactions_histogram_is_unchanged(tmp_path, capsys, jobs):
    data = write_synthetic_dataset(tmp_path / "synth", episodes=5, frames=70, size=16)
    frames, interactions = _histogram(data)
    assert sum(frames.values()) > 0
    summary = _inspect(capsys, str(data), "--interactions", "--jobs", jobs)
    assert summary["interaction_frames"] == dict(frames) and summary["interactions"] == dict(interactions)
    assert summary["unreadable_chunks"] == 0
