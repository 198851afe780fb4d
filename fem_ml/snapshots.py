r"""Snapshot data: the solutions of a parametric problem, as each rank's owned dof values.

All ranks of the function space's communicator solve each sample together (domain decomposition). Each rank keeps
the values of the dofs it owns, so a :class:`SnapshotSet` holds an ``(n_owned, n_samples)`` block on every rank:
together the blocks form the global snapshot matrix :math:`U = [u(\mu_1), \dots, u(\mu_n)]`.

This module holds the data types only; collecting snapshots is :mod:`fem_ml.collection`, storing them
:mod:`fem_ml.store`. :class:`SnapshotSource` is what a consumer such as :func:`fem_ml.pod.pod` reads: a function
space, a number of columns and blocks of columns, implemented by :class:`SnapshotSet` (in memory) and by
:class:`~fem_ml.store.SnapshotStore` (streamed from disk).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from petsc4py import PETSc

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._fem import function_from_owned, n_global, n_owned

__all__ = ["FailedSolve", "SnapshotSet", "SnapshotSource", "SolveFailed", "check_converged"]


class SolveFailed(RuntimeError):
    """Raised by a user's ``solve`` (or :func:`check_converged`) when a solve did not produce a solution."""


def check_converged(solver: PETSc.KSP | PETSc.SNES, *, what: str = "solver") -> None:
    """Raise :class:`SolveFailed` if a PETSc KSP or SNES diverged (call it in ``solve`` after solving).

    DOLFINx's ``LinearProblem`` and ``NonlinearProblem`` return whatever the solver left in the solution on
    divergence; calling this afterwards turns that into a failure that
    :func:`~fem_ml.collection.collect_snapshots` records.
    (Setting the PETSc option ``ksp_error_if_not_converged`` or ``snes_error_if_not_converged`` has the same
    effect through a ``PETSc.Error``.)

    Args:
        solver: The KSP or SNES that just solved.
        what: Name used in the message.
    """
    reason = int(solver.getConvergedReason())  # type: ignore[call-overload]
    if reason < 0:
        kind = "KSP" if isinstance(solver, PETSc.KSP) else "SNES"
        names = {v: k for k, v in vars(type(solver).ConvergedReason).items() if isinstance(v, int)}
        raise SolveFailed(
            f"{what} diverged: {kind} reason {names.get(reason, reason)} ({reason}) "
            f"after {solver.getIterationNumber()} iterations"
        )


@dataclass(frozen=True)
class FailedSolve:
    """A sample whose solve failed.

    Attributes:
        index: Position of the sample in the parameter array.
        parameters: The point ``(p,)``.
        message: What went wrong (exception type and message).
    """

    index: int
    parameters: npt.NDArray[np.float64]
    message: str


@runtime_checkable
class SnapshotSource(Protocol):
    """Snapshots read as blocks of columns of the snapshot matrix: what the POD consumes.

    Implemented by :class:`SnapshotSet` (in memory; blocks are views) and by :class:`~fem_ml.store.SnapshotStore`
    (its successful samples in index order, streamed from disk; collective).
    """

    @property
    def V(self) -> fem.FunctionSpace:
        """The function space of the snapshots."""
        ...

    @property
    def in_memory(self) -> bool:
        """True if every column is in memory, so that reading all of them at once costs no copy."""
        ...

    def column_count(self) -> int:
        """Number of snapshot columns (collective for a store: it lists the store, and fixes the columns)."""
        ...

    def read_columns(self, start: int, stop: int) -> npt.NDArray[np.float64]:
        """Owned dof values of columns ``start:stop``, shape ``(n_owned, stop - start)`` (collective for a store)."""
        ...


@dataclass(frozen=True)
class SnapshotSet:
    """Solutions of a parametric problem, as owned dof values on each rank.

    Attributes:
        V: Function space of the solutions.
        parameters: Parameter points, shape ``(n_samples, n_params)``, the same on every rank.
        values: Owned dof values, shape ``(n_owned, n_samples)``; column ``i`` is the solution at
            ``parameters[i]``.
        solve_times: Wall-clock seconds of each solve (measured on each rank; rank 0's are reported).
        indices: Position of each snapshot in the parameter array it was requested with (default
            ``0, 1, ...``); failed samples leave gaps.
        failures: The samples whose solve failed; they are not part of ``values``.
    """

    V: fem.FunctionSpace
    parameters: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    solve_times: npt.NDArray[np.float64] = field(repr=False)
    indices: npt.NDArray[np.int64] = field(default=None, repr=False)  # type: ignore[arg-type]
    failures: tuple[FailedSolve, ...] = ()

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
        if self.indices is None:
            object.__setattr__(self, "indices", np.arange(n, dtype=np.int64))
        elif np.shape(self.indices) != (n,):
            raise ValueError(f"indices must have shape ({n},), got {np.shape(self.indices)}.")

    def __len__(self) -> int:
        return self.parameters.shape[0]

    @property
    def n_dofs(self) -> int:
        """Global number of dof values (including block size)."""
        return n_global(self.V)

    @property
    def in_memory(self) -> bool:
        """True, since the values are an array (see :class:`SnapshotSource`)."""
        return True

    def column_count(self) -> int:
        """Number of snapshots (see :class:`SnapshotSource`)."""
        return self.parameters.shape[0]

    def read_columns(self, start: int, stop: int) -> npt.NDArray[np.float64]:
        """Owned values of snapshots ``start:stop``, a view (see :class:`SnapshotSource`)."""
        return self.values[:, start:stop]

    def function(self, i: int, *, name: str | None = None) -> fem.Function:
        """Return snapshot ``i`` as a new Function on ``V`` with ghosts updated (collective)."""
        return function_from_owned(self.V, self.values[:, i], name=name)

    def subset(self, indices: npt.ArrayLike) -> SnapshotSet:
        """Return the snapshots at ``indices`` (a copy)."""
        idx = np.asarray(indices)
        return SnapshotSet(
            self.V,
            self.parameters[idx],
            self.values[:, idx].copy(),
            self.solve_times[idx],
            indices=self.indices[idx],
            failures=self.failures,
        )
