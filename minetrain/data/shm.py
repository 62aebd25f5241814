"""How much ``/dev/shm`` a DataLoader with workers needs, the check before its workers start, and a meter.

With ``num_workers > 0`` every batch crosses from a worker to the training process in shared
memory, on both of minetrain's paths:

* torch's own path (``shared_batch_ring=false``): torch's ``_MultiProcessingDataLoaderIter`` sends
  ``num_workers * prefetch_factor`` index batches to the workers up front and one more each time it
  returns a batch, so at most that many batches are between "sent" and "returned" (done ones wait
  in its result queue or reorder cache). A worker's batch lies in shared memory from the moment it
  is collated (``default_collate`` allocates its output there; ours decodes frames there) until
  the last reference to it is dropped; the batches training still holds come on top.
* the ``BatchRing`` path (the default): ``prefetch_factor`` slots per worker, exactly the batches
  torch keeps in flight; a batch no free slot takes goes torch's way (fresh shared memory).

So both peak at ``(num_workers * prefetch_factor + HELD_BY_TRAINING) * batch_bytes`` per rank
(``shared_memory_need``), ``batch_bytes`` being a batch's frames and condition masks:
``batch_size * win_len * frame_height * frame_width * (3 + enable_segment)``. At the rocket1 config
(8 workers, prefetch_factor 4, batch 8 x 128 x 224^2 with masks: 196 MiB) that is 6.5 GiB per rank.
The ring path holds its slots once written until iteration stops, the torch path only while
batches are alive; ``num_workers=0`` uses no shared memory at all.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping

from minetrain.errors import ConfigError

SHM_DIR = "/dev/shm"
# Lightning's fit and evaluation loops hold two batches: the one in the step and the one their
# data fetcher has already taken from the loader.
HELD_BY_TRAINING = 2
GIB = 1 << 30


def batch_bytes(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Bytes of a batch's uint8 tensors (frames and condition masks; the small fields are ignored)."""
    return sum(math.prod(shape) for shape in shapes.values())


def shared_memory_need(batch: int, workers: int, prefetch_factor: int, ranks: int = 1) -> int:
    """Peak ``/dev/shm`` bytes of ``ranks`` loaders of ``workers`` workers on one node (module doc)."""
    if workers == 0:
        return 0
    return ranks * (workers * prefetch_factor + HELD_BY_TRAINING) * batch


def free_bytes(path: str = SHM_DIR) -> int | None:
    """Bytes of ``path``'s file system an unprivileged process may still use; None if there is none."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def check_shared_memory(
    batch: int, workers: int, prefetch_factor: int, ranks: int, batch_size: int, split: str
) -> None:
    """Raise a one-line ``ConfigError`` if ``/dev/shm`` cannot hold what the loader may need."""
    need = shared_memory_need(batch, workers, prefetch_factor, ranks)
    free = free_bytes()
    if free is None or need <= free:
        return
    raise ConfigError(
        f"the {split} DataLoader may need {need:,} bytes ({need / GIB:.2f} GiB) of {SHM_DIR} but "
        f"{free:,} ({free / GIB:.2f} GiB) are free: ({workers} workers x prefetch_factor "
        f"{prefetch_factor} + {HELD_BY_TRAINING} batches training holds) x {batch:,} bytes per batch of "
        f"{batch_size} x {ranks} rank(s) on this node; give the container more (docker run "
        f"--shm-size={math.ceil(need / GIB) + 1}g) or lower data.num_workers (0 uses none), "
        "data.prefetch_factor, data.batch_size, data.win_len or data.frame_width x data.frame_height "
        "(data.shared_batch_ring=false, torch's own collate path, holds as much at its peak)"
    )


def shared_memory_held(pids: Iterable[int]) -> int:
    """Bytes of the ``/dev/shm`` files the processes ``pids`` hold open (each file counted once).

    torch keeps a descriptor of every shared-memory storage a process has (made or received), and
    so does a worker for a batch the main process has not taken yet: the sum over the training
    process and its workers is what their loader holds in ``/dev/shm``, pages actually allocated.
    """
    sizes: dict[tuple[int, int], int] = {}
    for pid in pids:
        fds = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fds)
        except OSError:
            continue  # the process has exited
        for name in names:
            try:
                if not os.readlink(f"{fds}/{name}").startswith(f"{SHM_DIR}/"):
                    continue
                stat = os.stat(f"{fds}/{name}")
            except OSError:
                continue  # closed meanwhile
            sizes[(stat.st_dev, stat.st_ino)] = stat.st_blocks * 512
    return sum(sizes.values())


def process_tree(pid: int | None = None) -> list[int]:
    """``pid`` (this process by default) and its child processes, such as DataLoader workers."""
    pid = os.getpid() if pid is None else pid
    children = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        threads = []
    for thread in threads:  # a child is listed under the thread that started it
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as handle:
                children += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return [pid, *children]
