"""Keyboard and mouse actions: a dict of per-frame arrays (VPT env-action keys), batched as env and
agent actions.

With ``skip_frame = k > 1`` a kept frame's env action aggregates the k frames it stands for;
``enable_prev_action`` adds, for each kept frame t, the aggregate of the frames [t - k, t) (clipped
to the episode, zero at its first frame).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from minetrain.actions import BUTTONS, CAMERA_KEY, ENV_KEYS, env_to_agent
from minetrain.data.store.modalities.base import BatchParams, Field, Modality, SyntheticEpisode, WindowRead
from minetrain.data.store.safe_pickle import load_pickle
from minetrain.errors import DataError

if TYPE_CHECKING:
    import torch


def _row_counts(value: Any) -> dict[str, int]:
    """Rows per key of a dict of per-frame arrays; DataError if it is not one."""
    if not isinstance(value, dict) or not value:
        raise DataError(f"action holds {type(value).__name__}, expected a non-empty dict of per-frame arrays")
    not_arrays = [key for key, v in value.items() if not isinstance(v, np.ndarray)]
    if not_arrays:
        raise DataError(f"action keys {not_arrays} are not arrays with one row per frame")
    scalars = [key for key, v in value.items() if v.ndim == 0]
    if scalars:
        raise DataError(f"action keys {scalars} hold scalars, not one row per frame")
    camera = value.get(CAMERA_KEY)
    if camera is not None and camera.shape[1:] != (2,):
        raise DataError(f"{CAMERA_KEY} has shape {camera.shape}, expected (frames, 2)")
    return {key: len(v) for key, v in value.items()}


def _validate(value: Any) -> tuple[dict[str, np.ndarray], int]:
    if isinstance(value, dict):
        value = {key: np.asarray(array) for key, array in value.items()}
    counts = _row_counts(value)
    if len(set(counts.values())) != 1:
        detail = ", ".join(f"{key}={n}" for key, n in counts.items())
        raise DataError(f"action arrays have unequal lengths ({detail})")
    return value, next(iter(counts.values()))


def _check(data: bytes, expected: int) -> None:
    counts = _row_counts(load_pickle(data, "", "re-convert this episode"))
    bad = {key: n for key, n in counts.items() if n != expected}
    if bad:
        detail = ", ".join(f"{key}={n}" for key, n in bad.items())
        raise DataError(f"action arrays must have {expected} rows; {detail}")


def _take(value: Any, expected: int, lo: int, hi: int) -> dict[str, np.ndarray] | None:
    ok = isinstance(value, dict) and all(
        isinstance(v, np.ndarray) and v.ndim and len(v) >= expected for v in value.values()
    )
    return {key: array[lo:hi] for key, array in value.items()} if ok else None


def _join(pieces: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    keys = pieces[0].keys()
    if any(piece.keys() != keys for piece in pieces):
        raise DataError("action chunks disagree on their keys; re-convert this episode")
    return {key: np.concatenate([piece[key] for piece in pieces]) for key in keys}


def _fields(p: BatchParams) -> dict[str, Field]:
    b, t = p.batch_size, p.win_len
    env = {key: Field((b, t), np.int64) for key in BUTTONS} | {CAMERA_KEY: Field((b, t, 2), np.float32)}
    agent = {key: Field((b, t), np.int64, "batch") for key in ("buttons", "camera")}
    prefixes = ("env_action", "agent_action")
    if p.enable_prev_action:
        prefixes += ("env_prev_action", "agent_prev_action")
    return {
        f"{prefix}/{key}": field
        for prefix in prefixes
        for key, field in (env if prefix.startswith("env") else agent).items()
    }


def _aggregate(action: dict[str, np.ndarray], starts: np.ndarray) -> dict[str, np.ndarray]:
    """One row per run of frames beginning at ``starts``: camera moves summed, other keys' maximum
    (a button counts as pressed if it was pressed on any frame of the run)."""
    return {
        key: np.add.reduceat(value, starts, axis=0)
        if key == CAMERA_KEY
        else np.maximum.reduceat(value, starts, axis=0)
        for key, value in action.items()
    }


def aggregate_actions(action: dict[str, np.ndarray], stride: int) -> dict[str, np.ndarray]:
    """Env actions of every ``stride``-th frame, each covering the frames up to the next kept one."""
    if stride == 1:
        return action
    length = len(next(iter(action.values())))
    return _aggregate(action, np.arange(0, length, stride))


def env_action_rows(action: dict[str, np.ndarray], length: int, where: str) -> dict[str, np.ndarray]:
    """The VPT env-action keys as int64 buttons and float32 camera, zero-padded to ``length`` rows.

    Keys beyond the VPT set (e.g. ``ESC``) are left out so that every batch has the same keys.
    """
    missing = [key for key in ENV_KEYS if key not in action]
    if missing:
        raise DataError(f"{where}: action chunk lacks key(s) {', '.join(missing)}; re-convert this episode")
    rows = {}
    for key in ENV_KEYS:
        value = np.asarray(action[key], dtype=np.float32 if key == CAMERA_KEY else np.int64)
        out = np.zeros((length, *value.shape[1:]), dtype=value.dtype)
        out[: len(value)] = value
        rows[key] = out
    return rows


def _previous_actions(window: WindowRead, previous: dict[str, np.ndarray], where: str) -> None:
    """Into ``previous`` (the window's zero padding): for every kept frame t, the aggregate of the
    frames [t - k, t) of the episode; frame 0 keeps its zeros."""
    k = window.stride
    kept = window.start + k * np.arange(window.real)
    since = kept[kept > 0]
    if not len(since):
        return
    lo = max(0, int(since[0]) - k)
    action = window.read("action", lo, int(since[-1]))
    if k > 1:
        action = _aggregate(action, np.maximum(since - k, 0) - lo)
    rows = env_action_rows(action, len(since), where)
    for key, value in rows.items():
        previous[key][window.real - len(since) : window.real] = value


def _read(window: WindowRead, fields: dict[str, Any]) -> None:
    where = window.where("action")
    action = aggregate_actions(window.read("action"), window.stride)
    fields["env_action"] = env_action_rows(action, window.params.win_len, where)
    if window.params.enable_prev_action:
        _previous_actions(window, fields["env_prev_action"], where)


def _agent_action(env: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # On the numpy views: small torch ops cost a dispatcher round trip each.
    import torch  # batches are tensors; the store's other uses need no torch

    agent = env_to_agent({key: value.numpy() for key, value in env.items()})
    return {key: torch.from_numpy(value) for key, value in agent.items()}


def _finish(batch: dict[str, Any], p: BatchParams) -> None:
    batch["agent_action"] = _agent_action(batch["env_action"])
    if p.enable_prev_action:
        batch["agent_prev_action"] = _agent_action(batch["env_prev_action"])


def _draw(action: Mapping[str, np.ndarray], offset: int) -> dict[str, Any]:
    return {"action": {key: np.asarray(value)[offset] for key, value in action.items()}}


def _synthesize(episode: SyntheticEpisode) -> dict[str, np.ndarray]:
    return episode.action


ACTION = Modality(
    "action",
    ("action",),
    _validate,
    _check,
    take=_take,
    join=_join,
    fields=_fields,
    read=_read,
    finish=_finish,
    draw=_draw,
    synthesize=_synthesize,
    required=True,
)
