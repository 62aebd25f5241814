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
pinned only when a GPU is present. The loaders are ``WindowLoader``s (``loader.py``): workers
build whole batches in the slots of a shared-memory ring the loader owns, unless
``shared_batch_ring=False`` leaves the hand-over to torch.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch.utils.data import DistributedSampler

from minetrain.data.dataset import RawDataset
from minetrain.data.event_dataset import EVENT_PARAMS, EventDataset
from minetrain.data.loader import WindowLoader, collate_windows, limit_worker_threads
from minetrain.data.sampler import EpisodeContinuousBatchSampler, default_world
from minetrain.errors import ConfigError

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
            # The same dirs, read the same way: the val split shares the train split's store index.
            self.val_dataset = self.dataset_class(split="val", store=self.train_dataset.store, **common)

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
            worker_init_fn=limit_worker_threads if workers else None,
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
        loader = WindowLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, drop_last=train, **options
        )
        if train and len(loader) == 0:  # drop_last: a run that would train on nothing, then stop as if done
            raise ConfigError(
                f"the train split has {len(dataset)} windows: too few for batch_size {self.batch_size} "
                f"on {world} process(es), whose last incomplete batch is dropped; lower batch_size or "
                "win_len, or add episodes"
            )
        return loader

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
