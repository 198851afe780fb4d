# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Adaptive sampling: add training solves where the surrogate's error estimate is largest.

Each round builds a surrogate from the snapshots so far (the user's ``build``: POD, training, and an error
estimator), evaluates the estimator on a pool of candidate points, solves the full model at the ``batch_size``
candidates with the largest estimates, and repeats until the largest estimate is at most ``target`` or
``max_solves`` solves are spent. Two estimators come with fem_ml:

* :func:`residual_estimator`: the relative dual norm of the full residual of the prediction
  (:meth:`~fem_ml.reduced.AffineReducedOperators.dual_residual`), cheap for problems affine in the parameters and
  accurate while it is above about :math:`10^{-7}`; this is the classic reduced-basis greedy, driven by the
  network's prediction;
* :func:`ensemble_estimator`: the ensemble's relative deviation (:meth:`~fem_ml.surrogate.Surrogate.deviation`),
  for any problem.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._agree import agreed
from fem_ml._mpi import collectively
from fem_ml._progress import Progress
from fem_ml.collection import collect_snapshots
from fem_ml.networks import TrainingOptions
from fem_ml.parameters import ParameterSpace
from fem_ml.pod import pod
from fem_ml.reduced import AffineReducedOperators
from fem_ml.snapshots import SnapshotSet
from fem_ml.surrogate import Surrogate, train_surrogate

__all__ = ["AdaptiveResult", "AdaptiveRound", "Estimator", "adaptive_sampling", "ensemble_estimator",
           "residual_estimator"]  # fmt: skip

logger = logging.getLogger(__name__)

#: Error estimates of a surrogate at candidate points ``(m, p) -> (m,)``.
Estimator = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


def residual_estimator(rom: Surrogate, operators: AffineReducedOperators) -> Estimator:
    """Estimator: relative dual residual of ``rom``'s prediction (operators built with ``dual_norm``)."""
    return lambda points: operators.dual_residual(points, rom.coefficients(points))


def ensemble_estimator(rom: Surrogate) -> Estimator:
    """Estimator: the ensemble's relative deviation (``rom`` trained with ``n_networks >= 2``)."""
    return rom.deviation


@dataclass(frozen=True)
class AdaptiveRound:
    """One round of adaptive sampling.

    Attributes:
        n_solves: Full solves spent so far (the snapshots the round's surrogate was built from).
        max_estimate: Largest estimate over the candidates.
        mean_estimate: Mean estimate over the candidates.
        added: The candidate points solved after this round, ``(k, p)`` (empty in the last round).
    """

    n_solves: int
    max_estimate: float
    mean_estimate: float
    added: npt.NDArray[np.float64]


@dataclass
class AdaptiveResult:
    """Outcome of :func:`adaptive_sampling`.

    Attributes:
        surrogate: The last surrogate.
        snapshots: Every snapshot solved.
        rounds: What each round saw and added.
        converged: Whether the largest estimate reached the target.
    """

    surrogate: Surrogate
    snapshots: SnapshotSet
    rounds: list[AdaptiveRound] = field(default_factory=list)
    converged: bool = False

    @property
    def n_solves(self) -> int:
        """Full solves spent."""
        return len(self.snapshots)


def adaptive_sampling(
    solve: Callable[[npt.NDArray[np.float64]], fem.Function],
    V: fem.FunctionSpace,
    space: ParameterSpace,
    build: Callable[[SnapshotSet], tuple[Surrogate, Estimator]] | None = None,
    *,
    initial: npt.ArrayLike,
    candidates: npt.ArrayLike,
    target: float,
    batch_size: int = 5,
    max_solves: int = 60,
    callback: Callable[[AdaptiveRound, Surrogate], None] | None = None,
    progress: bool = True,
    options: TrainingOptions | None = None,
    **overrides: Any,
) -> AdaptiveResult:
    """Greedy sampling driven by an error estimate (collective).

    Without ``build``, each round computes ``pod(snapshots)`` (:math:`H^1`, tolerance ``1e-6``), trains an ensemble
    with :func:`~fem_ml.surrogate.train_surrogate` from ``options`` and keyword ``overrides`` of its fields (as
    ``train_surrogate`` takes them; default ``TrainingOptions(n_networks=3, progress=False)``; an unknown name is
    a ``TypeError``) and estimates with :func:`ensemble_estimator`. With ``build``, training options belong in
    ``build``: giving them here too is an error (they would be ignored).

    Args:
        solve: The full model, ``solve(mu) -> Function`` on ``V``.
        V: The solution space.
        space: The parameter space.
        build: Builds a surrogate and its estimator from snapshots (POD, training, operators); None for the
            default ensemble build.
        initial: The first points to solve, ``(n0, p)``.
        candidates: The pool the next points are chosen from, ``(m, p)``; a chosen point leaves the pool.
        target: Stop once the largest estimate over the remaining candidates is at most this.
        batch_size: Points added per round.
        max_solves: Stop before exceeding this many full solves.
        callback: Called after each round with the round and its surrogate (e.g. to measure a test error).
            The surrogate of a round is destroyed (:meth:`~fem_ml.surrogate.Surrogate.destroy`, and its basis'
            :meth:`~fem_ml.pod.PODBasis.destroy`) once the next one is built; only the returned one stays usable.
        progress: Show progress on rank 0.
        options: Training options of the default build.
        overrides: Fields of :class:`~fem_ml.networks.TrainingOptions` for the default build.

    Returns:
        The last surrogate, the snapshots, the rounds and whether the target was reached.

    Raises:
        ValueError: on every rank, for bad or rank-dependent points and settings, training options with a
            ``build``, or an estimator that returns the wrong shape or NaN.
    """
    comm = V.mesh.comm
    build = _default_build(space, build, options, overrides)
    pool, first = _checked_settings(V, space, initial, candidates, target, batch_size, max_solves)
    snapshots = collect_snapshots(solve, first, V, space=space, progress=False)
    rounds: list[AdaptiveRound] = []
    previous: Surrogate | None = None
    bar = Progress(max_solves, "adaptive sampling", enabled=progress and comm.rank == 0)
    while True:
        rom, estimate = build(snapshots)
        _retire(previous, rom)  # the PETSc matrices of the last round's surrogate (its callback has seen it)
        previous = rom
        values = _estimates(comm, estimate, pool)
        done = float(values.max()) <= target
        room = min(batch_size, max_solves - len(snapshots), pool.shape[0])
        chosen = np.argsort(values)[::-1][:room] if not done and room > 0 else np.empty(0, dtype=np.int64)
        record = AdaptiveRound(len(snapshots), float(values.max()), float(values.mean()), pool[chosen])
        rounds.append(record)
        bar.update(len(snapshots), f"max estimate {record.max_estimate:.2e}")
        logger.info("Adaptive round %d: %d solves, max estimate %.3e", len(rounds), len(snapshots), values.max())
        if callback is not None:
            callback(record, rom)
        if done or chosen.size == 0:
            return AdaptiveResult(rom, snapshots, rounds, converged=done)
        new = collect_snapshots(solve, pool[chosen], V, space=space, progress=False)
        pool = np.delete(pool, chosen, axis=0)
        snapshots = _merge(V, snapshots, new)
        if pool.shape[0] == 0:  # every candidate solved: one last surrogate from all of them
            rom, _ = build(snapshots)
            _retire(previous, rom)
            return AdaptiveResult(rom, snapshots, rounds, converged=False)


