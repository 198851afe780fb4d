# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Kernel surrogates, and the regressor chosen by k-fold cross-validation on the snapshots already computed.

:func:`fit_kernel_surrogate` puts a :class:`~fem_ml.kernels.KernelRegressor` (RBF interpolation or a Gaussian
process) behind the same :class:`~fem_ml.surrogate.Surrogate` as a network: Functions on the user's space,
``errors``, ``save``/``load`` on any rank count, and for a GP ``uncertainty``/``deviation``.

:func:`select_regressor` compares candidate regressors (the network with default options, a tuned network, RBF, GP)
by k-fold cross-validation, as :func:`~fem_ml.validation.cross_validate` does for the network: each candidate is
refit on the other folds and evaluated on the held-out fold, with the error split exactly into the projection and
the regressor parts (the modes are :math:`M`-orthonormal),

.. math:: \frac{\|u - \Phi \hat c\|_M}{\|u\|_M} = \frac{\big(\|u - \Phi c\|_M^2 + \|c - \hat c\|_2^2\big)^{1/2}}
    {\|u\|_M}.

When the candidates hold a kernel regressor and a network, a blend of the best of each
(:class:`~fem_ml.blending.BlendedRegressor`, :math:`w \hat c_k + (1 - w) \hat c_n`) joins them, evaluated from
their held-out predictions without another fit. The candidate of lowest mean held-out error, or a single regressor
within one standard error of it (the one-standard-error rule; a kernel regressor first), is refit on all snapshots
and returned with a :class:`Selection` report (every candidate's error and time, the one picked and why), logged on
rank 0. No solves.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fem_ml._agree import agreed
from fem_ml._fem import space_mismatch
from fem_ml.blending import BlendedRegressor, fit_weight
from fem_ml.kernels import KernelOptions, KernelRegressor, fit_kernel
from fem_ml.networks import CoefficientNetwork, TrainingHistory, TrainingOptions, train_network
from fem_ml.parameters import ParameterSpace
from fem_ml.pod import PODBasis
from fem_ml.snapshots import SnapshotSet
from fem_ml.surrogate import CoefficientRegressor, Surrogate

__all__ = ["BLEND", "CandidateResult", "Selection", "fit_kernel_surrogate", "select_regressor"]

logger = logging.getLogger(__name__)

#: The built-in candidates of :func:`select_regressor` (``"network_tuned"`` joins when ``tuned`` is given).
DEFAULT_CANDIDATES = ("network", "rbf", "gp")
#: The name of the blended candidate of :func:`select_regressor` (reserved while ``blend=True``).
BLEND = "blend"

Options = TrainingOptions | KernelOptions


def _checked_data(
    basis: PODBasis, snapshots: SnapshotSet, space: ParameterSpace, what: str, key: Callable[[Any], object]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Training points checked on every rank and equal on all, and the snapshots' coefficients (collective)."""

    def check() -> npt.NDArray[np.float64]:
        if (mismatch := space_mismatch(basis.V, snapshots.V)) is not None:
            raise ValueError(f"Snapshots and basis differ: {mismatch}.")
        return space.validate(snapshots.parameters)

    parameters = agreed(basis.V.mesh.comm, check, what, key=key)
    return parameters, basis.project(snapshots).T


def fit_kernel_surrogate(
    basis: PODBasis,
    snapshots: SnapshotSet,
    space: ParameterSpace,
    *,
    options: KernelOptions | None = None,
    **overrides: Any,
) -> Surrogate:
    """Fit a kernel regressor from the parameters to the POD coefficients of the snapshots (collective).

    The counterpart of :func:`~fem_ml.surrogate.train_surrogate` for RBF interpolation and Gaussian processes::

        rom = fem_ml.fit_kernel_surrogate(basis, snapshots, space, method="gp")

    Args:
        basis: The reduced basis.
        snapshots: Training snapshots on the basis' space.
        space: The parameter space; its bounds scale the inputs to :math:`[-1, 1]`.
        options: The kernel options (default :class:`~fem_ml.kernels.KernelOptions`: a GP, kernel and input
            transform chosen by marginal likelihood).
        overrides: Fields of :class:`~fem_ml.kernels.KernelOptions` that replace those of ``options``; an unknown
            name is a ``TypeError``.

    Returns:
        The surrogate (its regressor is a :class:`~fem_ml.kernels.KernelRegressor`).

    Raises:
        ValueError: on every rank, for snapshots on another space, bad points, options or points that differ
            between ranks, or a fit that failed.
    """
    options = dataclasses.replace(options if options is not None else KernelOptions(), **overrides)
    parameters, coefficients = _checked_data(
        basis, snapshots, space, "The training points or options of fit_kernel_surrogate", lambda p: (p, options)
    )
    comm = basis.V.mesh.comm
    regressor = fit_kernel(parameters, coefficients, space.lower, space.upper, options=options, comm=comm)
    return Surrogate(space, basis, regressor, training_parameters=parameters)


@dataclass(frozen=True)
class CandidateResult:
    r"""The cross-validation of one candidate regressor.

    Attributes:
        name: The candidate's name (``"network"``, ``"network_tuned"``, ``"rbf"``, ``"gp"``, ``"blend"`` or the
            user's).
        cv_error: Held-out relative error of each snapshot in the basis' norm (projection and regressor parts).
        regressor_error: Held-out relative coefficient error :math:`\|\hat c - c\|_2 / \|c\|_2` per snapshot.
        time_s: Wall time of the candidate's k fits and evaluations (rank 0's); for the blend, of its weights only
            (its members' fits are theirs).
        description: The options of the candidate (for the blend: its members and weight).
        predictions: The held-out (out-of-fold) coefficients :math:`\hat c` of each snapshot, ``(n, r)``: each
            predicted by the fit that did not see it.
    """

    name: str
    cv_error: npt.NDArray[np.float64]
    regressor_error: npt.NDArray[np.float64]
    time_s: float
    description: str
    predictions: npt.NDArray[np.float64] | None = None

    @property
    def cv_error_mean(self) -> float:
        """Mean held-out error."""
        return float(np.mean(self.cv_error))

    def summary(self) -> dict[str, Any]:
        """Name, mean and maximum held-out errors, time, as plain values."""
        return {
            "name": self.name,
            "cv_error_mean": self.cv_error_mean,
            "cv_error_max": float(np.max(self.cv_error)),
            "regressor_error_mean": float(np.mean(self.regressor_error)),
            "time_s": self.time_s,
            "description": self.description,
        }


@dataclass(frozen=True)
class Selection:
    """The report of :func:`select_regressor`.

    Attributes:
        candidates: Every candidate's cross-validation, in the order compared (the blend last).
        selected: The name of the candidate picked (see :func:`select_regressor`).
        reason: Why, in words: its error against the runner-up's, or the tie it won.
        folds: Number of folds.
        projection_error_mean: Mean relative projection error of the snapshots (the floor of every candidate).
        refit_time_s: Wall time of the final fit on all snapshots (rank 0's; both members' for a blend).
        blend_members: The blend's kernel and network candidates, or None when no blend was compared.
        blend_weight: The kernel's weight :math:`w` of the blend fitted on all held-out predictions (the weight of
            the returned blend), or None.
    """

    candidates: tuple[CandidateResult, ...]
    selected: str
    reason: str
    folds: int
    projection_error_mean: float
    refit_time_s: float
    blend_members: tuple[str, str] | None = None
    blend_weight: float | None = None

    def summary(self) -> dict[str, Any]:
        """The report as JSON-serialisable values."""
        return {
            "selected": self.selected,
            "reason": self.reason,
            "folds": self.folds,
            "projection_error_mean": self.projection_error_mean,
            "refit_time_s": self.refit_time_s,
            "blend_members": list(self.blend_members) if self.blend_members is not None else None,
            "blend_weight": self.blend_weight,
            "candidates": [c.summary() for c in self.candidates],
        }

    def table(self) -> str:
        """A plain-text table of the candidates, the selected one marked (and what the blend blends)."""
        lines = [f"{'candidate':<16} {'cv error mean':>14} {'cv error max':>13} {'time [s]':>9}"]
        for c in self.candidates:
            mark = " <- selected" if c.name == self.selected else ""
            s = c.summary()
            lines.append(f"{c.name:<16} {s['cv_error_mean']:>14.3e} {s['cv_error_max']:>13.3e} {c.time_s:>9.2f}{mark}")
        if self.blend_members is not None and self.blend_weight is not None:
            w, (kernel, network) = self.blend_weight, self.blend_members
            lines.append(f"{BLEND} = {w:.3f} x {kernel} + {1.0 - w:.3f} x {network}")
        return "\n".join(lines)


def _candidates(
    candidates: Sequence[str] | Mapping[str, Options], tuned: TrainingOptions | None, seed: int
) -> dict[str, Options]:
    """The options of each candidate, by name."""
    builtin: dict[str, Options] = {
        "network": TrainingOptions(progress=False),
        "rbf": KernelOptions(method="rbf"),
        "gp": KernelOptions(method="gp", seed=seed),
    }
    if tuned is not None:
        builtin["network_tuned"] = dataclasses.replace(tuned, progress=False)
    if isinstance(candidates, Mapping):
        chosen = dict(candidates)
        if tuned is not None:
            chosen.setdefault("network_tuned", builtin["network_tuned"])
    else:
        names = list(candidates) + (
            ["network_tuned"] if tuned is not None and "network_tuned" not in candidates else []
        )
        unknown = [n for n in names if n not in builtin]
        if unknown:
            raise ValueError(
                f"Unknown candidate(s) {unknown}; choose from {sorted(builtin)} (or pass a mapping name -> options)."
            )
        chosen = {n: builtin[n] for n in names}
    if not chosen:
        raise ValueError("select_regressor needs at least one candidate.")
    for name, opts in chosen.items():
        if not isinstance(opts, TrainingOptions | KernelOptions):
            raise TypeError(f"Candidate {name!r}: options must be TrainingOptions or KernelOptions, got {opts!r}.")
    return chosen


def _fit(
    options: Options,
    parameters: npt.NDArray[np.float64],
    coefficients: npt.NDArray[np.float64],
    space: ParameterSpace,
    comm: Any,
) -> tuple[CoefficientRegressor, list[TrainingHistory] | None]:
    """Fit one candidate (collective)."""
    if isinstance(options, KernelOptions):
        return fit_kernel(parameters, coefficients, space.lower, space.upper, options=options, comm=comm), None
    network, history = train_network(parameters, coefficients, space.lower, space.upper, options=options, comm=comm)
    return network, history


@dataclass(frozen=True)
class _Errors:
    """What the held-out errors of every candidate are measured against: the truth and the norms, per snapshot."""

    coefficients: npt.NDArray[np.float64]  # (n, r)
    projection_sq: npt.NDArray[np.float64]  # squared projection errors
    norms: npt.NDArray[np.float64]  # field norms (zero replaced by 1)
    c_norms: npt.NDArray[np.float64]  # coefficient norms (zero replaced by 1)

    def result(
        self, name: str, predictions: npt.NDArray[np.float64], time_s: float, description: str
    ) -> CandidateResult:
        """The candidate's result from its held-out predictions ``(n, r)``."""
        regressor_sq = np.sum((predictions - self.coefficients) ** 2, axis=1)
        return CandidateResult(
            name=name,
            cv_error=np.sqrt(self.projection_sq + regressor_sq) / self.norms,
            regressor_error=np.sqrt(regressor_sq) / self.c_norms,
            time_s=time_s,
            description=description,
            predictions=predictions,
        )


def _cross_validate(
    name: str,
    options: Options,
    parameters: npt.NDArray[np.float64],
    errors: _Errors,
    space: ParameterSpace,
    fold: npt.NDArray[np.int64],
    comm: Any,
) -> CandidateResult:
    """The held-out predictions and errors of one candidate over the folds (collective)."""
    start = time.perf_counter()
    coefficients = errors.coefficients
    predictions = np.empty_like(coefficients)
    for f in range(int(fold.max()) + 1):
        held = fold == f
        regressor, _ = _fit(options, parameters[~held], coefficients[~held], space, comm)
        predictions[held] = regressor(parameters[held])
    elapsed = float(comm.bcast(time.perf_counter() - start, root=0))
    result = errors.result(name, predictions, elapsed, repr(options))
    if comm.rank == 0:
        logger.info("select_regressor: %s, CV error %.3e (%.1f s)", name, result.cv_error_mean, elapsed)
    return result


def _blend(
    kernel: CandidateResult,
    network: CandidateResult,
    errors: _Errors,
    fold: npt.NDArray[np.int64],
    weight: float | None,
    comm: Any,
) -> tuple[CandidateResult, float]:
    """The blend's held-out result from its members' held-out predictions, and the weight on all of them.

    The weight of fold ``f`` is fitted (:func:`~fem_ml.blending.fit_weight`) on the held-out predictions
    of the other folds only (cross-fitting), so that a fold's errors never choose their own weight; the returned
    weight is fitted on all snapshots. A given ``weight`` is used for every fold instead.
    """
    start = time.perf_counter()
    a, b = kernel.predictions, network.predictions
    assert a is not None and b is not None
    c, norms, p = errors.coefficients, errors.norms, errors.projection_sq
    weights = np.empty(int(fold.max()) + 1)
    predictions = np.empty_like(c)
    for f in range(len(weights)):
        held = fold == f
        weights[f] = weight if weight is not None else fit_weight(a[~held], b[~held], c[~held], norms[~held], p[~held])
        predictions[held] = weights[f] * a[held] + (1.0 - weights[f]) * b[held]
    final = weight if weight is not None else fit_weight(a, b, c, norms, p)
    how = "given" if weight is not None else (
        f"least mean error of the held-out predictions; per fold, on the other folds': {np.round(weights, 3).tolist()}"
    )  # fmt: skip
    description = f"{final:.4g} x {kernel.name} + {1.0 - final:.4g} x {network.name} (weight {how})"
    elapsed = float(comm.bcast(time.perf_counter() - start, root=0))  # rank 0's, as for every candidate
    return errors.result(BLEND, predictions, elapsed, description), final


def _pick(results: list[CandidateResult], kinds: Mapping[str, str], folds: int) -> tuple[CandidateResult, str]:
    """The candidate picked, and why, in words (the rule of :func:`select_regressor`).

    Args:
        results: Every candidate's cross-validation.
        kinds: The kind of each candidate by name: ``"kernel"``, ``"network"`` or ``"blend"``.
        folds: The number of folds (for the reason).
    """
    means = [r.cv_error_mean if np.isfinite(r.cv_error_mean) else math.inf for r in results]
    if not np.isfinite(min(means)):
        raise ValueError(f"No candidate has a finite cross-validation error: {[r.name for r in results]}.")
    ranked = sorted(range(len(results)), key=lambda i: (means[i], i))
    lowest = results[ranked[0]]
    if len(ranked) == 1:
        return lowest, (
            f"{lowest.name}: the only candidate ({folds}-fold cross-validation error {lowest.cv_error_mean:.3e})"
        )
    runner = results[ranked[1]]
    ratio = runner.cv_error_mean / max(lowest.cv_error_mean, 1e-300)
    if kinds[lowest.name] == "blend":
        return lowest, (
            f"{lowest.name} ({lowest.description}): lowest mean {folds}-fold cross-validation error "
            f"{lowest.cv_error_mean:.3e} of {len(results)} candidates; the runner-up {runner.name} has "
            f"{runner.cv_error_mean:.3e} ({ratio:.2f}x); a blend of lowest error is picked over tied single "
            "regressors (its error is at most the weighted mean of its members' at every point)"
        )
    errors = lowest.cv_error
    standard_error = float(np.std(errors, ddof=1) / np.sqrt(len(errors))) if len(errors) > 1 else 0.0
    tied = [i for i in ranked if means[i] <= means[ranked[0]] + standard_error] or ranked[:1]
    order = {"kernel": 0, "network": 1, "blend": 2}
    best = results[min(tied, key=lambda i: (order[kinds[results[i].name]], means[i], i))]
    if best is lowest:
        return best, (
            f"{best.name}: lowest mean {folds}-fold cross-validation error {best.cv_error_mean:.3e} of "
            f"{len(results)} candidates; the runner-up {runner.name} has {runner.cv_error_mean:.3e} ({ratio:.2f}x)"
        )
    return best, (
        f"{best.name}: a kernel regressor within one standard error ({standard_error:.1e}) of the lowest mean "
        f"{folds}-fold cross-validation error ({lowest.name}, {lowest.cv_error_mean:.3e}), with "
        f"{best.cv_error_mean:.3e}; of tied candidates, kernels are preferred to networks"
    )


def _best(results: list[CandidateResult], names: list[str]) -> CandidateResult | None:
    """The result of lowest finite mean error among ``names`` (the first of equals), or None."""
    finite = [r for r in results if r.name in names and np.isfinite(r.cv_error_mean)]
    return min(finite, key=lambda r: r.cv_error_mean) if finite else None


def select_regressor(
    basis: PODBasis,
    snapshots: SnapshotSet,
    space: ParameterSpace,
    *,
    candidates: Sequence[str] | Mapping[str, Options] = DEFAULT_CANDIDATES,
    tuned: TrainingOptions | None = None,
    folds: int = 5,
    seed: int = 0,
    blend: bool = True,
    blend_weight: float | None = None,
) -> tuple[Surrogate, Selection]:
    r"""Pick a regressor by k-fold cross-validation and refit it on all snapshots (collective).

    (Over 80 lines: the checks, the folds, the candidates, the blend, the pick and the refit, in order.)

    **Blend.** With ``blend=True`` (default) and at least one kernel and one network candidate, the candidate
    ``"blend"`` joins them: :math:`w \hat c_k + (1 - w) \hat c_n` of the kernel candidate and of the network
    candidate of lowest mean held-out error (:class:`~fem_ml.blending.BlendedRegressor`). Its held-out prediction
    of a snapshot is that blend of its members' held-out predictions, so it costs no fit. The weight minimizes the
    mean relative error of the held-out predictions, the measure the candidates are compared by
    (:func:`~fem_ml.blending.fit_weight`, within :math:`[0, 1]`), and it is *cross-fitted*: the blend's
    prediction on fold :math:`f` uses the weight fitted on the other folds' held-out predictions, so that no
    fold's error chose its own weight; the returned blend has the weight fitted on all snapshots
    (:attr:`Selection.blend_weight`). ``blend_weight`` fixes :math:`w` instead. Two
    small selection biases remain, both favourable to the blend: its members are the best of their kind on the
    same held-out errors, and the models that predicted the other folds were trained on fold :math:`f`'s
    snapshots (the weight is one number, so little of fold :math:`f` reaches it).

    **The pick.** The one-standard-error rule (Hastie, Tibshirani and Friedman, *The Elements of Statistical
    Learning*, 7.10): of the candidates whose mean held-out error is within one standard error of the lowest, a
    kernel regressor is preferred to a network, then the lower error. Differences below the standard error are
    noise of the folds; the kernel fit is deterministic and fast, and its hyperparameters are few. The blend is
    not simpler than either of its members, so among tied candidates it ranks last; it is picked exactly when its
    mean held-out error is the lowest of all. That exception to the rule is deliberate: the blend adds no
    flexibility that could fit noise (one weight, fitted out of fold) and, at every point,
    :math:`\|\hat c - c\| \le w \|\hat c_k - c\| + (1 - w) \|\hat c_n - c\|`: its error is at most the weighted
    mean of its members', so picking it risks little, while when it is lowest it is lower than both members on
    the same snapshots.

    Every rank computes the same errors from replicated coefficients (the fits run on rank 0 and are broadcast),
    so the choice is the same on every rank and for any rank count.

    Args:
        basis: The reduced basis.
        snapshots: The training snapshots (no new solves).
        space: The parameter space.
        candidates: Names of built-in candidates (``"network"``: :class:`~fem_ml.networks.TrainingOptions`
            defaults; ``"rbf"``, ``"gp"``: :class:`~fem_ml.kernels.KernelOptions` of that method), or a mapping
            from names to :class:`~fem_ml.networks.TrainingOptions` or :class:`~fem_ml.kernels.KernelOptions`.
        tuned: Training options of a tuned network, compared as ``"network_tuned"``.
        folds: Number of folds (``2 <= folds <= len(snapshots)``).
        seed: Seed of the split into folds (and of the GP's optimizer restarts).
        blend: Compare the blend of the best kernel and the best network candidates (when there are both); the
            name ``"blend"`` is then reserved.
        blend_weight: The kernel's weight :math:`w \in [0, 1]` of the blend, or None to fit it (see above); only
            with ``blend=True``.

    Returns:
        The surrogate of the selected regressor, refit on all snapshots (for the blend: both members, in a
        :class:`~fem_ml.blending.BlendedRegressor`), and the report.

    Raises:
        ValueError: on every rank, for an unknown candidate, a bad ``folds`` or ``blend_weight``, a candidate named
            ``"blend"`` with ``blend=True``, snapshots on another space, bad points, or inputs that differ between
            ranks.
        TypeError: on every rank, for a ``blend`` that is not a bool.
    """
    comm = basis.V.mesh.comm
    n = len(snapshots)

    def check() -> dict[str, Options]:
        if not 2 <= folds <= n:
            raise ValueError(f"folds must be in [2, {n}] for {n} snapshots, got {folds}.")
        if not isinstance(blend, bool):
            raise TypeError(f"blend must be True or False, got {blend!r}.")
        if blend_weight is not None and not (math.isfinite(blend_weight) and 0.0 <= blend_weight <= 1.0):
            raise ValueError(f"blend_weight must be None or within [0, 1], got {blend_weight!r}.")
        if blend_weight is not None and not blend:
            raise ValueError("blend_weight is the weight of the blend: with blend=False it would be ignored.")
        chosen = _candidates(candidates, tuned, seed)
        if blend and BLEND in chosen:
            raise ValueError(f"{BLEND!r} is the name of the blended candidate: rename yours or pass blend=False.")
        return chosen

    chosen = agreed(
        comm, check, "The candidates or folds of select_regressor", key=lambda c: (c, folds, seed, blend, blend_weight)
    )
    parameters, coefficients = _checked_data(
        basis, snapshots, space, "The training points of select_regressor", lambda p: p
    )
    norms, projection = basis.projection_norms(snapshots.values, coefficients.T)
    projection_sq = projection**2
    safe = np.where(norms > 0, norms, 1.0)
    c_norms = np.where(np.linalg.norm(coefficients, axis=1) > 0, np.linalg.norm(coefficients, axis=1), 1.0)
    errors = _Errors(coefficients, projection_sq, safe, c_norms)
    fold = np.empty(n, dtype=np.int64)
    for f, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), folds)):
        fold[part] = f

    results = [
        _cross_validate(name, options, parameters, errors, space, fold, comm) for name, options in chosen.items()
    ]
    kinds = {name: "kernel" if isinstance(o, KernelOptions) else "network" for name, o in chosen.items()}
    best_kernel = _best(results, [name for name, kind in kinds.items() if kind == "kernel"])
    best_network = _best(results, [name for name, kind in kinds.items() if kind == "network"])
    members: tuple[str, str] | None = None
    weight: float | None = None
    if blend and best_kernel is not None and best_network is not None:
        blended, weight = _blend(best_kernel, best_network, errors, fold, blend_weight, comm)
        results.append(blended)
        kinds[BLEND] = "blend"
        members = (best_kernel.name, best_network.name)
        if comm.rank == 0:
            logger.info("select_regressor: %s = %s, CV error %.3e", BLEND, blended.description, blended.cv_error_mean)
    best, reason = _pick(results, kinds, folds)
    start = time.perf_counter()
    regressor: CoefficientRegressor
    if best.name == BLEND and kinds[BLEND] == "blend":
        assert members is not None and weight is not None
        kernel, _ = _fit(chosen[members[0]], parameters, coefficients, space, comm)
        network, history = _fit(chosen[members[1]], parameters, coefficients, space, comm)
        assert isinstance(kernel, KernelRegressor) and isinstance(network, CoefficientNetwork)
        regressor = BlendedRegressor(kernel, network, weight)
    else:
        regressor, history = _fit(chosen[best.name], parameters, coefficients, space, comm)
    refit = float(comm.bcast(time.perf_counter() - start, root=0))
    selection = Selection(
        candidates=tuple(results),
        selected=best.name,
        reason=reason,
        folds=folds,
        projection_error_mean=float(np.mean(np.sqrt(projection_sq) / safe)),
        refit_time_s=refit,
        blend_members=members,
        blend_weight=weight,
    )
    if comm.rank == 0:
        logger.info("select_regressor picked %s\n%s", reason, selection.table())
    rom = Surrogate(space, basis, regressor, history=history, training_parameters=parameters)
    return rom, selection
