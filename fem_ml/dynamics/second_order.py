# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Second-order reduced dynamics of structures, learned from trajectories with the structure preserved.

A linear structure :math:`M \ddot u + C \dot u + K u = \sum_l b_l\, s_l(t)` (mass, damping, stiffness, loads
:math:`b_l` with input histories :math:`s_l(t)`) is reduced on a POD basis :math:`\Phi` that is orthonormal in
the mass inner product, :math:`\Phi^T M \Phi = I`, to

.. math::
    \ddot q + C_r \dot q + K_r q = B_r\, s(t), \qquad q = \Phi^T M u,

with :math:`K_r` symmetric positive definite and :math:`C_r` symmetric positive semi-definite. The operators
are fitted *non-intrusively*, from the trajectories alone (operator inference): the coefficients :math:`q(t_k)`,
their velocities and accelerations (given, e.g. by the Newmark solver that produced the data, or from finite
differences of order :math:`\ge 4`) enter a Tikhonov-regularized least-squares problem over symmetric
:math:`K_r, C_r` and a full :math:`B_r`. The structure is then enforced: the stiffness is projected onto
:math:`\{K \succeq \epsilon I\}`, the damping and input refitted with that stiffness; the damping projected onto
the positive semi-definite cone and the input refitted again (:func:`fit_second_order_coefficients`). For a
structure with Rayleigh damping :math:`C = \alpha M + \beta K`, ``damping="rayleigh"`` fits
:math:`C_r = \alpha I + \beta K_r` instead: two numbers, far better determined by the data. The reduced
free-vibration energy :math:`E = \tfrac12 \dot q^T \dot q + \tfrac12 q^T K_r q` then satisfies
:math:`\dot E = -\dot q^T C_r \dot q \le 0`.

:meth:`SecondOrderModel.simulate` integrates with the Newmark average-acceleration scheme (the trapezoidal rule,
implicit, unconditionally stable), which keeps that property exactly in discrete form: for :math:`s = 0`,
:math:`E_{k+1} - E_k = -h\, \bar v^T C_r \bar v \le 0` with :math:`\bar v = (\dot q_k + \dot q_{k+1})/2`.
:class:`~fem_ml.dynamics.newmark.NewmarkIntegrator` is the same scheme for the full PETSc system, to produce
training data.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._fem import n_owned, space_mismatch
from fem_ml._mpi import check_collectively, collectively
from fem_ml.dynamics.data import Inputs, finite_difference_weights
from fem_ml.pod import PODBasis

