"""``MineDataModule``: the Lightning data module of the seed tutorial.

Train and val ``RawDataset`` splits (``EventDataset`` for ``mode='event'``) of the same episode list, and
their DataLoaders:

* ``episode_continuous_batch=True``: ``EpisodeContinuousBatchSampler`` (rank and world size from
  the trainer, else from torch.distributed), which needs ``Trainer(use_distributed_sampler=False)``
  as in the seed. The train order is reshuffled every epoch and resumes exactly mid-epoch: the
  module's ``state_dict`` (saved by Lightning in every checkpoint) records the epoch and the
  number of batches training has consumed, read from the trainer's progress counters because
  the sampler itself runs ahead by whatever the loader has prefetched.
* ``episode_continuous_batch=False``: windows shuffled by a ``DistributedSampler`` (the sampler
  Lightning would inject) built here with the trainer's rank and world size; it resumes mid-epoch
  the same way, by leaving out the windows of the batches the checkpoint had consumed.

Workers: each one limits torch to one thread and decodes video single-threaded (``decode_threads``
in ``data_params``), so ``num_workers`` processes use about ``num_workers`` cores; LMDB handles
are opened lazily inside each worker by the store; train workers persist across epochs (val
workers are started per validation run rather than idling in memory between runs); memory is
pinned only when a GPU is present. Workers build whole batches in the slots of a shared-memory
``BatchRing`` the loader allocates for them (``buffers.py``), so a batch reaches the main process
without being copied, and its small fields travel inside the pickle. ``shared_batch_ring=False``
leaves the hand-over to torch (fresh shared memory per batch). Either way ``/dev/shm`` is checked
before workers start and the memory is given back when iteration stops (``shm.py``).
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.apply_func import apply_to_collection
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch.utils.data import DataLoader, DistributedSampler, get_worker_info

from minetrain.data.batching import stack_windows
from minetrain.data.buffers import BatchRing
from minetrain.data.dataset import RawDataset
from minetrain.data.event_dataset import EVENT_PARAMS, EventDataset
from minetrain.data.sampler import EpisodeContinuousBatchSampler, default_world
from minetrain.data.shm import batch_bytes, check_shared_memory
from minetrain.errors import ConfigError, MinetrainError

log = logging.getLogger(__name__)

DATA_PARAMS = (
    "mode",
    "dataset_dirs",
    "frame_width",
    "frame_height",
    "win_len",
    "skip_frame",
    "enable_segment",
    "enable_prev_action",
    "condition_dropout",
    "seed",
    "on_error",
    "decode_threads",
    "resize_interpolation",
    "enable_contractor_info",
    "enable_video_aug",
    "image_format",
)


def collate_windows(items: Sequence[Any] | dict[str, Any]) -> Any:
    """The batch ``RawDataset.__getitems__`` built, or one stacked from single windows.

    Stacks tensors, keeps strings and lists of strings as per-window lists, recurses into dicts.
    In a worker of a ``WindowLoader`` the batch is then packed for its ``BatchRing``.
    """
    worker = get_worker_info()
    ring = getattr(worker.dataset, "batch_ring", None) if worker is not None else None
    batch = items if isinstance(items, dict) else stack_windows(items)
    return ring.pack(worker.id, batch) if ring is not None else batch


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


def _limit_worker_threads(_: int) -> None:
    torch.set_num_threads(1)


class WindowLoader(DataLoader):
    """A DataLoader that hands its sampler's epoch to the dataset and reports skipped windows.

    The dataset seeds relabelling and dropout with the epoch, so before each pass the epoch of the
    (batch) sampler is written to the dataset's shared epoch, which persistent workers read. Windows
    the dataset replaced because of bad data (``on_error='skip'``: all-zero ``mask``) are counted
    here, in the main process, whatever worker produced them, and logged when the pass ends.

    Shared memory (``shm.py``): before workers start, ``/dev/shm`` is checked for what they may
    need and, with ``shared_batch_ring``, they get a ``BatchRing`` of ``prefetch_factor`` slots
    each. When iteration stops the memory goes back: at the end of an epoch persistent workers
    stay and the ring is trimmed; otherwise (a break, a deleted iterator, non-persistent workers,
    the trainer's teardown) the workers are stopped and the ring dropped.
    """

    skipped_windows: dict[int, int]
    batch_ring: BatchRing | None = None
    _passes = 0

    def __init__(self, *args: Any, shared_batch_ring: bool = True, ranks_per_node: int = 1, **kwargs: Any):
        self.shared_batch_ring = shared_batch_ring
        # Every rank on the node fills the same /dev/shm.
        self.ranks_per_node = ranks_per_node
        super().__init__(*args, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        epoch = getattr(self.batch_sampler, "epoch", getattr(self.sampler, "epoch", None))
        if epoch is not None:
            self.dataset.set_epoch(epoch)
        self._passes += 1
        if self.num_workers and (not self.persistent_workers or self._iterator is None):
            self._prepare_workers()
        batches = super().__iter__() if self.num_workers else self._batches_in_process()
        ring = self.batch_ring if self.num_workers else None
        if ring is not None:
            ring.release_unreferenced()  # batches of the last pass torch dropped when resuming workers
        return self._pass(self.dataset.epoch, batches, ring, self._passes)

    def _batches_in_process(self) -> Iterator[Any]:
        """``num_workers=0``: what torch's single-process iterator yields, without its profiler range.

        That iterator opens a ``record_function`` range around every batch, a dispatcher round trip
        even when no profiler runs, costly when the code pages went cold while a batch decoded
        (``benchmarks/bench_loader.py`` measures the loader). Lightning's profilers time the fetch
        themselves.
        """
        pin = self.pin_memory and torch.accelerator.is_available()
        for indices in self.batch_sampler:
            batch = self.collate_fn(self.dataset.__getitems__(indices))
            if pin:
                batch = apply_to_collection(batch, torch.Tensor, torch.Tensor.pin_memory)
            yield batch
            # Not held while the next batch is made: its buffers are reusable once the consumer drops it.
            del batch

    def _prepare_workers(self) -> None:
        """Before workers start (they inherit the dataset): check ``/dev/shm``, give them their ring."""
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
        self.dataset.batch_ring = self.batch_ring

    def release_shared_memory(self) -> None:
        """Stop the workers and drop the ring; its slots are freed as training drops their batches."""
        if self._iterator is not None:
            self._iterator._shutdown_workers()
            self._iterator = None
        self.batch_ring = None
        if self.num_workers:
            self.dataset.batch_ring = None

    def _pass(self, epoch: int, batches: Iterator[Any], ring: BatchRing | None, number: int) -> Iterator[Any]:
        skipped = 0
        exhausted = False
        try:
            for batch in batches:
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


class ResumableDistributedSampler(DistributedSampler):
    """A ``DistributedSampler`` whose next pass can leave out the first ``skip`` indices of its order.

    Each epoch's order depends only on (seed, epoch), so leaving out the windows of the batches a
    checkpoint had consumed continues that epoch exactly; ``len`` stays the full epoch's.
    """

    skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class MineDataModule(pl.LightningDataModule):
    """Train/val windows of trajectory datasets (``data_params`` as in the seed, see ``DATA_PARAMS``)."""

    def __init__(
        self,
        data_params: dict[str, Any],
        batch_size: int = 1,
        num_workers: int = 0,
        prefetch_factor: int | None = None,
        split_ratio: float = 0.8,
        shuffle_episodes: bool = False,
        episode_continuous_batch: bool = False,
        shared_batch_ring: bool = True,
    ) -> None:
        super().__init__()
        params = dict(data_params)
        valid = DATA_PARAMS + (EVENT_PARAMS if params.get("mode") == "event" else ())
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown data_params key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}"
            )
        mode = params.pop("mode", "raw")
        if mode not in ("raw", "event"):
            raise ConfigError(f"data_params mode={mode!r} is unknown; use mode='raw' or mode='event'")
        self.dataset_class = EventDataset if mode == "event" else RawDataset
        if "dataset_dirs" not in params:
            raise ConfigError("data_params needs dataset_dirs (a list of dataset directories)")
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(
                f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}"
            )
        self.dataset_params = params
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.prefetch_factor = prefetch_factor
        self.split_ratio = split_ratio
        self.shuffle_episodes = shuffle_episodes
        self.episode_continuous_batch = episode_continuous_batch
        self.shared_batch_ring = bool(shared_batch_ring)
        self.seed = int(params.get("seed", 0))
        self.train_dataset: RawDataset | None = None
        self.val_dataset: RawDataset | None = None
        self._train_loader: WindowLoader | None = None
        self._val_loader: WindowLoader | None = None
        self._pending_state: dict[str, Any] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None:
            common = dict(
                self.dataset_params, split_ratio=self.split_ratio, shuffle_episodes=self.shuffle_episodes
            )
            self.train_dataset = self.dataset_class(split="train", **common)
            self.val_dataset = self.dataset_class(split="val", **common)

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        return default_world()

    def _loader(self, dataset: RawDataset, train: bool) -> WindowLoader:
        if train and not dataset.episodes:
            raise ConfigError(
                f"split_ratio={self.split_ratio} leaves the train split no episode of the "
                f"{len(dataset.store.episodes)} usable ones; raise split_ratio (train gets "
                "int(episodes * split_ratio) of them)"
            )
        world, rank = self._world()
        workers = self.num_workers
        options: dict[str, Any] = dict(
            num_workers=workers,
            collate_fn=collate_windows,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=_limit_worker_threads if workers else None,
            persistent_workers=workers > 0 and train,
            prefetch_factor=self.prefetch_factor if workers else None,
            shared_batch_ring=self.shared_batch_ring,
            ranks_per_node=self._ranks_per_node(),
        )
        if self.episode_continuous_batch:
            self._check_trainer(world)
            batch_sampler = EpisodeContinuousBatchSampler(
                dataset.window_counts, self.batch_size, world, rank, shuffle=train, seed=self.seed
            )
            self._report_plan(batch_sampler, dataset.split)
            return WindowLoader(dataset, batch_sampler=batch_sampler, **options)
        sampler = ResumableDistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=train, seed=self.seed
        )
        return WindowLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=train, **options)

    def _ranks_per_node(self) -> int:
        """Processes of this run sharing this machine's ``/dev/shm``: the trainer's devices per node."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return max(1, getattr(trainer, "num_devices", 1))
        return int(os.environ.get("LOCAL_WORLD_SIZE", 1))

    def _check_trainer(self, world: int) -> None:
        """Lightning would replace the batch sampler by its own distributed one."""
        connector = getattr(getattr(self, "trainer", None), "_accelerator_connector", None)
        if world > 1 and getattr(connector, "use_distributed_sampler", False):
            raise ConfigError(
                "episode_continuous_batch=True brings its own distributed batch sampler; create the "
                "Trainer with use_distributed_sampler=False (as the seed does)"
            )

    def _report_plan(self, sampler: EpisodeContinuousBatchSampler, split: str) -> None:
        if len(sampler) == 0:
            message = (
                f"the {split} split has {sampler.num_windows} windows in {sampler.window_counts.size} "
                f"episodes: too few for batch_size {self.batch_size} on {sampler.num_replicas} process(es); "
                "lower batch_size or win_len, or add episodes"
            )
            if split == "train":
                raise ConfigError(message)
            log.warning("%s (validation is skipped)", message)
        elif sampler.dropped_windows:
            log.info(
                "%s: episode-continuous batches: %d per process per epoch; %d of %d windows (%.2f%%) "
                "are left out each epoch so that all processes yield as many batches",
                split,
                len(sampler),
                sampler.dropped_windows,
                sampler.num_windows,
                100.0 * sampler.dropped_windows / sampler.num_windows,
            )

    def train_dataloader(self) -> WindowLoader:
        self.setup()
        loader = self._loader(self.train_dataset, train=True)
        self._train_loader = loader
        if self._pending_state is not None:
            self._restore(loader, self._pending_state)
            self._pending_state = None
        return loader

    def val_dataloader(self) -> WindowLoader | list:
        self.setup()
        if len(self.val_dataset) == 0:
            return []
        self._val_loader = self._loader(self.val_dataset, train=False)
        return self._val_loader

    def teardown(self, stage: str) -> None:
        """The trainer is done: stop the loaders' workers and let their shared memory go."""
        for loader in (self._train_loader, self._val_loader):
            if loader is not None:
                loader.release_shared_memory()

    def _consumed_batches(self) -> tuple[int, int]:
        """(epoch, batches of it consumed by training) from the trainer's loop progress.

        ``processed`` counts a batch once its training step ran, which includes the batch whose
        ``on_train_batch_end`` is saving the checkpoint; Lightning resumes after that batch too.
        """
        trainer = self.trainer
        consumed = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        epoch = trainer.current_epoch
        if consumed >= trainer.num_training_batches:
            return epoch + 1, 0
        return epoch, consumed

    def state_dict(self) -> dict[str, Any]:
        loader = self._train_loader
        if loader is None or getattr(self, "trainer", None) is None:
            return {}
        epoch, consumed = self._consumed_batches()
        if isinstance(loader.batch_sampler, EpisodeContinuousBatchSampler):
            sampler = loader.batch_sampler
            return {"sampler": {**sampler.state_dict(consumed=consumed), "epoch": epoch}}
        return {"epoch": epoch, "consumed_batches": consumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self._train_loader is not None:
            self._restore(self._train_loader, state_dict)
        else:
            self._pending_state = state_dict

    def _restore(self, loader: WindowLoader, state: dict[str, Any]) -> None:
        sampler_state = state.get("sampler")
        epoch = int((sampler_state or state).get("epoch", 0))
        batch_sampler = loader.batch_sampler
        if isinstance(batch_sampler, EpisodeContinuousBatchSampler):
            if sampler_state is None:
                log.warning(
                    "the checkpoint was made with episode_continuous_batch=False; epoch %d starts from "
                    "its first batch",
                    epoch,
                )
                batch_sampler.set_epoch(epoch)
                return
            batch_sampler.load_state_dict(sampler_state)
        elif isinstance(loader.sampler, ResumableDistributedSampler):
            loader.sampler.set_epoch(epoch)
            if sampler_state is not None:
                log.warning(
                    "the checkpoint was made with episode_continuous_batch=True; epoch %d starts from "
                    "its first batch",
                    epoch,
                )
                return
            loader.sampler.skip = int(state.get("consumed_batches", 0)) * int(loader.batch_size)
        # Lightning warns that a plain DataLoader cannot resume mid-epoch; this one does.
        warnings.filterwarnings(
            "ignore",
            message="You're resuming from a checkpoint that ended before",
            category=PossibleUserWarning,
        )


# MineDataModule's own arguments: a config's data section holds them beside the data_params.
LOADER_PARAMS = tuple(name for name in inspect.signature(MineDataModule).parameters if name != "data_params")
