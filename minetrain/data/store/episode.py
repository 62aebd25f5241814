"""One episode in memory, checked before anything is written."""

from __future__ import annotations

from typing import Any

from minetrain.data.store.modalities import MODALITY_SPECS
from minetrain.errors import DataError


class Episode:
    """All modalities of one episode, given by keyword (``Episode(name, image=..., action=...)``).

    Each value is checked by its modality's record (``modalities``): ``image`` is (N, H, W, 3)
    uint8 RGB; ``action`` maps env-action keys to arrays with one row per frame; ``segmentation``
    and ``meta_info`` hold one dict per frame. All must have the same number of frames. A modality
    not given reads as None.
    """

    def __init__(self, name: str, **modalities: Any) -> None:
        if not isinstance(name, str) or not name:
            raise DataError(f"episode name must be a non-empty string, got {name!r}")
        self._length = 0  # frames of every modality held
        unknown = [m for m in modalities if m not in MODALITY_SPECS]
        if unknown:
            raise DataError(
                f"episode {name}: unknown modalities {unknown}; choose from {', '.join(MODALITY_SPECS)}"
            )
        self.name = name
        self._values: dict[str, Any] = {}
        for modality in MODALITY_SPECS:
            if modalities.get(modality) is not None:
                self._put(modality, modalities[modality])
        if not self._values:
            raise DataError(f"episode {name}: no modality given")

    def _put(self, modality: str, value: Any) -> None:
        """Check ``value`` with its record and against the other modalities' frame count, then keep it."""
        try:
            value, frames = MODALITY_SPECS[modality].validate(value)
        except DataError as exc:
            raise DataError(f"episode {self.name}: {exc}") from None
        others = [m for m in self._values if m != modality]
        if others and frames != self._length:
            detail = ", ".join([*(f"{m}={self._length}" for m in others), f"{modality}={frames}"])
            raise DataError(f"episode {self.name}: modalities have different numbers of frames ({detail})")
        if frames <= 0:
            raise DataError(f"episode {self.name}: has no frames")
        self._values[modality] = value
        self._length = frames

    def __setattr__(self, name: str, value: Any) -> None:
        # ``episode.image = frames`` replaces a modality as the constructor would take it.
        if name not in MODALITY_SPECS:
            super().__setattr__(name, value)
        elif value is None:
            self._values.pop(name, None)
        else:
            self._put(name, value)

    def __getattr__(self, modality: str) -> Any:
        if modality in MODALITY_SPECS:
            return self.__dict__.get("_values", {}).get(modality)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {modality!r}")

    def __repr__(self) -> str:
        return f"Episode({self.name!r}, {self.num_frames} frames of {', '.join(self.modalities)})"

    @property
    def num_frames(self) -> int:
        return self._length if self._values else 0

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this episode carries, in ``MODALITY_SPECS`` order."""
        return tuple(m for m in MODALITY_SPECS if m in self._values)

    def chunk(self, modality: str, start: int, stop: int) -> Any:
        """Frames [start, stop) of one modality, in the in-memory form its chunk codec takes."""
        value, spec = self._values[modality], MODALITY_SPECS[modality]
        return value[start:stop] if spec.take is None else spec.take(value, 0, start, stop)
