# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Checks that every rank passed the same input to a collective call, for one small ``Allreduce`` (private module).

A collective function called with different arguments on different ranks (a parameter point computed from an
unseeded random generator, a tolerance read from a per-rank file) does not hang, but it silently mixes results:
each rank's owned part of a field comes from another prediction. :func:`check_same` and :func:`agreed` compare a
64-bit digest (BLAKE2b) of the arguments across the ranks with one ``MPI_Allreduce`` of three integers (the
maximum of the digest, of its negation, and of a failure flag), and raise the same error on every rank when they
differ. The cost is a few microseconds on shared memory (``benchmarks/rank_check_cost.py`` measures it); serial
runs skip it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from mpi4py import MPI

import numpy as np

from fem_ml._mpi import collectively

__all__ = ["agreed", "check_same", "digest"]

_MASK = (1 << 62) - 1


def digest(*values: object) -> int:
    """A 62-bit digest of ``values``: arrays by dtype, shape and bytes, tuples and lists by item, else ``repr``."""
    h = hashlib.blake2b(digest_size=8)
    _update(h, values)
    return int.from_bytes(h.digest(), "little") & _MASK


def _update(h: hashlib.blake2b, value: object) -> None:
    """Feed ``value`` to ``h``: arrays whole (their repr is abbreviated), tuples and lists item by item."""
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        h.update(f"array{array.dtype.str}{array.shape}".encode())
        h.update(array.tobytes())
    elif isinstance(value, tuple | list):
        h.update(f"{type(value).__name__}{len(value)}(".encode())
        for item in value:
            _update(h, item)
        h.update(b")")
    else:
        h.update(repr(value).encode())
        h.update(b"\x00")


def _reduce(comm: MPI.Comm, failed: bool, value: int) -> tuple[bool, bool]:
    """(any rank failed, all ranks have ``value``): one Allreduce of three integers (collective)."""
    buffer = np.array([int(failed), value, -value], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.MAX)
    return bool(buffer[0]), bool(buffer[1] == -buffer[2])


def check_same(comm: MPI.Comm, what: str, *values: object, exc_type: type[Exception] = ValueError) -> None:
    """Raise ``exc_type`` on every rank unless every rank passed equal ``values`` (collective, one Allreduce).

    Args:
        comm: Communicator whose ranks all call this.
        what: What must agree, for the message (e.g. ``"pod's options"``).
        values: This rank's values (arrays, numbers, strings, tuples of them).
        exc_type: Exception class raised.
    """
    if comm.size == 1:
        return
    _, same = _reduce(comm, False, digest(*values))
    if not same:
        raise exc_type(
            f"{what} differ between ranks: every rank of the communicator must pass the same values (sample with "
            "a seed, or compute on one rank and broadcast)."
        )


def agreed[T](comm: MPI.Comm, compute: Callable[[], T], what: str, key: Callable[[T], object] | None = None) -> T:
    """Run ``compute`` (which may raise on some ranks only) and check its result agrees across ranks (collective).

    Success costs one Allreduce. If ``compute`` raised on any rank, the lowest failing rank's exception is raised on
    every rank (through :func:`~fem_ml._mpi.collectively`); if the results differ, a ``ValueError`` naming ``what``
    is raised on every rank.

    Args:
        comm: Communicator whose ranks all call this.
        compute: Local work, e.g. validating this rank's parameter points; no collective calls inside.
        what: What must agree, for the message.
        key: The part of the result to compare (default: the result).

    Returns:
        ``compute()``'s result, the same on every rank.
    """
    failure: Exception | None = None
    result: T | None = None
    try:
        result = compute()
    except Exception as err:  # every type: the other ranks learn of it below
        failure = err
    if comm.size == 1:
        if failure is not None:
            raise failure
        return result  # type: ignore[return-value]
    value = 0 if failure is not None else digest(result if key is None else key(result))  # type: ignore[arg-type]
    failed, same = _reduce(comm, failure is not None, value)
    if failed:
        with collectively(comm):
            if failure is not None:
                raise failure
    if not same:
        raise ValueError(
            f"{what} differ between ranks: every rank of the communicator must pass the same values (sample with a "
            "seed, or compute on one rank and broadcast)."
        )
    return result  # type: ignore[return-value]
