"""``minetrain data index-events`` and the event lines of ``minetrain data inspect``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))

from event_fixtures import CRAFT, MINE_LOG, write_event_dataset

from minetrain.cli.main import main
from minetrain.data.events import INDEX_NAME


def test_index_events_then_rerun_and_inspect(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    first = write_event_dataset(tmp_path / "a", names=["ep-a", "ep-b"])
    second = write_event_dataset(tmp_path / "b", names=["ep-c"])
    assert main(["data", "index-events", str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert f"{first}: indexed 2 episode(s)" in out and f"{second}: indexed 1 episode(s)" in out
    assert (first / INDEX_NAME).is_file() and (second / INDEX_NAME).is_file()

    write_event_dataset(first, names=["ep-d"])
    assert main(["data", "index-events", str(first)]) == 0
    assert "indexed 1 episode(s) (2 occurrences), 2 already indexed" in capsys.readouterr().out

    assert main(["data", "inspect", str(first), str(second)]) == 0
    table = capsys.readouterr().out
    assert "events" in table and MINE_LOG in table and CRAFT in table

    assert main(["data", "inspect", "--json", str(first)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"][str(first)][MINE_LOG] == 5


def test_inspect_without_index_suggests_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dataset = write_event_dataset(tmp_path / "a", names=["ep-a"])
    assert main(["data", "inspect", str(dataset)]) == 0
    assert "minetrain data index-events" in capsys.readouterr().out.replace("\n", " ").replace("│", "")


def test_index_events_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "index-events", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "nowhere" in err
