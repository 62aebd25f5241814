"""Errors a user can act on.

Every error raised for bad input (a missing directory, a corrupt chunk, a bad config value) is a
``MinetrainError`` whose message is one line naming the file/episode/key and what to do. The CLI
prints that line instead of a traceback.
"""


class MinetrainError(Exception):
    """Base class: an actionable, one-line error about the user's input or environment."""


class DataError(MinetrainError):
    """A dataset, episode, chunk or raw recording is missing, malformed or corrupt."""


class ConfigError(MinetrainError, ValueError):
    """A configuration value or argument is invalid."""


class CheckpointError(MinetrainError):
    """A checkpoint or weights file is missing or does not fit the model."""


class TrainingError(MinetrainError):
    """Training cannot continue (e.g. a non-finite loss); the message names the step and batch."""


class UnsafeDataError(DataError):
    """Data holds a pickle that would call code, not just build data; refused and never skipped."""
