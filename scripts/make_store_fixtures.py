"""Build the trajectory-store compatibility fixtures under tests/fixtures/.

Two directions are pinned down:
- store_reference/: a tiny dataset written by the reference library (MineStudio), plus
  store_reference_read.pkl.gz, what the reference's own reader returns for it;
- store_minetrain/: the same kind of dataset written by minetrain, plus
  store_minetrain_reference_read.pkl.gz, what the reference's reader returns for it.

Run `python scripts/make_store_fixtures.py all` in minetrain's environment; the steps that need
the reference run in its side venv (/tmp/reference-venv, see benchmarks/reference-venv.sh).
The reference's converter needs `ray`, which its venv lacks, so `reference-write` drives the
reference's per-modality convert callbacks and its MP4 chunk encoder directly and stores the
chunks the way its ConvertWorker does (full chunks only, num_frames = chunks * chunk_size).
"""

from __future__ import annotations

import argparse
import gzip
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
REFERENCE_PYTHON = Path("/tmp/reference-venv/bin/python")
CHUNK_SIZE = 32
SIZE = 16
BUTTONS = [
    "attack",
    "back",
    "forward",
    "jump",
    "left",
    "right",
    "sneak",
    "sprint",
    "use",
    "drop",
    "inventory",
]
BUTTONS += [f"hotbar.{i}" for i in range(1, 10)]
EVENTS = ["minecraft.mine_block:stone", "minecraft.kill_entity:sheep", "minecraft.use_item:bucket"]


