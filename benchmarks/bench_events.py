"""Event index: time to select one event's occurrences, ours vs the reference's LMDB layout.

Both indexes hold the same synthetic occurrences (E episodes, N event names with Zipf-like counts).
The baseline is what the reference's event kernel does for a regex: read ``__event_info__`` and
then one pickled item per occurrence of each matching event. Ours loads the matching ``.npz``
members. Prints seconds and the ratio baseline / ours.

    python benchmarks/bench_events.py [--episodes 2000] [--events 40] [--occurrences 400000]
"""

from __future__ import annotations

import argparse
import pickle
import re
import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np

from minetrain.data.events import (
    REFERENCE_INDEX_NAME,
    cap_per_event,
    dedupe_nearby,
    index_path,
    query_events,
    write_index,
)


def synthetic(episodes: int, events: int, occurrences: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, events + 1)
    counts = rng.multinomial(occurrences, weights / weights.sum())
    out = {}
    for i, n in enumerate(counts):
        rows = np.stack([rng.integers(0, episodes, n), rng.integers(0, 12000, n)], axis=1).astype(np.int32)
        out[f"minecraft.mine_block:minecraft:block_{i:03d}"] = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    return out


def write_reference(path: Path, names: list[str], occ: dict[str, np.ndarray]) -> None:
    with lmdb.open(str(path), map_size=1 << 32) as env, env.begin(write=True) as txn:
        info = {}
        for event, rows in occ.items():
            info[event] = {"__num_items__": len(rows), "__num_episodes__": len(np.unique(rows[:, 0]))}
            for i, (episode, frame) in enumerate(rows.tolist()):
                txn.put(str((event, i)).encode(), pickle.dumps((str(episode), frame, 1)))
        txn.put(b"__event_info__", pickle.dumps(info))
        txn.put(b"__codebook__", pickle.dumps({name: str(i) for i, name in enumerate(names)}))


def reference_select(path: Path, regex: str) -> int:
    """The reference's access pattern: one get + unpickle per occurrence of each matching event."""
    total = 0
    with lmdb.open(str(path), readonly=True, lock=False) as env, env.begin() as txn:
        info = pickle.loads(txn.get(b"__event_info__"))
        for event, value in info.items():
            if re.match(regex, event):
                for i in range(value["__num_items__"]):
                    pickle.loads(txn.get(str((event, i)).encode()))
                    total += 1
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--occurrences", type=int, default=400_000)
    args = parser.parse_args()
    names = [f"episode-{i:05d}" for i in range(args.episodes)]
    occ = synthetic(args.episodes, args.events, args.occurrences)
    regex = "minecraft.mine_block:minecraft:block_00.*"
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = Path(tmp) / "ours", Path(tmp) / "theirs"
        ours.mkdir()
        theirs.mkdir()
        start = time.perf_counter()
        write_index(index_path(ours), names, [2] * len(names), occ)
        write_ours = time.perf_counter() - start
        write_reference(theirs / REFERENCE_INDEX_NAME, names, occ)
        start = time.perf_counter()
        selected = query_events([ours], regex)
        query_ours = time.perf_counter() - start
        start = time.perf_counter()
        baseline_total = reference_select(theirs / REFERENCE_INDEX_NAME, regex)
        query_theirs = time.perf_counter() - start
        assert baseline_total == len(selected)
        start = time.perf_counter()
        filtered = cap_per_event(dedupe_nearby(selected, 64), 1000)
        filter_time = time.perf_counter() - start
    print(f"index: {args.occurrences:,} occurrences, {args.events} events, {args.episodes} episodes")
    print(f"write ours: {write_ours:.3f} s ({index_path(ours).name})")
    print(f"select {len(selected):,} occurrences ({regex!r}):")
    ratio = query_theirs / query_ours
    print(f"  reference layout {query_theirs:.3f} s, ours {query_ours:.3f} s, ratio {ratio:.1f}x")
    print(f"min_nearby=64 + max_within=1000 -> {len(filtered):,} occurrences in {filter_time:.3f} s")


if __name__ == "__main__":
    main()
