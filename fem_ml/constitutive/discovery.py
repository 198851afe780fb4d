# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Law discovery: a sparse, non-negative model selected from the assembled system, and its plot.

:func:`discover_law` finds, for every model size, the support of smallest cost by non-negative least squares
(exhaustively or along a sequential-thresholding path), scores each size by leave-one-load-step-out
cross-validation and keeps the smallest model within a tolerance of the best. The result,
:class:`DiscoveredLaw`, is a :class:`~fem_ml.constitutive.energy.StrainEnergy` that also holds the best model of
each size (:class:`ModelCandidate`); :func:`plot_discovery` draws the Pareto front and the coefficients.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.optimize

from fem_ml._mpi import check_collectively, collectively
from fem_ml.constitutive.energy import StrainEnergy
from fem_ml.constitutive.system import ConstitutiveSystem
from fem_ml.plots import save_plot

__all__ = ["DiscoveredLaw", "ModelCandidate", "discover_law", "plot_discovery"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCandidate:
    """The best model of one size found by :func:`discover_law`.

    Attributes:
        support: Indices of its terms.
        coefficients: All coefficients (zeros off the support).
        cost_rel: Training cost relative to the cost of zero coefficients.
        cv_rel: Leave-one-load-step-out cross-validated cost, relative likewise.
    """

    support: tuple[int, ...]
    coefficients: npt.NDArray[np.float64]
    cost_rel: float
    cv_rel: float


class DiscoveredLaw(StrainEnergy):
    """A discovered strain energy: a :class:`~fem_ml.constitutive.energy.StrainEnergy` plus how it was selected.

    Attributes:
        candidates: The best model of each size (the Pareto front of cost against number of terms).
        selected: Index into ``candidates`` of the chosen model.
        system: The system it was discovered from.
    """

    def __init__(self, system: ConstitutiveSystem, candidates: list[ModelCandidate], selected: int):
        super().__init__(system.library, candidates[selected].coefficients)
        self.system = system
        self.candidates = candidates
        self.selected = selected


def _bounded_fit(M: npt.NDArray, r: npt.NDArray, nonneg: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Least squares ``min |M x - r|`` with ``x_k >= 0`` where ``nonneg[k]``."""
    if M.shape[1] == 0:
        return np.zeros(0)
    if np.all(nonneg):
        return np.asarray(scipy.optimize.nnls(M, r, maxiter=50 * M.shape[1])[0])
    if not np.any(nonneg):
        return np.asarray(scipy.linalg.lstsq(M, r)[0])
    lower = np.where(nonneg, 0.0, -np.inf)
    return np.asarray(scipy.optimize.lsq_linear(M, r, bounds=(lower, np.inf), method="bvls").x)


def _candidate_supports(
    M: npt.NDArray, r: npt.NDArray, nonneg: npt.NDArray[np.bool_], max_terms: int, method: str
) -> dict[int, tuple[int, ...]]:
    """The best support of each size 1..max_terms (by training cost), exhaustively or by thresholding."""
    n = M.shape[1]
    best: dict[int, tuple[float, tuple[int, ...]]] = {}

    def consider(support: tuple[int, ...]) -> None:
        cols = list(support)
        x = _bounded_fit(M[:, cols], r, nonneg[cols])
        size = np.abs(x) * np.linalg.norm(M[:, cols], axis=0)
        active = tuple(c for c, w in zip(cols, size, strict=True) if w > 1e-12 * max(size.max(), 1e-300))
        if not active:
            return
        if active != support:  # a bound is active: the fit is that of the smaller support
            x = _bounded_fit(M[:, list(active)], r, nonneg[list(active)])
        cost = float(np.sum((M[:, list(active)] @ x - r) ** 2))
        k = len(active)
        if k not in best or cost < best[k][0] - 1e-14 * abs(best[k][0]):
            best[k] = (cost, active)

    if method == "exhaustive":
        for k in range(1, max_terms + 1):
            for support in itertools.combinations(range(n), k):
                consider(support)
    else:  # sequentially thresholded non-negative least squares over a path of thresholds
        scale = np.linalg.norm(M, axis=0)
        scale[scale == 0] = 1.0
        Ms = M / scale
        for tau in np.logspace(-6, 0, 61):
            support = tuple(range(n))
            for _ in range(n):
                x = _bounded_fit(Ms[:, list(support)], r, nonneg[list(support)])
                weight = np.abs(x) * np.linalg.norm(Ms[:, list(support)], axis=0)
                keep = tuple(c for c, w in zip(support, weight, strict=True) if w > tau * weight.max())
                if keep == support or not keep:
                    break
                support = keep
            if len(support) <= max_terms:
                consider(support)
    return {k: s for k, (_, s) in sorted(best.items())}


def discover_law(
    system: ConstitutiveSystem,
    *,
    max_terms: int = 6,
    method: str = "auto",
    rtol: float = 0.1,
    atol: float = 1e-8,
) -> DiscoveredLaw:
    r"""Select a sparse, physically admissible law from the system (collective on ``system.comm``).

    For each model size :math:`k \le` ``max_terms`` the support of smallest cost is found with non-negative
    least squares (coefficients of terms with ``nonnegative=True`` are bounded below by 0: physical
    admissibility): over all supports (``method="exhaustive"``) or along a path of sequentially thresholded fits
    (``"threshold"``; ``"auto"`` is exhaustive when there are at most 5000 supports). Each size's best support
    is then refitted with one load step left out, for each step in turn, and scored on the step left out
    (leave-one-step-out cross-validation, relative to the cost of zero coefficients). The smallest model whose
    cross-validated cost is at most ``(1 + rtol) * best + atol`` is chosen: more terms must earn their place on
    unseen load steps.

    Rank 0 computes and broadcasts, so every rank returns the same bits.

    Args:
        system: From :func:`~fem_ml.constitutive.system.assemble_system` (at least 2 load steps for the
            cross-validation).
        max_terms: Largest model size considered.
        method: ``"auto"``, ``"exhaustive"`` or ``"threshold"``.
        rtol: Relative tolerance on the cross-validated cost.
        atol: Absolute tolerance on the relative cross-validated cost (two models below it both fit the data
            to round-off).
    """
    comm = system.comm
    n = len(system.library)
    check_collectively(
        comm,
        None if method in {"auto", "exhaustive", "threshold"} else f"Unknown method {method!r}.",
        ValueError,
    )
    with collectively(comm):
        if system.n_steps < 2:
            raise ValueError("Cross-validation over load steps needs at least 2 load steps.")
        if max_terms < 1:
            raise ValueError(f"max_terms must be >= 1, got {max_terms}.")
        if not (rtol >= 0 and atol >= 0):
            raise ValueError("rtol and atol must be >= 0.")
    result = None
    with collectively(comm):
        if comm.rank == 0:
            result = _discover(system, min(max_terms, n), method, rtol, atol)
    candidates, selected = comm.bcast(result, root=0)
    return DiscoveredLaw(system, candidates, selected)


def _discover(
    system: ConstitutiveSystem, max_terms: int, method: str, rtol: float, atol: float
) -> tuple[list[ModelCandidate], int]:
    n = len(system.library)
    nonneg = np.array([t.nonnegative for t in system.library])
    if method == "auto":
        count = sum(math.comb(n, k) for k in range(1, max_terms + 1))
        method = "exhaustive" if count <= 5000 else "threshold"
    M, r = system.least_squares()
    zero_cost = system.force_scale()
    supports = _candidate_supports(M, r, nonneg, max_terms, method)
    candidates: list[ModelCandidate] = []
    for support in supports.values():
        cols = list(support)
        theta = np.zeros(n)
        theta[cols] = _bounded_fit(M[:, cols], r, nonneg[cols])
        cv = 0.0
        for s in range(system.n_steps):
            train = [q for q in range(system.n_steps) if q != s]
            Mt, rt = system.least_squares(train)
            x = np.zeros(n)
            x[cols] = _bounded_fit(Mt[:, cols], rt, nonneg[cols])
            cv += system.objective(x, [s])
        candidates.append(ModelCandidate(support, theta, system.objective(theta) / zero_cost, cv / zero_cost))
        logger.info(
            "%d terms: cost %.3e, cv %.3e  %s",
            len(support),
            candidates[-1].cost_rel,
            candidates[-1].cv_rel,
            StrainEnergy(system.library, theta),
        )
    best = min(c.cv_rel for c in candidates)
    selected = next(i for i, c in enumerate(candidates) if c.cv_rel <= (1 + rtol) * best + atol)
    return candidates, selected


def plot_discovery(
    law: DiscoveredLaw,
    path: str | os.PathLike[str],
    *,
    truth: npt.ArrayLike | None = None,
    comm: MPI.Comm | None = None,
) -> Path:
    """Pareto front (cost and cross-validated cost against the number of terms) and the coefficients (collective).

    Rank 0 draws and writes the PNG atomically; errors are raised on every rank.

    Args:
        law: The discovered law.
        path: Output PNG.
        truth: True coefficients to draw beside the discovered ones.
        comm: Communicator (default the one of the law's system).
    """
    comm = law.system.comm if comm is None else comm

    def draw(axes: Any) -> None:
        ax0, ax1 = axes
        sizes = [len(c.support) for c in law.candidates]
        ax0.semilogy(sizes, [max(c.cost_rel, 1e-300) for c in law.candidates], "o-", label="training cost")
        ax0.semilogy(sizes, [max(c.cv_rel, 1e-300) for c in law.candidates], "s--", label="cross-validated")
        ax0.axvline(sizes[law.selected], color="k", lw=0.8, label="selected")
        ax0.set_xlabel("number of terms")
        ax0.set_ylabel("relative cost")
        ax0.legend()
        k = np.arange(len(law.library))
        ax1.bar(k - 0.2, law.coefficients, 0.4, label="discovered")
        if truth is not None:
            ax1.bar(k + 0.2, np.asarray(truth, dtype=np.float64), 0.4, label="true")
        ax1.set_xticks(k, [term.name for term in law.library], rotation=60, ha="right", fontsize=7)
        ax1.set_ylabel("coefficient")
        ax1.legend()
        ax0.figure.suptitle(str(law), fontsize=8)

    return save_plot(comm, path, draw, ncols=2, figsize=(11, 4))
