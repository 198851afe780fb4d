# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""MPI helpers: fail on every rank together (:func:`collectively`); spread work over ranks without busy-waiting."""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from mpi4py import MPI

__all__ = ["CollectiveError", "check_collectively", "collectively", "run_distributed", "wait_for_all"]


class CollectiveError(RuntimeError):
    """An error raised on every rank because some rank failed inside :func:`collectively`.

    Used on the ranks that did not fail when the failing rank's exception class cannot be rebuilt from its message.
    """


@contextmanager
def collectively(comm: MPI.Comm) -> Iterator[None]:
    """Run a block that may fail on some ranks only; if any rank fails, raise on every rank (collective).

    The block itself must not call collective operations: a rank that fails leaves it early. On leaving the block,
    every rank takes part in one ``MPI_Allreduce`` of a flag (nothing else when no rank failed). If a rank failed,
    the lowest failing rank's exception is sent to all ranks: that rank re-raises its own exception with its
    traceback, and the others raise an exception of the same class with the same message (suffixed with the rank
    it came from), or :class:`CollectiveError` when the class cannot be rebuilt from a message. Every exception
    type is caught (any :class:`Exception`), so no error can leave one rank behind in the next collective.

    Example::

        with collectively(comm):
            if comm.rank == 0:
                tree = read_tree(path)      # may raise FileFormatError on rank 0 only
        tree = comm.bcast(tree if comm.rank == 0 else None)

    Args:
        comm: Communicator whose ranks all enter and leave the block.

    Raises:
        Exception: The failing rank's exception, on every rank.
    """
    failure: Exception | None = None
    try:
        yield
    except Exception as err:  # every type: the point is that no rank leaves the others waiting
        failure = err
    if comm.size == 1:
        if failure is not None:
            raise failure
        return
    source = comm.allreduce(comm.rank if failure is not None else comm.size, op=MPI.MIN)
    if source == comm.size:
        return
    payload = None
    if comm.rank == source:
        assert failure is not None
        payload = (_picklable_class(type(failure)), str(failure))
    cls, message = comm.bcast(payload, root=source)
    if comm.rank == source:
        assert failure is not None
        raise failure
    raise _rebuild(cls, f"{message} (raised on rank {source})")


def _picklable_class(cls: type[Exception]) -> type[Exception]:
    """``cls`` if it can be sent to other ranks by reference, else :class:`CollectiveError`."""
    try:
        pickle.loads(pickle.dumps(cls))
    except Exception:
        return CollectiveError
    return cls


def _rebuild(cls: type[Exception], message: str) -> Exception:
    """An instance of ``cls`` carrying ``message``, or a :class:`CollectiveError` if ``cls(message)`` fails."""
    try:
        error = cls(message)
    except Exception:
        return CollectiveError(f"{cls.__name__}: {message}")
    return error if str(error) == message else CollectiveError(f"{cls.__name__}: {message}")


def check_collectively(comm: MPI.Comm, error: str | None, exc_type: type[Exception] = ValueError) -> None:
    """Raise ``exc_type`` on every rank if any rank found an error (a :func:`collectively` block; collective).

    For checks that produce a message rather than raise. The message of the lowest failing rank is raised
    everywhere, so a bad input gives the same clear error on all ranks instead of a hang in a later collective.

    Args:
        comm: Communicator whose ranks take part.
        error: This rank's error message, or None if its checks passed.
        exc_type: Exception class to raise.
    """
    with collectively(comm):
        if error is not None:
            raise exc_type(error)


def run_distributed[T](comm: MPI.Comm, tasks: Sequence[Callable[[], T]], *, poll_interval: float = 0.005) -> list[T]:
    """Run independent tasks spread round-robin over the ranks; every rank gets all results (collective).

    Task ``k`` runs on rank ``k % comm.size``; a single task runs on rank 0. Ranks that finish early wait on a
    non-blocking barrier with short sleeps instead of spinning inside a blocking collective, so the working ranks
    keep the cores. An exception in any task is re-raised on every rank.

    Args:
        comm: Communicator.
        tasks: Callables; each must return a picklable result.
        poll_interval: Seconds between checks of the waiting ranks.

    Returns:
        The results, in task order, on every rank.
    """
    local: dict[int, T] = {}
    failure: str | None = None
    for k in range(comm.rank, len(tasks), comm.size):
        try:
            local[k] = tasks[k]()
        except Exception as err:
            failure = f"task {k} on rank {comm.rank} failed: {type(err).__name__}: {err}"
            break
    if comm.size == 1:
        if failure is not None:
            raise RuntimeError(failure)
        return [local[k] for k in range(len(tasks))]
    wait_for_all(comm, poll_interval=poll_interval)
    gathered = comm.allgather((failure, local))
    failures = [f for f, _ in gathered if f is not None]
    if failures:
        raise RuntimeError("; ".join(failures))
    merged: dict[int, T] = {}
    for _, part in gathered:
        merged.update(part)
    return [merged[k] for k in range(len(tasks))]


def wait_for_all(comm: MPI.Comm, *, poll_interval: float = 0.005) -> None:
    """Barrier that sleeps between checks, so ranks that arrive early leave the cores to those still working."""
    if comm.size == 1:
        return
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll_interval)
