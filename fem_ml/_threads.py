# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""BLAS threads: no more per rank than the node has cores per rank, and one for small dense work.

NumPy and SciPy each bring an OpenBLAS that starts one thread per core and lets idle threads spin. Under
``mpirun -n 2`` on 2 cores that is four busy threads on two cores: ``demos/dynamics_burgers.py`` measured its POD at
5.4 s and its operator-inference fit at 4.8 s, against 0.14 s and 0.75 s with one BLAS thread per rank (NumPy 2.5,
SciPy 1.18). :func:`limit_blas_threads`, called once when fem_ml is imported, divides the cores among the ranks the
MPI launcher started on the node (its environment: ``MPI_LOCALNRANKS`` from MPICH's Hydra,
``OMPI_COMM_WORLD_LOCAL_SIZE`` from Open MPI; no communication). Whoever sets a thread count
(``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``) keeps it.

A serial process keeps a thread per core, and so do its BLAS calls when another process is busy on those cores:
each call then waits for a descheduled worker. :func:`one_blas_thread` runs a block of many small dense
operations (matrices of a few hundred rows, where threads gain nothing) on one thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

__all__ = ["limit_blas_threads", "one_blas_thread"]

logger = logging.getLogger(__name__)

#: Thread counts that, when set by the user, mean the user has decided.
_USER_SETTINGS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: The launchers' count of ranks on this node.
_LOCAL_SIZE = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")


def limit_blas_threads() -> int | None:
    """Give each rank ``cores // ranks on the node`` BLAS threads (local; no MPI calls).

    Sets ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` for the BLAS libraries loaded later, and limits those
    already loaded through threadpoolctl.

    Returns:
        The thread count set, or None when nothing was changed (a single rank on the node, no launcher's
        environment, or a thread count set by the user).
    """
    if any(os.environ.get(name, "").strip() for name in _USER_SETTINGS):
        return None
    local = next((os.environ[name] for name in _LOCAL_SIZE if os.environ.get(name, "").isdigit()), None)
    if local is None or int(local) <= 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // int(local))
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
    logger.debug("BLAS threads per rank: %d (%d cores, %s ranks on the node)", threads, cores, local)
    return threads


_CONTROLLER: list[ThreadpoolController] = []


def _controller() -> ThreadpoolController:
    """The thread pools of the BLAS libraries loaded at the first call (one scan of the process's libraries)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController  # not at import: ``import fem_ml`` stays light

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with every BLAS library on one thread, then restore their thread counts (local).

    Where every BLAS already runs on one thread (``OMP_NUM_THREADS=1``, or one core per rank under
    :func:`limit_blas_threads`) the pools are left alone.
    """
    controller = _controller()
    if all(library.num_threads <= 1 for library in controller.select(user_api="blas").lib_controllers):
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield
