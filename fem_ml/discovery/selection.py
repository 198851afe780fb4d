# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Model selection for equation discovery: the threshold path, cross-validation, the Pareto curve; :func:`discover`.

For each component, the sparse optimizer runs on the normalized system at a geometric sequence of thresholds;
each distinct support it returns is a candidate model. Its cross-validation error is the mean over ``n_folds``
folds of the relative residual :math:`\|y - \Theta\xi\|/\|y\|` on the held-out rows, with :math:`\xi` fitted by
least squares on the other rows. The folds are made of whole row groups (time windows of the weak form, blocks
of times of the finite-difference form), so a fold tests the model on times it has not seen. The model chosen is
the sparsest whose error is within one standard error (over the folds) of the smallest, or within ``abs_tol``
of it (the "one-standard-error rule"); its coefficients are refitted by least squares on all rows. Bootstrap
fits on resampled groups at the chosen threshold give the spread of each coefficient and each term's inclusion
probability. The regression runs on rank 0 and its result is broadcast, so every rank returns the same model.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

from fem_ml._mpi import collectively
from fem_ml.discovery.data import FieldData
from fem_ml.discovery.library import Library
from fem_ml.discovery.model import Candidate, DiscoveredModel
from fem_ml.discovery.sparse import METHODS, bagged_fits, least_squares, normalize, sparse_support
from fem_ml.discovery.weak import BumpFunctions, TimeWindows, WeakSystem, assemble_system, bump_functions
from fem_ml.plots import save_plot

__all__ = ["cross_validation_error", "discover", "fit_system", "plot_pareto"]

logger = logging.getLogger(__name__)


def cross_validation_error(
    theta: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    groups: npt.NDArray[np.int64],
    support: npt.NDArray[np.bool_],
    *,
    n_folds: int,
) -> tuple[float, float]:
    """Mean and standard error over the folds of the held-out relative residual of least squares on ``support``.

    Group ``g`` is in fold ``g % n_folds``.
    """
    fold = groups % n_folds
    errors = []
    for f in range(n_folds):
        test = fold == f
        if not test.any() or test.all():
            continue
        coefficients = least_squares(theta[~test], y[~test], support)
        errors.append(np.linalg.norm(y[test] - theta[test] @ coefficients) / max(np.linalg.norm(y[test]), 1e-300))
    values = np.asarray(errors)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0


def _select_component(
    theta: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    groups: npt.NDArray[np.int64],
    *,
    method: str,
    n_thresholds: int,
    n_folds: int,
    abs_tol: float,
    n_models: int,
    seed: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], list[Candidate], int]:
    """Coefficients, spreads, inclusion probabilities, candidates and the chosen candidate of one component."""
    system = normalize(theta, y)
    full = np.abs(least_squares(system.theta, system.y, np.ones(theta.shape[1], dtype=bool)))
    top = max(float(full.max()), 1e-12)
    candidates: list[Candidate] = []
    seen: dict[bytes, int] = {}
    for threshold in np.geomspace(top * 1e-5, top * 1.01, n_thresholds):
        support = sparse_support(system.theta, system.y, method, float(threshold))
        key = support.tobytes()
        if key in seen:
            continue
        seen[key] = len(candidates)
        mean, se = cross_validation_error(system.theta, system.y, groups, support, n_folds=n_folds)
        candidates.append(Candidate(support, float(threshold), mean, se))
    best = min(range(len(candidates)), key=lambda i: candidates[i].cv_error)
    limit = candidates[best].cv_error + max(candidates[best].cv_std_error, abs_tol)
    chosen = min((i for i, c in enumerate(candidates) if c.cv_error <= limit), key=lambda i: (candidates[i].n_terms, i))
    pick = candidates[chosen]
    coefficients = system.to_original(least_squares(system.theta, system.y, pick.support))
    samples = system.to_original(bagged_fits(system, groups, method, pick.threshold, n_models=n_models, seed=seed))
    std = samples.std(axis=0, ddof=1) if n_models > 1 else np.zeros_like(coefficients)
    inclusion = (samples != 0.0).mean(axis=0)
    return coefficients, std, inclusion, candidates, chosen


