"""ROCKET-1 conditioning: which interaction each frame of a window is conditioned on.

The segmentation modality lists, per frame, every interaction visible on it (keyed by an
interaction key tuple). The policy is conditioned on one of them per frame, chosen by hindsight
relabelling as the reference does: walking the window backwards, keep the current interaction
while the frames still show it, and pick a new one among a frame's interactions when it does not.
The pick is drawn from a generator the caller seeds (``item_rng``), so a window's conditioning
depends on (seed, epoch, item) only and is identical with any number of DataLoader workers.

Output names follow the reference's segmentation callback: ``obj_id`` (interaction type, -1 for
none), ``obj_mask`` (the chosen object's mask at frame size), ``point`` ((row, col) normalised to
[0, 1], (-1, -1) for none), ``event``, ``frame_id`` and ``frame_range``.

Condition dropout (absent from the reference, described by the ROCKET-1 paper) acts per window:
with probability ``dropout`` the whole window is unconditioned (obj_id -1, empty masks). A window
is the unit the policy sees at once, so a dropped window teaches the unconditioned behaviour over a
full memory span rather than on isolated frames.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from functools import lru_cache

import numpy as np

from minetrain.data.store.codecs import MASK_SHAPE, rle_decode
from minetrain.errors import DataError

# Raw interaction ids stored in the data -> the types the model embeds (SPEC.md): raw 1 is folded
# into 3 (Interact) as the reference does.
INTERACTION_TYPES = {0: 0, 1: 3, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6}
NO_INTERACTION = -1


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item's random choices: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def choose_interactions(frames: Sequence[Mapping], rng: np.random.Generator) -> list[Hashable | None]:
    """Hindsight relabelling: the interaction key each frame is conditioned on (None = none).

    Frames without interactions get None but do not end the current interaction, so an
    interaction that reappears after a gap keeps its key, as in the reference.
    """
    chosen: list[Hashable | None] = [None] * len(frames)
    current: Hashable | None = None
    for t in range(len(frames) - 1, -1, -1):
        frame = frames[t]
        if not frame:
            continue
        if current is None or current not in frame:
            keys = list(frame)
            current = keys[int(rng.integers(len(keys)))]
        chosen[t] = current
    return chosen


def interaction_type(raw_id: int) -> int:
    """The model-side interaction type of a raw interaction id."""
    try:
        return INTERACTION_TYPES[int(raw_id)]
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"interaction obj_id {raw_id!r} is not one of {sorted(INTERACTION_TYPES)}; "
            "re-convert the segmentation"
        ) from None


@lru_cache(maxsize=8)
def _sample_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Where a nearest-neighbour resize of a 360x640 mask to (height, width) reads from.

    Output pixel (i, j) reads source pixel (floor(i * 360 / height), floor(j * 640 / width)) in
    exact integer arithmetic: the pixels OpenCV's INTER_NEAREST (used by the reference) picks when
    shrinking, as for every frame size up to 360x640 (enlarging may differ on edges). Returns the
    sorted flat source indices over the distinct source rows, and for each output row the distinct
    row it copies (rows repeat when upsampling; None when every row is distinct, as when shrinking).
    """
    rows = np.arange(height) * MASK_SHAPE[0] // height
    cols = np.arange(width) * MASK_SHAPE[1] // width
    distinct, row_of = np.unique(rows, return_inverse=True)
    positions = (distinct[:, None] * MASK_SHAPE[1] + cols[None, :]).reshape(-1)
    positions.setflags(write=False)
    if distinct.size == height:
        return positions, None
    row_of.setflags(write=False)
    return positions, row_of


