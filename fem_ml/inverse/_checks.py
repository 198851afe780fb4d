# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Input checks shared by the modules of :mod:`fem_ml.inverse`: noise levels, and inputs equal on every rank."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

from fem_ml._mpi import check_collectively

__all__ = ["check_same_on_all_ranks", "positive_std"]


def positive_std(noise_std: npt.ArrayLike, shape: tuple[int, ...], what: str) -> npt.NDArray[np.float64]:
    """``noise_std`` (a scalar or an array of ``shape``) broadcast to ``shape`` and flattened; checked positive."""
    std = np.asarray(noise_std, dtype=np.float64)
    if std.ndim != 0 and std.shape != shape:
        raise ValueError(f"{what} must be a number or an array of shape {shape}, got shape {std.shape}.")
    std = np.broadcast_to(std, shape).reshape(-1).copy()
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"{what} must be positive and finite, got {float(std.min())} at least once.")
    return std


def check_same_on_all_ranks(comm: MPI.Comm, what: str, *values: object) -> None:
    """Raise ValueError on every rank if ``values`` differ between the ranks (collective).

    The values (arrays, numbers, strings, None, mappings, sequences and dataclasses of them) are reduced to a
    64-bit digest of their bytes, types and shapes; one ``MPI_Allreduce`` of two integers compares the digests
    of all ranks. Call it after the local checks, on validated values.

    Args:
        comm: Communicator.
        what: What the values are, for the message ("the sensor points", ...).
        values: The values that must be the same on every rank.
    """
    if comm.size == 1:
        return
    digest = hashlib.blake2b(digest_size=8)
    for value in values:
        _feed(digest, value)
    local = int.from_bytes(digest.digest(), "little") >> 2  # 62 bits: its negative fits into an int64 too
    bounds = np.array([local, -local], dtype=np.int64)
    reduced = np.empty_like(bounds)
    comm.Allreduce(bounds, reduced, op=MPI.MIN)
    same = reduced[0] == -reduced[1]
    check_collectively(comm, None if same else f"{what} differ between ranks; give the same on every rank.")


def _feed(digest: hashlib.blake2b, value: object) -> None:
    """Add a canonical encoding of ``value`` to ``digest``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(type(value).__qualname__.encode())
        for f in dataclasses.fields(value):
            _feed(digest, getattr(value, f.name))
    elif isinstance(value, Mapping):
        digest.update(b"{")
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, list | tuple):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, np.ndarray | np.generic | float | int):
        array = np.ascontiguousarray(value)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    else:
        digest.update(f"{type(value).__qualname__}:{value!r}".encode())