def fit_system(
    system: WeakSystem,
    comm: MPI.Comm,
    *,
    method: str = "stlsq",
    n_thresholds: int = 40,
    n_folds: int = 5,
    abs_tol: float = 1e-3,
    n_models: int = 50,
    seed: int = 0,
) -> DiscoveredModel:
    """Select and fit a sparse model of each component of an assembled system (collective).

    The regression runs on rank 0 and the model is broadcast: every rank returns the same object.

    Args:
        system: The regression system (:func:`~fem_ml.discovery.weak.assemble_system`).
        comm: Communicator of the ranks that share the system.
        method: Sparse optimizer, one of :data:`~fem_ml.discovery.sparse.METHODS`.
        n_thresholds: Thresholds of the path (geometric, from 1e-5 times the largest normalized least-squares
            coefficient to just above it).
        n_folds: Folds of the cross-validation (over row groups).
        abs_tol: Absolute tolerance on the relative cross-validation residual of the selection rule.
        n_models: Bootstrap fits for the spreads and inclusion probabilities.
        seed: Seed of the bootstrap.

    Raises:
        ValueError: on every rank, for an unknown method, fewer than 2 folds or more folds than row groups.
    """
    result: Any = None
    with collectively(comm):
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}; use one of {METHODS}.")
        n_groups = np.unique(system.groups).size
        if not 2 <= n_folds <= n_groups:
            raise ValueError(f"n_folds must be between 2 and the number of row groups ({n_groups}), got {n_folds}.")
        if n_thresholds < 2 or n_models < 1:
            raise ValueError(f"n_thresholds must be >= 2 and n_models >= 1, got {n_thresholds}, {n_models}.")
        if comm.rank == 0:
            result = [
                _select_component(
                    system.theta,
                    system.lhs[:, c],
                    system.groups,
                    method=method,
                    n_thresholds=n_thresholds,
                    n_folds=n_folds,
                    abs_tol=abs_tol,
                    n_models=n_models,
                    seed=seed + c,
                )
                for c in range(system.lhs.shape[1])
            ]
    result = comm.bcast(result, root=0)
    return DiscoveredModel(
        library=system.library,
        coefficients=np.array([r[0] for r in result]),
        std=np.array([r[1] for r in result]),
        inclusion=np.array([r[2] for r in result]),
        candidates=tuple(tuple(r[3]) for r in result),
        selected=tuple(int(r[4]) for r in result),
        method=method,
        n_rows=int(system.theta.shape[0]),
    )


def discover(
    data: FieldData,
    library: Library,
    *,
    radius: float,
    spacing: float | None = None,
    bump_degree: int = 4,
    windows: TimeWindows | None = None,
    time_derivative: str = "weak",
    quadrature_degree: int | None = None,
    method: str = "stlsq",
    n_thresholds: int = 40,
    n_folds: int = 5,
    abs_tol: float = 1e-3,
    n_models: int = 50,
    seed: int = 0,
) -> DiscoveredModel:
    r"""Discover the equation :math:`\partial_t u_c = \sum_i \xi_{ci}\theta_i(u)` of ``data`` (collective).

    Builds the bumps (:func:`~fem_ml.discovery.weak.bump_functions`), assembles the weak-form system
    (:func:`~fem_ml.discovery.weak.assemble_system`) and fits a sparse model to each component
    (:func:`fit_system`). Progress is logged on rank 0; the wall times of the two stages are in ``model.extra``
    (``"t_assemble_s"``, ``"t_regression_s"``, slowest rank).

    Args:
        data: Snapshots of the field.
        library: Candidate terms.
        radius: Support radius of the bumps.
        spacing: Grid step of their centres (default ``radius / 2``).
        bump_degree: Exponent of the bumps.
        windows: Time windows (default :class:`~fem_ml.discovery.weak.TimeWindows`).
        time_derivative: ``"weak"`` or ``"fd"``.
        quadrature_degree: Quadrature degree of the term integrals (default: UFL's estimate).
        method: Sparse optimizer (``"stlsq"`` or ``"sr3"``).
        n_thresholds: Thresholds of the path.
        n_folds: Cross-validation folds.
        abs_tol: Absolute tolerance of the selection rule.
        n_models: Bootstrap fits.
        seed: Bootstrap seed.

    Returns:
        The model, the same on every rank.
    """
    comm = data.comm
    start = time.perf_counter()
    bumps: BumpFunctions = bump_functions(
        data.V.mesh, radius=radius, spacing=radius / 2 if spacing is None else spacing, degree=bump_degree
    )
    system = assemble_system(
        data, library, bumps, windows=windows, time_derivative=time_derivative, quadrature_degree=quadrature_degree
    )
    t_assemble = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    if comm.rank == 0:
        logger.info("discovery: %d x %d system (%d bumps) in %.2fs", *system.theta.shape, len(bumps), t_assemble)
    start = time.perf_counter()
    model = fit_system(
        system, comm, method=method, n_thresholds=n_thresholds, n_folds=n_folds, abs_tol=abs_tol,
        n_models=n_models, seed=seed,
    )  # fmt: skip
    t_regression = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    model.extra.update({"t_assemble_s": t_assemble, "t_regression_s": t_regression, "n_bumps": float(len(bumps))})
    if comm.rank == 0:
        logger.info("discovery: %s (regression %.2fs)", model.equation().replace("\n", "; "), t_regression)
    return model


def plot_pareto(model: DiscoveredModel, path: str | os.PathLike, *, comm: MPI.Comm) -> Path:
    """Pareto curve: cross-validation error against the number of terms, per component; the chosen model marked.

    Collective (rank 0 draws).
    """
    names = model.library.components

    def draw(ax: Any) -> None:
        for c, name in enumerate(names):
            cands = model.candidates[c]
            sizes = sorted({k.n_terms for k in cands})
            best = [min(k.cv_error for k in cands if k.n_terms == s) for s in sizes]
            (line,) = ax.semilogy(sizes, best, "o-", ms=4, label=f"{name}_t: best per size")
            pick = cands[model.selected[c]]
            ax.semilogy([pick.n_terms], [pick.cv_error], "*", ms=14, color=line.get_color(),
                        label=f"{name}_t: chosen ({pick.n_terms} terms)")  # fmt: skip
        ax.set_xlabel("number of terms")
        ax.set_ylabel("cross-validation relative residual")
        ax.set_title(f"Pareto curve ({model.method})")
        ax.legend(fontsize=8)

    return save_plot(comm, path, draw)
