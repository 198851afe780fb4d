# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Estimation: the parameters behind observations, by optimization through the differentiable surrogate.

:func:`~fem_ml.inverse.identify` minimizes

.. math::
    J(\mu) = \tfrac12 \big\| \Sigma^{-1/2} (B c(\mu) - d) \big\|^2
    + \tfrac12 \big\| \Sigma_0^{-1/2} (\mu - \mu_0) \big\|^2

(the second term only with a :class:`~fem_ml.inverse.Gaussian` prior) over the parameter box, by SciPy's L-BFGS-B
on the exact gradient of the surrogate network (its stacked forward pass and Jacobian in NumPy,
:class:`~fem_ml._stacked.StackedMLP`), from several starting points. It reports the Laplace (Gauss-Newton)
covariance :math:`(J_\mu^T \Sigma^{-1} J_\mu + \Sigma_0^{-1})^{-1}`, :math:`J_\mu = B\,\partial c / \partial \mu`,
at the estimate.

**The box map.** The optimizer works on an unconstrained :math:`z \in \mathbb{R}^p` mapped into the open search
box :math:`[a, b]` by :math:`\mu = a + (b - a)\,\mathrm{sigmoid}(z)`, or on :math:`\log \mu` between the
log-bounds when the network takes log-scaled inputs. Every iterate is therefore inside the bounds; an estimate at a
bound is approached asymptotically (the gradient in :math:`z` vanishes there).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
import scipy.optimize
from dolfinx import fem
from scipy.special import expit

from fem_ml._mpi import collectively, run_distributed
from fem_ml._stacked import scale_inputs_jacobian
from fem_ml.inverse._checks import check_same_on_all_ranks, positive_std
from fem_ml.inverse.observations import Observations
from fem_ml.parameters import ParameterSpace
from fem_ml.surrogate import Surrogate

__all__ = ["Gaussian", "IdentificationResult", "Verification", "identify", "laplace_covariance"]

logger = logging.getLogger(__name__)

#: Starting points are drawn in the inner part ``[margin, 1 - margin]`` of the unit box (see :func:`identify`).
_START_MARGIN = 0.05


