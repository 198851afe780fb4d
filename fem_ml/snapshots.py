# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Snapshots: run the user's DOLFINx solve over parameter samples under MPI.

All ranks of the function space's communicator solve each sample together (domain decomposition). Each rank keeps
the values of the dofs it owns, so a :class:`SnapshotSet` holds an ``(n_owned, n_samples)`` block on every rank:
together the blocks form the global snapshot matrix :math:`U = [u(\mu_1), \dots, u(\mu_n)]`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._fem import function_from_owned, n_global, n_owned, space_mismatch
from fem_ml._mpi import check_collectively
from fem_ml._progress import Progress
from fem_ml.parameters import ParameterSpace

__all__ = ["SnapshotSet", "collect_snapshots"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotSet:
    """Solutions of a parametric problem, as owned dof values on each rank.

    Attributes:
        V: Function space of the solutions.
        parameters: Parameter points, shape ``(n_samples, n_params)``, the same on every rank.
        values: Owned dof values, shape ``(n_owned, n_samples)``; column ``i`` is the solution at
            ``parameters[i]``.
        solve_times: Wall-clock seconds of each solve (measured on each rank; rank 0's are reported).
    """

    V: fem.FunctionSpace
    parameters: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    solve_times: npt.NDArray[np.float64] = field(repr=False)

    def __post_init__(self) -> None:
        n = self.parameters.shape[0]
        if self.parameters.ndim != 2:
            raise ValueError(f"parameters must have shape (n_samples, n_params), got {self.parameters.shape}.")
        if self.values.shape != (n_owned(self.V), n):
            raise ValueError(
                f"values must have shape (n_owned, n_samples) = {(n_owned(self.V), n)}, got {self.values.shape}."
            )
        if self.solve_times.shape != (n,):
            raise ValueError(f"solve_times must have shape ({n},), got {self.solve_times.shape}.")

    def __len__(self) -> int:
        return self.parameters.shape[0]

    @property
    def n_dofs(self) -> int:
        """Global number of dof values (including block size)."""
        return n_global(self.V)

    def function(self, i: int, *, name: str | None = None) -> fem.Function:
        """Return snapshot ``i`` as a new Function on ``V`` with ghosts updated (collective)."""
        return function_from_owned(self.V, self.values[:, i], name=name)

    def subset(self, indices: npt.ArrayLike) -> SnapshotSet:
        """Return the snapshots at ``indices`` (a copy)."""
        idx = np.asarray(indices)
        return SnapshotSet(self.V, self.parameters[idx], self.values[:, idx].copy(), self.solve_times[idx])


def collect_snapshots(
    solve: Callable[[npt.NDArray[np.float64]], fem.Function],
    parameters: npt.ArrayLike,
    V: fem.FunctionSpace,
    *,
    space: ParameterSpace | None = None,
    progress: bool = True,
) -> SnapshotSet:
    """Solve at every parameter point and keep the owned dof values (collective on ``V``'s communicator).

    Every rank of ``V.mesh.comm`` must call this with the same parameters; ``solve`` is called on all ranks with
    the same point, so the ranks solve each sample together.

    Args:
        solve: The user's solver, ``solve(mu) -> dolfinx.fem.Function`` on ``V``; ``mu`` is a ``(n_params,)``
            float64 array. The returned Function is copied, so ``solve`` may return the same Function each time.
        parameters: Points, shape ``(n_samples, n_params)``.
        V: Function space of the solutions.
        space: If given, the points are validated against it (shape, finiteness, bounds).
        progress: Show a progress bar with per-solve timing on rank 0.

    Returns:
        The snapshots.

    Raises:
        ValueError: on every rank, if the parameters are malformed or differ between ranks, or if ``solve``
            returns something other than a Function on ``V``.
    """
    comm = V.mesh.comm
    error: str | None = None
    points = np.empty((0, 0))
    try:
        if space is not None:
            points = space.validate(parameters)
        else:
            points = np.array(parameters, dtype=np.float64)
            if points.ndim != 2 or points.shape[0] == 0:
                raise ValueError(f"parameters must have shape (n_samples, n_params), got {points.shape}.")
            if not np.isfinite(points).all():
                raise ValueError("parameters contain NaN or inf.")
    except ValueError as err:
        error = str(err)
    check_collectively(comm, error)
    root_points = comm.bcast(points, root=0)
    check_collectively(
        comm,
        None
        if root_points.shape == points.shape and np.array_equal(root_points, points)
        else "parameters differ between ranks; sample with a seed or pass comm to ParameterSpace.sample",
    )

    n_samples = points.shape[0]
    values = np.empty((n_owned(V), n_samples), dtype=np.float64)
    times = np.empty(n_samples, dtype=np.float64)
    bar = Progress(n_samples, "snapshots", enabled=progress and comm.rank == 0)
    logger.info("Collecting %d snapshots on %d rank(s), %d dofs", n_samples, comm.size, n_global(V))
    for i, mu in enumerate(points):
        start = time.perf_counter()
        u = solve(mu.copy())
        elapsed = time.perf_counter() - start
        if not isinstance(u, fem.Function):
            problem: str | None = f"solve returned {type(u).__name__} for sample {i}, not a dolfinx.fem.Function"
        else:
            mismatch = space_mismatch(V, u.function_space)
            problem = None if mismatch is None else f"solve returned a Function on another space: {mismatch}"
        check_collectively(comm, problem)
        assert isinstance(u, fem.Function)
        values[:, i] = u.x.array[: values.shape[0]]
        times[i] = elapsed
        logger.debug("sample %d/%d solved in %.4f s", i + 1, n_samples, elapsed)
        bar.update(i + 1, f"last solve {elapsed:.3f}s")
    if comm.rank == 0:
        logger.info("Snapshots done: median solve %.4f s", float(np.median(times)))
    return SnapshotSet(V, points, values, times)
