# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Kernel regressors from parameters to reduced coefficients: RBF interpolation and Gaussian-process regression.

Beside the network of :mod:`fem_ml.networks`, a kernel regressor maps the same scaled inputs (the parameters,
optionally through :math:`\log`, scaled from their bounds to :math:`[-1, 1]`) to the same coefficients:

.. math:: \hat c(\mu) = s \odot \Big(\sum_{i=1}^n w_i \, k(z(\mu), z_i) + \sum_j b_j \, q_j(z(\mu))\Big) + m,

where the kernel sees the scaled inputs :math:`x` through a monotone warping of :math:`[-1, 1]` onto itself,

.. math:: z_d = 2 \, \frac{\exp(a_d (x_d + 1)) - 1}{\exp(2 a_d) - 1} - 1 \qquad (z_d = x_d \text{ for } a_d = 0),

with the training inputs :math:`z_i`, weights :math:`w_i \in \mathbb{R}^r`, an optional linear polynomial tail
:math:`q_j \in \{1, z_1, \dots, z_p\}` and the output shift :math:`m` and scale :math:`s` (the mean and one common
scale of the coefficients, so that the large modes dominate the fit as they dominate the field error).

The warping makes the log inputs of a positive parameter the Box-Cox power :math:`\mu^\lambda` scaled to
:math:`[-1, 1]`: with :math:`x_d = (\log \mu_d - c_d) / h_d`, the rate :math:`a_d = \lambda h_d` gives
:math:`z_d` affine in :math:`\mu_d^\lambda`; :math:`\lambda = 0` is the plain log, :math:`\lambda = 1` the linear
inputs. The exponent is chosen from the training data (``input_transform="auto"`` or ``"power"``): from the log
(:math:`\lambda = 0`) and linear (:math:`\lambda = 1`) candidates, a climb in steps of 1/4 in
:math:`[-2, 2]` (narrower where the log bounds are so wide that the rates would pass 100) to the best criterion,
then the two points 1/8 either side. Solutions of elliptic problems are
often close to :math:`\mu^{-1}`-like functions of a coefficient, which a GP models better in :math:`\mu^\lambda`
with a negative exponent than in :math:`\log \mu`.

``"rbf"``: polyharmonic interpolation (``"linear"``, ``"thin_plate_spline"`` or ``"cubic"`` kernel with a linear
tail) with a smoothing :math:`\eta` on the diagonal; the kernel, the smoothing and the input transform are
chosen by leave-one-out error, computed for all points at once by Rippa's formula
:math:`e_i = a_i / (A^{-1})_{ii}`.

``"gp"``: Gaussian-process regression with an anisotropic Matérn 5/2, Matérn 3/2 or squared-exponential kernel times
an amplitude plus a white noise; the hyperparameters are fitted by scikit-learn (maximum marginal likelihood:
L-BFGS-B, then Newton steps on the gradient to the optimum, so that the last digits of the data, which differ
between rank counts, move them by about 1e-9 only), and the kernel and the input transform are chosen by the
marginal likelihood (the exponent's search with the Matérn 5/2 kernel, or the kernel of the options, then every
kernel at the exponent found).
The predictive standard deviation of coefficient :math:`k` is
:math:`\sigma_k(\mu) = s_k \sqrt{f_k \, (a - k_\mu^T K^{-1} k_\mu)}`, where :math:`f_k = y_k^T K^{-1} y_k / n`
rescales the shared amplitude to each coefficient.

