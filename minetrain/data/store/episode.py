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
        unknown = [m for m in modalities if m not in MODALITY_SPECS]
        if unknown:
            raise DataError(
                f"episode {name}: unknown modalities {unknown}; choose from {', '.join(MODALITY_SPECS)}"
            )
        self.name = name
        self._values: dict[str, Any] = {}
        lengths: dict[str, int] = {}
        for modality, spec in MODALITY_SPECS.items():
            if modalities.get(modality) is None:
                continue
            try:
                self._values[modality], lengths[modality] = spec.validate(modalities[modality])
            except DataError as exc:
                raise DataError(f"episode {name}: {exc}") from None
        if not lengths:
            raise DataError(f"episode {name}: no modality given")
        if len(set(lengths.values())) != 1:
            detail = ", ".join(f"{m}={n}" for m, n in lengths.items())
            raise DataError(f"episode {name}: modalities have different numbers of frames ({detail})")
        self.num_frames = next(iter(lengths.values()))
        if self.num_frames <= 0:
            raise DataError(f"episode {name}: has no frames")

    def __getattr__(self, modality: str) -> Any:
        if modality in MODALITY_SPECS:
            return self.__dict__.get("_values", {}).get(modality)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {modality!r}")

    def __repr__(self) -> str:
        return f"Episode({self.name!r}, {self.num_frames} frames of {', '.join(self.modalities)})"

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this episode carries, in ``MODALITY_SPECS`` order."""
        return tuple(self._values)

    def chunk(self, modality: str, start: int, stop: int) -> Any:
        """Frames [start, stop) of one modality, in the in-memory form its chunk codec takes."""
        value, spec = self._values[modality], MODALITY_SPECS[modality]
        return value[start:stop] if spec.take is None else spec.take(value, 0, start, stop)
