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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mpi4py import MPI
from petsc4py import PETSc

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._fem import function_from_owned, n_global, n_owned, space_mismatch
from fem_ml._mpi import check_collectively, wait_for_all
from fem_ml._progress import Progress
from fem_ml.parameters import ParameterSpace

if TYPE_CHECKING:
    from fem_ml.ensemble import Ensemble
    from fem_ml.store import SnapshotStore

__all__ = [
    "FailedSolve",
    "SnapshotSet",
    "SolveFailed",
    "check_converged",
    "collect_snapshots",
    "collect_trajectories",
]

logger = logging.getLogger(__name__)


class SolveFailed(RuntimeError):
    """Raised by a user's ``solve`` (or :func:`check_converged`) when a solve did not produce a solution."""


def check_converged(solver: PETSc.KSP | PETSc.SNES, *, what: str = "solver") -> None:
    """Raise :class:`SolveFailed` if a PETSc KSP or SNES diverged (call it in ``solve`` after solving).

    DOLFINx's ``LinearProblem`` and ``NonlinearProblem`` return whatever the solver left in the solution on
    divergence; calling this afterwards turns that into a failure that :func:`collect_snapshots` records.
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


def collect_snapshots(
    solve: Callable[[npt.NDArray[np.float64]], fem.Function],
    parameters: npt.ArrayLike,
    V: fem.FunctionSpace,
    *,
    space: ParameterSpace | None = None,
    store: SnapshotStore | None = None,
    on_failure: Literal["record", "raise"] = "record",
    retry_failed: bool = False,
    ensemble: Ensemble | None = None,
    progress: bool = True,
) -> SnapshotSet:
    """Solve at every parameter point and keep the owned dof values (collective on ``V``'s communicator).

    Every rank of ``V.mesh.comm`` must call this with the same parameters; ``solve`` is called on all ranks with
    the same point, so the ranks solve each sample together.

    With a ``store``, each finished sample is written to disk at once, and samples the store already holds
    (same index, bit-identical parameters) are read back instead of solved: rerunning the same call after a
    crash or ``kill -9`` resumes where it stopped.

    A solve fails when ``solve`` raises an ``Exception`` on any rank (for example :class:`SolveFailed` from
    :func:`check_converged`, or a ``PETSc.Error``), or when the solution holds NaN or inf. A failed sample is
    logged, recorded (in the store too) and left out of the result, or re-raised with ``on_failure="raise"``.
    ``solve`` must fail on all ranks of the communicator alike (PETSc's divergence reasons do); an exception on
    one rank while the others wait inside a collective PETSc call cannot be recovered from.

    Args:
        solve: The user's solver, ``solve(mu) -> dolfinx.fem.Function`` on ``V``; ``mu`` is a ``(n_params,)``
            float64 array. The returned Function is copied, so ``solve`` may return the same Function each time.
        parameters: Points, shape ``(n_samples, n_params)``.
        V: Function space of the solutions.
        space: If given, the points are validated against it (shape, finiteness, bounds).
        store: Snapshot store to write to and resume from.
        on_failure: ``"record"`` (skip the sample and go on) or ``"raise"`` (stop with :class:`SolveFailed`).
        retry_failed: Solve again the samples the store holds as failed.
        ensemble: Solve in ensemble mode (collective on ``ensemble.world``): ``V`` lives on ``ensemble.comm``,
            each group solves its share of the samples into ``store`` (required), and every group returns all
            samples, read back from the store.
        progress: Show a progress bar with per-solve timing on rank 0.

    Returns:
        The successful snapshots; the failed samples are listed in ``failures``.

    Raises:
        ValueError: on every rank, if the parameters are malformed or differ between ranks, if ``solve``
            returns something other than a Function on ``V``, or if the store holds other parameters under
            the same sample index.
        SolveFailed: on every rank, for a failed solve with ``on_failure="raise"``.
    """
    comm = V.mesh.comm
    error: str | None = None
    points = np.empty((0, 0))
    try:
        if on_failure not in ("record", "raise"):
            raise ValueError(f"on_failure must be 'record' or 'raise', got {on_failure!r}.")
        if space is not None:
            points = space.validate(parameters)
        else:
            points = np.array(parameters, dtype=np.float64)
            if points.ndim != 2 or points.shape[0] == 0:
                raise ValueError(f"parameters must have shape (n_samples, n_params), got {points.shape}.")
            if not np.isfinite(points).all():
                raise ValueError("parameters contain NaN or inf.")
        if store is not None and (mismatch := space_mismatch(V, store.V)) is not None:
            raise ValueError(f"The store holds another function space: {mismatch}.")
        if ensemble is not None:
            if store is None:
                raise ValueError("Ensemble mode needs a store: the groups share their snapshots through it.")
            if MPI.Comm.Compare(ensemble.comm, comm) not in (MPI.IDENT, MPI.CONGRUENT):
                raise ValueError("V must live on the ensemble's group communicator (ensemble.comm).")
    except ValueError as err:
        error = str(err)
    check_collectively(comm if ensemble is None else ensemble.world, error)
    if ensemble is not None:
        world_points = ensemble.world.bcast(points, root=0)
        check_collectively(
            ensemble.world,
            None
            if world_points.shape == points.shape and np.array_equal(world_points, points)
            else "parameters differ between ensemble groups; sample with a seed",
        )
    root_points = comm.bcast(points, root=0)
    check_collectively(
        comm,
        None
        if root_points.shape == points.shape and np.array_equal(root_points, points)
        else "parameters differ between ranks; sample with a seed or pass comm to ParameterSpace.sample",
    )

    n_samples = points.shape[0]
    records = store.records() if store is not None else {}
    for i, record in records.items():
        if i < n_samples and not np.array_equal(record.parameters, points[i]):
            raise ValueError(
                f"The store {store.path} holds sample {i} at {record.parameters}, not at {points[i]}: "  # type: ignore[union-attr]
                "it belongs to another sampling plan (use a new store or the same parameters)."
            )
    n_local = n_owned(V)
    columns: dict[int, npt.NDArray[np.float64]] = {}
    times = np.zeros(n_samples, dtype=np.float64)
    failures: list[FailedSolve] = []
    todo = [i for i in range(n_samples) if i not in records or (retry_failed and not records[i].ok)]

    if ensemble is not None:
        assert store is not None
        mine = [i for i in todo if ensemble.owns(i)]
        group_error: tuple[str, str] | None = None
        own: dict[int, npt.NDArray[np.float64]] = {}
        own_times: dict[int, float] = {}
        try:
            own, own_times, _ = _solve_samples(solve, points, mine, V, store, on_failure, progress)
        except Exception as err:  # re-raised on every rank of every group below
            group_error = (type(err).__name__, str(err))
        # Groups that finish early sleep here instead of spinning, leaving the cores to the others.
        wait_for_all(ensemble.world)
        errors = ensemble.world.allgather(group_error if comm.rank == 0 else None)
        for g, found in enumerate(errors):
            if found is not None:
                kind = {"ValueError": ValueError, "SolveFailed": SolveFailed}.get(found[0], RuntimeError)
                raise kind(f"{found[1]} (in ensemble group of world rank {g})")
        records = store.records()
        for i in range(n_samples):
            if i in records and not records[i].ok:
                failures.append(FailedSolve(i, points[i].copy(), records[i].message))
        # This group's own solutions are in memory; the other groups' come from the store.
        columns |= own
        for i, t in own_times.items():
            times[i] = t
        others = [i for i in range(n_samples) if i in records and records[i].ok and i not in own]
        if others:
            loaded = store.read_values(others)
            for column, i in enumerate(others):
                columns[i] = loaded[:, column]
                times[i] = records[i].solve_time
    else:
        for i in range(n_samples):
            if i in records and not records[i].ok and not retry_failed:
                failures.append(FailedSolve(i, points[i].copy(), records[i].message))
        resumed = [i for i in range(n_samples) if i in records and records[i].ok]
        if resumed:
            assert store is not None
            logger.info("Resuming: %d of %d samples are in the store %s", len(resumed), n_samples, store.path)
            loaded = store.read_values(resumed)
            for column, i in enumerate(resumed):
                columns[i] = loaded[:, column]
                times[i] = records[i].solve_time
        solved, solved_times, solved_failures = _solve_samples(solve, points, todo, V, store, on_failure, progress)
        columns |= solved
        for i, t in solved_times.items():
            times[i] = t
        failures += solved_failures

    ok = sorted(columns)
    if not ok:
        raise SolveFailed(f"All {n_samples} solves failed; first failure: {failures[0].message}")
    if failures:
        logger.warning("%d of %d solves failed; they are left out (see SnapshotSet.failures)", len(failures), n_samples)
    values = np.empty((n_local, len(ok)), dtype=np.float64)
    for column, i in enumerate(ok):
        values[:, column] = columns[i]
    failures.sort(key=lambda f: f.index)
    return SnapshotSet(V, points[ok], values, times[ok], indices=np.array(ok, dtype=np.int64), failures=tuple(failures))


def collect_trajectories(
    solve: Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]], Iterable[fem.Function]],
    parameters: npt.ArrayLike,
    V: fem.FunctionSpace,
    *,
    times: npt.ArrayLike,
    space: ParameterSpace | None = None,
    progress: bool = True,
) -> SnapshotSet:
    r"""Snapshots of time-dependent problems: one trajectory per parameter point, kept at ``times`` (collective).

    The time becomes the last parameter: the result holds the points :math:`(\mu_i, t_j)`, shape
    ``(n_points * n_times, p + 1)``, and one column per pair, trajectory by trajectory. Train a surrogate on a
    :class:`~fem_ml.parameters.ParameterSpace` with the time as its last parameter; it then answers at any time of
    the interval. ``solve_time`` of each column is the wall time of its whole trajectory.

    Args:
        solve: ``solve(mu, times)`` integrates one trajectory and yields the solution as a Function on ``V`` at
            each of ``times``, in order (it may yield the same Function object each time).
        parameters: Points ``(n_points, p)``, the same on every rank.
        V: Function space of the solutions.
        times: Increasing output times ``(n_times,)``.
        space: If given, the points are validated against it.
        progress: Show a progress bar on rank 0.

    Raises:
        ValueError: on every rank, for malformed parameters or times, or a ``solve`` that yields the wrong
            number of Functions or Functions on another space.
    """
    comm = V.mesh.comm
    error: str | None = None
    points = np.empty((0, 0))
    output_times = np.asarray(times, dtype=np.float64).reshape(-1)
    try:
        points = space.validate(parameters) if space is not None else np.array(parameters, dtype=np.float64)
        if points.ndim != 2 or points.shape[0] == 0 or not np.isfinite(points).all():
            raise ValueError(f"parameters must be a finite (n_points, n_params) array, got shape {points.shape}.")
        if output_times.size == 0 or not np.isfinite(output_times).all() or np.any(np.diff(output_times) <= 0):
            raise ValueError("times must be finite and strictly increasing.")
    except ValueError as err:
        error = str(err)
    check_collectively(comm, error)
    n_local, n_times = n_owned(V), output_times.size
    values = np.empty((n_local, points.shape[0] * n_times))
    rows, solve_times = [], []
    bar = Progress(points.shape[0], "trajectories", enabled=progress and comm.rank == 0)
    for i, mu in enumerate(points):
        start = time.perf_counter()
        count = 0
        problem: str | None = None
        for u in solve(mu.copy(), output_times.copy()):
            if count >= n_times:
                problem = f"solve yielded more than the {n_times} requested time steps"
                break
            if not isinstance(u, fem.Function) or space_mismatch(V, u.function_space) is not None:
                problem = "solve must yield dolfinx.fem.Functions on V"
                break
            values[:, i * n_times + count] = u.x.array[:n_local]
            count += 1
        if problem is None and count != n_times:
            problem = f"solve yielded {count} Functions for {n_times} requested times"
        check_collectively(comm, None if problem is None else f"Trajectory {i}: {problem}.")
        elapsed = time.perf_counter() - start
        rows += [np.append(mu, t) for t in output_times]
        solve_times += [elapsed] * n_times
        bar.update(i + 1, f"last trajectory {elapsed:.3f}s")
    return SnapshotSet(V, np.array(rows), values, np.array(solve_times))


def _solve_samples(
    solve: Callable[[npt.NDArray[np.float64]], fem.Function],
    points: npt.NDArray[np.float64],
    todo: list[int],
    V: fem.FunctionSpace,
    store: SnapshotStore | None,
    on_failure: str,
    progress: bool,
) -> tuple[dict[int, npt.NDArray[np.float64]], dict[int, float], list[FailedSolve]]:
    """Solve the samples ``todo`` on ``V``'s communicator; write each to the store as it finishes (collective)."""
    comm = V.mesh.comm
    n_local = n_owned(V)
    columns: dict[int, npt.NDArray[np.float64]] = {}
    times: dict[int, float] = {}
    failures: list[FailedSolve] = []
    bar = Progress(len(todo), "snapshots", enabled=progress and MPI.COMM_WORLD.rank == 0)
    logger.info("Collecting %d snapshots on %d rank(s), %d dofs", len(todo), comm.size, n_global(V))
    for done, i in enumerate(todo, start=1):
        mu = points[i]
        start = time.perf_counter()
        failure: str | None = None
        u = None
        try:
            u = solve(mu.copy())
        except Exception as err:
            failure = f"{type(err).__name__}: {err}"
        elapsed = time.perf_counter() - start
        problem: str | None = None
        if failure is None:
            if not isinstance(u, fem.Function):
                problem = f"solve returned {type(u).__name__} for sample {i}, not a dolfinx.fem.Function"
            elif (mismatch := space_mismatch(V, u.function_space)) is not None:
                problem = f"solve returned a Function on another space: {mismatch}"
            elif not np.isfinite(u.x.array[:n_local]).all():
                failure = "the solution contains NaN or inf"
        check_collectively(comm, problem)
        failures_on_ranks = comm.allgather(failure) if comm.size > 1 else [failure]
        message = next((f for f in failures_on_ranks if f is not None), None)
        if message is not None:
            logger.warning("Solve of sample %d at %s failed: %s", i, mu, message)
            if store is not None:
                store.write(i, mu, None, solve_time=elapsed, message=message)
            if on_failure == "raise":
                raise SolveFailed(f"Solve of sample {i} at {mu} failed: {message}")
            failures.append(FailedSolve(i, mu.copy(), message))
        else:
            assert isinstance(u, fem.Function)
            values = u.x.array[:n_local].copy()
            columns[i] = values
            times[i] = elapsed
            if store is not None:
                store.write(i, mu, values, solve_time=elapsed)
            logger.debug("sample %d solved in %.4f s", i, elapsed)
        bar.update(done, f"last solve {elapsed:.3f}s")
    if comm.rank == 0 and times:
        logger.info("Snapshots done: median solve %.4f s", float(np.median(list(times.values()))))
    return columns, times, failures