def _estimates(comm: MPI.Comm, estimate: Estimator, pool: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The estimates at the candidates, checked, as rank 0 computed them (collective).

    Rank 0 decides, so that every rank solves the same points even if the estimates differ by rounding.
    """
    values = np.asarray(estimate(pool), dtype=np.float64)
    with collectively(comm):
        if values.shape != (pool.shape[0],) or not np.all(np.isfinite(values)):
            raise ValueError(f"The estimator returned shape {values.shape} (or NaN) for {pool.shape[0]} candidates.")
    return comm.bcast(values, root=0)


def _checked_settings(
    V: fem.FunctionSpace,
    space: ParameterSpace,
    initial: npt.ArrayLike,
    candidates: npt.ArrayLike,
    target: float,
    batch_size: int,
    max_solves: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The candidate pool and the initial points, checked and equal on every rank (collective, one Allreduce)."""

    def check() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        pool, first = space.validate(candidates), space.validate(initial)
        if not target > 0 or batch_size < 1 or max_solves < first.shape[0]:
            raise ValueError(
                f"Need target > 0 (got {target}), batch_size >= 1 (got {batch_size}) and max_solves >= the "
                f"{first.shape[0]} initial points (got {max_solves})."
            )
        return pool, first

    what = "The points or settings of adaptive_sampling"
    return agreed(V.mesh.comm, check, what, key=lambda c: (*c, target, batch_size, max_solves))


def _default_build(
    space: ParameterSpace,
    build: Callable[[SnapshotSet], tuple[Surrogate, Estimator]] | None,
    options: TrainingOptions | None,
    overrides: dict[str, Any],
) -> Callable[[SnapshotSet], tuple[Surrogate, Estimator]]:
    """``build``, or the default ensemble build from the training options; options with a ``build`` are refused."""
    if build is not None:
        if options is not None or overrides:
            names = sorted(overrides) + (["options"] if options is not None else [])
            raise ValueError(
                f"adaptive_sampling got training options ({', '.join(names)}) and a build: the build trains the "
                "surrogate, so they would be ignored; pass them to train_surrogate inside the build."
            )
        return build
    resolved = dataclasses.replace(
        options if options is not None else TrainingOptions(n_networks=3, progress=False), **overrides
    )
    if isinstance(resolved.n_networks, int) and resolved.n_networks < 2:
        raise ValueError("The default build estimates with the ensemble's deviation: it needs n_networks >= 2.")

    def ensemble_build(snapshots: SnapshotSet) -> tuple[Surrogate, Estimator]:
        rom = train_surrogate(pod(snapshots), snapshots, space, options=resolved)
        return rom, ensemble_estimator(rom)

    return ensemble_build


def _retire(previous: Surrogate | None, current: Surrogate) -> None:
    """Destroy the previous round's surrogate and what :func:`~fem_ml.pod.pod` assembled for its basis."""
    if previous is None or previous is current:
        return
    previous.destroy()
    if previous.basis is not current.basis:
        previous.basis.destroy()


def _merge(V: fem.FunctionSpace, first: SnapshotSet, second: SnapshotSet) -> SnapshotSet:
    """The snapshots of both sets, ``first``'s then ``second``'s."""
    return SnapshotSet(
        V,
        np.vstack([first.parameters, second.parameters]),
        np.hstack([first.values, second.values]),
        np.concatenate([first.solve_times, second.solve_times]),
        failures=first.failures + second.failures,
    )
