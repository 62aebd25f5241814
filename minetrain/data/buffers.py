"""Batch buffers written once per batch and reused, in the main process and across workers.

A batch of video is hundreds of MB written once, and the page faults of fresh memory cost about
as much as the writing. PyTorch's default hand-over from a DataLoader worker adds to that: every
tensor of a batch goes into a new shared-memory file, whose descriptor reaches the main process
through a socket handshake, and the main process maps it anew.

* ``BufferPool`` (``num_workers=0``): a batch's buffers are reused once every tensor, view and
  numpy array of the batch is gone; the storage's reference count says so exactly. They are
  asked for transparent huge pages (``private_uint8``), which makes writing frames into them
  three to four times cheaper than into torch's 4 KB pages once they sat idle for a batch.
* ``BatchRing`` (``num_workers > 0``): before its workers start, the loader allocates
  ``prefetch_factor`` shared-memory batch slots per worker, the batches torch's own loader keeps
  in flight (``shm.py`` states the bound); a slot's pages are allocated when first written. A
  worker decodes into a free slot of its own and sends where the tensor lies in the slot (a
  ``SlotRef``) instead of the tensor; small fields travel by value inside the pickle. The main
  process maps every slot already and turns the references back into views (``unpack``), so
  nothing is copied, mapped or faulted per batch. A slot goes back to its worker once the main
  process holds no reference to it (same reference count), so a batch training still uses is
  never overwritten. A worker whose slots are all in use (it ran ahead while
  training holds a batch of it) falls back to fresh shared memory, as torch's loader would use:
  slower, never blocking.

Slot states, each change made by one side only: FREE -> FILLING (the worker takes it) ->
DELIVERED (the main process unpacks a batch of it) -> FREE (the main process dropped it).
When iteration stops and the workers stay for the next epoch, ``trim`` gives the pages of the
free slots back to the OS, and those of slots training still holds once it drops them. A pass cut
short leaves slots FILLING whose batches torch drops when its persistent workers resume;
``reclaim_undelivered`` frees them once the workers are idle again.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

FREE, FILLING, DELIVERED = 0, 1, 2
# The x86-64 and arm64 transparent huge page: smaller buffers gain nothing from asking for them.
HUGE_PAGE = 2 << 20
# The allocator hook a dataset's worker copy gets: buffers of these shapes, or None (make fresh ones).
TakeBuffers = Callable[[Mapping[str, tuple[int, ...]]], dict[str, torch.Tensor] | None]

# Frees the pages of a shared mapping in every process that maps it (Linux; a no-op elsewhere).
_MADV_REMOVE = getattr(mmap, "MADV_REMOVE", None)
_LIBC = ctypes.CDLL(None, use_errno=True)


def unreferenced(tensor: torch.Tensor, dying: int = 0) -> bool:
    """Whether nothing but ``tensor`` itself (and ``dying`` tensors being freed) holds its storage."""
    # 2 = the tensor + the temporary storage object made for this query.
    return torch._C._storage_Use_Count(tensor.untyped_storage()._cdata) == 2 + dying


def shared_uint8(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor in shared memory; its pages are allocated when first written."""
    return _uint8_on(torch.UntypedStorage._new_shared(math.prod(shape)), shape)


def _uint8_on(storage: torch.UntypedStorage, shape: tuple[int, ...]) -> torch.Tensor:
    # set_ with the shape directly: a view of the tensor would hold one more reference, for good,
    # and ``unreferenced`` would never see the buffer free again.
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape)


