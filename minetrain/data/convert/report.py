"""What a conversion did, episode by episode: nothing broken is dropped without a reason."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ConversionReport:
    converted: list[str] = field(default_factory=list)
    already_stored: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (episode, reason)
    frames: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed
