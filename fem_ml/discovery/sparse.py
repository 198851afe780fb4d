# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Sparse regression for equation discovery: PySINDy's optimizers on a column-normalized system.

The system :math:`\Theta \xi \approx y` is first normalized: each column of :math:`\Theta` and :math:`y` to unit
Euclidean norm, so that a threshold compares the terms' contributions, not their units. The optimizers are
PySINDy's (``pysindy.STLSQ``, sequentially thresholded least squares, and ``pysindy.SR3``, sparse
relaxed regularized regression with an :math:`\ell_0` penalty), called as ``fit(Theta, y)``; the coefficients on
the support they select are then refitted by plain least squares. Bagging (:func:`bagged_fits`) repeats a fit on
bootstrap resamples of the row groups for inclusion probabilities and coefficient spreads.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["METHODS", "NormalizedSystem", "bagged_fits", "least_squares", "normalize", "sparse_support"]

#: The sparse methods, ``"stlsq"`` (PySINDy's STLSQ) and ``"sr3"`` (PySINDy's SR3, :math:`\ell_0`).
METHODS: tuple[str, ...] = ("sr3", "stlsq")


@dataclass(frozen=True)
class NormalizedSystem:
    """A system with unit-norm columns: ``theta[:, i] = Theta[:, i] / column_scale[i]``, ``y = y / y_scale``.

    Coefficients ``c`` of the normalized system are ``c * y_scale / column_scale`` in the original units.
    """

    theta: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    column_scale: npt.NDArray[np.float64]
    y_scale: float

    def to_original(self, coefficients: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Coefficients in the units of the original system."""
        return coefficients * self.y_scale / self.column_scale


def normalize(theta: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> NormalizedSystem:
    """Scale the columns of ``theta`` and ``y`` to unit norm (a zero column keeps scale 1).

    Raises:
        ValueError: if ``y`` is zero or the shapes do not match.
    """
    if theta.ndim != 2 or y.shape != (theta.shape[0],):
        raise ValueError(f"Expected theta (n, m) and y (n,), got {theta.shape} and {y.shape}.")
    scale = np.linalg.norm(theta, axis=0)
    scale[scale == 0.0] = 1.0
    y_scale = float(np.linalg.norm(y))
    if y_scale == 0.0:
        raise ValueError("The time derivative is zero in every row: nothing to identify.")
    return NormalizedSystem(theta / scale, y / y_scale, scale, y_scale)


def least_squares(
    theta: npt.NDArray[np.float64], y: npt.NDArray[np.float64], support: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """Least-squares coefficients on ``support`` (zero elsewhere)."""
    coefficients = np.zeros(theta.shape[1])
    if support.any():
        coefficients[support] = np.linalg.lstsq(theta[:, support], y, rcond=None)[0]
    return coefficients


def sparse_support(
    theta: npt.NDArray[np.float64], y: npt.NDArray[np.float64], method: str, threshold: float
) -> npt.NDArray[np.bool_]:
    r"""The support that PySINDy's optimizer selects on a normalized system at ``threshold``.

    ``"stlsq"``: STLSQ with this threshold and a tiny ridge (1e-8). ``"sr3"``: SR3 with the :math:`\ell_0`
    penalty whose hard threshold is ``threshold`` (:math:`\lambda = t^2 / (2\nu)`, :math:`\nu = 1`).
    """
    import pysindy as ps

    if method == "stlsq":
        optimizer = ps.STLSQ(threshold=threshold, alpha=1e-8, max_iter=50, unbias=True)
    elif method == "sr3":
        optimizer = ps.SR3(reg_weight_lam=threshold**2 / 2.0, regularizer="L0", relax_coeff_nu=1.0, max_iter=200)
    else:
        raise ValueError(f"Unknown method {method!r}; use one of {METHODS}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of the optimizers at extreme thresholds
        optimizer.fit(theta, y)
    coefficients = np.asarray(optimizer.coef_).reshape(-1)
    return np.abs(coefficients) > 0.0


def bagged_fits(
    system: NormalizedSystem,
    groups: npt.NDArray[np.int64],
    method: str,
    threshold: float,
    *,
    n_models: int,
    seed: int,
) -> npt.NDArray[np.float64]:
    """Coefficients (normalized units) of ``n_models`` fits on bootstrap resamples of the row groups.

    Each resample draws as many groups as there are, with replacement; the support is selected by ``method`` at
    ``threshold`` and the coefficients are refitted by least squares on it.

    Returns:
        ``(n_models, n_terms)``.
    """
    rng = np.random.default_rng(seed)
    labels = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in labels]
    out = np.zeros((n_models, system.theta.shape[1]))
    for m in range(n_models):
        rows = np.concatenate([members[i] for i in rng.integers(0, labels.size, labels.size)])
        theta, y = system.theta[rows], system.y[rows]
        out[m] = least_squares(theta, y, sparse_support(theta, y, method, threshold))
    return out