def private_uint8(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor of this process, in transparent huge pages where the OS allows.

    Frames are written into a batch 150 KB at a time across hundreds of MB: with 4 KB pages every
    page is a TLB miss, and on a virtual machine the host may also map each page again after the
    buffer sat idle, so copying frames into a buffer last written a batch ago costs several times
    more in 4 KB pages than in huge pages (``benchmarks/bench_loader.py`` measures the loader).
    Linux honours the advice when ``transparent_hugepage/enabled`` is ``madvise`` or ``always``.
    """
    size = math.prod(shape)
    if size < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=torch.uint8)
    # Private, not shared: Linux gives shared memory huge pages only if shmem_enabled says so.
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_HUGEPAGE)
    return _uint8_on(torch.frombuffer(region, dtype=torch.uint8).untyped_storage(), shape)


class BufferPool:
    """Reuses uint8 batch tensors of the process that consumes them, once nothing references them."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._pools: dict[tuple[int, ...], list[torch.Tensor]] = {}

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialised uint8 tensor of ``shape``.

        Always a new tensor object on a pooled storage, never the pool's own: a consumer holding
        the very tensor the pool holds would not show in the storage's reference count, and its
        batch would be overwritten by the next one.
        """
        pool = self._pools.setdefault(shape, [])
        pooled = next((tensor for tensor in pool if unreferenced(tensor)), None)
        if pooled is None:
            pooled = private_uint8(shape)
            if len(pool) >= self.size:
                return pooled  # the pool is full: this one is the consumer's alone
            pool.append(pooled)
        return _uint8_on(pooled.untyped_storage(), shape)

    def __getstate__(self) -> dict[str, Any]:
        return {"size": self.size, "_pools": {}}


class BatchRing:
    """``slots`` shared-memory batches per worker, each a uint8 tensor per key of ``shapes``."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], workers: int, slots: int) -> None:
        self.shapes = {key: tuple(shape) for key, shape in shapes.items()}
        self.buffers = [
            [{key: shared_uint8(shape) for key, shape in self.shapes.items()} for _ in range(slots)]
            for _ in range(workers)
        ]
        self.state = torch.zeros((workers, slots), dtype=torch.uint8).share_memory_()
        self.fallbacks = torch.zeros(workers, dtype=torch.int64).share_memory_()
        self._lock = threading.RLock()
        self._slot_of: dict[int, tuple[int, str]] | None = None
        # The tensors each delivered slot was last handed out as, to trim it once training drops them.
        self._delivered: dict[tuple[int, int, str], weakref.ref[torch.Tensor]] = {}

    @property
    def nbytes(self) -> int:
        """Bytes of all slots: what the ring holds in ``/dev/shm`` once every slot has been written."""
        return sum(tensor.nbytes for row in self.buffers for slot in row for tensor in slot.values())

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_lock": None, "_slot_of": None, "_delivered": {}}

    def take(self, worker: int, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor] | None:
        """Worker side: buffers of ``shapes`` (leading rows of a free slot), or None if none is free."""
        fits = all(
            key in self.shapes and shape[0] <= self.shapes[key][0] and shape[1:] == self.shapes[key][1:]
            for key, shape in shapes.items()
        )
        row = self.state[worker].numpy()
        free = np.flatnonzero(row == FREE)
        if not fits or free.size == 0:
            self.fallbacks[worker] += 1
            return None
        slot = int(free[0])
        row[slot] = FILLING
        return {key: self.buffers[worker][slot][key][: shape[0]] for key, shape in shapes.items()}

    def pack(self, worker: int, batch: Any) -> Any:
        """Worker side: ``batch`` ready to pickle; slot tensors become references, small ones values."""
        if self._slot_of is None:
            self._slot_of = {
                tensor.untyped_storage().data_ptr(): (slot, key)
                for slot, buffers in enumerate(self.buffers[worker])
                for key, tensor in buffers.items()
            }
        return self._pack(worker, batch)

    def _pack(self, worker: int, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: self._pack(worker, item) for key, item in value.items()}
        if not isinstance(value, torch.Tensor):
            return value
        where = self._slot_of.get(value.untyped_storage().data_ptr())
        if where is not None:
            return SlotRef(worker, *where, tuple(value.shape), value.stride(), value.storage_offset())
        if not value.is_shared() and value.dtype != torch.bfloat16 and not value.requires_grad:
            return _Value(value.numpy())
        return value

    def unpack(self, batch: Any) -> Any:
        """Main side: ``batch`` as a worker packed it, its slot references turned into views of the slots."""
        if isinstance(batch, dict):
            return {key: self.unpack(value) for key, value in batch.items()}
        return self._deliver(batch) if isinstance(batch, SlotRef) else batch

    def _deliver(self, ref: SlotRef) -> torch.Tensor:
        with self._lock:
            self.state[ref.worker, ref.slot] = DELIVERED
            view = self.buffers[ref.worker][ref.slot][ref.key].as_strided(ref.size, ref.stride, ref.offset)
            self._delivered[(ref.worker, ref.slot, ref.key)] = weakref.ref(view)
            return view

    def release_unreferenced(self) -> None:
        """Main side: hand back to their workers the delivered slots nothing references any more."""
        with self._lock:
            state = self.state.numpy()
            for worker, slot in np.argwhere(state == DELIVERED):
                if all(unreferenced(tensor) for tensor in self.buffers[worker][slot].values()):
                    state[worker, slot] = FREE

    def trim(self) -> None:
        """Main side, workers idle: return the pages of the free slots to the OS, and of the others
        as soon as training drops the batch it holds of them (the tensor it was handed, unless a
        view of it lives on; then the pages go with the ring). Slots stay mapped: the next write
        allocates fresh pages."""
        self.release_unreferenced()
        with self._lock:
            state = self.state.numpy()
            for worker, slot in np.argwhere(state != FILLING):
                if state[worker, slot] == FREE:
                    self._punch(worker, slot)
                    continue
                for key in self.shapes:
                    held = self._delivered.get((int(worker), int(slot), key))
                    view = held() if held is not None else None
                    if view is not None:
                        weakref.finalize(view, self._trim_slot, int(worker), int(slot), key)

    def reclaim_undelivered(self) -> None:
        """Main side, its workers idle with no batch in flight: the slots they filled and the main
        process never unpacked belong to batches that were dropped; free them."""
        with self._lock:
            state = self.state.numpy()
            state[state == FILLING] = FREE

    def _trim_slot(self, worker: int, slot: int, dying: str) -> None:
        # A weakref callback runs before the tensor being freed lets go of its storage.
        with self._lock:
            if self.state[worker, slot] == DELIVERED and all(
                unreferenced(tensor, dying=int(key == dying))
                for key, tensor in self.buffers[worker][slot].items()
            ):
                self._punch(worker, slot)  # before FREE: a worker may take a free slot at once
                self.state[worker, slot] = FREE

    def _punch(self, worker: int, slot: int) -> None:
        if _MADV_REMOVE is None:
            return
        for tensor in self.buffers[worker][slot].values():
            address, size = ctypes.c_void_p(tensor.data_ptr()), ctypes.c_size_t(tensor.nbytes)
            if _LIBC.madvise(address, size, _MADV_REMOVE):
                raise OSError(ctypes.get_errno(), "madvise(MADV_REMOVE) of a batch slot failed")


@dataclass(frozen=True, slots=True)
class SlotRef:
    """Where a tensor of a batch lies in a ring slot: what a worker sends instead of the tensor."""

    worker: int
    slot: int
    key: str
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int


class _Value:
    """A small tensor sent inside the pickle rather than through a shared-memory file of its own."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return torch.from_numpy, (self.array,)