def synthetic_episodes(lengths: dict[str, int], seed: int) -> dict[str, dict]:
    """Episodes as plain numpy/python data: frames, env actions, per-frame interactions, meta info."""
    rng = np.random.default_rng(seed)
    episodes = {}
    for name, n in lengths.items():
        frames = np.zeros((n, SIZE, SIZE, 3), np.uint8)
        frames[..., 0] = np.linspace(0, 255, SIZE, dtype=np.uint8)[None, None, :]
        frames[..., 2] = rng.integers(40, 200)
        for t in range(n):
            row = (t * 2) % (SIZE - 4)
            frames[t, row : row + 4, 4:10, 1] = 230
        action = {key: (rng.random(n) < 0.2).astype(np.int64) for key in BUTTONS}
        action["camera"] = rng.normal(0.0, 4.0, (n, 2)).astype(np.float32)
        interactions = []
        for t in range(n):
            if t % 4 == 0:
                interactions.append(None)
                continue
            event = EVENTS[(t // 8) % len(EVENTS)]
            mask = np.zeros((360, 640), np.uint8)
            top, left = 20 + 3 * (t % 50), 40 + 7 * (t % 60)
            mask[top : top + 30, left : left + 50] = 1
            interactions.append(
                {
                    "key": ("interaction", event),
                    "obj_id": [2, 0, 1][(t // 8) % 3],
                    "mask": mask,
                    "event": event,
                    "point": (top + 15, left + 25),
                    "frame_range": (t - t % 8, t - t % 8 + 7),
                }
            )
        meta = [{"pitch": float(t) / 10, "yaw": float(-t), "isGuiOpen": bool(t % 5 == 0)} for t in range(n)]
        episodes[name] = {"frames": frames, "action": action, "interactions": interactions, "meta": meta}
    return episodes


REFERENCE_LENGTHS = {"ref-alpha-1": 70, "ref-beta-1": 64, "ref-gamma-1": 40}
MINETRAIN_LENGTHS = {"mt-alpha": 70, "mt-beta": 32, "mt-gamma": 5}


def reference_write(out: Path) -> None:
    """Write REFERENCE_LENGTHS episodes with the reference library's own conversion code."""
    import lmdb
    from minestudio.data.minecraft.callbacks import ImageConvertCallback
    from minestudio.data.minecraft.callbacks.action import ActionConvertCallback
    from minestudio.data.minecraft.callbacks.meta_info import MetaInfoConvertCallback
    from minestudio.data.minecraft.callbacks.segmentation import SegmentationConvertCallback

    episodes = synthetic_episodes(REFERENCE_LENGTHS, seed=1)
    raw = Path(tempfile.mkdtemp())
    image_cb = ImageConvertCallback(input_dirs=[], chunk_size=CHUNK_SIZE)
    # ActionConvertCallback.__init__ cannot be called as written (it drops input_dirs/chunk_size
    # before calling its base class), so set the attributes its do_convert uses directly.
    action_cb = ActionConvertCallback.__new__(ActionConvertCallback)
    action_cb.input_dirs, action_cb.chunk_size = [], CHUNK_SIZE
    meta_cb = MetaInfoConvertCallback(input_dirs=[], chunk_size=CHUNK_SIZE)
    seg_cb = SegmentationConvertCallback(input_dirs=[], chunk_size=CHUNK_SIZE)

    def image_chunks(frames):
        # the reference's do_convert loop, minus its 640x360-only source check
        keys, vals = [], []
        for start in range(0, len(frames) - CHUNK_SIZE + 1, CHUNK_SIZE):
            key, val = image_cb._write_video_chunk(
                (list(frames[start : start + CHUNK_SIZE]), start, 20, SIZE, SIZE)
            )
            keys.append(key)
            vals.append(val)
        return keys, vals

    def segmentation_source(interactions):
        annos, mapping = {}, {}
        for t, inter in enumerate(interactions):
            if inter is None:
                continue
            key = (*inter["key"], t)
            annos[t] = [key]
            mapping[key] = {
                "obj_id": inter["obj_id"],
                "rle_mask": seg_cb_rle(inter["mask"]),
                "event": inter["event"],
                "point": inter["point"],
                "frame_range": inter["frame_range"],
            }
        return {"video_annos": annos, "rle_mask_mapping": mapping}

    from minestudio.data.minecraft.callbacks.segmentation import SegmentationKernelCallback

    seg_cb_rle = SegmentationKernelCallback().rle_encode

    per_modality = {"image": {}, "action": {}, "meta_info": {}, "segmentation": {}}
    for name, ep in episodes.items():
        n = len(ep["frames"])
        for kind, data in (
            ("action", ep["action"]),
            ("meta", ep["meta"]),
            ("seg", segmentation_source(ep["interactions"])),
        ):
            with open(raw / f"{name}.{kind}.pkl", "wb") as f:
                pickle.dump(data, f)
        per_modality["image"][name] = image_chunks(ep["frames"])
        per_modality["action"][name] = action_cb.do_convert(name, [None], [raw / f"{name}.action.pkl"])
        per_modality["meta_info"][name] = meta_cb.do_convert(name, [None], [raw / f"{name}.meta.pkl"])
        per_modality["segmentation"][name] = seg_cb.do_convert(name, [[True] * n], [raw / f"{name}.seg.pkl"])

    # ConvertWorker.run's storage, one part per modality
    for modality, converted in per_modality.items():
        part = out / modality / "part-3"
        part.mkdir(parents=True)
        env = lmdb.open(str(part), map_size=1 << 30)
        chunk_infos, total = [], 0
        for eps_idx, (name, (keys, vals)) in enumerate(converted.items()):
            for key, val in zip(keys, vals, strict=True):
                with env.begin(write=True) as txn:
                    txn.put(str((eps_idx, key)).encode(), val)
            chunk_infos.append(
                {"episode": name, "episode_idx": eps_idx, "num_frames": len(keys) * CHUNK_SIZE}
            )
            total += len(keys) * CHUNK_SIZE
        meta = {
            "__chunk_size__": CHUNK_SIZE,
            "__chunk_infos__": chunk_infos,
            "__num_episodes__": len(converted),
            "__num_total_frames__": total,
        }
        with env.begin(write=True) as txn:
            for key, val in meta.items():
                txn.put(key.encode(), pickle.dumps(val))
        env.close()


def reference_read(dataset: Path, out: Path) -> None:
    """Dump what the reference's KernelManager returns for every episode, read as one window."""
    from minestudio.data.minecraft.callbacks import (
        ActionKernelCallback,
        ImageKernelCallback,
        MetaInfoKernelCallback,
        SegmentationKernelCallback,
    )
    from minestudio.data.minecraft.core import KernelManager

    seg_cb = SegmentationKernelCallback(frame_width=SIZE, frame_height=SIZE)
    manager = KernelManager(
        dataset_dirs=[str(dataset)],
        modal_kernel_callbacks=[
            ImageKernelCallback(frame_width=SIZE, frame_height=SIZE),
            ActionKernelCallback(),
            seg_cb,
            MetaInfoKernelCallback(),
        ],
        verbose=False,
    )
    result = {}
    for name, n in manager.get_episodes_with_length().items():
        window = manager.read(name, 0, n, 1)
        kernel = manager.kernels["segmentation"]
        chunks = kernel.read_chunks(name, 0, (n - 1) // CHUNK_SIZE * CHUNK_SIZE)
        result[name] = {
            "num_frames": n,
            "image": window["image"],
            "env_action": window["env_action"],
            "agent_action": window["agent_action"],
            "segmentation_frames": [frame for chunk in chunks for frame in seg_cb.do_decode(chunk)],
            "obj_id": window["segmentation"]["obj_id"],
            "obj_mask": window["segmentation"]["obj_mask"],
            "meta_info": window["meta_info"],
            "mask": window["image_mask"],
        }
    with gzip.open(out, "wb") as f:
        pickle.dump(result, f, protocol=4)


def minetrain_write(out: Path) -> None:
    """Write MINETRAIN_LENGTHS episodes with minetrain's writer (short tails kept)."""
    from minetrain.data.store import DatasetWriter, Episode
    from minetrain.data.store.codecs import rle_encode

    with DatasetWriter(out, chunk_size=CHUNK_SIZE) as writer:
        for name, ep in synthetic_episodes(MINETRAIN_LENGTHS, seed=2).items():
            segmentation = [
                {}
                if inter is None
                else {
                    inter["key"]: {
                        "obj_id": inter["obj_id"],
                        "rle_mask": rle_encode(inter["mask"]),
                        "event": inter["event"],
                        "point": inter["point"],
                        "frame_id": t,
                        "frame_range": inter["frame_range"],
                    }
                }
                for t, inter in enumerate(ep["interactions"])
            ]
            writer.write(
                Episode(
                    name,
                    image=ep["frames"],
                    action=ep["action"],
                    segmentation=segmentation,
                    meta_info=ep["meta"],
                )
            )


def run_reference(*args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([str(REFERENCE_PYTHON), __file__, *args], check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("all", help="rebuild every store fixture (minetrain env; calls the reference venv)")
    write_ref = sub.add_parser("reference-write", help="(reference venv) write a reference dataset")
    write_ref.add_argument("out", type=Path)
    read_ref = sub.add_parser("reference-read", help="(reference venv) dump what the reference reads")
    read_ref.add_argument("dataset", type=Path)
    read_ref.add_argument("out", type=Path)
    write_mt = sub.add_parser("minetrain-write", help="(minetrain env) write a minetrain dataset")
    write_mt.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "reference-write":
        reference_write(args.out)
    elif args.command == "reference-read":
        reference_read(args.dataset, args.out)
    elif args.command == "minetrain-write":
        minetrain_write(args.out)
    else:
        import shutil

        for name in ("store_reference", "store_minetrain"):
            shutil.rmtree(FIXTURES / name, ignore_errors=True)
        run_reference("reference-write", str(FIXTURES / "store_reference"))
        run_reference(
            "reference-read", str(FIXTURES / "store_reference"), str(FIXTURES / "store_reference_read.pkl.gz")
        )
        minetrain_write(FIXTURES / "store_minetrain")
        run_reference(
            "reference-read",
            str(FIXTURES / "store_minetrain"),
            str(FIXTURES / "store_minetrain_reference_read.pkl.gz"),
        )
        # lock files are runtime state; both libraries read with lock=False
        for lock in [
            *FIXTURES.glob("store_reference/*/*/lock.mdb"),
            *FIXTURES.glob("store_minetrain/*/*/lock.mdb"),
        ]:
            lock.unlink()
    sys.exit(0)


if __name__ == "__main__":
    main()
