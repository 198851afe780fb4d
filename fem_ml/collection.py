# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Collecting snapshots: run the user's DOLFINx solve over parameter samples under MPI.

All ranks of the function space's communicator solve each sample together (domain decomposition); in ensemble mode
(:class:`~fem_ml.ensemble.Ensemble`) groups of ranks solve different samples at the same time. Each finished sample
can land in a :class:`~fem_ml.store.SnapshotStore` at once, so a rerun resumes where a crash stopped. The result is
a :class:`~fem_ml.snapshots.SnapshotSet`: the data types live in :mod:`fem_ml.snapshots`, below the store; this
module, which uses the store, sits above it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Literal

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._agree import check_same
from fem_ml._fem import n_global, n_owned, space_mismatch
from fem_ml._mpi import check_collectively, collectively, wait_for_all
from fem_ml._progress import Progress
from fem_ml.ensemble import Ensemble
from fem_ml.parameters import ParameterSpace
from fem_ml.snapshots import FailedSolve, SnapshotSet, SolveFailed
from fem_ml.store import SampleRecord, SnapshotStore

__all__ = ["collect_snapshots", "collect_trajectories"]

logger = logging.getLogger(__name__)

#: Columns, solve times and failures of the samples solved or read so far.
_Collected = tuple[dict[int, npt.NDArray[np.float64]], dict[int, float], list[FailedSolve]]


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

    Every rank of ``V.mesh.comm`` must call this with the same parameters and options (checked); ``solve`` is
    called on all ranks with the same point, so the ranks solve each sample together.

    With a ``store``, each finished sample is written to disk at once, and samples the store already holds
    (same index, bit-identical parameters) are read back instead of solved: rerunning the same call after a
    crash or ``kill -9`` resumes where it stopped.

    A solve fails when ``solve`` raises an ``Exception`` on any rank (for example
    :class:`~fem_ml.snapshots.SolveFailed` from :func:`~fem_ml.snapshots.check_converged`, or a ``PETSc.Error``),
    or when the solution holds NaN or inf. A failed sample is logged, recorded (in the store too) and left out of
    the result, or re-raised with ``on_failure="raise"``. ``solve`` must fail on all ranks of the communicator
    alike (PETSc's divergence reasons do); an exception on one rank while the others wait inside a collective
    PETSc call cannot be recovered from.

    Args:
        solve: The user's solver, ``solve(mu) -> dolfinx.fem.Function`` on ``V``; ``mu`` is a ``(n_params,)``
            float64 array. The returned Function is copied, so ``solve`` may return the same Function each time.
        parameters: Points, shape ``(n_samples, n_params)``.
        V: Function space of the solutions.
        space: If given, the points are validated against it (shape, finiteness, bounds).
        store: Snapshot store to write to and resume from.
        on_failure: ``"record"`` (skip the sample and go on) or ``"raise"`` (stop with ``SolveFailed``).
        retry_failed: Solve again the samples the store holds as failed (needs ``store``).
        ensemble: Solve in ensemble mode (collective on ``ensemble.world``): ``V`` lives on ``ensemble.comm``,
            each group solves its share of the samples into ``store`` (required), and every group returns all
            samples, read back from the store.
        progress: Show a progress bar with per-solve timing on rank 0.

    Returns:
        The successful snapshots; the failed samples are listed in ``failures``.

    Raises:
        ValueError: on every rank, if the parameters are malformed or differ between ranks, if an option is
            invalid or would be ignored (``retry_failed`` without a store), if ``solve`` returns something other
            than a Function on ``V``, or if the store holds other parameters under the same sample index.
        SolveFailed: on every rank, for a failed solve with ``on_failure="raise"``.
    """
    points = _checked_points(parameters, V, space, store, on_failure, retry_failed, ensemble)
    records = _check_plan(store, points)
    if ensemble is None:
        collected = _collect_here(solve, points, V, store, records, on_failure, retry_failed, progress)
    else:
        assert store is not None
        collected = _collect_in_groups(solve, points, V, store, records, on_failure, retry_failed, ensemble, progress)
    return _snapshot_set(V, points, *collected)


def _checked_points(
    parameters: npt.ArrayLike,
    V: fem.FunctionSpace,
    space: ParameterSpace | None,
    store: SnapshotStore | None,
    on_failure: str,
    retry_failed: bool,
    ensemble: Ensemble | None,
) -> npt.NDArray[np.float64]:
    """The validated points, the same on every rank of every group (collective on the world)."""
    comm = V.mesh.comm
    world = comm if ensemble is None else ensemble.world
    points = np.empty((0, 0))
    with collectively(world):
        if on_failure not in ("record", "raise"):
            raise ValueError(f"on_failure must be 'record' or 'raise', got {on_failure!r}.")
        if retry_failed and store is None:
            raise ValueError("retry_failed=True needs a store: only a store remembers failed samples.")
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
    check_same(world, "The parameters (or on_failure, retry_failed) of collect_snapshots", points, on_failure,
               bool(retry_failed))  # fmt: skip
    return points


def _check_plan(store: SnapshotStore | None, points: npt.NDArray[np.float64]) -> dict[int, SampleRecord]:
    """The store's records, checked to belong to the same sampling plan (collective)."""
    records = store.records() if store is not None else {}
    for i, record in records.items():
        if i < points.shape[0] and not np.array_equal(record.parameters, points[i]):
            raise ValueError(
                f"The store {store.path} holds sample {i} at {record.parameters}, not at {points[i]}: "  # type: ignore[union-attr]
                "it belongs to another sampling plan (use a new store or the same parameters)."
            )
    return records


def _collect_here(
    solve: Callable[[npt.NDArray[np.float64]], fem.Function],
    points: npt.NDArray[np.float64],
    V: fem.FunctionSpace,
    store: SnapshotStore | None,
    records: dict[int, SampleRecord],
    on_failure: str,
    retry_failed: bool,
    progress: bool,
) -> _Collected:
    """Resume from the store, then solve the rest on ``V``'s communicator (collective)."""
    n_samples = points.shape[0]
    columns: dict[int, npt.NDArray[np.float64]] = {}
    times: dict[int, float] = {}
    failures = [
        FailedSolve(i, points[i].copy(), records[i].message)
        for i in range(n_samples)
        if i in records and not records[i].ok and not retry_failed
    ]
    resumed = [i for i in range(n_samples) if i in records and records[i].ok]
    if resumed:
        assert store is not None
        logger.info("Resuming: %d of %d samples are in the store %s", len(resumed), n_samples, store.path)
        loaded = store.read_values(resumed)
        for column, i in enumerate(resumed):
            columns[i], times[i] = loaded[:, column], records[i].solve_time
    todo = [i for i in range(n_samples) if i not in records or (retry_failed and not records[i].ok)]
    solved, solved_times, solved_failures = _solve_samples(solve, points, todo, V, store, on_failure, progress)
    return columns | solved, times | solved_times, failures + solved_failures


def _collect_in_groups(
    solve: Callable[[npt.NDArray[np.float64]], fem.Function],
    points: npt.NDArray[np.float64],
    V: fem.FunctionSpace,
    store: SnapshotStore,
    records: dict[int, SampleRecord],
    on_failure: str,
    retry_failed: bool,
    ensemble: Ensemble,
    progress: bool,
) -> _Collected:
    """Each group solves its share into the store; every group reads the others' back (collective on the world)."""
    n_samples = points.shape[0]
    todo = [i for i in range(n_samples) if i not in records or (retry_failed and not records[i].ok)]
    mine = [i for i in todo if ensemble.owns(i)]
    group_error: tuple[str, str] | None = None
    own: dict[int, npt.NDArray[np.float64]] = {}
    own_times: dict[int, float] = {}
    try:
        own, own_times, _ = _solve_samples(solve, points, mine, V, store, on_failure, progress)
    except Exception as err:  # re-raised on every rank of every group below
        group_error = (type(err).__name__, str(err))
    # Groups that finish early sleep here instead of spinning, leaving the cores to the others. The groups' errors
    # cannot go through `collectively`: each group may have failed with its own exception, and all are reported.
    wait_for_all(ensemble.world)
    errors = ensemble.world.allgather(group_error if V.mesh.comm.rank == 0 else None)
    for g, found in enumerate(errors):
        if found is not None:
            kind = {"ValueError": ValueError, "SolveFailed": SolveFailed}.get(found[0], RuntimeError)
            raise kind(f"{found[1]} (in ensemble group of world rank {g})")
    records = store.records()
    failures = [
        FailedSolve(i, points[i].copy(), records[i].message)
        for i in range(n_samples)
        if i in records and not records[i].ok
    ]
    # This group's own solutions are in memory; the other groups' come from the store.
    columns, times = dict(own), dict(own_times)
    others = [i for i in range(n_samples) if i in records and records[i].ok and i not in own]
    if others:
        loaded = store.read_values(others)
        for column, i in enumerate(others):
            columns[i], times[i] = loaded[:, column], records[i].solve_time
    return columns, times, failures


def _snapshot_set(
    V: fem.FunctionSpace,
    points: npt.NDArray[np.float64],
    columns: dict[int, npt.NDArray[np.float64]],
    times: dict[int, float],
    failures: list[FailedSolve],
) -> SnapshotSet:
    """The successful samples in index order (local); raises if every solve failed."""
    n_samples = points.shape[0]
    ok = sorted(columns)
    if not ok:
        raise SolveFailed(f"All {n_samples} solves failed; first failure: {failures[0].message}")
    if failures:
        logger.warning("%d of %d solves failed; they are left out (see SnapshotSet.failures)", len(failures), n_samples)
    values = np.empty((n_owned(V), len(ok)), dtype=np.float64)
    for column, i in enumerate(ok):
        values[:, column] = columns[i]
    failures.sort(key=lambda f: f.index)
    return SnapshotSet(
        V,
        points[ok],
        values,
        np.array([times[i] for i in ok], dtype=np.float64),
        indices=np.array(ok, dtype=np.int64),
        failures=tuple(failures),
    )


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
        times: Increasing output times ``(n_times,)``, the same on every rank.
        space: If given, the points are validated against it.
        progress: Show a progress bar on rank 0.

    Raises:
        ValueError: on every rank, for malformed parameters or times, parameters or times that differ between
            ranks, or a ``solve`` that yields the wrong number of Functions or Functions on another space.
    """
    comm = V.mesh.comm
    points = np.empty((0, 0))
    output_times = np.empty(0)
    with collectively(comm):
        output_times = np.asarray(times, dtype=np.float64).reshape(-1)
        points = space.validate(parameters) if space is not None else np.array(parameters, dtype=np.float64)
        if points.ndim != 2 or points.shape[0] == 0 or not np.isfinite(points).all():
            raise ValueError(f"parameters must be a finite (n_points, n_params) array, got shape {points.shape}.")
        if output_times.size == 0 or not np.isfinite(output_times).all() or np.any(np.diff(output_times) <= 0):
            raise ValueError("times must be finite and strictly increasing.")
    check_same(comm, "The parameters or times of collect_trajectories", points, output_times)
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
) -> _Collected:
    """Solve the samples ``todo`` on ``V``'s communicator; write each to the store as it finishes (collective).

    A failing ``solve`` is a recorded failure, not an error (its exception is caught on purpose, and the ranks
    agree on it through one ``allgather`` of the messages); a ``solve`` that returns something other than a
    Function on ``V`` is an error on every rank.
    """
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
        except Exception as err:  # a failed solve is data (recorded), not an error of this function
            failure = f"{type(err).__name__}: {err}"
        elapsed = time.perf_counter() - start
        with collectively(comm):
            if failure is None:
                if not isinstance(u, fem.Function):
                    raise ValueError(f"solve returned {type(u).__name__} for sample {i}, not a dolfinx.fem.Function")
                if (mismatch := space_mismatch(V, u.function_space)) is not None:
                    raise ValueError(f"solve returned a Function on another space: {mismatch}")
                if not np.isfinite(u.x.array[:n_local]).all():
                    failure = "the solution contains NaN or inf"
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