Fitting runs on rank 0 and the arrays are broadcast. Prediction needs only the stored arrays: the regressor is
evaluated in NumPy (and SciPy's triangular solve for the deviation) from its file entries, so a saved kernel
surrogate never holds a pickled object.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

from fem_ml._formats import MAX_WARPING
from fem_ml._mpi import collectively
from fem_ml._serialize import prefixed, subtree
from fem_ml.networks import AffineScaler

__all__ = ["GP_KERNELS", "KERNEL_METHODS", "RBF_KERNELS", "KernelOptions", "KernelRegressor", "fit_kernel"]

logger = logging.getLogger(__name__)

#: Regression methods of :class:`KernelRegressor`.
KERNEL_METHODS = ("gp", "rbf")
#: Kernels of RBF interpolation (polyharmonic, with a linear polynomial tail).
RBF_KERNELS = ("cubic", "linear", "thin_plate_spline")
#: Kernels of Gaussian-process regression (anisotropic).
GP_KERNELS = ("gaussian", "matern32", "matern52")
#: Steps, range and first candidates of the search for the inputs' Box-Cox exponent (log, linear).
_POWER_STEP, _POWER_LIMIT, _POWER_START = 0.25, 2.0, (0.0, 1.0)
_SEARCH_KERNEL = "matern52"
_SMOOTHING = (0.0, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2)
_JITTER = 1e-10


def kernel_values(name: str, r: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    r"""The kernel ``name`` of the scaled distance :math:`r \ge 0` (radial part only, without amplitude)."""
    if name == "linear":
        return -r
    if name == "cubic":
        return r**3
    if name == "thin_plate_spline":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(r > 0, r**2 * np.log(np.where(r > 0, r, 1.0)), 0.0)
    if name == "gaussian":
        return np.exp(-0.5 * r**2)
    if name == "matern32":
        s = math.sqrt(3.0) * r
        return (1.0 + s) * np.exp(-s)
    if name == "matern52":
        s = math.sqrt(5.0) * r
        return (1.0 + s + s**2 / 3.0) * np.exp(-s)
    raise ValueError(f"Unknown kernel {name!r}; choose one of {sorted(RBF_KERNELS + GP_KERNELS)}.")


def _distances(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Euclidean distances between the rows of ``x`` and of ``y``, ``(len(x), len(y))``."""
    sq = np.sum(x**2, axis=1)[:, None] + np.sum(y**2, axis=1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.maximum(sq, 0.0))


def _warp(x: npt.NDArray[np.float64], rates: npt.NDArray[np.float64] | None) -> npt.NDArray[np.float64]:
    r"""The warped inputs :math:`z` of the module docstring for scaled inputs ``x`` ``(n, p)`` and rates ``(p,)``.

    Each column is mapped monotonically, :math:`[-1, 1]` onto itself; a zero rate (or ``rates=None``) leaves its
    column unchanged.
    """
    if rates is None or not np.any(rates):
        return x
    a = rates[None, :]
    safe = np.where(a == 0, 1.0, a)
    with np.errstate(over="ignore"):
        z = 2.0 * np.expm1(safe * (x + 1.0)) / np.expm1(2.0 * safe) - 1.0
    return np.where(a == 0, x, z)


def _polynomial(x: npt.NDArray[np.float64], degree: int) -> npt.NDArray[np.float64]:
    """The polynomial tail's basis at ``x``: none (-1), constant (0) or linear (1)."""
    if degree < 0:
        return np.empty((x.shape[0], 0))
    if degree == 0:
        return np.ones((x.shape[0], 1))
    return np.hstack([np.ones((x.shape[0], 1)), x])


@dataclass(frozen=True, kw_only=True)
class KernelOptions:
    r"""Options of :func:`fit_kernel`; every option is a named field, so an unknown one is an error.

    Attributes:
        method: ``"gp"`` (Gaussian-process regression, with a predictive deviation) or ``"rbf"`` (RBF
            interpolation).
        kernel: A kernel of :data:`GP_KERNELS` or :data:`RBF_KERNELS` (for the method), or ``"auto"``: every kernel
            of the method, the best kept (marginal likelihood for ``"gp"``, leave-one-out error for ``"rbf"``).
        input_transform: ``"linear"``, ``"log"``, ``"power"`` (both positive bounds only: the Box-Cox power
            :math:`\mu^\lambda` of the module docstring, with the exponent ``power``, or the exponent chosen as for
            ``kernel`` where ``power`` is None) or ``"auto"``: ``"power"`` with the exponent chosen where the bounds
            are positive (the log and linear inputs among the candidates), else ``"linear"``.
        power: The exponent :math:`\lambda` of ``input_transform="power"`` (finite, :math:`|\lambda| \le 4`), or
            None to choose it; only with ``"power"``.
        smoothing: RBF only: the smoothing relative to the largest kernel value, or None to choose it by
            leave-one-out error.
        restarts: GP only: restarts of the hyperparameter optimizer from random points (seeded), in the fits of
            the final candidates (the fits of the exponent's search start from the initial hyperparameters only).
        seed: Seed of the optimizer restarts.
    """

    method: Literal["gp", "rbf"] = "gp"
    kernel: str = "auto"
    input_transform: Literal["linear", "log", "power", "auto"] = "auto"
    power: float | None = None
    smoothing: float | None = None
    restarts: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in KERNEL_METHODS:
            raise ValueError(f"Unknown method {self.method!r}; choose one of {KERNEL_METHODS}.")
        kernels = GP_KERNELS if self.method == "gp" else RBF_KERNELS
        if self.kernel != "auto" and self.kernel not in kernels:
            raise ValueError(f"Unknown kernel {self.kernel!r} for {self.method!r}; choose 'auto' or one of {kernels}.")
        if self.input_transform not in ("linear", "log", "power", "auto"):
            raise ValueError(
                f"Unknown input_transform {self.input_transform!r}; choose 'linear', 'log', 'power' or 'auto'."
            )
        if self.power is not None and (self.input_transform != "power" or not abs(self.power) <= 4):
            raise ValueError(f"power must be None, or within [-4, 4] with input_transform='power', got {self.power}.")
        if self.smoothing is not None and not (self.smoothing >= 0 and math.isfinite(self.smoothing)):
            raise ValueError(f"smoothing must be >= 0 or None, got {self.smoothing}.")
        if int(self.restarts) < 0:
            raise ValueError(f"restarts must be >= 0, got {self.restarts}.")


class KernelRegressor:
    r"""A fitted kernel map from parameters to reduced coefficients, evaluated in NumPy from its arrays.

    Satisfies :class:`~fem_ml.surrogate.CoefficientRegressor`. Build one with :func:`fit_kernel`.

    Args:
        method: ``"gp"`` or ``"rbf"``.
        kernel: The kernel's name (:data:`GP_KERNELS` or :data:`RBF_KERNELS`).
        inputs: Scaled training inputs ``(n, p)``.
        weights: Kernel weights ``(n, r)`` (scaled outputs).
        polynomial: Coefficients of the polynomial tail, ``(0, r)``, ``(1, r)`` or ``(p + 1, r)``.
        length_scales: Length scale of each input ``(p,)``; the kernel sees :math:`(x - x_i) / \ell`.
        input_scaler: Maps transformed parameters to :math:`[-1, 1]`.
        output_scaler: Maps coefficients to scaled outputs.
        input_transform: ``"linear"`` or ``"log"``.
        amplitude: GP only: the kernel's amplitude :math:`a` (1 for RBF).
        noise: The diagonal added to the kernel matrix: GP white noise, or RBF smoothing.
        cholesky: GP only: lower Cholesky factor ``(n, n)`` of the kernel matrix with the noise, for the deviation.
        output_variance: GP only: per-coefficient variance factors :math:`f_k` ``(r,)``.
        warping: Warping rates :math:`a_d` ``(p,)`` of the module docstring, or None for none (all zero).
    """

    kind = "kernel"

    def __init__(
        self,
        method: Literal["gp", "rbf"],
        kernel: str,
        inputs: npt.NDArray[np.float64],
        weights: npt.NDArray[np.float64],
        polynomial: npt.NDArray[np.float64],
        length_scales: npt.NDArray[np.float64],
        input_scaler: AffineScaler,
        output_scaler: AffineScaler,
        *,
        input_transform: Literal["linear", "log"] = "linear",
        amplitude: float = 1.0,
        noise: float = 0.0,
        cholesky: npt.NDArray[np.float64] | None = None,
        output_variance: npt.NDArray[np.float64] | None = None,
        warping: npt.NDArray[np.float64] | None = None,
    ):
        n, p = inputs.shape
        r = weights.shape[1]
        if weights.shape[0] != n or polynomial.shape[0] not in (0, 1, p + 1) or polynomial.shape[1] != r:
            raise ValueError(f"Inconsistent kernel arrays: inputs {inputs.shape}, weights {weights.shape}, "
                             f"polynomial {polynomial.shape}.")  # fmt: skip
        if method == "gp" and (cholesky is None or output_variance is None):
            raise ValueError("A GP regressor needs its Cholesky factor and output variances.")
        if warping is not None and (warping.shape != (p,) or not np.all(np.abs(warping) <= MAX_WARPING)):
            raise ValueError(f"Warping rates {warping!r}: expected {p} values within +-{MAX_WARPING}.")
        kernel_values(kernel, np.zeros(1))  # checks the name
        self.method, self.kernel = method, kernel
        self.inputs, self.weights, self.polynomial = inputs, weights, polynomial
        self.length_scales = length_scales
        self.input_scaler, self.output_scaler = input_scaler, output_scaler
        self.input_transform = input_transform
        self.amplitude, self.noise = float(amplitude), float(noise)
        self.cholesky, self.output_variance = cholesky, output_variance
        self.warping = warping if warping is not None and np.any(warping) else None
        self._scaled_inputs = _warp(inputs, self.warping) / length_scales

    @property
    def n_params(self) -> int:
        """Number of inputs."""
        return int(self.inputs.shape[1])

    @property
    def n_coefficients(self) -> int:
        """Number of outputs."""
        return int(self.weights.shape[1])

    @property
    def n_train(self) -> int:
        """Number of training points."""
        return int(self.inputs.shape[0])

    @property
    def has_spread(self) -> bool:
        """True for a GP (it has a predictive deviation), False for RBF interpolation."""
        return self.method == "gp"

    def describe(self) -> str:
        """One line: method, kernel, input transform and hyperparameters."""
        scales = ", ".join(f"{v:.3g}" for v in self.length_scales)
        inputs = f"{self.input_transform} inputs"
        if self.warping is not None:
            inputs += " warped by rates [" + ", ".join(f"{v:.3g}" for v in self.warping) + "]"
        return (f"{self.method} ({self.kernel} kernel, {inputs}, length scales [{scales}], "
                f"amplitude {self.amplitude:.3g}, noise {self.noise:.3g}, {self.n_train} points)")  # fmt: skip

    def scale_inputs(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Inputs for parameters ``(n, p)``: transformed, then scaled to :math:`[-1, 1]`."""
        x = np.log(parameters) if self.input_transform == "log" else parameters
        return self.input_scaler.transform(x)

    def __call__(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Coefficients for a batch of parameters ``(n, p)``, shape ``(n, r)``."""
        return self.from_inputs(self.scale_inputs(np.atleast_2d(np.asarray(parameters, dtype=np.float64))))

    def _cross(self, warped: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Kernel values between warped inputs and the training inputs, ``(n, n_train)``."""
        k = kernel_values(self.kernel, _distances(warped / self.length_scales, self._scaled_inputs))
        return self.amplitude * k

    def from_inputs(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """:meth:`__call__` on inputs already scaled by :meth:`scale_inputs`, shape ``(n, p)``."""
        degree = {0: -1, 1: 0}.get(self.polynomial.shape[0], 1)
        z = _warp(inputs, self.warping)
        scaled = self._cross(z) @ self.weights + _polynomial(z, degree) @ self.polynomial
        return self.output_scaler.inverse(scaled)

    def std(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """GP predictive standard deviation of each coefficient, ``(n, r)`` (latent, without the white noise)."""
        if not self.has_spread:
            raise ValueError("RBF interpolation has no predictive deviation; fit a 'gp' for one.")
        from scipy.linalg import solve_triangular

        assert self.cholesky is not None and self.output_variance is not None
        k = self._cross(_warp(self.scale_inputs(np.atleast_2d(np.asarray(parameters, dtype=np.float64))), self.warping))
        v = solve_triangular(self.cholesky, k.T, lower=True, check_finite=False)
        variance = np.maximum(self.amplitude - np.sum(v**2, axis=0), 0.0)
        return np.sqrt(variance[:, None] * self.output_variance[None, :]) * self.output_scaler.scale[None, :]

    def spread(self, parameters: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        r"""Mean coefficients ``(n, r)`` and spread factors ``(n, r, r)``: the GP's independent deviations.

        The factors :math:`F` give the field's covariance :math:`\Phi F^T F \Phi^T`; here :math:`F` is the
        diagonal of :meth:`std` (the coefficients are independent a posteriori).
        """
        std = self.std(parameters)
        factors = np.zeros((*std.shape, std.shape[1]))
        idx = np.arange(std.shape[1])
        factors[:, idx, idx] = std
        return self(parameters), factors

    def to_tree(self) -> dict[str, Any]:
        """The regressor as file entries: method, kernel, hyperparameters and arrays."""
        tree: dict[str, Any] = {
            "method": self.method,
            "kernel": self.kernel,
            "input_transform": self.input_transform,
            "n_in": self.n_params,
            "n_out": self.n_coefficients,
            "amplitude": self.amplitude,
            "noise": self.noise,
            "inputs": np.ascontiguousarray(self.inputs, dtype=np.float64),
            "weights": np.ascontiguousarray(self.weights, dtype=np.float64),
            "polynomial": np.ascontiguousarray(self.polynomial, dtype=np.float64),
            "length_scales": np.ascontiguousarray(self.length_scales, dtype=np.float64),
        }
        if self.cholesky is not None and self.output_variance is not None:
            tree["cholesky"] = np.ascontiguousarray(self.cholesky, dtype=np.float64)
            tree["output_variance"] = np.ascontiguousarray(self.output_variance, dtype=np.float64)
        if self.warping is not None:
            tree["warping"] = np.ascontiguousarray(self.warping, dtype=np.float64)
        tree |= prefixed("input_scaler", self.input_scaler.to_tree())
        tree |= prefixed("output_scaler", self.output_scaler.to_tree())
        return tree

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> KernelRegressor:
        """The regressor stored by :meth:`to_tree` (entries validated first, as :func:`~fem_ml.archive.load` does)."""

        def array(name: str) -> npt.NDArray[np.float64]:
            return np.array(tree[name], dtype=np.float64)

        return cls(
            str(tree["method"]),  # type: ignore[arg-type]
            str(tree["kernel"]),
            array("inputs"),
            array("weights"),
            array("polynomial"),
            array("length_scales"),
            AffineScaler.from_tree(subtree(tree, "input_scaler")),
            AffineScaler.from_tree(subtree(tree, "output_scaler")),
            input_transform=str(tree["input_transform"]),  # type: ignore[arg-type]
            amplitude=float(tree["amplitude"]),
            noise=float(tree["noise"]),
            cholesky=array("cholesky") if "cholesky" in tree else None,
            output_variance=array("output_variance") if "output_variance" in tree else None,
            warping=array("warping") if "warping" in tree else None,
        )


def _powers(lower: npt.NDArray[np.float64], options: KernelOptions) -> list[float] | None:
    """The Box-Cox exponents of ``options`` (1: linear inputs, 0: log), or None where the exponent is searched."""
    choice, positive = options.input_transform, bool(np.all(lower > 0))
    if choice in ("log", "power") and not positive:
        raise ValueError(f"input_transform={choice!r} needs positive lower bounds for every parameter.")
    if choice == "linear" or not positive:
        return [1.0]
    if choice == "log":
        return [0.0]
    return [float(options.power)] if options.power is not None else None


def _power_search(score: Callable[[float], float], limit: float = _POWER_LIMIT) -> float:
    """The exponent of the best ``score`` (higher is better) by the climb of the module docstring.

    From the better of the log and linear inputs, a step of 1/4 towards the better neighbour while it improves
    (within ``[-limit, limit]``; the linear inputs, 1, need no warping and are a candidate for any limit), then the
    points 1/8 either side; every exponent is scored once.
    """
    scores: dict[float, float] = {}

    def at(power: float) -> float:
        if power not in scores:
            scores[power] = score(power)
        return scores[power]

    lo, hi = -limit, limit
    best = max(_POWER_START, key=at)
    while neighbours := [q for q in (best - _POWER_STEP, best + _POWER_STEP) if lo <= q <= hi]:
        better = max(neighbours, key=at)
        if not at(better) > at(best):
            break
        best = better
    return max([best, *(q for q in (best - _POWER_STEP / 2, best + _POWER_STEP / 2) if lo <= q <= hi)], key=at)


def _search_limit(lower: npt.NDArray[np.float64], upper: npt.NDArray[np.float64]) -> float:
    """The largest exponent searched: 2, or less where log bounds this wide would warp the inputs too much."""
    return min(_POWER_LIMIT, MAX_WARPING / float(np.max(0.5 * np.log(upper / lower))))


@dataclass(frozen=True)
class _Inputs:
    """The training data for one exponent: scalers, scaled inputs, their warping rates and scaled outputs."""

    transform: Literal["linear", "log"]
    in_scaler: AffineScaler
    out_scaler: AffineScaler
    x: npt.NDArray[np.float64]
    rates: npt.NDArray[np.float64] | None
    z: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]


def _inputs(
    parameters: npt.NDArray[np.float64],
    coefficients: npt.NDArray[np.float64],
    lower: npt.NDArray[np.float64],
    upper: npt.NDArray[np.float64],
    power: float,
) -> _Inputs:
    r"""The data for the exponent ``power``: linear inputs for 1, else log inputs warped by :math:`a = \lambda h`."""
    transform: Literal["linear", "log"] = "linear" if power == 1.0 else "log"
    lo, hi = (np.log(lower), np.log(upper)) if transform == "log" else (lower, upper)
    rms = float(np.sqrt(np.mean(np.var(coefficients, axis=0) * coefficients.shape[1])))
    scale = np.full(coefficients.shape[1], rms if rms > 1e-300 else 1.0)
    in_scaler, out_scaler = AffineScaler.from_bounds(lo, hi), AffineScaler(coefficients.mean(axis=0), scale)
    x = in_scaler.transform(np.log(parameters) if transform == "log" else parameters)
    rates = power * in_scaler.scale if transform == "log" and power != 0.0 else None
    if rates is not None and not np.all(np.abs(rates) <= MAX_WARPING):
        raise ValueError(f"The exponent {power} over bounds this wide warps the inputs beyond +-{MAX_WARPING}.")
    return _Inputs(transform, in_scaler, out_scaler, x, rates, _warp(x, rates), out_scaler.transform(coefficients))


def _rbf_candidate(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    c: npt.NDArray[np.float64],
    out_scale: npt.NDArray[np.float64],
    kernel: str,
    smoothing: float,
) -> tuple[float, npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
    """Leave-one-out mean relative coefficient error, weights, polynomial and diagonal of one RBF fit."""
    n = x.shape[0]
    A = kernel_values(kernel, _distances(x, x))
    P = _polynomial(x, 1)
    lam = smoothing * max(float(np.max(np.abs(A))), 1e-300)
    m = P.shape[1]
    M = np.block([[A + lam * np.eye(n), P], [P.T, np.zeros((m, m))]])
    try:
        inverse = np.linalg.inv(M)
    except np.linalg.LinAlgError:
        return math.inf, np.empty(0), np.empty(0), lam
    coef = inverse[:, :n] @ y
    diag = np.diag(inverse)[:n]
    if not np.all(np.isfinite(coef)) or np.any(diag == 0):
        return math.inf, coef[:n], coef[n:], lam
    loo = coef[:n] / diag[:, None] * out_scale[None, :]
    rel = np.linalg.norm(loo, axis=1) / np.maximum(np.linalg.norm(c, axis=1), 1e-300)
    return float(np.mean(rel)), coef[:n], coef[n:], lam


def _fit_rbf(
    parameters: npt.NDArray[np.float64],
    coefficients: npt.NDArray[np.float64],
    lower: npt.NDArray[np.float64],
    upper: npt.NDArray[np.float64],
    options: KernelOptions,
) -> KernelRegressor:
    n, p = parameters.shape
    if n < p + 2:
        raise ValueError(f"RBF interpolation with a linear tail needs at least {p + 2} points, got {n}.")
    kernels = RBF_KERNELS if options.kernel == "auto" else (options.kernel,)
    smoothings = _SMOOTHING if options.smoothing is None else (options.smoothing,)
    fits: dict[float, tuple[float, KernelRegressor | None]] = {}

    def best_at(power: float) -> tuple[float, KernelRegressor | None]:
        """The kernel and smoothing of the least leave-one-out error at the exponent ``power``."""
        if power in fits:
            return fits[power]
        data = _inputs(parameters, coefficients, lower, upper, power)
        best: tuple[float, KernelRegressor | None] = (math.inf, None)
        for kernel in kernels:
            for s in smoothings:
                loo, w, b, lam = _rbf_candidate(data.z, data.y, coefficients, data.out_scaler.scale, kernel, s)
                if math.isfinite(loo) and loo < best[0]:
                    regressor = KernelRegressor(
                        "rbf", kernel, data.x, w, b, np.ones(p), data.in_scaler, data.out_scaler,
                        input_transform=data.transform, noise=lam, warping=data.rates,
                    )  # fmt: skip
                    best = (loo, regressor)
        fits[power] = best
        return best

    powers = _powers(lower, options)
    if powers is None:
        powers = [_power_search(lambda q: -best_at(q)[0], _search_limit(lower, upper))]
    loo, regressor = min((best_at(q) for q in powers), key=lambda fit: fit[0])
    if regressor is None or not math.isfinite(loo):
        raise ValueError("RBF interpolation failed for every kernel and smoothing (singular systems).")
    logger.info("RBF: %s, leave-one-out error %.3e", regressor.describe(), loo)
    return regressor


def _converged_lbfgs(
    objective: Callable[..., tuple[float, npt.NDArray[np.float64]]],
    start: npt.NDArray[np.float64],
    bounds: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], float]:
    """Maximize the log marginal likelihood to convergence (scikit-learn's optimizer protocol).

    L-BFGS-B, then :func:`_newton_polish`. L-BFGS-B stops where its line search no longer sees the objective
    decrease: the objective's rounding (about 1e-9 absolute at a few hundred, through kernel matrices of condition
    1e7 to 1e8) hides the last steps, and it ended with gradients of about 1e-5 (the test data: "ABNORMAL" line
    search), hyperparameters a few 1e-6 from the optimum. There, the last digits of the data (which differ between
    rank counts) moved the held-out predictions by up to 1e-6 (log inputs) to 5e-5 (exponent searched) relative to
    their error. The polish's Newton steps need only the gradient, which is accurate to about 1e-9; they bring the
    hyperparameters within about 1e-9 of the optimum, and the fit is the same on any rank count to that level.
    """
    from scipy.optimize import minimize

    result = minimize(
        objective, start, method="L-BFGS-B", jac=True, bounds=bounds,
        options={"maxiter": 15000, "gtol": 1e-12, "ftol": 1e-15},
    )  # fmt: skip
    return _newton_polish(objective, np.asarray(result.x, dtype=np.float64), bounds)


def _newton_polish(
    objective: Callable[..., tuple[float, npt.NDArray[np.float64]]],
    x: npt.NDArray[np.float64],
    bounds: npt.NDArray[np.float64],
    *,
    iterations: int = 8,
    step: float = 1e-4,
) -> tuple[npt.NDArray[np.float64], float]:
    """Newton steps on the gradient of ``objective`` (minimized) from a point near its minimum, within ``bounds``.

    The variables at a bound stay there (L-BFGS-B's active set), as do those that a step cuts at a bound. The
    Hessian of the others is the one-sided difference of the analytical gradient at the starting point (``step`` in
    the log hyperparameters, backwards where a forward step would leave the bounds: rounding and truncation errors
    of about 1e-4 relative), computed once and kept for
    every step (simplified Newton, one gradient per step: its error makes the convergence linear instead of
    quadratic, and the point it converges to has a zero gradient all the same). Steps are taken only while that Hessian
    is positive definite, and kept only while they shrink the gradient of the free variables without raising the
    objective beyond its rounding. One Hessian costs as many gradients as there are free variables; with the
    steps, about a seventh of L-BFGS-B's gradients on the 3 x 3 thermal block of ``benchmarks/regressors.py``.

    Args:
        objective: Returns the objective and its gradient at a point (scikit-learn's ``obj_func``).
        x: The starting point (L-BFGS-B's result).
        bounds: Lower and upper bound of each variable, ``(m, 2)``.
        iterations: Most Newton steps.
        step: The difference step of the Hessian.

    Returns:
        The point and the objective there.
    """
    lower, upper = bounds[:, 0], bounds[:, 1]
    f, g = objective(x)
    free = np.flatnonzero((x > lower) & (x < upper))
    if free.size == 0:
        return x, float(f)
    hessian = np.empty((free.size, free.size))
    for j, i in enumerate(free):
        e = np.zeros_like(x)
        e[i] = step if x[i] + step <= upper[i] else -step
        hessian[:, j] = (objective(x + e)[1][free] - g[free]) / e[i]
    hessian = 0.5 * (hessian + hessian.T)
    if not np.isfinite(hessian).all():
        return x, float(f)
    start, taken = float(np.linalg.norm(g[free])), 0
    for _ in range(iterations):
        inside = (x[free] > lower[free]) & (x[free] < upper[free])
        moving = free[inside]
        if moving.size == 0:
            break
        try:
            factor = np.linalg.cholesky(hessian[np.ix_(inside, inside)])
        except np.linalg.LinAlgError:
            break
        candidate = x.copy()
        candidate[moving] -= np.linalg.solve(factor.T, np.linalg.solve(factor, g[moving]))
        candidate = np.clip(candidate, lower, upper)
        f_new, g_new = objective(candidate)
        if not (np.linalg.norm(g_new[moving]) < np.linalg.norm(g[moving]) and f_new <= f + 1e-10 * (1.0 + abs(f))):
            break
        x, f, g, taken = candidate, f_new, g_new, taken + 1
    final = float(np.linalg.norm(g[(x > lower) & (x < upper)]))
    logger.debug("GP hyperparameters polished: %d Newton steps, free gradient %.2e -> %.2e", taken, start, final)
    return x, float(f)


def _gp_kernel(name: str, p: int) -> Any:
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Matern, WhiteKernel

    scales, bounds = np.ones(p), (1e-2, 1e3)
    radial = (
        RBF(scales, bounds) if name == "gaussian" else Matern(scales, bounds, nu=1.5 if name == "matern32" else 2.5)
    )
    return ConstantKernel(1.0, (1e-3, 1e3)) * radial + WhiteKernel(1e-6, (1e-12, 1e-1))


def _gp_candidate(
    data: _Inputs, kernel: str, options: KernelOptions, restarts: int
) -> tuple[float, KernelRegressor | None]:
    """The log marginal likelihood and regressor of one GP fit (``-inf`` and None if its matrix is singular)."""
    import warnings

    from scipy.linalg import cho_solve
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor

    x, y = data.z, data.y
    n, p = x.shape
    gp = GaussianProcessRegressor(
        _gp_kernel(kernel, p), alpha=_JITTER, n_restarts_optimizer=restarts, random_state=options.seed,
        optimizer=_converged_lbfgs,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(x, y)
    lml = float(gp.log_marginal_likelihood_value_)
    fitted = gp.kernel_
    amplitude = float(fitted.k1.k1.constant_value)
    scales = np.broadcast_to(np.asarray(fitted.k1.k2.length_scale, dtype=np.float64), (p,)).copy()
    noise = float(fitted.k2.noise_level) + _JITTER
    K = amplitude * kernel_values(kernel, _distances(x / scales, x / scales)) + noise * np.eye(n)
    try:
        L = np.linalg.cholesky(K)
    except np.linalg.LinAlgError:
        return -math.inf, None
    weights = cho_solve((L, True), y, check_finite=False)
    variance = np.sum(y * weights, axis=0) / n  # f_k of the module docstring
    regressor = KernelRegressor(
        "gp", kernel, data.x, weights, np.zeros((0, y.shape[1])), scales, data.in_scaler, data.out_scaler,
        input_transform=data.transform, amplitude=amplitude, noise=noise, cholesky=L,
        output_variance=np.maximum(variance, 0.0), warping=data.rates,
    )  # fmt: skip
    logger.info("GP candidate: %s, log marginal likelihood %.6g", regressor.describe(), lml)
    return lml, regressor


def _fit_gp(
    parameters: npt.NDArray[np.float64],
    coefficients: npt.NDArray[np.float64],
    lower: npt.NDArray[np.float64],
    upper: npt.NDArray[np.float64],
    options: KernelOptions,
) -> KernelRegressor:
    kernels = GP_KERNELS if options.kernel == "auto" else (options.kernel,)
    fits: dict[tuple[float, str, int], tuple[float, KernelRegressor | None]] = {}
    data: dict[float, _Inputs] = {}

    def fit(power: float, kernel: str, restarts: int) -> tuple[float, KernelRegressor | None]:
        if (power, kernel, restarts) not in fits:
            if power not in data:
                data[power] = _inputs(parameters, coefficients, lower, upper, power)
            fits[power, kernel, restarts] = _gp_candidate(data[power], kernel, options, restarts)
        return fits[power, kernel, restarts]

    powers = _powers(lower, options)
    if powers is None:
        # The search fits from the kernel's initial hyperparameters only; the restarts are for the final candidates.
        search_kernel = _SEARCH_KERNEL if options.kernel == "auto" else options.kernel
        powers = [_power_search(lambda q: fit(q, search_kernel, 0)[0], _search_limit(lower, upper))]
        logger.info("GP: inputs' exponent %g (marginal likelihood, %s kernel)", powers[0], search_kernel)
    restarts = int(options.restarts)
    _, regressor = max((fit(q, k, restarts) for q in powers for k in kernels), key=lambda f: f[0])
    if regressor is None:
        raise ValueError("Gaussian-process regression failed for every kernel (kernel matrix not positive definite).")
    return regressor


def fit_kernel(
    parameters: npt.NDArray[np.float64],
    coefficients: npt.NDArray[np.float64],
    lower: npt.ArrayLike,
    upper: npt.ArrayLike,
    *,
    options: KernelOptions,
    comm: MPI.Comm,
) -> KernelRegressor:
    """Fit a kernel regressor from parameters to coefficients on rank 0 and share it with every rank (collective).

    Args:
        parameters: Parameter points ``(n, p)``, the same on every rank.
        coefficients: Target coefficients ``(n, r)``, the same on every rank.
        lower: Lower parameter bounds ``(p,)``; the inputs are scaled from the bounds.
        upper: Upper parameter bounds ``(p,)``.
        options: The method, kernel and input transform.
        comm: Communicator.

    Returns:
        The regressor, identical on every rank.

    Raises:
        ValueError: on every rank, for inconsistent shapes, too few points or a fit that failed.
    """
    start = time.perf_counter()
    tree: dict[str, Any] | None = None
    with collectively(comm):
        if parameters.ndim != 2 or coefficients.ndim != 2 or parameters.shape[0] != coefficients.shape[0]:
            raise ValueError(f"{parameters.shape} parameter points but {coefficients.shape} coefficients.")
        lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        p = parameters.shape[1]
        if lo.shape != (p,) or hi.shape != (p,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(f"Bounds must be {p} finite values each, got {lo.shape} and {hi.shape}.")
        if not np.all(hi > lo):
            raise ValueError(f"Each upper bound must exceed its lower bound, got {lo} and {hi}.")
        if comm.rank == 0:
            fit = _fit_gp if options.method == "gp" else _fit_rbf
            tree = fit(
                np.asarray(parameters, np.float64), np.asarray(coefficients, np.float64), lo, hi, options
            ).to_tree()
    regressor = KernelRegressor.from_tree(comm.bcast(tree, root=0))
    logger.info("Kernel fit: %s in %.2f s", regressor.describe(), time.perf_counter() - start)
    return regressor
