"""``WindowLoader``: the DataLoader of windows, and the owner of its workers' shared memory.

Before workers start the loader checks ``/dev/shm`` for what they may need (``shm.py``) and, with
``shared_batch_ring``, allocates their ``BatchRing`` (``buffers.py``). The ring stays the loader's:
each worker's dataset only receives an allocator hook (``take_buffers``, set when the worker
starts), the worker's collate packs each batch for the ring, and the loader turns the batches it
receives back into views of the slots before yielding them. ``shared_batch_ring=False`` leaves the
hand-over to torch (fresh shared memory per batch). Either way the memory is given back when
iteration stops.

A minetrain error raised in a worker reads as in the main process: one line, not a traceback.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.apply_func import apply_to_collection
from torch.utils.data import DataLoader, get_worker_info

from minetrain.data.batching import stack_windows
from minetrain.data.buffers import BatchRing
from minetrain.data.shm import batch_bytes, check_shared_memory
from minetrain.errors import MinetrainError

log = logging.getLogger(__name__)


def collate_windows(items: Sequence[Any] | dict[str, Any]) -> Any:
    """The batch ``RawDataset.__getitems__`` built, or one stacked from single windows.

    Stacks tensors, keeps strings and lists of strings as per-window lists, recurses into dicts.
    """
    return items if isinstance(items, dict) else stack_windows(items)


def limit_worker_threads(_: int) -> None:
    """A DataLoader worker's ``worker_init_fn``: one torch thread, so workers use a core each."""
    torch.set_num_threads(1)


def _worker_message(err: MinetrainError) -> str | None:
    """The one-line message of a minetrain error a DataLoader worker raised, or None if it is not one.

    torch re-raises a worker's exception in the main process as the same class built from
    "Caught <class> in DataLoader worker process N.\nOriginal Traceback ...": the worker's whole
    formatted traceback, whose last entry reads "<module>.<class>: <message>".
    """
    text, kind = str(err), type(err)
    head = f"\n{kind.__module__}.{kind.__qualname__}: "
    if not text.startswith(f"Caught {kind.__name__} ") or head not in text:
        return None
    return text.rpartition(head)[2].rstrip("\n")


class _WorkerHooks:
    """What a ``WindowLoader``'s workers run around the caller's hooks, with the loader's ring.

    At start, the worker's dataset gets its allocator hook: ``take_buffers(shapes)`` gives the
    leading rows of a free slot of this worker, or None. After collate, the batch is packed for
    the ring. Without a ring, and in the main process, the caller's hooks run unchanged.
    """

    def __init__(
        self, collate_fn: Callable[[Any], Any], worker_init_fn: Callable[[int], None] | None
    ) -> None:
        self.collate_fn = collate_fn
        self.worker_init_fn = worker_init_fn
        self.ring: BatchRing | None = None

    def init_worker(self, worker_id: int) -> None:
        if self.ring is not None:
            get_worker_info().dataset.take_buffers = functools.partial(self.ring.take, worker_id)
        if self.worker_init_fn is not None:
            self.worker_init_fn(worker_id)

    def collate(self, items: Any) -> Any:
        batch = self.collate_fn(items)
        worker = get_worker_info()
        return batch if self.ring is None or worker is None else self.ring.pack(worker.id, batch)


def _unpacked(batches: Iterator[Any], ring: BatchRing, pin: bool) -> Iterator[Any]:
    """``batches`` with their slot references turned into views of the ring's slots.

    With ``pin`` the views are copied into pinned memory on a thread of their own, one batch
    ahead and in order, so the training thread does not spend a copy of the batch on it (torch's
    pin thread pinned the rest of the batch, which travelled by value). The slots are marked
    delivered here, on receipt, so the ring's reclaim at the next pass never sees them taken. An
    error fetching a batch is raised after the batch before it.
    """
    if not pin:
        yield from (ring.unpack(batch) for batch in batches)
        return
    device = torch.accelerator.current_device_index()
    with ThreadPoolExecutor(1, "minetrain_pin", _start_pin_thread, (device,)) as stage:
        ahead: Future[Any] | None = None
        while True:
            try:
                views = ring.unpack(next(batches))
                following = stage.submit(apply_to_collection, views, torch.Tensor, _pinned)
                del views  # the stage holds them, and with them the slots, until they are copied
            except StopIteration:
                following = None
            except Exception:
                if ahead is not None:
                    yield ahead.result()
                raise
            if ahead is not None:
                yield ahead.result()
            if following is None:
                return
            ahead = following


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.is_pinned() else tensor.pin_memory()


