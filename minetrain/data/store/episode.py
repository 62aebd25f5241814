"""One episode in memory, checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from minetrain.data.store.layout import MODALITIES
from minetrain.errors import DataError


@dataclass
class Episode:
    """All modalities of one episode; absent modalities are None.

    ``image`` is (N, H, W, 3) uint8 RGB; ``action`` maps env-action keys to arrays with one row
    per frame; ``segmentation`` and ``meta_info`` hold one entry per frame.
    """

    name: str
    image: np.ndarray | None = None
    action: dict[str, np.ndarray] | None = None
    segmentation: list[dict] | None = None
    meta_info: list[dict] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DataError(f"episode name must be a non-empty string, got {self.name!r}")
        lengths: dict[str, int] = {}
        if self.image is not None:
            image = np.asarray(self.image)
            if image.ndim != 4 or image.shape[-1] != 3 or image.dtype != np.uint8:
                raise DataError(
                    f"episode {self.name}: image must be (N, H, W, 3) uint8 RGB, "
                    f"got {image.dtype} {image.shape}"
                )
            self.image = image
            lengths["image"] = len(image)
        if self.action is not None:
            if not isinstance(self.action, dict) or not self.action:
                raise DataError(f"episode {self.name}: action must be a non-empty dict of arrays")
            self.action = {key: np.asarray(value) for key, value in self.action.items()}
            scalars = [key for key, value in self.action.items() if value.ndim == 0]
            if scalars:
                raise DataError(
                    f"episode {self.name}: action keys {scalars} hold scalars, not one row per frame"
                )
            action_lengths = {key: len(value) for key, value in self.action.items()}
            if len(set(action_lengths.values())) != 1:
                detail = ", ".join(f"{key}={n}" for key, n in action_lengths.items())
                raise DataError(f"episode {self.name}: action arrays have unequal lengths ({detail})")
            lengths["action"] = next(iter(action_lengths.values()))
        for modality in ("segmentation", "meta_info"):
            value = getattr(self, modality)
            if value is not None:
                if not isinstance(value, list | tuple) or not all(isinstance(v, dict) for v in value):
                    raise DataError(f"episode {self.name}: {modality} must be a list with one dict per frame")
                lengths[modality] = len(value)
        if not lengths:
            raise DataError(f"episode {self.name}: no modality given")
        if len(set(lengths.values())) != 1:
            detail = ", ".join(f"{m}={n}" for m, n in lengths.items())
            raise DataError(f"episode {self.name}: modalities have different numbers of frames ({detail})")
        if next(iter(lengths.values())) <= 0:
            raise DataError(f"episode {self.name}: has no frames")

    @property
    def num_frames(self) -> int:
        for modality in self.modalities:
            value = getattr(self, modality)
            return len(next(iter(value.values()))) if modality == "action" else len(value)
        return 0

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this episode carries, in MODALITIES order."""
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)

    def chunk(self, modality: str, start: int, stop: int) -> Any:
        """Frames [start, stop) of one modality, in the in-memory form its chunk codec takes."""
        value = getattr(self, modality)
        if modality == "action":
            return {key: array[start:stop] for key, array in value.items()}
        return value[start:stop] if modality == "image" else list(value[start:stop])