__all__ = [
    "FitInfo",
    "Inputs",
    "ModalReport",
    "SecondOrderModel",
    "SecondOrderSimulation",
    "finite_difference_derivatives",
    "fit_second_order",
    "fit_second_order_coefficients",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Finite differences
# ---------------------------------------------------------------------------------------------------------------


def finite_difference_derivatives(
    values: npt.ArrayLike, times: npt.ArrayLike, *, order: int = 4
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    r"""First and second time derivatives of sampled values, by finite differences of accuracy ``order`` (local).

    At each sample the stencil is the window of nearest samples: centred inside (5 points for the first and 7 for
    the second derivative at ``order=4``), one-sided near the ends with ``order + d`` points for the
    :math:`d`-th derivative, so the truncation error is :math:`O(h^{\mathrm{order}})` everywhere, also on
    non-uniform grids (weights by Fornberg's algorithm).

    Args:
        values: Samples, shape ``(n_times, k)`` (or ``(n_times,)``).
        times: Strictly increasing sample times ``(n_times,)``.
        order: Order of accuracy, an even number >= 4 (one-sided stencils need ``order + 3`` samples).

    Returns:
        ``(first, second)`` derivatives, each shaped like ``values``.
    """
    y = np.asarray(values, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    if order < 4 or order % 2:
        raise ValueError(f"order must be an even number >= 4, got {order}.")
    if t.ndim != 1 or y.shape[:1] != t.shape:
        raise ValueError(f"values must have n_times = {t.shape[0] if t.ndim == 1 else '?'} rows, got {y.shape}.")
    if t.size < order + 3 or np.any(np.diff(t) <= 0) or not np.isfinite(t).all():
        raise ValueError(f"times must be finite, strictly increasing and at least {order + 3} samples.")
    flat = y.reshape(t.size, -1)
    out = [np.empty_like(flat), np.empty_like(flat)]
    # Weights on the stencil scaled to unit span are cached (a uniform grid needs a handful); the actual weights of
    # the d-th derivative are those divided by span**d.
    cache: dict[tuple[int, int, bytes], npt.NDArray[np.float64]] = {}
    for d in (1, 2):
        width = order + d
        half = order // 2 + (d - 1)
        for k in range(t.size):
            if half <= k < t.size - half:
                lo, hi = k - half, k + half + 1
            else:
                lo = min(max(k - width // 2, 0), t.size - width)
                hi = lo + width
            span = t[hi - 1] - t[lo]
            local = (t[lo:hi] - t[k]) / span
            key = (d, k - lo, np.round(local, 10).tobytes())
            weights = cache.get(key)
            if weights is None:
                weights = finite_difference_weights(local, 0.0, d)
                cache[key] = weights
            out[d - 1][k] = (weights @ flat[lo:hi]) / span**d
    return out[0].reshape(y.shape), out[1].reshape(y.shape)


# ---------------------------------------------------------------------------------------------------------------
# Structured least squares
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    r"""One unknown operator :math:`X` of :math:`Y \approx \sum_j Z_j X_j^T`.

    ``"sym"``: symmetric ``(r, r)``; ``"full"``: ``(r, s_j)``; ``"scalar"``: :math:`X = \alpha I` (one unknown).
    ``scale`` fixes the block's scaling (default: the RMS of ``data``).
    """

    kind: Literal["sym", "full", "scalar"]
    data: npt.NDArray[np.float64]  # Z_j, shape (n_samples, s_j); (n_samples, r) for "sym" and "scalar"
    scale: float | None = None


def _structured_lstsq(
    Y: npt.NDArray[np.float64], blocks: Sequence[_Block], regularization: float
) -> list[npt.NDArray[np.float64]]:
    r"""Minimize :math:`\|Y - \sum_j Z_j X_j^T\|_F^2 + \lambda^2 \sum_j \|X_j\|_F^2` in scaled variables.

    Symmetric blocks are parametrized by their upper triangle, so the solution is exactly symmetric. Each block
    (and :math:`Y`) is scaled by one number, its RMS column norm (or the block's fixed ``scale``), which keeps symmetry
    and makes ``regularization``
    relative: :math:`\lambda` is ``regularization`` times the largest singular value of the scaled data. The
    problem is reduced first by a QR factorization of the data, :math:`Z = Q R`, so the dense system has
    :math:`r s` rows, not :math:`r n` (:math:`s` = number of data columns).
    """
    r = Y.shape[1]
    y_scale = float(np.sqrt(np.mean(Y**2))) or 1.0
    scales, Zs, offsets, params = [], [], [], []
    offset, n_params = 0, 0
    for block in blocks:
        scale = block.scale or float(np.sqrt(np.mean(block.data**2))) or 1.0
        scales.append(scale)
        Zs.append(block.data / scale)
        offsets.append(offset)
        offset += block.data.shape[1]
        count = {"sym": r * (r + 1) // 2, "scalar": 1}.get(block.kind, r * block.data.shape[1])
        params.append((n_params, count))
        n_params += count
    Z = np.hstack(Zs)
    s = Z.shape[1]
    if Z.shape[0] > s:
        Q, R = np.linalg.qr(Z, mode="reduced")
        Q_Y = Q.T @ (Y / y_scale)
    else:
        R, Q_Y = Z, Y / y_scale
    # Rows: (component i of the output, row c of R). W[:, i] = X_stack[i, :], R W ~ Q_Y.
    m = R.shape[0]
    A = np.zeros((m * r, n_params))
    weights = np.ones(n_params)
    for block, o, (p0, _) in zip(blocks, offsets, params, strict=True):
        if block.kind == "sym":
            p = p0
            for a in range(r):
                for b in range(a, r):
                    A[b * m : (b + 1) * m, p] += R[:, o + a]
                    if a != b:
                        A[a * m : (a + 1) * m, p] += R[:, o + b]
                        weights[p] = math.sqrt(2.0)
                    p += 1
        elif block.kind == "scalar":
            for i in range(r):
                A[i * m : (i + 1) * m, p0] = R[:, o + i]
            weights[p0] = math.sqrt(r)  # ||alpha I||_F
        else:
            w = block.data.shape[1]
            for i in range(r):
                for col in range(w):
                    A[i * m : (i + 1) * m, p0 + i * w + col] = R[:, o + col]
    rhs = Q_Y.T.reshape(-1)  # component-major, as the rows of A
    if regularization > 0.0:
        lam = regularization * float(np.linalg.norm(R, 2))
        A = np.vstack([A, lam * np.diag(weights)])
        rhs = np.concatenate([rhs, np.zeros(n_params)])
    solution = np.linalg.lstsq(A, rhs, rcond=None)[0]
    result = []
    for block, scale, (p0, count) in zip(blocks, scales, params, strict=True):
        x = solution[p0 : p0 + count] * (y_scale / scale)
        if block.kind == "sym":
            X = np.zeros((r, r))
            X[np.triu_indices(r)] = x
            X = X + np.triu(X, 1).T
        elif block.kind == "scalar":
            X = x[0] * np.eye(r)
        else:
            X = x.reshape(r, block.data.shape[1])
        result.append(X)
    return result


def _clip_spectrum(X: npt.NDArray[np.float64], floor: float) -> tuple[npt.NDArray[np.float64], int]:
    """The symmetric matrix nearest to ``X`` (Frobenius) with eigenvalues >= ``floor``; and how many were raised.

    Eigenvalues below the floor by no more than rounding (``1e-12`` of the largest modulus) are raised too, but not
    counted: they do not call for a refit.
    """
    lam, vecs = np.linalg.eigh(0.5 * (X + X.T))
    low = lam < floor
    if not low.any():
        return 0.5 * (X + X.T), 0
    rounding = 1e-12 * max(float(np.max(np.abs(lam))), 1e-300)
    clipped = (vecs * np.maximum(lam, floor)) @ vecs.T
    return 0.5 * (clipped + clipped.T), int(np.sum(lam < floor - rounding))


@dataclass(frozen=True)
class FitInfo:
    r"""How a second-order model was fitted.

    Attributes:
        regularization: The Tikhonov parameter used (relative to the scaled data's largest singular value).
        candidates: Every regularization tried, with the relative error of the re-simulated training
            trajectories (``inf`` where the simulation blew up); one entry when the regularization was given.
        derivatives: ``"given"`` (velocities and accelerations supplied) or ``"fd<order>"``.
        n_samples: Number of time samples used in the least squares.
        residual: Relative residual :math:`\\|\\ddot Q + C_r \\dot Q + K_r Q - B_r S\\|_F / \\|\\ddot Q\\|_F`.
        n_clipped_stiffness: Eigenvalues of the unconstrained :math:`K_r` raised to the floor.
        n_clipped_damping: Eigenvalues of :math:`C_r` (after the refit) raised to zero; for Rayleigh damping, 1 if
            a negative :math:`\alpha` was raised to zero.
        training_error: Relative error of the re-simulated training coefficients, max over trajectories.
        damping: The damping model fitted: ``"symmetric"`` (any symmetric :math:`C_r`) or ``"rayleigh"``.
        rayleigh: :math:`(\alpha, \beta)` of :math:`C_r = \alpha I + \beta K_r` for Rayleigh damping, else None.
    """

    regularization: float
    candidates: tuple[tuple[float, float], ...]
    derivatives: str
    n_samples: int
    residual: float
    n_clipped_stiffness: int
    n_clipped_damping: int
    training_error: float
    damping: Literal["symmetric", "rayleigh"] = "symmetric"
    rayleigh: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dictionary."""
        return {
            "regularization": self.regularization,
            "candidates": [list(c) for c in self.candidates],
            "derivatives": self.derivatives,
            "n_samples": self.n_samples,
            "residual": self.residual,
            "n_clipped_stiffness": self.n_clipped_stiffness,
            "n_clipped_damping": self.n_clipped_damping,
            "training_error": self.training_error,
            "damping": self.damping,
            "rayleigh": None if self.rayleigh is None else list(self.rayleigh),
        }


@dataclass(frozen=True)
class _Fit:
    """Operators of one structured fit, how many eigenvalues were clipped, and the Rayleigh coefficients."""

    stiffness: npt.NDArray[np.float64]
    damping: npt.NDArray[np.float64]
    input_matrix: npt.NDArray[np.float64]
    n_clipped_stiffness: int
    n_clipped_damping: int
    rayleigh: tuple[float, float] | None = None


def _structured_fit(
    q: npt.NDArray[np.float64],
    qdot: npt.NDArray[np.float64],
    qddot: npt.NDArray[np.float64],
    s: npt.NDArray[np.float64],
    regularization: float,
    stiffness_floor: float,
) -> _Fit:
    """Fit symmetric K, C and B, then enforce K >= floor * max eig, C >= 0 with refits (see the module docstring)."""
    blocks = [_Block("sym", -q), _Block("sym", -qdot)] + ([_Block("full", s)] if s.shape[1] else [])
    K, C, *rest = _structured_lstsq(qddot, blocks, regularization)
    lam_max = float(np.max(np.abs(np.linalg.eigvalsh(K)))) or 1.0
    K, n_k = _clip_spectrum(K, stiffness_floor * lam_max)
    if n_k:
        rest_blocks = blocks[1:]
        C, *rest = _structured_lstsq(qddot + q @ K, rest_blocks, regularization)
    C, n_c = _clip_spectrum(C, 0.0)
    if n_c and s.shape[1]:
        (B,) = _structured_lstsq(qddot + q @ K + qdot @ C, blocks[2:], regularization)
    else:
        B = rest[0] if rest else np.zeros((q.shape[1], 0))
    return _Fit(K, C, B, n_k, n_c)


@dataclass(frozen=True)
class _RayleighProblem:
    r"""The least squares of Rayleigh damping :math:`C_r = \alpha I + \beta K_r` for one :math:`\beta`.

    For fixed :math:`\beta` the model :math:`\ddot q + \alpha \dot q + K_r (q + \beta \dot q) = B_r s` is linear
    in :math:`(K_r, \alpha, B_r)`. The blocks' scales are fixed (those of :math:`q` and :math:`\dot q`), so the
    regularized objective depends on :math:`\beta` only through the data.
    """

    q: npt.NDArray[np.float64]
    qdot: npt.NDArray[np.float64]
    qddot: npt.NDArray[np.float64]
    s: npt.NDArray[np.float64]
    with_alpha: bool = True

    def solve(
        self, beta: float, regularization: float
    ) -> tuple[npt.NDArray[np.float64], float, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        r"""The least-squares :math:`K_r, \alpha, B_r` at this :math:`\beta`, and the residual.

        The residual is :math:`E = \ddot Q + \alpha\dot Q + (Q + \beta\dot Q) K_r - S B_r^T`, ``(n_samples, r)``.
        """
        q, v, s = self.q, self.qdot, self.s
        blocks = [_Block("sym", -(q + beta * v), scale=float(np.sqrt(np.mean(q**2))) or 1.0)]
        if self.with_alpha:
            blocks.append(_Block("scalar", -v, scale=float(np.sqrt(np.mean(v**2))) or 1.0))
        if s.shape[1]:
            blocks.append(_Block("full", s))
        X = _structured_lstsq(self.qddot, blocks, regularization)
        K = X[0]
        alpha = float(X[1][0, 0]) if self.with_alpha else 0.0
        B = X[-1] if s.shape[1] else np.zeros((q.shape[1], 0))
        return K, alpha, B, self.residual(K, alpha, beta, B)

    def residual(
        self, K: npt.NDArray[np.float64], alpha: float, beta: float, B: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """The equation's residual at every sample, ``(n_samples, r)``."""
        return self.qddot + alpha * self.qdot + (self.q + beta * self.qdot) @ K - self.s @ B.T

    def slope(self, beta: float) -> float:
        r"""Half the derivative of :math:`\|E\|_F^2` in :math:`\beta` at the least-squares solution.

        By the envelope theorem (variable projection) only the explicit dependence counts:
        :math:`\tfrac12\, d\|E\|^2/d\beta = \langle E, \dot Q K_r \rangle_F`.
        """
        K, _, _, E = self.solve(beta, 0.0)
        return self._slope(K, E)

    def _slope(self, K: npt.NDArray[np.float64], E: npt.NDArray[np.float64]) -> float:
        """:meth:`slope` from a solution's stiffness and residual."""
        return float(np.sum(E * (self.qdot @ K)))

    def beta(self) -> float:
        r"""The :math:`\beta \ge 0` minimizing the unregularized residual: a grid, then the root of the slope.

        The grid spans :math:`\beta \omega_{max} \in \{0\} \cup [10^{-8}, 10]` (the damping ratio of the
        stiffest mode, :math:`\beta\omega_{max}/2`, up to 5), with :math:`\omega_{max}^2` the largest eigenvalue
        of the fit at :math:`\beta = 0`. The root of the slope is found by Brent's method to rounding, where a
        search on the residual itself would stop at the square root of it.
        """
        from scipy.optimize import brentq

        at_zero = self.solve(0.0, 0.0)
        lam = np.linalg.eigvalsh(at_zero[0])
        omega = math.sqrt(float(np.max(np.abs(lam))) or 1.0)
        if self.with_alpha and lam[-1] - lam[0] <= 1e-6 * omega**2:
            # K_r = k I (r = 1, or equal frequencies): alpha I and beta K_r are one direction; alpha alone.
            logger.info("Rayleigh damping: K_r is a multiple of I, so beta = 0 and alpha alone is fitted")
            return 0.0
        grid = np.concatenate([[0.0], np.logspace(-8, 1, 37)]) / omega
        fits = [at_zero] + [self.solve(b, 0.0) for b in grid[1:]]
        i = int(np.argmin([float(np.sum(E**2)) for *_, E in fits]))
        j_lo, j_hi = max(i - 1, 0), min(i + 1, grid.size - 1)
        lo, hi = grid[j_lo], grid[j_hi]
        g_lo, g_hi = (self._slope(fits[j][0], fits[j][3]) for j in (j_lo, j_hi))
        if i == 0 and g_lo >= 0.0:
            return 0.0
        if not (g_lo < 0.0 < g_hi):  # no sign change around the grid's best point: flat, or at the grid's end
            logger.warning("Rayleigh damping: beta = %.3e, the best point of the grid (%s)", grid[i],
                           "its largest value" if i == grid.size - 1 else "the residual is flat around it")  # fmt: skip
            return float(grid[i])
        root, result = brentq(self.slope, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=200,
                              full_output=True, disp=False)  # fmt: skip
        if not result.converged:
            logger.warning("Rayleigh damping: Brent's method did not converge; beta = %.3e from the grid", grid[i])
            return float(grid[i])
        return float(root)


def _rayleigh_beta(
    q: npt.NDArray[np.float64],
    qdot: npt.NDArray[np.float64],
    qddot: npt.NDArray[np.float64],
    s: npt.NDArray[np.float64],
) -> tuple[float, bool]:
    r""":math:`\beta`, and whether :math:`\alpha` is fitted (False when a free :math:`\alpha` comes out negative)."""
    problem = _RayleighProblem(q, qdot, qddot, s)
    beta = problem.beta()
    if problem.solve(beta, 0.0)[1] >= 0.0:
        return beta, True
    return _RayleighProblem(q, qdot, qddot, s, with_alpha=False).beta(), False


def _rayleigh_fit(
    q: npt.NDArray[np.float64],
    qdot: npt.NDArray[np.float64],
    qddot: npt.NDArray[np.float64],
    s: npt.NDArray[np.float64],
    regularization: float,
    stiffness_floor: float,
    beta: float,
    with_alpha: bool,
) -> _Fit:
    r"""Fit :math:`K_r, \alpha, B_r` at fixed :math:`\beta`, then :math:`K_r \succeq` floor and :math:`\alpha \ge 0`.

    :math:`C_r = \alpha I + \beta K_r` is then positive semi-definite. Each projection refits what follows it.
    """
    problem = _RayleighProblem(q, qdot, qddot, s, with_alpha=with_alpha)
    K, alpha, B, _ = problem.solve(beta, regularization)
    lam_max = float(np.max(np.abs(np.linalg.eigvalsh(K)))) or 1.0
    K, n_k = _clip_spectrum(K, stiffness_floor * lam_max)
    rhs = qddot + (q + beta * qdot) @ K
    if n_k and with_alpha:
        blocks = [_Block("scalar", -qdot)] + ([_Block("full", s)] if s.shape[1] else [])
        alpha_I, *rest = _structured_lstsq(rhs, blocks, regularization)
        alpha, B = float(alpha_I[0, 0]), (rest[0] if rest else B)
    elif n_k and s.shape[1]:
        (B,) = _structured_lstsq(rhs, [_Block("full", s)], regularization)
    n_c = int(not with_alpha or alpha < 0.0)  # alpha = 0 in place of a negative one (here or in _rayleigh_beta)
    if alpha < 0.0:
        alpha = 0.0
        if s.shape[1]:
            (B,) = _structured_lstsq(rhs, [_Block("full", s)], regularization)
    return _Fit(K, alpha * np.eye(K.shape[0]) + beta * K, B, n_k, n_c, (alpha, beta))


# ---------------------------------------------------------------------------------------------------------------
# The reduced model
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModalReport:
    r"""Eigenvalues of a second-order model and what they mean for vibration.

    The eigenvalues :math:`\lambda` of the first-order form :math:`A = \begin{pmatrix} 0 & I \\ -K_r & -C_r
    \end{pmatrix}` give for each mode (one per complex-conjugate pair, or per real eigenvalue) the natural
    frequency :math:`\omega_n = |\lambda|` and the damping ratio :math:`\zeta = -\mathrm{Re}\,\lambda / |\lambda|`.

    Attributes:
        eigenvalues: All :math:`2r` eigenvalues of :math:`A`, by increasing modulus.
        natural_frequencies: :math:`\omega_n` in rad per time unit, ascending (one per mode).
        damping_ratios: :math:`\zeta` of each mode (0 undamped, 1 critically damped).
        undamped_frequencies: :math:`\sqrt{\mathrm{eig}(K_r)}`, ascending.
        max_real_part: The largest :math:`\mathrm{Re}\,\lambda` (<= 0 for a structure-preserving model).
    """

    eigenvalues: npt.NDArray[np.complex128]
    natural_frequencies: npt.NDArray[np.float64]
    damping_ratios: npt.NDArray[np.float64]
    undamped_frequencies: npt.NDArray[np.float64]
    max_real_part: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dictionary (frequencies also in cycles per time unit, ``*_hz``)."""
        return {
            "natural_frequencies": self.natural_frequencies.tolist(),
            "natural_frequencies_hz": (self.natural_frequencies / (2 * np.pi)).tolist(),
            "damping_ratios": self.damping_ratios.tolist(),
            "undamped_frequencies_hz": (self.undamped_frequencies / (2 * np.pi)).tolist(),
            "max_real_part": self.max_real_part,
        }


@dataclass(frozen=True)
class SecondOrderSimulation:
    r"""The result of :meth:`SecondOrderModel.simulate`.

    Attributes:
        times: The times reached, ``(n,)`` (all requested ones unless the guard stopped the run).
        coefficients: :math:`q(t_k)`, shape ``(n, r)``.
        velocities: :math:`\\dot q(t_k)`, shape ``(n, r)``.
        accelerations: :math:`\\ddot q(t_k)`, shape ``(n, r)``.
        inputs: The input values used, ``(n, m)``.
        energy: :math:`E_k = \\tfrac12 \\dot q_k^T \\dot q_k + \\tfrac12 q_k^T K_r q_k`, shape ``(n,)``.
        blowup: None, or why the guard stopped the run (non-finite state or a norm above the bound, and when).
        functions: Displacement Functions at the output steps, when asked for.
        xdmf: The XDMF file written, when asked for.
    """

    times: npt.NDArray[np.float64]
    coefficients: npt.NDArray[np.float64]
    velocities: npt.NDArray[np.float64]
    accelerations: npt.NDArray[np.float64]
    inputs: npt.NDArray[np.float64]
    energy: npt.NDArray[np.float64]
    blowup: str | None = None
    functions: list[fem.Function] | None = field(default=None, repr=False)
    xdmf: Path | None = None

    @property
    def completed(self) -> bool:
        """True if every requested time was reached."""
        return self.blowup is None


class SecondOrderModel:
    r"""A reduced structural model :math:`\ddot q + C_r \dot q + K_r q = B_r s(t)` (identity reduced mass).

    The operators are replicated on every rank; simulating is local work except the optional Functions and XDMF
    output, which are collective on the basis' communicator.

    Args:
        stiffness: :math:`K_r`, symmetric ``(r, r)``.
        damping: :math:`C_r`, symmetric ``(r, r)``; zero if None.
        input_matrix: :math:`B_r`, ``(r, m)``; no inputs if None.
        basis: The mass-orthonormal POD basis, for displacement Functions and XDMF output.
        fit_info: How the model was fitted.
        reference_norm: Largest :math:`\|q\|` seen in training; scales the blow-up guard.
    """

    def __init__(
        self,
        stiffness: npt.ArrayLike,
        damping: npt.ArrayLike | None = None,
        input_matrix: npt.ArrayLike | None = None,
        *,
        basis: PODBasis | None = None,
        fit_info: FitInfo | None = None,
        reference_norm: float = 0.0,
    ):
        K = np.array(stiffness, dtype=np.float64)
        r = K.shape[0] if K.ndim == 2 else -1
        C = np.zeros((r, r)) if damping is None else np.array(damping, dtype=np.float64)
        B = np.zeros((r, 0)) if input_matrix is None else np.array(input_matrix, dtype=np.float64)
        if B.ndim == 1:
            B = B[:, None]
        comm = basis.V.mesh.comm if basis is not None else MPI.COMM_SELF
        error: str | None = None
        if K.ndim != 2 or K.shape != (r, r) or r < 1:
            error = f"stiffness must be a square (r, r) matrix, got shape {K.shape}."
        elif C.shape != (r, r):
            error = f"damping must have shape {(r, r)}, got {C.shape}."
        elif B.ndim != 2 or B.shape[0] != r:
            error = f"input_matrix must have shape ({r}, m), got {B.shape}."
        elif not (np.isfinite(K).all() and np.isfinite(C).all() and np.isfinite(B).all()):
            error = "The operators contain NaN or inf."
        elif basis is not None and basis.n_modes != r:
            error = f"The basis has {basis.n_modes} modes, the operators {r}."
        else:
            for name, X in (("stiffness", K), ("damping", C)):
                if np.max(np.abs(X - X.T), initial=0.0) > 1e-12 * max(np.max(np.abs(X)), 1e-300):
                    error = f"{name} must be symmetric."
        check_collectively(comm, error)
        self.stiffness: npt.NDArray[np.float64] = 0.5 * (K + K.T)
        self.damping: npt.NDArray[np.float64] = 0.5 * (C + C.T)
        self.input_matrix: npt.NDArray[np.float64] = B
        self.basis = basis
        self.fit_info = fit_info
        self.reference_norm = float(reference_norm)
        self._steppers: dict[float, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}

    @property
    def n_modes(self) -> int:
        """Number of reduced coordinates :math:`r`."""
        return self.stiffness.shape[0]

    @property
    def n_inputs(self) -> int:
        """Number of inputs :math:`m`."""
        return self.input_matrix.shape[1]

    @property
    def comm(self) -> MPI.Comm:
        """The basis' communicator (``COMM_SELF`` without a basis)."""
        return self.basis.V.mesh.comm if self.basis is not None else MPI.COMM_SELF

    def structure(self) -> dict[str, float]:
        """Smallest eigenvalues of :math:`K_r` and :math:`C_r` (> 0 and >= 0 for a structure-preserving model)."""
        return {
            "min_eig_stiffness": float(np.linalg.eigvalsh(self.stiffness)[0]),
            "min_eig_damping": float(np.linalg.eigvalsh(self.damping)[0]),
        }

    def modal_analysis(self) -> ModalReport:
        """Natural frequencies and damping ratios of the reduced model (see :class:`ModalReport`)."""
        r = self.n_modes
        A = np.block([[np.zeros((r, r)), np.eye(r)], [-self.stiffness, -self.damping]])
        lam = np.linalg.eigvals(A)
        lam = lam[np.argsort(np.abs(lam), kind="stable")]
        scale = max(float(np.max(np.abs(lam))), 1e-300)
        modes = lam[(lam.imag > 1e-12 * scale) | (np.abs(lam.imag) <= 1e-12 * scale)]
        omega = np.abs(modes)
        zeta = np.where(omega > 0, -modes.real / np.where(omega > 0, omega, 1.0), 1.0)
        order = np.argsort(omega, kind="stable")
        undamped = np.sqrt(np.maximum(np.linalg.eigvalsh(self.stiffness), 0.0))
        return ModalReport(lam, omega[order], zeta[order], undamped, float(np.max(lam.real)))

    def energy(self, coefficients: npt.ArrayLike, velocities: npt.ArrayLike) -> npt.NDArray[np.float64]:
        r""":math:`E = \tfrac12 \dot q^T \dot q + \tfrac12 q^T K_r q` for states ``(n, r)`` (or one ``(r,)``)."""
        q = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
        v = np.atleast_2d(np.asarray(velocities, dtype=np.float64))
        return 0.5 * np.einsum("ij,ij->i", v, v) + 0.5 * np.einsum("ij,ij->i", q, q @ self.stiffness)

    def report(self) -> dict[str, object]:
        """Sizes, structure, modal analysis and fit information, JSON-ready."""
        out: dict[str, object] = {"n_modes": self.n_modes, "n_inputs": self.n_inputs, **self.structure()}
        out["modal"] = self.modal_analysis().as_dict()
        if self.fit_info is not None:
            out["fit"] = self.fit_info.as_dict()
        return out

    def simulate(
        self,
        initial: tuple[npt.ArrayLike | fem.Function, npt.ArrayLike | fem.Function] | None,
        times: npt.ArrayLike,
        inputs: Inputs = None,
        *,
        functions: bool = False,
        xdmf: str | os.PathLike[str] | None = None,
        name: str = "displacement",
        output_stride: int = 1,
        max_norm: float | None = None,
        guard_factor: float = 1e3,
    ) -> SecondOrderSimulation:
        r"""Integrate from ``initial`` over ``times`` with the Newmark average-acceleration scheme.

        Each step solves :math:`(I + \tfrac h2 C_r + \tfrac{h^2}4 K_r)\, \ddot q_{k+1} = B_r s_{k+1} - C_r(\dot q_k
        + \tfrac h2 \ddot q_k) - K_r(q_k + h \dot q_k + \tfrac{h^2}4 \ddot q_k)`, then :math:`\dot q_{k+1} =
        \dot q_k + \tfrac h2(\ddot q_k + \ddot q_{k+1})`, :math:`q_{k+1} = q_k + h \dot q_k + \tfrac{h^2}4
        (\ddot q_k + \ddot q_{k+1})`: the trapezoidal rule, implicit and unconditionally stable, energy-conserving
        without damping and inputs and dissipative with :math:`C_r \succeq 0`. Local work, except ``functions``
        and ``xdmf`` (collective on the basis' communicator).

        A guard stops the run, and reports it in ``blowup``, when the state stops being finite or
        :math:`\|q_k\|` exceeds ``max_norm`` (default ``guard_factor`` times the largest of the training
        :math:`\|q\|`, :math:`\|q_0\|` and the static response :math:`\|K_r^{-1} B_r\| \max|s|`). The arrays
        then end at the last step before the guard tripped; no inf or NaN is returned.

        Args:
            initial: ``(q0, v0)``: reduced coefficients ``(r,)`` or displacement/velocity Functions (projected in
                the mass product; needs the basis); None for rest.
            times: Strictly increasing times ``(n,)``; the first is the initial time.
            inputs: Input values at ``times`` (``(n,)`` or ``(n, m)``), a function ``s(t)``, or None for zero.
            functions: Also return the displacement as Functions at every ``output_stride``-th step.
            xdmf: Also write the displacement at those steps as an XDMF time series (the times as ParaView's time).
            name: Name of the Functions and of the XDMF field.
            output_stride: Keep every ``output_stride``-th step for Functions and XDMF (and the last).
            max_norm: Bound on :math:`\|q\|` for the guard.
            guard_factor: Multiplier of the default bound.

        Returns:
            The coefficients, velocities, accelerations, inputs and energies at every step reached.
        """
        comm = self.comm
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        q0 = v0 = np.zeros(self.n_modes)
        s = np.zeros((t.size, self.n_inputs))
        with collectively(comm):
            s = self._check_simulation(t, inputs, initial, output_stride, functions or xdmf is not None, max_norm,
                                       guard_factor)  # fmt: skip
        if initial is not None:
            q0, v0 = (self._state(item) for item in initial)
        bound = max_norm if max_norm is not None else guard_factor * self._reference(q0, s)
        q, v, a, blowup, n_done = self._integrate(t, s, q0, v0, bound)
        if blowup is not None and comm.rank == 0:
            logger.warning("Reduced simulation stopped: %s", blowup)
        result = SecondOrderSimulation(
            t[:n_done], q[:n_done], v[:n_done], a[:n_done], s[:n_done], self.energy(q[:n_done], v[:n_done]), blowup
        )
        keep = sorted(set(range(0, n_done, output_stride)) | {n_done - 1}) if n_done else []
        if functions or xdmf is not None:
            assert self.basis is not None
            out_functions = [self.basis.function(q[k], name=name) for k in keep] if functions else None
            path = None
            if xdmf is not None and keep:
                from fem_ml.io import write_fields

                steps = [{name: self.basis.reconstruct(q[k])} for k in keep]
                path = write_fields(xdmf, self.basis.V, steps, times=[float(t[k]) for k in keep])
            result = dataclasses.replace(result, functions=out_functions, xdmf=path)
        return result

    def _check_simulation(
        self,
        t: npt.NDArray[np.float64],
        inputs: Inputs,
        initial: object,
        output_stride: int,
        output: bool,
        max_norm: float | None,
        guard_factor: float,
    ) -> npt.NDArray[np.float64]:
        """Validate the arguments of :meth:`simulate` (local); returns the input values ``(n, m)``."""
        if t.size < 1 or not np.isfinite(t).all() or np.any(np.diff(t) <= 0):
            raise ValueError("times must be finite and strictly increasing.")
        s = self._input_values(inputs, t)
        if output_stride < 1:
            raise ValueError(f"output_stride must be >= 1, got {output_stride}.")
        if output and self.basis is None:
            raise ValueError("Functions and XDMF output need a model with a basis.")
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm}.")
        if not guard_factor > 1:
            raise ValueError(f"guard_factor must be > 1, got {guard_factor}.")
        if initial is not None and (not isinstance(initial, tuple | list) or len(initial) != 2):
            raise ValueError("initial must be a pair (q0, v0) or None.")
        if initial is not None:
            for item in initial:
                if not isinstance(item, fem.Function):
                    self._check_state(item)
                elif self.basis is None:
                    raise ValueError("Initial Functions need a model with a basis.")
                elif (mismatch := space_mismatch(self.basis.V, item.function_space)) is not None:
                    raise ValueError(f"Initial Function: {mismatch}.")
        return s

    def _integrate(
        self,
        t: npt.NDArray[np.float64],
        s: npt.NDArray[np.float64],
        q0: npt.NDArray[np.float64],
        v0: npt.NDArray[np.float64],
        bound: float,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], str | None, int]:
        r"""The Newmark loop; returns the states, a blow-up message or None, and the number of steps reached.

        The step is linear in the state :math:`z = (q, \dot q, \ddot q)`: :math:`z_{k+1} = T_h z_k + G_h
        s_{k+1}`, with :math:`T_h, G_h` formed once per step size, so a step is one small matrix-vector product.
        The guard checks blocks of steps at once and then finds the first offending step.
        """
        K, C, B = self.stiffness, self.damping, self.input_matrix
        n, r = t.size, self.n_modes
        z = np.empty((n, 3 * r))
        z[0, :r], z[0, r : 2 * r] = q0, v0
        with np.errstate(over="ignore", invalid="ignore"):
            z[0, 2 * r :] = B @ s[0] - C @ v0 - K @ q0
        if not (np.abs(z[0]) <= _LARGEST).all():
            return z[:, :r], z[:, r : 2 * r], z[:, 2 * r :], "a non-finite initial acceleration", 0
        # Step sizes equal to 1e-12 relative share one transition matrix (a uniform grid from arange * dt).
        steps = np.diff(t)
        unit = float(np.mean(steps)) if steps.size else 1.0
        steps = np.round(steps / unit, 12) * unit
        k = 0
        block = 64
        with np.errstate(over="ignore", invalid="ignore"):
            while k < n - 1:
                h = steps[k]
                stop = k + 1
                while stop < n - 1 and stop - k < block and steps[stop] == h:
                    stop += 1
                T, G = self._transition(float(h))
                forced = s[k + 1 : stop + 1] @ G.T
                for j in range(k, stop):
                    z[j + 1] = T @ z[j] + forced[j - k]
                norms = np.linalg.norm(z[k + 1 : stop + 1, :r], axis=1)
                finite = (np.abs(z[k + 1 : stop + 1]) <= _LARGEST).all(axis=1)
                bad = np.flatnonzero(~finite | ~(norms <= bound))
                if bad.size:
                    i = k + 1 + int(bad[0])
                    what = (
                        "a non-finite state" if not finite[bad[0]] else f"|q| = {norms[bad[0]]:.3e} > bound {bound:.3e}"
                    )
                    return (
                        z[:, :r],
                        z[:, r : 2 * r],
                        z[:, 2 * r :],
                        f"{what} at t = {t[i]:.6g} (step {i} of {n - 1})",
                        i,
                    )
                k = stop
        return z[:, :r], z[:, r : 2 * r], z[:, 2 * r :], None, n

    def _transition(self, h: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """:math:`(T_h, G_h)` of one average-acceleration step of size ``h`` (cached)."""
        if h in self._steppers:
            return self._steppers[h]
        K, C, B = self.stiffness, self.damping, self.input_matrix
        r = self.n_modes
        eye = np.eye(r)
        S_inv = np.linalg.inv(eye + 0.5 * h * C + 0.25 * h * h * K)
        # a_{k+1} = S^-1 (B s_{k+1} - C (v + h/2 a) - K (q + h v + h^2/4 a))
        Aq, Av, Aa = -S_inv @ K, -S_inv @ (C + h * K), -S_inv @ (0.5 * h * C + 0.25 * h * h * K)
        Af = S_inv @ B
        T = np.zeros((3 * r, 3 * r))
        T[2 * r :] = np.hstack([Aq, Av, Aa])
        T[r : 2 * r] = np.hstack([0.5 * h * Aq, eye + 0.5 * h * Av, 0.5 * h * (eye + Aa)])
        T[:r] = np.hstack([eye + 0.25 * h * h * Aq, h * eye + 0.25 * h * h * Av, 0.25 * h * h * (eye + Aa)])
        G = np.vstack([0.25 * h * h * Af, 0.5 * h * Af, Af])
        if len(self._steppers) > 16:
            self._steppers.clear()
        self._steppers[h] = (T, G)
        return T, G

    def _reference(self, q0: npt.NDArray[np.float64], s: npt.NDArray[np.float64]) -> float:
        """Scale of the guard: training norm, initial norm and static response to the largest input."""
        static = 0.0
        if self.n_inputs and s.size:
            try:
                response = np.linalg.solve(self.stiffness, self.input_matrix)
                static = float(np.linalg.norm(response, 2) * np.max(np.linalg.norm(s, axis=1)))
            except np.linalg.LinAlgError:
                static = 0.0
        reference = max(self.reference_norm, float(np.linalg.norm(q0)), static)
        return reference if reference > 0 and math.isfinite(reference) else 1.0

    def _input_values(self, inputs: Inputs, t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        m = self.n_inputs
        if inputs is None:
            return np.zeros((t.size, m))
        if callable(inputs):
            values = np.array([np.asarray(inputs(float(tk)), dtype=np.float64).reshape(-1) for tk in t])
        else:
            values = np.asarray(inputs, dtype=np.float64)
        if values.ndim == 1 and m == 1:
            values = values[:, None]
        if values.shape != (t.size, m):
            raise ValueError(f"inputs must have shape ({t.size}, {m}) (one row per time), got {values.shape}.")
        if not np.isfinite(values).all():
            raise ValueError("inputs contain NaN or inf.")
        return values

    def _check_state(self, value: object) -> None:
        x = np.asarray(value, dtype=np.float64)
        if x.shape != (self.n_modes,) or not np.isfinite(x).all():
            raise ValueError(f"An initial state must be {self.n_modes} finite reduced coefficients or a Function.")

    def _state(self, value: npt.ArrayLike | fem.Function) -> npt.NDArray[np.float64]:
        if isinstance(value, fem.Function):
            assert self.basis is not None
            return self.basis.project(value.x.array[: n_owned(self.basis.V)])[:, 0]
        return np.asarray(value, dtype=np.float64).copy()

    def __repr__(self) -> str:
        return f"SecondOrderModel(n_modes={self.n_modes}, n_inputs={self.n_inputs})"


#: States beyond this magnitude count as non-finite (their energy would overflow).
_LARGEST = 1e150


# ---------------------------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------------------------

#: Default regularizations tried by ``regularization="auto"``.
DEFAULT_CANDIDATES: tuple[float, ...] = (0.0, *np.logspace(-12, -3, 10).tolist())


def _as_list(value: object, n: int | None, what: str) -> list:
    """``value`` as a list of per-trajectory items (a single array is one trajectory)."""
    if value is None:
        return [None] * (n or 1)
    if isinstance(value, np.ndarray) or not isinstance(value, Sequence):
        items = [value]
    else:
        items = list(value)
    if n is not None and len(items) != n:
        raise ValueError(f"{what}: {len(items)} given for {n} trajectories.")
    return items


def _trajectories(
    coefficients: object, times: object, inputs: object, velocities: object, accelerations: object, fd_order: int
) -> tuple[
    list[npt.NDArray[np.float64]],
    list[npt.NDArray[np.float64]],
    list[npt.NDArray[np.float64]],
    list[npt.NDArray[np.float64]],
    list[npt.NDArray[np.float64]],
    str,
]:
    """Validated per-trajectory ``(Q, Qdot, Qddot, times, inputs)`` and how the derivatives were obtained."""
    Q = [np.asarray(q, dtype=np.float64) for q in _as_list(coefficients, None, "coefficients")]
    n_traj = len(Q)
    if n_traj == 0 or any(q.ndim != 2 for q in Q) or len({q.shape[1] for q in Q}) != 1:
        raise ValueError("coefficients must be one (n_times, r) array or a sequence of them with the same r.")
    times_in = times if not (isinstance(times, np.ndarray) and times.ndim == 1) else [times] * n_traj
    T = [np.asarray(t, dtype=np.float64).reshape(-1) for t in _as_list(times_in, n_traj, "times")]
    S_in = [None if s is None else np.asarray(s, dtype=np.float64) for s in _as_list(inputs, n_traj, "inputs")]
    S = [
        np.zeros((q.shape[0], 0)) if s is None else (s[:, None] if s.ndim == 1 else s)
        for q, s in zip(Q, S_in, strict=True)
    ]
    if (velocities is None) != (accelerations is None):
        raise ValueError("Give both velocities and accelerations, or neither.")
    if len({s.shape[1] for s in S}) != 1:
        raise ValueError("Every trajectory needs the same number of inputs.")
    for i, (q, t, s) in enumerate(zip(Q, T, S, strict=True)):
        if t.shape != (q.shape[0],) or s.shape[0] != q.shape[0]:
            raise ValueError(f"Trajectory {i}: {q.shape[0]} samples, {t.size} times, {s.shape[0]} input rows.")
        if not (np.isfinite(q).all() and np.isfinite(t).all() and np.isfinite(s).all()):
            raise ValueError(f"Trajectory {i} contains NaN or inf.")
        if np.any(np.diff(t) <= 0):
            raise ValueError(f"Trajectory {i}: times must be strictly increasing.")
    if velocities is not None:
        V_ = [np.asarray(v, dtype=np.float64) for v in _as_list(velocities, n_traj, "velocities")]
        A_ = [np.asarray(a, dtype=np.float64) for a in _as_list(accelerations, n_traj, "accelerations")]
        for i, (q, v, a) in enumerate(zip(Q, V_, A_, strict=True)):
            if v.shape != q.shape or a.shape != q.shape or not (np.isfinite(v).all() and np.isfinite(a).all()):
                raise ValueError(f"Trajectory {i}: velocities and accelerations must be finite, shaped {q.shape}.")
        how = "given"
    else:
        derivatives = [finite_difference_derivatives(q, t, order=fd_order) for q, t in zip(Q, T, strict=True)]
        V_, A_ = [d[0] for d in derivatives], [d[1] for d in derivatives]
        how = f"fd{fd_order}"
    return Q, V_, A_, T, S, how


def _select_regularization(
    trajectories: tuple[
        list[npt.NDArray[np.float64]],
        list[npt.NDArray[np.float64]],
        list[npt.NDArray[np.float64]],
        list[npt.NDArray[np.float64]],
        list[npt.NDArray[np.float64]],
    ],
    stacked: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]],
    tries: Sequence[float],
    stiffness_floor: float,
    reference: float,
    damping: Literal["symmetric", "rayleigh"],
) -> tuple[tuple[float, float, SecondOrderModel, _Fit], list[tuple[float, float]]]:
    """Fit with each regularization; keep the one whose re-simulated training trajectories are closest."""
    Q, V_, _, T, S = trajectories
    q_all, v_all, a_all, s_all = stacked
    if damping == "rayleigh":
        beta, with_alpha = _rayleigh_beta(q_all, v_all, a_all, s_all)
    fits: list[tuple[float, float, SecondOrderModel, _Fit]] = []
    scores = []
    for lam in tries:
        if damping == "rayleigh":
            fit = _rayleigh_fit(q_all, v_all, a_all, s_all, lam, stiffness_floor, beta, with_alpha)
        else:
            fit = _structured_fit(q_all, v_all, a_all, s_all, lam, stiffness_floor)
        model = SecondOrderModel(fit.stiffness, fit.damping, fit.input_matrix, reference_norm=reference)
        error = 0.0
        for q, v, t, s in zip(Q, V_, T, S, strict=True):
            run = model.simulate((q[0], v[0]), t, s if s.shape[1] else None)
            error = max(error, float(np.linalg.norm(run.coefficients - q) / max(np.linalg.norm(q), 1e-300)))
            error = error if run.completed else math.inf
        scores.append((float(lam), error))
        fits.append((float(lam), error, model, fit))
    # The smallest error; among errors equal to it within 1e-6 relative, the largest regularization. Near-ties
    # then cannot flip with rounding (another rank count), and the choice is the most regularized of equals.
    smallest = min(fit[1] for fit in fits)
    best = max((fit for fit in fits if fit[1] <= smallest * (1 + 1e-6)), key=lambda fit: fit[0])
    return best, scores


def fit_second_order_coefficients(
    coefficients: npt.ArrayLike | Sequence[npt.ArrayLike],
    times: npt.ArrayLike | Sequence[npt.ArrayLike],
    inputs: npt.ArrayLike | Sequence[npt.ArrayLike] | None = None,
    *,
    velocities: npt.ArrayLike | Sequence[npt.ArrayLike] | None = None,
    accelerations: npt.ArrayLike | Sequence[npt.ArrayLike] | None = None,
    fd_order: int = 4,
    regularization: float | Literal["auto"] = "auto",
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
    stiffness_floor: float = 1e-8,
    damping: Literal["symmetric", "rayleigh"] = "symmetric",
    basis: PODBasis | None = None,
) -> SecondOrderModel:
    r"""Fit :math:`\ddot q + C_r \dot q + K_r q = B_r s` to reduced trajectories, structure preserved (local).

    1. Derivatives: the given ``velocities`` and ``accelerations`` (e.g. those of the Newmark solver that
       produced the data; then the fit recovers a model that produced them exactly), or finite differences of
       order ``fd_order`` of the coefficients (:func:`finite_difference_derivatives`).
    2. Least squares over symmetric :math:`K_r, C_r` (upper triangles as unknowns) and :math:`B_r`, all samples of
       all trajectories together, with Tikhonov regularization :math:`\lambda` relative to the scaled data.
    3. Structure: :math:`K_r` is replaced by the nearest symmetric matrix with eigenvalues
       :math:`\ge` ``stiffness_floor`` :math:`\max|\mathrm{eig}\,K_r|` (positive definite), and :math:`C_r, B_r`
       refitted with it fixed; then :math:`C_r` by the nearest positive semi-definite matrix and :math:`B_r`
       refitted again. Each refit runs only if the projection changed something, so data from a structured model
       are fitted exactly. The reduced free-vibration energy of the result cannot grow.
    4. ``regularization="auto"`` tries each of ``candidates``, re-simulates the training trajectories and keeps
       the one with the smallest relative error of the coefficients (the largest of those within 1e-6 of it).

    ``damping="rayleigh"`` fits proportional damping :math:`C_r = \alpha I + \beta K_r` instead of a general
    symmetric :math:`C_r`: with a mass-orthonormal basis, the exact reduction of a full model with Rayleigh damping
    :math:`C = \alpha M + \beta K`. Two numbers replace :math:`r(r+1)/2`, and the equation
    :math:`\ddot q + \alpha \dot q + K_r (q + \beta \dot q) = B_r s` is linear in :math:`(K_r, \alpha, B_r)`
    for fixed :math:`\beta`. :math:`\beta \ge 0` minimizes the unregularized residual (variable projection:
    a grid, then Brent's method on the residual's derivative); :math:`K_r, \alpha, B_r` are then fitted at that
    :math:`\beta` as above, with :math:`\alpha` raised to 0 if negative, so :math:`C_r \succeq 0`. The fitted
    :math:`(\alpha, \beta)` are in ``fit_info.rayleigh``, to compare with the full model's. A damping that is a
    small term of the equation is weakly determined as a general matrix: this form is far less sensitive to
    rounding in the data (on the beam demo's data of 1 and 2 ranks, 1.5e-10 apart, its operators agree to 7e-11
    and :math:`\alpha, \beta` to 2e-11; a general :math:`C_r` to 3.6e-10). It cannot absorb, as a general
    :math:`C_r` can, the effect of the modes the basis leaves out, and may be less accurate. If :math:`K_r` is a
    multiple of the identity (:math:`r = 1`), :math:`\alpha` and :math:`\beta` are one parameter: :math:`\beta = 0`.

    Args:
        coefficients: One trajectory ``(n_times, r)`` or a sequence of them.
        times: Sample times of each trajectory (one array for all, or one per trajectory).
        inputs: Input values of each trajectory, ``(n_times,)`` or ``(n_times, m)``; None for none.
        velocities: :math:`\dot q` at the samples (with ``accelerations``), like ``coefficients``.
        accelerations: :math:`\ddot q` at the samples.
        fd_order: Order of the finite differences (even, >= 4) when derivatives are not given.
        regularization: :math:`\lambda >= 0`, or ``"auto"``.
        candidates: Regularizations tried by ``"auto"``.
        stiffness_floor: Smallest eigenvalue of :math:`K_r` relative to the largest, in ``[1e-12, 1)``.
        damping: ``"symmetric"`` (any symmetric positive semi-definite :math:`C_r`) or ``"rayleigh"``
            (:math:`C_r = \alpha I + \beta K_r`, :math:`\alpha, \beta \ge 0`).
        basis: Basis attached to the model (for Functions and XDMF output).

    Returns:
        The model, with :class:`FitInfo` in ``fit_info``.

    Raises:
        ValueError: for inconsistent shapes, non-finite data, or bad options.
    """
    if regularization != "auto" and not (isinstance(regularization, int | float) and regularization >= 0):
        raise ValueError(f"regularization must be >= 0 or 'auto', got {regularization!r}.")
    if not 1e-12 <= stiffness_floor < 1.0:  # below, the floor is lost in the rounding of the eigendecomposition
        raise ValueError(f"stiffness_floor must be in [1e-12, 1), got {stiffness_floor}.")
    if damping not in ("symmetric", "rayleigh"):
        raise ValueError(f"damping must be 'symmetric' or 'rayleigh', got {damping!r}.")
    Q, V_, A_, T, S, how = _trajectories(coefficients, times, inputs, velocities, accelerations, fd_order)
    r = Q[0].shape[1]
    q_all, v_all, a_all, s_all = (np.vstack(x) for x in (Q, V_, A_, S))
    reference = max(float(np.max(np.linalg.norm(q, axis=1))) for q in Q)
    tries = list(candidates) if regularization == "auto" else [float(regularization)]
    if not tries or any(not (c >= 0 and math.isfinite(c)) for c in tries):
        raise ValueError("candidates must be finite numbers >= 0.")

    best, scores = _select_regularization(
        (Q, V_, A_, T, S), (q_all, v_all, a_all, s_all), tries, stiffness_floor, reference, damping
    )
    lam, error, model, fit = best
    residual = a_all + v_all @ model.damping + q_all @ model.stiffness - s_all @ model.input_matrix.T
    info = FitInfo(
        regularization=lam,
        candidates=tuple(scores),
        derivatives=how,
        n_samples=q_all.shape[0],
        residual=float(np.linalg.norm(residual) / max(np.linalg.norm(a_all), 1e-300)),
        n_clipped_stiffness=fit.n_clipped_stiffness,
        n_clipped_damping=fit.n_clipped_damping,
        training_error=error,
        damping=damping,
        rayleigh=fit.rayleigh,
    )
    logger.info(
        "Second-order fit: r = %d, %d samples, regularization %.1e, training error %.2e, residual %.2e",
        r, q_all.shape[0], lam, error, info.residual,
    )  # fmt: skip
    if fit.rayleigh is not None:
        logger.info("Rayleigh damping: alpha = %.6e, beta = %.6e", *fit.rayleigh)
    return SecondOrderModel(
        model.stiffness, model.damping, model.input_matrix, basis=basis, fit_info=info, reference_norm=reference
    )


def fit_second_order(
    basis: PODBasis,
    displacements: npt.ArrayLike | Sequence[npt.ArrayLike],
    times: npt.ArrayLike | Sequence[npt.ArrayLike],
    inputs: npt.ArrayLike | Sequence[npt.ArrayLike] | None = None,
    *,
    velocities: npt.ArrayLike | Sequence[npt.ArrayLike] | None = None,
    accelerations: npt.ArrayLike | Sequence[npt.ArrayLike] | None = None,
    **options: object,
) -> SecondOrderModel:
    r"""Fit a second-order reduced model to full-order trajectories (collective on the basis' communicator).

    The trajectories are projected onto the basis in its inner product, :math:`q = \Phi^T M u` (and likewise
    the velocities and accelerations when given); with the mass matrix as inner product the reduced mass is the
    identity. The fit is then :func:`fit_second_order_coefficients` on the reduced data, computed on rank 0 and
    broadcast, so every rank holds bit-identical operators, and they agree across rank counts to rounding.

    Args:
        basis: POD basis, orthonormal in the mass inner product (e.g. ``fem_ml.pod(..., inner_product=M)``
            with the assembled mass matrix, or ``"l2"`` for unit density).
        displacements: Owned dof values of each trajectory, ``(n_owned, n_times)``, or a sequence of them.
        times: Sample times (one array for all trajectories, or one per trajectory).
        inputs: Input values per trajectory, ``(n_times,)`` or ``(n_times, m)``.
        velocities: Owned dof values of :math:`\dot u` (with ``accelerations``), like ``displacements``.
        accelerations: Owned dof values of :math:`\ddot u`.
        **options: Keyword options of :func:`fit_second_order_coefficients` (unknown names raise TypeError).

    Returns:
        The model, with the basis attached.
    """
    allowed = {"fd_order", "regularization", "candidates", "stiffness_floor", "damping"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"fit_second_order got unknown option(s) {unknown}; allowed: {sorted(allowed)}.")
    comm = basis.V.mesh.comm
    n_local = n_owned(basis.V)
    fields: dict[str, list[npt.NDArray[np.float64]]] = {}
    with collectively(comm):
        if (velocities is None) != (accelerations is None):
            raise ValueError("Give both velocities and accelerations, or neither.")
        for key, value in (("displacements", displacements), ("velocities", velocities),
                           ("accelerations", accelerations)):  # fmt: skip
            if value is None:
                continue
            items = [np.asarray(u, dtype=np.float64) for u in _as_list(value, None, key)]
            for i, u in enumerate(items):
                if u.ndim != 2 or u.shape[0] != n_local:
                    raise ValueError(f"{key}[{i}] must have shape (n_owned={n_local}, n_times), got {u.shape}.")
            fields[key] = items
        n_traj = len(fields["displacements"])
        for key in ("velocities", "accelerations"):
            if key in fields and [u.shape for u in fields[key]] != [u.shape for u in fields["displacements"]]:
                raise ValueError(f"{key} must have the shapes of the displacements.")
        _as_list(inputs, n_traj, "inputs")
    reduced = {key: [basis.project(u).T for u in items] for key, items in fields.items()}
    fitted: (
        tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], FitInfo | None, float] | None
    ) = None
    with collectively(comm):
        if comm.rank == 0:
            model = fit_second_order_coefficients(
                reduced["displacements"], times, inputs, velocities=reduced.get("velocities"),
                accelerations=reduced.get("accelerations"), **options,  # type: ignore[arg-type]
            )  # fmt: skip
            fitted = (model.stiffness, model.damping, model.input_matrix, model.fit_info, model.reference_norm)
    fitted = comm.bcast(fitted, root=0) if comm.size > 1 else fitted
    assert fitted is not None
    K, C, B, info, reference = fitted
    return SecondOrderModel(K, C, B, basis=basis, fit_info=info, reference_norm=reference)