def decode_mask(rle: str, size: tuple[int, int]) -> np.ndarray:
    """Decode a 360x640 RLE mask straight to ``size`` = (width, height), nearest neighbour.

    Sorted, disjoint runs (what every writer produces) are resolved by counting the sampled pixels
    each run covers, without materialising the full mask; other RLEs take the general decoder,
    which also reports malformed ones. Real segmentation changes every frame, so this runs about
    once per frame of a window: it is kept to a handful of numpy calls.
    """
    width, height = size
    positions, row_of = _sample_grid(height, width)
    try:
        # Strict since numpy 2.3: anything but whitespace-separated integers raises ValueError.
        edges = np.fromstring(rle, dtype=np.int64, sep=" ")
    except (TypeError, ValueError):
        edges = None
    if edges is not None and edges.size % 2 == 0:
        # "start length" pairs (1-based) -> run edges [start, end) (0-based), in place.
        edges[0::2] -= 1
        edges[1::2] += edges[0::2]
        # Sorted disjoint runs inside the mask are exactly non-decreasing edges in [0, total]; an
        # overflowing length makes an edge negative or out of order, so it fails here too.
        total = MASK_SHAPE[0] * MASK_SHAPE[1]
        if edges.size == 0 or (edges[0] >= 0 and edges[-1] <= total and not np.any(edges[1:] < edges[:-1])):
            # Sampled pixels between consecutive edges alternate outside / inside a run.
            bounds = np.empty(edges.size + 2, dtype=np.int64)
            bounds[0], bounds[-1] = 0, positions.size
            bounds[1:-1] = np.searchsorted(positions, edges)
            inside = np.zeros(bounds.size - 1, dtype=np.uint8)
            inside[1::2] = 1
            return _rows(np.repeat(inside, bounds[1:] - bounds[:-1]), row_of, width)
    return _rows(rle_decode(rle).reshape(-1)[positions], row_of, width)


def _rows(sampled: np.ndarray, row_of: np.ndarray | None, width: int) -> np.ndarray:
    """The sampled pixels of the distinct source rows as the output rows (repeated when upsampling)."""
    rows = sampled.reshape(-1, width)
    return rows if row_of is None else rows[row_of]


def no_condition(length: int) -> dict[str, np.ndarray | list[str]]:
    """Every output of ``condition_window`` but ``obj_mask``, for ``length`` unconditioned frames."""
    return {
        "obj_id": np.full(length, NO_INTERACTION, dtype=np.int64),
        "point": np.full((length, 2), -1.0, dtype=np.float32),
        "event": [""] * length,
        "frame_id": np.full(length, -1, dtype=np.int64),
        "frame_range": np.full((length, 2), -1, dtype=np.int64),
    }


def empty_condition(length: int, size: tuple[int, int]) -> dict[str, np.ndarray | list[str]]:
    """``length`` unconditioned frames: what padding and condition dropout produce."""
    width, height = size
    return {**no_condition(length), "obj_mask": np.zeros((length, height, width), dtype=np.uint8)}


def condition_window(
    frames: Sequence[Mapping],
    size: tuple[int, int],
    rng: np.random.Generator,
    dropout: float = 0.0,
    stride: int = 1,
    obj_mask: np.ndarray | None = None,
) -> dict[str, np.ndarray | list[str]]:
    """The conditioning of ``frames[::stride]`` at frame ``size`` = (width, height).

    Relabelling walks every frame of ``frames`` (skipped ones included, so an interaction stays
    continuous across them); only the kept frames' chosen masks are decoded, into ``obj_mask``
    ((kept frames, height, width) uint8, every row written) if given. The dropout draw comes first
    from ``rng`` and always happens, so the relabelling does not depend on ``dropout``.
    """
    dropped = bool(rng.random() < dropout)
    chosen = choose_interactions(frames, rng)
    kept = range(0, len(frames), stride)
    width, height = size
    out = no_condition(len(kept))
    masks = np.empty((len(kept), height, width), dtype=np.uint8) if obj_mask is None else obj_mask
    out["obj_mask"] = masks
    # Per-frame values are gathered in lists and written with one numpy call per field.
    rows_of_mask: dict[str, list[int]] = {}
    empty: list[int] = []
    point_rows, points, range_rows, ranges = [], [], [], []
    for row, t in enumerate(kept):
        key = None if dropped else chosen[t]
        if key is None:
            empty.append(row)
            continue
        value = frames[t][key]
        out["obj_id"][row] = interaction_type(value["obj_id"])
        rows_of_mask.setdefault(value["rle_mask"], []).append(row)
        out["event"][row] = str(value.get("event", ""))
        if (point := value.get("point")) is not None:
            point_rows.append(row)
            points.append(point)
        out["frame_id"][row] = int(value.get("frame_id", -1))
        if (frame_range := value.get("frame_range")) is not None:
            range_rows.append(row)
            ranges.append(frame_range)
    masks[empty] = 0
    for rle, rows in rows_of_mask.items():
        masks[rows] = decode_mask(rle, size)
    if points:
        out["point"][point_rows] = np.asarray(points, dtype=np.float64) / np.array(
            MASK_SHAPE, dtype=np.float64
        )
    if ranges:
        out["frame_range"][range_rows] = np.asarray(ranges, dtype=np.int64)
    return out
