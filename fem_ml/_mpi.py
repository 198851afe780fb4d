# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""MPI helpers: raise the same error on every rank, spread independent work over ranks without busy-waiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from mpi4py import MPI

__all__ = ["check_collectively", "run_distributed", "wait_for_all"]


def check_collectively(comm: MPI.Comm, error: str | None, exc_type: type[Exception] = ValueError) -> None:
    """Raise ``exc_type`` on every rank if any rank found an error.

    Every rank must call this (it is collective). The message of the lowest failing rank is raised everywhere,
    so a bad input gives the same clear error on all ranks instead of a hang in a later collective call.

    Args:
        comm: Communicator whose ranks take part.
        error: This rank's error message, or None if its checks passed.
        exc_type: Exception class to raise.
    """
    errors = comm.allgather(error) if comm.size > 1 else [error]
    for rank, message in enumerate(errors):
        if message is not None:
            suffix = f" (found on rank {rank})" if comm.size > 1 else ""
            raise exc_type(message + suffix)


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
