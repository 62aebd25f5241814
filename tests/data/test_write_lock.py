"""One writer per dataset dir: a second writer is refused, readers are not, a killed writer's lock is gone."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from fake_vpt import step, write_recording

from minetrain.cli.main import main
from minetrain.data.convert.segments import attach_segments
from minetrain.data.convert.vpt import VptOptions, convert_vpt
from minetrain.data.events import index_events
from minetrain.data.store import DatasetWriter, Episode, TrajectoryStore
from minetrain.data.store.lock import LOCK_NAME
from minetrain.data.synth import write_synthetic_dataset
from minetrain.errors import DataError

# A writer that adds one episode, says "ready" while its parts are still open, and commits them when
# its stdin closes: a real second process holding the lock for as long as the test needs.
HOLDER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from minetrain.data.store import DatasetWriter, Episode
    writer = DatasetWriter(sys.argv[1])
    writer.write(Episode("held", action={"forward": np.ones(5, dtype=np.int64)}))
    print("ready", flush=True)
    sys.stdin.read()
    writer.close()
    """
)


def _start_holder(dataset_dir):
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(dataset_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


@pytest.fixture
def dataset(tmp_path):
    return write_synthetic_dataset(tmp_path / "ds", episodes=2, frames=20, size=16)


def test_second_writer_is_refused_while_readers_are_not(dataset, tmp_path, capsys):
    holder = _start_holder(dataset)
    try:
        assert (dataset / LOCK_NAME).read_text().strip() == str(holder.pid)
        second = subprocess.run(
            [sys.executable, "-m", "minetrain.cli.main", "data", "synth", str(dataset), "--seed", "1",
             "--episodes", "1", "--frames", "20", "--size", "16"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stderr.strip() == (
            f"error: {dataset} is being written by pid {holder.pid}; wait for it to finish or stop it"
        )
        assert main(["data", "inspect", str(dataset), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["episodes"] == 2
        assert len(TrajectoryStore(dataset).episodes) == 2
        events = tmp_path / "seg"
        events.mkdir()
        (events / "synth0-0000.json").write_text('{"frames": {}}')
        src = tmp_path / "src"
        write_recording(src, "a", [step()] * 3)
        for write in (
            lambda: index_events(dataset),
            lambda: attach_segments(events, dataset),
            lambda: convert_vpt(src, dataset, VptOptions(size=(16, 16))),
            lambda: DatasetWriter(dataset),
        ):
            with pytest.raises(DataError, match=f"is being written by pid {holder.pid}"):
                write()
    finally:
        holder.communicate(timeout=60)
    assert holder.returncode == 0
    store = TrajectoryStore(dataset, modalities=("action",))
    assert sorted(store.episodes) == ["held", "synth0-0000", "synth0-0001"]


def test_killed_writer_does_not_block_the_next(tmp_path):
    holder = _start_holder(tmp_path / "ds")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with DatasetWriter(tmp_path / "ds") as writer:
        assert writer.write(Episode("next", action={"forward": np.zeros(3, dtype=np.int64)}))
    assert (tmp_path / "ds" / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert list(TrajectoryStore(tmp_path / "ds", modalities=("action",)).episodes) == ["next"]
