"""Write an index-only dataset: LMDB parts holding the four bookkeeping keys and no chunks.

Full-scale commands (``data inspect``, ``data episodes``) must run on the published scale (15,655
episodes, 160.5 M frames) without fetching it; an index-only dataset has that scale's bookkeeping
in a few MB, and any chunk read fails, which shows that a command reads none.

    python benchmarks/make_index_only.py OUT [--episodes 15655] [--frames 160500000] [--parts 8]
        [--spread uniform|lognormal]
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import lmdb
import numpy as np

MODALITIES = ("image", "action", "segmentation")


SPREADS = ("uniform", "lognormal")


def episode_lengths(episodes: int, frames: int, spread: str = "uniform") -> list[int]:
    """``episodes`` lengths summing to ``frames``.

    ``uniform``: spread +-50% around the mean so they are not all equal; ``lognormal``: a long tail
    (seeded log-normal, sigma 1: the longest of 15,655 episodes is about 30 times the mean), closer
    to recorded play, where sessions run from under a minute to hours.
    """
    if spread == "lognormal":
        raw = np.random.default_rng(0).lognormal(0.0, 1.0, episodes).tolist()
    else:
        raw = [0.5 + (i * 7919 % 1000) / 1000 for i in range(episodes)]
    scale = frames / sum(raw)
    lengths = [max(1, int(x * scale)) for x in raw]
    lengths[-1] += frames - sum(lengths)
    if lengths[-1] < 1:
        raise ValueError(f"cannot split {frames} frames into {episodes} episodes")
    return lengths


def write_index_only(
    out: Path, episodes: int, frames: int, parts: int = 8, chunk_size: int = 32, spread: str = "uniform"
) -> Path:
    """Write image/, action/ and segmentation/ with ``parts`` parts each sharing the episodes in order."""
    lengths = episode_lengths(episodes, frames, spread)
    per_part = -(-episodes // parts)
    for modality in MODALITIES:
        for number in range(parts):
            indices = range(number * per_part, min(episodes, (number + 1) * per_part))
            infos = [
                {"episode": f"episode-{i:06d}", "episode_idx": k, "num_frames": lengths[i]}
                for k, i in enumerate(indices)
            ]
            path = out / modality / f"part-{number}"
            path.mkdir(parents=True, exist_ok=True)
            env = lmdb.open(str(path), map_size=1 << 30)
            with env.begin(write=True) as txn:
                txn.put(b"__chunk_size__", pickle.dumps(chunk_size))
                txn.put(b"__chunk_infos__", pickle.dumps(infos))
                txn.put(b"__num_episodes__", pickle.dumps(len(infos)))
                txn.put(b"__num_total_frames__", pickle.dumps(sum(i["num_frames"] for i in infos)))
            env.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--episodes", type=int, default=15_655)
    parser.add_argument("--frames", type=int, default=160_500_000)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--spread", choices=SPREADS, default="uniform")
    args = parser.parse_args()
    write_index_only(args.out, args.episodes, args.frames, args.parts, args.chunk_size, args.spread)
    print(f"wrote {args.episodes} episodes, {args.frames:,} frames in {args.parts} parts to {args.out}")


if __name__ == "__main__":
    main()