def _start_pin_thread(device: int) -> None:
    """As torch's pin thread starts: pin for the training device, with one torch thread."""
    torch.set_num_threads(1)
    torch.accelerator.set_device_index(device)


class _ReclaimingSampler:
    """The batch sampler of a ``WindowLoader`` with workers, which frees the ring's undelivered
    slots when torch asks for the first index of a pass.

    When persistent workers resume, torch sends each a resume marker and drops every batch that
    arrives before the markers: the rest of a pass cut short, whose slots no one will unpack. Only
    then does it ask for the new pass's first index, so at that moment no batch is in flight and a
    slot still FILLING is one of the dropped batches'.

    It refers to its loader weakly: the loader's persistent iterator holds this sampler, and a strong
    reference back would make a cycle that keeps the workers (and their shared memory) alive after
    the last reference to the loader is dropped, until the garbage collector happens to run.
    """

    def __init__(self, sampler: Any, loader: WindowLoader) -> None:
        self.sampler = sampler
        self.loader_ref = weakref.ref(loader)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        loader = self.loader_ref()
        if loader is not None and loader.batch_ring is not None:
            loader.batch_ring.reclaim_undelivered()
        del loader
        yield from self.sampler


class WindowLoader(DataLoader):
    """A DataLoader that hands its sampler's epoch to the dataset and reports skipped windows.

    The dataset seeds relabelling and dropout with the epoch, so before each pass the epoch of the
    (batch) sampler is written to the dataset's shared epoch, which persistent workers read. Windows
    the dataset replaced because of bad data (``on_error='skip'``: all-zero ``mask``) are counted
    here, in the main process, whatever worker produced them, and logged when the pass ends.

    Shared memory: at the end of an epoch persistent workers stay and the ring is trimmed; a pass
    cut short (Lightning's ``limit_train_batches``) keeps them too, and the next pass frees the
    slots of the batches torch dropped (``_ReclaimingSampler``); otherwise (a break, a deleted
    iterator, non-persistent workers, the trainer's teardown) the workers are stopped and the ring
    dropped.
    """

    skipped_windows: dict[int, int]
    batch_ring: BatchRing | None = None
    _passes = 0

    def __init__(
        self,
        *args: Any,
        collate_fn: Callable[[Any], Any] = collate_windows,
        worker_init_fn: Callable[[int], None] | None = None,
        shared_batch_ring: bool = True,
        ranks_per_node: int = 1,
        **kwargs: Any,
    ):
        self.shared_batch_ring = shared_batch_ring
        # Every rank on the node fills the same /dev/shm.
        self.ranks_per_node = ranks_per_node
        self._hooks = _WorkerHooks(collate_fn, worker_init_fn)
        super().__init__(
            *args, collate_fn=self._hooks.collate, worker_init_fn=self._hooks.init_worker, **kwargs
        )

    def __iter__(self) -> Iterator[Any]:
        epoch = getattr(self.batch_sampler, "epoch", getattr(self.sampler, "epoch", None))
        if epoch is not None:
            self.dataset.set_epoch(epoch)
        self._passes += 1
        if self.num_workers and self._iterator is None:
            self._prepare_workers()
        batches = super().__iter__() if self.num_workers else self._batches_in_process()
        ring = self.batch_ring if self.num_workers else None
        if ring is not None:
            ring.release_unreferenced()  # batches training dropped since the last pass ended
        return self._pass(self.dataset.epoch, batches, ring, self._passes)

    @property
    def _index_sampler(self) -> Any:
        """What torch's iterator draws batch indices from: the batch sampler, behind the ring's
        reclaim when workers are used."""
        sampler = super()._index_sampler
        return _ReclaimingSampler(sampler, self) if self.num_workers and self.shared_batch_ring else sampler

    @property
    def _pins(self) -> bool:
        """Whether batches go to pinned memory: asked for, and an accelerator to pin for."""
        return self.pin_memory and torch.accelerator.is_available()

    def _batches_in_process(self) -> Iterator[Any]:
        """``num_workers=0``: what torch's single-process iterator yields, without its profiler range.

        That iterator opens a ``record_function`` range around every batch, a dispatcher round trip
        even when no profiler runs, costly when the code pages went cold while a batch decoded
        (``benchmarks/bench_loader.py`` measures the loader). Lightning's profilers time the fetch
        themselves.
        """
        pin = self._pins
        for indices in self.batch_sampler:
            batch = self.collate_fn(self.dataset.__getitems__(indices))
            if pin:
                batch = apply_to_collection(batch, torch.Tensor, torch.Tensor.pin_memory)
            yield batch
            # Not held while the next batch is made: its buffers are reusable once the consumer drops it.
            del batch

    def _prepare_workers(self) -> None:
        """Before workers start: check ``/dev/shm`` and allocate the ring their hooks will use."""
        self.batch_ring = None
        batch_size = self.batch_size or getattr(self.batch_sampler, "batch_size", None)
        if hasattr(self.dataset, "batch_shapes") and batch_size is not None:
            shapes = self.dataset.batch_shapes(batch_size)
            check_shared_memory(
                batch_bytes(shapes),
                self.num_workers,
                self.prefetch_factor,
                self.ranks_per_node,
                batch_size,
                getattr(self.dataset, "split", ""),
            )
            if self.shared_batch_ring:
                self.batch_ring = BatchRing(shapes, self.num_workers, self.prefetch_factor)
        self._hooks.ring = self.batch_ring

    def release_shared_memory(self) -> None:
        """Stop the workers and drop the ring; its slots are freed as training drops their batches."""
        if self._iterator is not None:
            self._iterator._shutdown_workers()
            self._iterator = None
        self.batch_ring = self._hooks.ring = None

    def _pass(self, epoch: int, batches: Iterator[Any], ring: BatchRing | None, number: int) -> Iterator[Any]:
        skipped = 0
        exhausted = False
        unpacked = batches if ring is None else _unpacked(batches, ring, self._pins)
        try:
            for batch in unpacked:
                # numpy on the tensor's memory: three small torch ops cost a few ms per batch on a VM.
                skipped += int(np.count_nonzero(~batch["mask"].numpy().any(axis=1)))
                yield batch
                del batch
                if ring is not None:
                    ring.release_unreferenced()
            exhausted = True
        except MinetrainError as err:
            # A bad chunk reads the same with workers as without: one line, not a worker's traceback.
            message = _worker_message(err)
            if message is None:
                raise
            raise type(err)(message) from None
        finally:
            if unpacked is not batches:
                unpacked.close()  # waits for a batch being pinned
            if self.num_workers and number == self._passes:  # else a later pass owns the workers
                if exhausted and self.persistent_workers:
                    if ring is not None:
                        ring.trim()  # the workers idle until the next epoch reuses their slots
                else:
                    getattr(batches, "_shutdown_workers", lambda: None)()
                    self.release_shared_memory()
        if not hasattr(self, "skipped_windows"):
            self.skipped_windows = {}
        self.skipped_windows[epoch] = skipped
        if skipped:
            log.warning(
                "epoch %d: %d %s window(s) were skipped because of bad data (on_error='skip'); "
                "the warnings above name them",
                epoch,
                skipped,
                self.dataset.split,
            )
