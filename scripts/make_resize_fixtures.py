"""Build tests/fixtures/resize_reference/: image chunks and the frames the reference decodes from them.

The reference library (MineStudio) decodes an image chunk and, when the asked frame size differs
from the stored one, resizes each frame with OpenCV (``cv2.resize``, INTER_LINEAR). This script
writes small H.264 chunks with minetrain (224x224 and 640x360 gameplay-like frames) and has the
reference's ``ImageKernelCallback`` decode them at 128x128 into ``reference_128.npz``.

Run `python scripts/make_resize_fixtures.py all` in minetrain's environment; the `reference-decode`
step runs in the reference venv (/tmp/reference-venv, see benchmarks/reference-venv.sh).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "resize_reference"
REFERENCE_PYTHON = Path(os.environ.get("REFERENCE_VENV", "/tmp/reference-venv")) / "bin" / "python"
CHUNKS = {"chunk_224x224.mp4": (224, 224, 3), "chunk_640x360.mp4": (640, 360, 2)}  # width, height, frames
ASKED = (128, 128)


def minetrain_write(out: Path) -> None:
    from minetrain.data.store.codecs import encode_video
    from minetrain.data.synth import synth_episode

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (width, height, count) in CHUNKS.items():
        frames = synth_episode(0, count, size=max(width, height), seed=0).image[:, :height, :width]
        # Minecraft-like texture: 3-pixel blocks of varied shade, edges a resize can blur or keep.
        blocks = rng.normal(0.0, 40.0, (1, height // 3 + 1, width // 3 + 1, 3))
        texture = blocks.repeat(3, axis=1).repeat(3, axis=2)[:, :height, :width]
        frames = np.clip(frames + texture, 0, 255).astype(np.uint8)
        (out / name).write_bytes(encode_video(frames))


def reference_decode(out: Path) -> None:
    from minestudio.data.minecraft.callbacks import ImageKernelCallback

    callback = ImageKernelCallback(frame_width=ASKED[0], frame_height=ASKED[1])
    frames = {name: callback.do_decode((out / name).read_bytes()) for name in CHUNKS}
    np.savez_compressed(out / "reference_128.npz", **{Path(k).stem: v for k, v in frames.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("all", "reference-decode"))
    args = parser.parse_args()
    if args.command == "reference-decode":
        reference_decode(OUT)
    else:
        minetrain_write(OUT)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        subprocess.run([str(REFERENCE_PYTHON), __file__, "reference-decode"], check=True, env=env)
    sys.exit(0)


if __name__ == "__main__":
    main()
