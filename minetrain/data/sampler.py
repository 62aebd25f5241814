"""Episode-continuous batches: every batch slot walks consecutive windows of its episodes.

A recurrent policy carries its memory from one batch to the next per batch slot, so slot ``j`` of
batch ``i + 1`` must hold the window that follows slot ``j`` of batch ``i`` in the same episode
(until the episode ends and the slot moves on to another one).

The plan of one epoch is a pure function of (seed, epoch, window counts, batch size, world size):

1. the episodes are shuffled with ``numpy.random.default_rng((seed, epoch))``;
2. their windows are laid end to end in that order, one sequence of all W windows;
3. every rank yields ``N = W // (R * B)`` batches for R ranks and batch size B, the same number on
   every rank (a rank with fewer batches would leave the others waiting forever in DDP's
   all-reduce) and in every epoch (Lightning sizes an epoch once);
4. the first ``N * R * B`` windows of the sequence are cut into ``R * B`` contiguous runs of N
   windows: rank r's slot j walks run ``r * B + j``.

No window is yielded twice in an epoch and fewer than ``R * B`` are left out (``dropped_windows``):
the end of the sequence, which changes every epoch with the shuffle. An episode that straddles two
runs is split at a window boundary between two slots, possibly of two ranks (at most ``R * B - 1``
episodes per epoch); the slot that takes up the second piece starts it afresh, because the trainer
resets a slot's memory whenever its window does not directly follow that slot's previous window
(``minetrain.offline.memory``). With one process the plan is the one earlier versions made.

Resuming mid-epoch: the state is (epoch, batches consumed by training). It cannot come from this
sampler's own position, which runs ahead of training by whatever the DataLoader and Lightning have
prefetched, so the caller passes the consumed count to ``state_dict``; after ``load_state_dict``
the next iteration of that epoch starts at batch ``consumed``. ``len`` stays the full epoch length
because Lightning counts the restored batches towards it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


def default_world() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, or (1, 0) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


# Version of the plan in ``state_dict``: states without it come from the plan that gave each rank
# whole episodes, which differs from this one on more than one process.
PLAN_VERSION = 2


def batches_per_rank(window_counts: Sequence[int], batch_size: int, num_replicas: int) -> int:
    """The number of batches every rank yields in every epoch (see the module docstring, step 3)."""
    return int(np.sum(window_counts, dtype=np.int64)) // (batch_size * num_replicas)


def run_windows(
    order: np.ndarray, window_counts: np.ndarray, offsets: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """Window indices at ``positions`` of the sequence that lays episodes end to end in ``order``."""
    counts = window_counts[order]
    ends = np.cumsum(counts)
    nth = np.searchsorted(ends, positions, side="right")
    return offsets[order][nth] + positions - (ends - counts)[nth]


class EpisodeContinuousBatchSampler(Sampler[list[int]]):
    """Batches of window indices (``offset[e] + w`` for window w of episode e) for one rank.

    ``window_counts[e]`` is the number of windows of episode e; windows are indexed episode after
    episode. ``shuffle=False`` keeps the given episode order every epoch (validation).
    """

    def __init__(
        self,
        window_counts: Sequence[int],
        batch_size: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        world, world_rank = default_world()
        self.num_replicas = world if num_replicas is None else int(num_replicas)
        self.rank = world_rank if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside a world of {self.num_replicas} processes")
        self.window_counts = np.asarray(window_counts, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.window_counts)[:-1]]).astype(np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0
        self.num_batches = batches_per_rank(self.window_counts, self.batch_size, self.num_replicas)
        self._resume: tuple[int, int] | None = None
        self._yielded = 0

    @property
    def sampler(self) -> EpisodeContinuousBatchSampler:
        """Itself: Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler`` each epoch."""
        return self

    @property
    def num_windows(self) -> int:
        return int(self.window_counts.sum())

    @property
    def dropped_windows(self) -> int:
        """Windows no rank yields in an epoch (the same number every epoch)."""
        return self.num_windows - self.num_batches * self.batch_size * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def episode_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.window_counts.size)
        return np.random.default_rng((self.seed, int(epoch))).permutation(self.window_counts.size)

    def plan(self, epoch: int) -> np.ndarray:
        """This rank's batches of ``epoch``: an (N, B) array of window indices, row i = batch i."""
        runs = self.rank * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        positions = runs[None, :] * self.num_batches + np.arange(self.num_batches, dtype=np.int64)[:, None]
        return run_windows(self.episode_order(epoch), self.window_counts, self.offsets, positions)

    def __iter__(self) -> Iterator[list[int]]:
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None
        batches = self.plan(self.epoch)
        self._yielded = start
        for row in batches[start:].tolist():
            self._yielded += 1
            yield row

    def __len__(self) -> int:
        return self.num_batches

    def _fingerprint(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "shuffle": self.shuffle,
            "batch_size": self.batch_size,
            "num_replicas": self.num_replicas,
            "num_windows": self.num_windows,
            "num_episodes": int(self.window_counts.size),
            "plan_version": PLAN_VERSION,
        }

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """(epoch, consumed) plus what the order depends on.

        ``consumed`` is the number of this epoch's batches training has used; it defaults to the
        number this sampler has yielded, which is only right when nothing prefetches.
        """
        consumed = self._yielded if consumed is None else int(consumed)
        return {"epoch": self.epoch, "consumed": consumed, **self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue ``state['epoch']`` at batch ``state['consumed']`` on the next iteration.

        A state made with a different batch size, world size, seed or dataset gives another order,
        so the epoch is then restarted from its first batch, with a warning.
        """
        self.epoch = int(state["epoch"])
        if "plan_version" not in state and state.get("num_replicas") == 1:
            state = {**state, "plan_version": PLAN_VERSION}  # one process: both plans are the same
        current = self._fingerprint()
        changes = [f"{k} {state.get(k)} -> {v}" for k, v in current.items() if state.get(k) != v]
        if changes:
            changed = ", ".join(changes)
            log.warning(
                "data order of the checkpoint does not match this run (%s): epoch %d restarts from its "
                "first batch instead of resuming exactly",
                changed,
                self.epoch,
            )
            self._resume = None
            return
        self._resume = (self.epoch, min(int(state["consumed"]), self.num_batches))
