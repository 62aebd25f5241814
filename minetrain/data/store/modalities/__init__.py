"""The modalities a dataset stores, one record and one module each, and the batch they make.

``MODALITY_SPECS`` is the registry every part of the package reads: the store (folders, chunk
codecs, checks), the dataset (batch fields, window reads), ``verify``, ``view`` and ``synth``.
Adding a modality is a module here with its ``Modality`` record, an entry below and a test;
``docs/architecture.md`` ("Extending") lists what the record needs.
"""

from __future__ import annotations

from typing import Any

from minetrain.data.store.modalities import batch
from minetrain.data.store.modalities.action import ACTION
from minetrain.data.store.modalities.base import (
    BatchParams,
    Field,
    Modality,
    SyntheticEpisode,
    Target,
    WindowRead,
)
from minetrain.data.store.modalities.batch import copy_window
from minetrain.data.store.modalities.image import IMAGE
from minetrain.data.store.modalities.meta_info import META_INFO
from minetrain.data.store.modalities.segmentation import SEGMENTATION

MODALITY_SPECS: dict[str, Modality] = {spec.name: spec for spec in (IMAGE, ACTION, SEGMENTATION, META_INFO)}


def batch_fields(params: BatchParams) -> dict[str, Field]:
    """Every field of a batch under ``params``, nested names joined by ``/`` (``env_action/camera``)."""
    return batch.batch_fields(params, MODALITY_SPECS)


def padding_window(params: BatchParams) -> dict[str, Any]:
    """The per-frame fields of an all-padding window under ``params`` (see ``batch.padding_window``)."""
    return batch.padding_window(batch_fields(params))


__all__ = [
    "MODALITY_SPECS",
    "BatchParams",
    "Field",
    "Modality",
    "SyntheticEpisode",
    "Target",
    "WindowRead",
    "batch_fields",
    "copy_window",
    "padding_window",
]