@dataclass(frozen=True)
class Gaussian:
    r"""An independent Gaussian prior :math:`\mu_i \sim \mathcal{N}(m_i, s_i^2)` (a Tikhonov term).

    Attributes:
        mean: Prior mean: ``(p,)`` or ``{name: value}``.
        std: Prior standard deviation: one positive number or ``(p,)`` (or ``{name: value}``).
    """

    mean: npt.ArrayLike | Mapping[str, float]
    std: npt.ArrayLike | Mapping[str, float]

    def arrays(self, space: ParameterSpace) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The mean and the standard deviation as ``(p,)`` arrays for ``space``; ValueError if invalid (local)."""
        mean = space.validate(self.mean, expected=1, check_bounds=False)[0]  # type: ignore[arg-type]
        if isinstance(self.std, Mapping):
            std_values: npt.ArrayLike = space.validate(self.std, expected=1, check_bounds=False)[0]
        else:
            std_values = self.std
        return mean, positive_std(std_values, (space.dim,), "The prior's std")


@dataclass(frozen=True)
class Verification:
    """One full solve at the estimate.

    Attributes:
        misfit: Data misfit of the solved field, observed by its own evaluation (not through the basis).
        surrogate_misfit: Data misfit of the surrogate at the estimate (the same as the result's ``misfit``).
        time_s: Wall time of the solve and its observation.
    """

    misfit: float
    surrogate_misfit: float
    time_s: float


@dataclass(frozen=True)
class IdentificationResult:
    r"""The outcome of :func:`identify`; the same on every rank.

    Attributes:
        names: Parameter names.
        estimate: The estimate :math:`\hat\mu`, shape ``(p,)``.
        covariance: Laplace (Gauss-Newton) covariance :math:`(J^T \Sigma^{-1} J + \Sigma_0^{-1})^{-1}`, ``(p, p)``.
        std: Square roots of its diagonal, ``(p,)``.
        misfit: Data misfit :math:`\Phi(c(\hat\mu))` of the surrogate.
        objective: Misfit plus prior term at the estimate.
        predicted: Predicted observations :math:`B c(\hat\mu)`, shape ``(k,)``.
        n_surrogate_calls: Forward evaluations of the surrogate network, all starts and the Jacobian together.
        starts: Starting points, ``(n_starts, p)``.
        start_estimates: The point each start converged to, ``(n_starts, p)``.
        start_objectives: The objective there, ``(n_starts,)``.
        n_iterations: L-BFGS iterations of each start, ``(n_starts,)``.
        time_s: Wall time of the identification (without the verification solve).
        lower: Lower bounds of the search, ``(p,)``.
        upper: Upper bounds of the search, ``(p,)``.
        prior: The prior used, if any.
        verification: The verification solve, if ``verify`` was given.
    """

    names: tuple[str, ...]
    estimate: npt.NDArray[np.float64]
    covariance: npt.NDArray[np.float64]
    std: npt.NDArray[np.float64]
    misfit: float
    objective: float
    predicted: npt.NDArray[np.float64]
    n_surrogate_calls: int
    starts: npt.NDArray[np.float64]
    start_estimates: npt.NDArray[np.float64]
    start_objectives: npt.NDArray[np.float64]
    n_iterations: npt.NDArray[np.int64]
    time_s: float
    lower: npt.NDArray[np.float64]
    upper: npt.NDArray[np.float64]
    prior: Gaussian | None = None
    verification: Verification | None = None

    @property
    def estimate_dict(self) -> dict[str, float]:
        """The estimate as ``{name: value}``."""
        return {n: float(v) for n, v in zip(self.names, self.estimate, strict=True)}

    @property
    def std_dict(self) -> dict[str, float]:
        """The standard deviations as ``{name: value}``."""
        return {n: float(v) for n, v in zip(self.names, self.std, strict=True)}


class _Posterior:
    r"""The surrogate's network (float64, ensemble stacked, in NumPy) and the objective :math:`J` with its gradient.

    The network is the stacked forward pass of its members (:class:`~fem_ml._stacked.StackedMLP`); the mean over
    the members is the ensemble prediction, exactly as :class:`~fem_ml.networks.CoefficientNetwork` computes it,
    times the factor of its :class:`~fem_ml.networks.NormModel` if it has one.
    Derivatives are exact: the forward-mode Jacobian of the pass (:meth:`~fem_ml._stacked.StackedMLP.jacobian`)
    chained through the input scaling, the box map and the affine maps after the network.

    The optimizer's objective takes a shorter path with the same value: the network's input is affine in
    :math:`s = \mathrm{sigmoid}(z)` (the box map and the input scaling compose to one affine map, also for log
    inputs, where :math:`\log` undoes the geometric map), so that map is folded into the first layer; the ensemble
    mean, the output scaling, :math:`B` and :math:`\Sigma^{-1/2}` are affine too and are folded into the last
    layer; a norm model's factor is :math:`\exp(\alpha + \beta^\top s)` in :math:`s`, applied after it (with its own
    term in the gradient). For such small networks the number of array operations is the cost, so fewer are faster.
    """

    def __init__(
        self,
        rom: Surrogate,
        observations: Observations,
        box: ParameterSpace,
        prior: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None,
    ):
        def array(a: npt.ArrayLike) -> npt.NDArray[np.float64]:
            return np.array(a, dtype=np.float64)

        network = rom.network
        self.network = network.stacked
        self.transform = network.input_transform
        self.log = self.transform == "log"
        self.in_shift, self.in_scale = array(network.input_scaler.shift), array(network.input_scaler.scale)
        self.out_shift, self.out_scale = array(network.output_scaler.shift), array(network.output_scaler.scale)
        self.norm = network.norm_model
        self.matrix = array(observations.matrix)
        self.data = array(observations.data)
        self.inv_std = 1.0 / array(observations.noise_std)
        self.prior = None if prior is None else (array(prior[0]), 1.0 / array(prior[1]))
        # The box map: unit coordinates s in (0, 1) to mu, geometric for log-scaled inputs.
        lower, upper = box.lower, box.upper
        self.geometric = self.log and bool(np.all(lower > 0))
        self.lo = array(np.log(lower) if self.geometric else lower)
        self.width = array(np.log(upper) - np.log(lower) if self.geometric else upper - lower)
        self.n_calls = 0
        self.folded = self.geometric == self.log
        if self.folded:
            weights, biases = self.network.weights, self.network.biases
            gain, offset = self.width / self.in_scale, (self.lo - self.in_shift) / self.in_scale
            first = (gain[None, :, None] * weights[0], biases[0] + offset[None, None, :] @ weights[0])
            self.folded_hidden = dataclasses.replace(
                self.network, weights=(first[0], *weights[1:]), biases=(first[1], *biases[1:])
            )
            to_residual = self.out_scale[:, None] * self.matrix.T * self.inv_std[None, :]  # (r, k)
            self.last = (weights[-1] @ to_residual).reshape(-1, self.matrix.shape[0]).T / weights[-1].shape[0]
            c0 = biases[-1].mean(axis=0)[0] * self.out_scale + self.out_shift
            self.offset = (self.matrix @ c0 - self.data) * self.inv_std
            if self.norm is not None:  # the factor exp(w0 + w . x) with x = gain * s + offset: exp(alpha + beta . s)
                self.norm_folded = (self.norm.intercept + float(offset @ self.norm.slopes), gain * self.norm.slopes)
                self.c0_residual = (self.matrix @ c0) * self.inv_std

    def coefficients(self, mu: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Coefficients ``(n, r)`` of parameters ``(n, p)``: transform, scale, ensemble mean, unscale, factor."""
        self.n_calls += mu.shape[0]
        x = np.log(mu) if self.log else mu
        inputs = (x - self.in_shift) / self.in_scale
        c = self.network(inputs).mean(axis=0) * self.out_scale + self.out_shift
        return c if self.norm is None else c * self.norm(inputs)[:, None]

    def coefficient_jacobian(self, mu: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        r""":math:`\partial c / \partial \mu` at one point ``(p,)``, ``(r, p)``: the network's times the scaling's.

        With a norm model, :math:`c = f(x)\, g(x)` and :math:`\partial c / \partial x = f\,(g' + g\, w^\top)`.
        """
        self.n_calls += 1
        point = mu[None]
        x = np.log(point) if self.log else point
        inputs = (x - self.in_shift) / self.in_scale
        outputs, jacobian = self.network.jacobian(inputs)
        scaling = scale_inputs_jacobian(point, self.transform, self.in_scale)[0]
        derivative = jacobian.mean(axis=0)[0] * self.out_scale[:, None]  # d c / d x, (r, p)
        if self.norm is not None:  # c = f(x) g(x): f g' + g f', f' = f w
            factor = float(self.norm(inputs)[0])
            g = outputs.mean(axis=0)[0] * self.out_scale + self.out_shift
            derivative = factor * (derivative + g[:, None] * self.norm.slopes[None, :])
        return derivative * scaling[None, :]

    def to_parameters(self, z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        r"""The box map :math:`\mu = a + (b - a)\,\mathrm{sigmoid}(z)` (on :math:`\log\mu` for log inputs)."""
        y = self.lo + self.width * expit(z)
        return np.exp(y) if self.geometric else y

    def _parameters_derivative(
        self, s: npt.NDArray[np.float64], mu: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        r""":math:`\partial \mu / \partial z` (diagonal) at :math:`s = \mathrm{sigmoid}(z)`."""
        ds = self.width * s * (1.0 - s)
        return mu * ds if self.geometric else ds

    def to_unconstrained(self, unit: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The :math:`z` of points given in unit coordinates ``(0, 1)`` of the box."""
        return np.log(unit) - np.log1p(-unit)

    def to_unit(self, mu: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Unit coordinates of parameter points."""
        y = np.log(mu) if self.geometric else mu
        return (y - self.lo) / self.width

    def objective(self, mu: npt.NDArray[np.float64]) -> float:
        """Misfit (without the constant residual) plus prior term of one point ``(p,)``."""
        weighted = (self.coefficients(mu[None])[0] @ self.matrix.T - self.data) * self.inv_std
        return 0.5 * float(weighted @ weighted) + self._prior_value(mu)

    def _prior_value(self, mu: npt.NDArray[np.float64]) -> float:
        if self.prior is None:
            return 0.0
        weighted = (mu - self.prior[0]) * self.prior[1]
        return 0.5 * float(weighted @ weighted)

    def _prior_gradient(self, mu: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        assert self.prior is not None
        return (mu - self.prior[0]) * self.prior[1] ** 2

    def objective_z(self, z: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        """:meth:`objective` at ``to_parameters(z)`` and its gradient in :math:`z`, through the folded layers."""
        s = expit(z)
        if self.folded:
            self.n_calls += 1
            h, pullback = self.folded_hidden.hidden_pullback(s[None])  # h: (m, 1, w)
            if self.norm is None:
                weighted = self.offset + self.last @ h.reshape(-1)
                gradient_s = pullback((weighted @ self.last).reshape(h.shape)).sum(axis=(0, 1))  # dJ/dh back to s
            else:  # weighted = f (B c_g - ...) : f = exp(alpha + beta . s) times the residual of the unnormed c
                alpha, beta = self.norm_folded
                factor = math.exp(alpha + float(beta @ s))
                unnormed = self.c0_residual + self.last @ h.reshape(-1)
                weighted = factor * unnormed - self.data * self.inv_std
                gradient_s = pullback((factor * (weighted @ self.last)).reshape(h.shape)).sum(axis=(0, 1))
                gradient_s = gradient_s + float(weighted @ unnormed) * factor * beta
            gradient_z = gradient_s * s * (1.0 - s)
        else:
            mu = self.to_parameters(z)
            weighted = (self.coefficients(mu[None])[0] @ self.matrix.T - self.data) * self.inv_std
            jacobian = (self.matrix * self.inv_std[:, None]) @ self.coefficient_jacobian(mu)  # (k, p)
            gradient_z = (jacobian.T @ weighted) * self._parameters_derivative(s, mu)
        value = 0.5 * float(weighted @ weighted)
        if self.prior is not None:
            mu = self.to_parameters(z)
            value += self._prior_value(mu)
            gradient_z = gradient_z + self._prior_gradient(mu) * self._parameters_derivative(s, mu)
        return value, gradient_z

    def minimize(
        self, z0: npt.NDArray[np.float64], max_iterations: int, tolerance_grad: float
    ) -> tuple[npt.NDArray[np.float64], float, int, int]:
        """L-BFGS from ``z0``; returns the parameters reached, the objective, forward calls and iterations."""
        calls_before = self.n_calls
        solution = scipy.optimize.minimize(
            self.objective_z,
            np.array(z0, dtype=np.float64),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iterations, "maxcor": 20, "gtol": tolerance_grad, "ftol": 1e-13},
        )
        mu = self.to_parameters(solution.x)
        return mu, self.objective(mu), self.n_calls - calls_before, int(solution.nit)

    def jacobian(self, mu: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        r""":math:`B\, \partial c / \partial \mu` at one point, ``(k, p)``, exact."""
        return self.matrix @ self.coefficient_jacobian(mu)

    def starting_points(self, initial: npt.NDArray[np.float64], n_starts: int, seed: int) -> npt.NDArray[np.float64]:
        """The unconstrained :math:`z` of the starts: ``initial`` (moved off the bounds), then LHS points."""
        from scipy.stats import qmc  # a second to import: not at the import of fem_ml

        unit = np.clip(self.to_unit(initial), 1e-9, 1 - 1e-9)
        if n_starts > 0:
            lhs = qmc.LatinHypercube(d=initial.shape[1], rng=np.random.default_rng(seed)).random(n_starts)
            unit = np.vstack([unit, _START_MARGIN + (1 - 2 * _START_MARGIN) * lhs])
        return self.to_unconstrained(unit)


def _search_box(rom: Surrogate, bounds: Mapping[str, tuple[float, float]] | None) -> ParameterSpace:
    """The surrogate's parameter box with the given parameters' bounds replaced by narrower ones (local)."""
    space = rom.space
    if bounds is None:
        return space
    if not isinstance(bounds, Mapping):
        raise ValueError(f"bounds must be a mapping {{name: (lower, upper)}}, got {type(bounds).__name__}.")
    unknown = sorted(set(bounds) - set(space.names))
    if unknown:
        raise ValueError(f"bounds name unknown parameters {unknown}; the surrogate has {space.names}.")
    box = ParameterSpace({name: bounds.get(name, space.bounds[name]) for name in space.names})
    outside = (box.lower < space.lower) | (box.upper > space.upper)
    if outside.any():
        name = space.names[int(np.argmax(outside))]
        raise ValueError(f"bounds of {name!r}, {box.bounds[name]}, reach outside the surrogate's {space.bounds[name]}.")
    return box


def laplace_covariance(
    jacobian: npt.NDArray[np.float64], noise_std: npt.NDArray[np.float64], prior_std: npt.NDArray[np.float64] | None
) -> npt.NDArray[np.float64]:
    r"""The Gauss-Newton (Laplace) covariance :math:`(J^T \Sigma^{-1} J + \Sigma_0^{-1})^{-1}`, symmetric (local).

    Args:
        jacobian: :math:`J = B\, \partial c / \partial \mu`, ``(k, p)``.
        noise_std: :math:`\sigma_i`, ``(k,)``.
        prior_std: The prior's standard deviations ``(p,)``, or None without a prior.

    Returns:
        The covariance ``(p, p)``; a pseudo-inverse (with a logged warning) when the Hessian is singular, i.e.
        when some parameter is not identified by the data.
    """
    weighted = jacobian / noise_std[:, None]
    hessian = weighted.T @ weighted
    if prior_std is not None:
        hessian += np.diag(1.0 / prior_std**2)
    hessian = 0.5 * (hessian + hessian.T)
    eigenvalues, vectors = np.linalg.eigh(hessian)
    floor = 1e-12 * max(float(eigenvalues[-1]), 1e-300)
    if eigenvalues[0] <= floor:
        logger.warning("The Gauss-Newton Hessian is singular: some parameter is not identified by the data.")
        inverse = np.where(eigenvalues > floor, 1.0 / np.where(eigenvalues > floor, eigenvalues, 1.0), 0.0)
    else:
        inverse = 1.0 / eigenvalues
    covariance = (vectors * inverse) @ vectors.T
    return 0.5 * (covariance + covariance.T)


@dataclass(frozen=True)
class _Inputs:
    """The checked inputs of :func:`identify`."""

    box: ParameterSpace
    prior: Gaussian | None
    prior_arrays: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None
    initial: npt.NDArray[np.float64]
    n_starts: int
    max_iterations: int
    tolerance_grad: float


def _check_inputs(
    rom: Surrogate,
    observations: Observations,
    *,
    n_starts: int,
    initial: npt.ArrayLike | None,
    bounds: Mapping[str, tuple[float, float]] | None,
    prior: Gaussian | None,
    max_iterations: int,
    tolerance_grad: float,
) -> _Inputs:
    """The inputs of :func:`identify`, checked; ValueError for a bad one (local)."""
    if not isinstance(observations, Observations):
        raise ValueError(f"Expected fem_ml.Observations (Sensors.observe, observe_field), got {type(observations)}.")
    observations.check_surrogate(rom)
    box = _search_box(rom, bounds)
    if prior is not None and not isinstance(prior, Gaussian):
        raise ValueError(f"prior must be None or fem_ml.Gaussian, got {type(prior).__name__}.")
    if int(n_starts) != n_starts or n_starts < 0:
        raise ValueError(f"n_starts must be a non-negative int, got {n_starts!r}.")
    if int(max_iterations) != max_iterations or max_iterations < 1:
        raise ValueError(f"max_iterations must be a positive int, got {max_iterations!r}.")
    if not (tolerance_grad > 0 and math.isfinite(tolerance_grad)):
        raise ValueError(f"tolerance_grad must be positive, got {tolerance_grad!r}.")
    extra = np.zeros((0, box.dim)) if initial is None else box.validate(initial)
    if extra.shape[0] + n_starts == 0:
        raise ValueError("No starting point: give n_starts >= 1 or initial points.")
    prior_arrays = None if prior is None else prior.arrays(rom.space)
    return _Inputs(box, prior, prior_arrays, extra, int(n_starts), int(max_iterations), float(tolerance_grad))


def identify(
    rom: Surrogate,
    observations: Observations,
    *,
    n_starts: int = 8,
    initial: npt.ArrayLike | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    prior: Gaussian | None = None,
    seed: int = 0,
    max_iterations: int = 200,
    tolerance_grad: float = 1e-9,
    verify: Callable[[npt.NDArray[np.float64]], fem.Function] | None = None,
) -> IdentificationResult:
    r"""Estimate the parameters from observations through the differentiable surrogate (collective).

    Minimizes :math:`J(\mu) = \frac12 \|\Sigma^{-1/2}(B c(\mu) - d)\|^2 + \frac12\|\Sigma_0^{-1/2}(\mu -
    \mu_0)\|^2` (prior term only with ``prior``) by SciPy's L-BFGS-B with the exact gradient of the surrogate
    network, evaluated in float64 in NumPy by its stacked forward pass and Jacobian.

    **Bounds.** The search box :math:`[a, b]` is the surrogate's parameter box, or a narrower one given by
    ``bounds`` (e.g. to keep away from the edges of the training box, where networks are least accurate). Every
    iterate is inside it (see the box map in the module's description).

    **Starts.** The points in ``initial``, then ``n_starts`` Latin-hypercube points (seeded by ``seed``) of the
    inner box :math:`[0.05, 0.95]^p` in the unit coordinates of the map. Starts run independently and are spread
    over the ranks; the start with the lowest objective (the first one among equals) gives the estimate, so the
    result does not depend on the rank count. Each start costs a few milliseconds: the objective and its gradient
    are a few NumPy products per evaluation, without torch.

    **Uncertainty.** The Laplace approximation of the posterior at :math:`\hat\mu` has the Gauss-Newton
    covariance :func:`laplace_covariance` with :math:`J_\mu = B\, \partial c / \partial\mu` (the network's exact
    Jacobian, in NumPy), in the parameters' own units.

    Args:
        rom: The surrogate.
        observations: From :meth:`~fem_ml.inverse.Sensors.observe` or :func:`~fem_ml.inverse.observe_field` for
            this surrogate.
        n_starts: Number of Latin-hypercube starts.
        initial: Extra starting points ``(n, p)`` (or one point), tried first; inside the bounds.
        bounds: Narrower bounds ``{name: (lower, upper)}`` for some or all parameters (default: the surrogate's).
        prior: Optional :class:`Gaussian` prior on the parameters.
        seed: Seed of the starting points.
        max_iterations: Maximum L-BFGS iterations per start.
        tolerance_grad: L-BFGS stops when every component of the gradient in :math:`z` is below this.
        verify: ``solve(mu) -> Function`` on the surrogate's space: one full solve at the estimate, whose data
            misfit (observed by the Function's own evaluation) is reported in ``verification``.

    Returns:
        The estimate, its misfit and covariance, and the bookkeeping of the starts; the same on every rank.

    Raises:
        ValueError: on every rank for observations of another surrogate, a bad prior, bad starting points or
            option values, or inputs that differ between ranks.
    """
    start_time = time.perf_counter()
    comm = rom.V.mesh.comm if isinstance(rom, Surrogate) else MPI.COMM_WORLD
    with collectively(comm):
        inputs = _check_inputs(
            rom, observations, n_starts=n_starts, initial=initial, bounds=bounds, prior=prior,
            max_iterations=max_iterations, tolerance_grad=tolerance_grad,
        )  # fmt: skip
    check_same_on_all_ranks(
        comm, "The inputs of identify (observations, starts, bounds, prior, seed or options)", inputs, seed,
        observations.matrix, observations.data, observations.noise_std, observations.residual,
    )  # fmt: skip
    model = _Posterior(rom, observations, inputs.box, inputs.prior_arrays)
    z_starts = model.starting_points(inputs.initial, inputs.n_starts, seed)

    def task(k: int) -> Callable[[], tuple[npt.NDArray[np.float64], float, int, int]]:
        return lambda: model.minimize(z_starts[k], inputs.max_iterations, inputs.tolerance_grad)

    # Short tasks: the waiting ranks poll often, so the result is not delayed by a long sleep.
    outcomes = run_distributed(comm, [task(k) for k in range(len(z_starts))], poll_interval=2e-4)
    result = _result(rom, observations, model, inputs, z_starts, outcomes, start_time)
    result = comm.bcast(result, root=0) if comm.size > 1 else result  # rank 0's numbers everywhere, bit for bit
    logger.info("identify: estimate %s, misfit %.4g, %d surrogate calls, %.3f s", result.estimate, result.misfit,
                result.n_surrogate_calls, result.time_s)  # fmt: skip
    return result if verify is None else _verified(result, observations, verify, comm)


def _verified(
    result: IdentificationResult,
    observations: Observations,
    verify: Callable[[npt.NDArray[np.float64]], fem.Function],
    comm: MPI.Comm,
) -> IdentificationResult:
    """``result`` with the misfit of one full solve at the estimate (collective)."""
    start = time.perf_counter()
    misfit = observations.field_misfit(verify(result.estimate.copy()))
    seconds = float(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    logger.info("identify: verification solve misfit %.4g (surrogate %.4g)", misfit, result.misfit)
    return dataclasses.replace(result, verification=Verification(misfit, result.misfit, seconds))


def _result(
    rom: Surrogate,
    observations: Observations,
    model: _Posterior,
    inputs: _Inputs,
    z_starts: npt.NDArray[np.float64],
    outcomes: list[tuple[npt.NDArray[np.float64], float, int, int]],
    start_time: float,
) -> IdentificationResult:
    """The result of :func:`identify` from the outcomes of its starts: the best start, its Laplace covariance."""
    calls_before = model.n_calls  # this rank's starts are counted in the outcomes
    objectives = np.array([o[1] for o in outcomes])
    best = int(np.argmin(np.where(np.isfinite(objectives), objectives, np.inf)))
    estimate = outcomes[best][0]
    covariance = laplace_covariance(
        model.jacobian(estimate),
        observations.noise_std,
        None if inputs.prior_arrays is None else inputs.prior_arrays[1],
    )
    coefficients = model.coefficients(estimate[None])[0]
    start_points = model.to_parameters(z_starts)
    return IdentificationResult(
        names=rom.space.names,
        estimate=estimate,
        covariance=covariance,
        std=np.sqrt(np.diag(covariance)),
        misfit=observations.misfit(coefficients),
        objective=float(objectives[best]) + observations.residual,
        predicted=observations.predict(coefficients),
        n_surrogate_calls=int(sum(o[2] for o in outcomes)) + model.n_calls - calls_before,
        starts=start_points,
        start_estimates=np.array([o[0] for o in outcomes]),
        start_objectives=objectives + observations.residual,
        n_iterations=np.array([o[3] for o in outcomes], dtype=np.int64),
        time_s=time.perf_counter() - start_time,
        lower=inputs.box.lower.copy(),
        upper=inputs.box.upper.copy(),
        prior=inputs.prior,
    )
