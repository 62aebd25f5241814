"""The MineStudio-compatible LMDB trajectory store: episodes, atomic writer, lazy fork-safe reader."""

from minetrain.data.store.episode import Episode
from minetrain.data.store.modalities import MODALITY_SPECS
from minetrain.data.store.reader import EpisodeLocation, TrajectoryStore
from minetrain.data.store.writer import DatasetWriter

__all__ = ["MODALITY_SPECS", "DatasetWriter", "Episode", "EpisodeLocation", "TrajectoryStore"]
