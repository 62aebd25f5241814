"""Unpickling store data without running code from it.

Action, segmentation and meta_info chunks, the bookkeeping keys of every part and the reference's
event index are pickles, and a plain ``pickle.loads`` calls whatever function a pickle names: a
downloaded dataset could run any command under ``data inspect``. The format only ever holds numpy
arrays and scalars, plain containers, strings, bytes and numbers, so ``load_pickle`` resolves only
the globals those need (numpy 1.x pickles name ``numpy.core``, numpy 2.x ones ``numpy._core``)
and refuses every other one before anything is called.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
from typing import Any

import numpy as np

from minetrain.errors import DataError, UnsafeDataError

# What numpy's pickles of arrays, dtypes and scalars reference below ``numpy.core`` (numpy 1.x
# wrote that) or ``numpy._core`` (numpy 2.x); our numpy >= 2.3 keeps these under ``numpy._core``.
_NUMPY_CORE = {
    ("multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("multiarray", "scalar"): np._core.multiarray.scalar,
    ("numeric", "_frombuffer"): np._core.numeric._frombuffer,
}
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (f"{package}.{module}", name): value
        for package in ("numpy.core", "numpy._core")
        for (module, name), value in _NUMPY_CORE.items()
    },
    # Python 3 writes builtins as ``__builtin__`` in protocol 0-2 pickles, for Python 2.
    **{
        (module, kind.__name__): kind
        for module in ("builtins", "__builtin__")
        for kind in (set, frozenset, bytearray, complex)
    },
    # Protocol 0-2 pickles write bytes as codecs.encode(str, "latin1").
    ("_codecs", "encode"): codecs.encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _Forbidden(pickle.UnpicklingError):
    """What a pickle asked for beyond data; told apart from a merely corrupt pickle."""


class _DataUnpickler(pickle.Unpickler):
    """An unpickler whose pickles can build data but can call nothing outside ``ALLOWED``."""

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED.get((module, name))
        if found is None:
            raise _Forbidden(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise _Forbidden(f"persistent id {str(pid)[:40]!r}")


def load_pickle(
    data: bytes, where: str, remedy: str = "run `minetrain data verify` and re-convert it"
) -> Any:
    """Unpickle store data; ``where`` (part and key) starts the one-line error if it is bad or unsafe.

    A pickle that names anything but data is an ``UnsafeDataError``, raised before that thing is
    called or even imported; any other failure is a ``DataError`` ending with ``remedy``.
    """
    prefix = f"{where}: " if where else ""
    try:
        return _DataUnpickler(io.BytesIO(data)).load()
    except _Forbidden as exc:
        raise UnsafeDataError(
            f"{prefix}the pickle calls {exc}, which store data never holds; refused "
            "without running it (only numpy arrays, containers, strings and numbers load): this data "
            "may be malicious, do not use it"
        ) from None
    except Exception as exc:
        raise DataError(
            f"{prefix}does not unpickle ({type(exc).__name__}: {str(exc)[:80]}); {remedy}"
        ) from None
