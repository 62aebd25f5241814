"""Build tests/fixtures/event_reference/: an event LMDB written by the reference's event converter.

Steps (run `python scripts/make_event_fixtures.py` in minetrain's environment):
1. minetrain writes a tiny dataset (image, action, meta_info) whose meta_info ``events`` field
   reports the events of ``EPISODES`` (an empty dict on the other frames, as recorded data has);
2. the reference venv (/tmp/reference-venv) runs MineStudio's
   ``minestudio.data.minecraft.tools.event_convertion.main`` on it, unmodified except that its
   stray ``import ipdb`` is given an empty module;
3. its ``event/data.mdb`` is copied to the fixture dir with ``episodes.json`` (the definition).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from minetrain.actions import BUTTONS
from minetrain.data.store import DatasetWriter, Episode

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "event_reference"
REFERENCE_PYTHON = Path("/tmp/reference-venv/bin/python")

LOG = "minecraft.mine_block:minecraft:oak_log"
# name -> (frames, {frame: [event names]}); lengths are whole 32-frame chunks, all the reference reads.
EPISODES = {
    "ep-one": (64, {10: [LOG], 40: [LOG, "minecraft.craft_item:minecraft:oak_planks"]}),
    "ep-two": (96, {5: ["minecraft.kill_entity:minecraft:cow"], 70: [LOG], 71: [LOG]}),
}

REFERENCE_STEP = """
import argparse, sys, types
sys.modules["ipdb"] = types.ModuleType("ipdb")
from minestudio.data.minecraft.tools import event_convertion
event_convertion.main(argparse.Namespace(input_dir=sys.argv[1]))
"""


def episode(name: str, length: int, events: dict[int, list[str]]) -> Episode:
    frames = np.broadcast_to(
        (np.arange(length) * 2 % 250).astype(np.uint8)[:, None, None, None], (length, 16, 16, 3)
    )
    action = {key: np.zeros(length, dtype=np.int64) for key in BUTTONS}
    action["camera"] = np.zeros((length, 2), dtype=np.float32)
    meta_info = [
        {"pitch": 0.0, "yaw": 0.0, "events": dict.fromkeys(events.get(t, []), 1)} for t in range(length)
    ]
    return Episode(name, image=frames.copy(), action=action, meta_info=meta_info)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "ds"
        with DatasetWriter(dataset, chunk_size=32) as writer:
            for name, (length, events) in EPISODES.items():
                writer.write(episode(name, length, events))
        subprocess.run(
            [str(REFERENCE_PYTHON), "-c", REFERENCE_STEP, str(dataset)],
            check=True,
            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        )
        shutil.rmtree(OUT, ignore_errors=True)
        (OUT / "event").mkdir(parents=True)
        shutil.copy(dataset / "event" / "data.mdb", OUT / "event" / "data.mdb")
    definition = {
        name: [length, {str(t): e for t, e in events.items()}] for name, (length, events) in EPISODES.items()
    }
    (OUT / "episodes.json").write_text(json.dumps(definition, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
