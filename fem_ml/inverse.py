# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Inverse problems through the differentiable surrogate: observations, estimation, posterior sampling.

Observations are linear in the reduced coefficients :math:`c`: the data :math:`d \in \mathbb{R}^k` are modelled as

.. math:: d = B\, c(\mu) + e, \qquad e \sim \mathcal{N}(0, \Sigma), \quad \Sigma = \mathrm{diag}(\sigma_i^2),

where :math:`B \in \mathbb{R}^{k \times r}` is precomputed once: at sensors it holds the modes evaluated at the
sensor points (:class:`Sensors`); for a whole observed field it is a factor of the Gram matrix of the modes
(:func:`observe_field`). A misfit then costs :math:`O(kr)` besides the network, whatever the mesh size.

:func:`identify` minimizes

.. math::
    J(\mu) = \tfrac12 \big\| \Sigma^{-1/2} (B c(\mu) - d) \big\|^2
    + \tfrac12 \big\| \Sigma_0^{-1/2} (\mu - \mu_0) \big\|^2

(the second term only with a :class:`Gaussian` prior) over the parameter box, by torch's L-BFGS on the gradient
from automatic differentiation of the surrogate network, from several starting points. It reports the Laplace
(Gauss-Newton) covariance :math:`(J_\mu^T \Sigma^{-1} J_\mu + \Sigma_0^{-1})^{-1}`, :math:`J_\mu = B\,\partial
c / \partial \mu`, at the estimate. :func:`sample_posterior` draws from the surrogate posterior
:math:`\pi(\mu \mid d) \propto e^{-J(\mu)}` on the box by random-walk Metropolis.

**MPI.** The sensor matrix, data and noise are the same on every rank. The starts of :func:`identify` are spread
over the ranks (start ``k`` on rank ``k % size``); each start is deterministic, so the estimate does not depend on
the rank count, and every rank returns rank 0's result (broadcast). Only the optional verification solve uses the
distributed mesh.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
import torch
from dolfinx import fem, geometry
from dolfinx.mesh import Mesh
from scipy import linalg
from scipy.stats import qmc

from fem_ml._fem import function_from_owned, n_owned, space_mismatch
from fem_ml._mpi import check_collectively, run_distributed
from fem_ml.parameters import ParameterSpace
from fem_ml.pod import InnerProduct, PODBasis
from fem_ml.surrogate import Surrogate

__all__ = [
    "FieldObservations",
    "Gaussian",
    "IdentificationResult",
    "Observations",
    "PosteriorSamples",
    "SensorObservations",
    "Sensors",
    "Verification",
    "effective_sample_size",
    "identify",
    "observe_field",
    "sample_posterior",
]

logger = logging.getLogger(__name__)

#: Starting points are drawn in the inner part ``[margin, 1 - margin]`` of the unit box (see :func:`identify`).
_START_MARGIN = 0.05


def _basis_of(source: Surrogate | PODBasis) -> PODBasis:
    return source.basis if isinstance(source, Surrogate) else source


def _positive_std(noise_std: npt.ArrayLike, shape: tuple[int, ...], what: str) -> npt.NDArray[np.float64]:
    """``noise_std`` (a scalar or an array of ``shape``) broadcast to ``shape`` and flattened; checked positive."""
    std = np.asarray(noise_std, dtype=np.float64)
    if std.ndim != 0 and std.shape != shape:
        raise ValueError(f"{what} must be a number or an array of shape {shape}, got shape {std.shape}.")
    std = np.broadcast_to(std, shape).reshape(-1).copy()
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"{what} must be positive and finite, got {float(std.min())} at least once.")
    return std


# --------------------------------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------------------------------


class Sensors:
    r"""Point sensors on a surrogate's function space, with the modes evaluated at them once.

    Each sensor is evaluated by exactly one rank: the lowest rank one of whose owned cells contains it. That rank
    evaluates every mode (and, in :meth:`evaluate`, any Function) at the point with DOLFINx's own point
    evaluation; an allreduce then gives every rank the same values. For a field with ``n_comp`` components (e.g.
    a displacement) each sensor observes all of them.

    Args:
        surrogate: The surrogate (or its basis) whose modes are evaluated.
        points: Sensor coordinates, shape ``(m, gdim)`` or ``(m, 3)``, the same on every rank.

    Attributes:
        points: The coordinates, shape ``(m, 3)``.
        owners: The rank that evaluates each sensor, shape ``(m,)``.
        matrix: :math:`B_{(i, j), k} = \phi_k^{(j)}(x_i)`, shape ``(m * n_comp, r)``, sensor-major, the same on
            every rank.

    Raises:
        ValueError: on every rank, for points of a wrong shape, NaN/inf, points that differ between ranks, or a
            point outside the mesh.
    """

    def __init__(self, surrogate: Surrogate | PODBasis, points: npt.ArrayLike):
        self.basis = _basis_of(surrogate)
        V = self.basis.V
        msh = V.mesh
        comm = msh.comm
        gdim = msh.geometry.dim
        error: str | None = None
        xyz = np.zeros((0, 3))
        try:
            array = np.array(points, dtype=np.float64)
            if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] not in (gdim, 3):
                raise ValueError(f"Sensor points must have shape (m, {gdim}) or (m, 3), got {array.shape}.")
            if not np.all(np.isfinite(array)):
                raise ValueError("Sensor points hold NaN or inf.")
            xyz = np.zeros((array.shape[0], 3))
            xyz[:, : array.shape[1]] = array
        except (TypeError, ValueError) as err:
            error = str(err)
        check_collectively(comm, error)
        if comm.size > 1:
            same = np.array_equal(comm.bcast(xyz, root=0), xyz)
            check_collectively(comm, None if same else "Sensor points differ between ranks; give the same on all.")
        self.points = xyz
        self.value_size = int(np.prod(V.value_shape, dtype=np.int64))

        cells = _owned_cells_containing(msh, xyz)
        found = np.where(cells >= 0, comm.rank, comm.size).astype(np.int32)
        owners = np.empty_like(found)
        comm.Allreduce(found, owners, op=MPI.MIN)
        missing = np.flatnonzero(owners == comm.size)
        error = None
        if missing.size:
            shown = ", ".join(f"{i}: {tuple(float(v) for v in xyz[i, :gdim])}" for i in missing[:5])
            more = ", ..." if missing.size > 5 else ""
            error = f"{missing.size} sensor point(s) lie outside the mesh (index: coordinates {shown}{more})."
        check_collectively(comm, error)
        self.owners = owners
        self._local = np.flatnonzero(owners == comm.rank)
        self._cells = cells[self._local]

        basis = self.basis
        local = np.zeros((self.n_sensors, self.value_size, basis.n_modes))
        u = fem.Function(V)
        for k in range(basis.n_modes):
            function_from_owned(V, basis.modes[:, k], out=u)
            local[self._local, :, k] = self._eval_local(u)
        matrix = np.empty_like(local)
        comm.Allreduce(local, matrix, op=MPI.SUM)  # one nonzero contribution per entry: exact, same everywhere
        self.matrix = matrix.reshape(self.n_sensors * self.value_size, basis.n_modes)
        logger.info("Sensors: %d points, evaluated by ranks %s", self.n_sensors, np.unique(owners).tolist())

    @property
    def n_sensors(self) -> int:
        """Number of sensors :math:`m`."""
        return self.points.shape[0]

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The shape of one set of sensor values, ``(m,)`` for a scalar field and ``(m, n_comp)`` otherwise."""
        return (self.n_sensors,) if self.value_size == 1 else (self.n_sensors, self.value_size)

    def _eval_local(self, u: fem.Function) -> npt.NDArray[np.float64]:
        if self._local.size == 0:
            return np.zeros((0, self.value_size))
        return np.asarray(u.eval(self.points[self._local], self._cells)).reshape(self._local.size, self.value_size)

    def evaluate(self, u: fem.Function) -> npt.NDArray[np.float64]:
        """Values of a Function on the surrogate's space at the sensors, by its own point evaluation (collective).

        The ghost values of ``u`` are updated first. Returns an array of :attr:`data_shape`, the same on every rank.

        Raises:
            ValueError: on every rank if ``u`` is not on the surrogate's function space.
        """
        V = self.basis.V
        comm = V.mesh.comm
        mismatch = space_mismatch(V, u.function_space) if isinstance(u, fem.Function) else "it is not a Function"
        check_collectively(comm, None if mismatch is None else f"Cannot evaluate at the sensors: {mismatch}.")
        u.x.scatter_forward()
        local = np.zeros((self.n_sensors, self.value_size))
        local[self._local] = self._eval_local(u)
        values = np.empty_like(local)
        comm.Allreduce(local, values, op=MPI.SUM)
        return values.reshape(self.data_shape)

    def observe(self, data: npt.ArrayLike, *, noise_std: npt.ArrayLike) -> SensorObservations:
        """Observed values at the sensors with their noise level (collective: checks agree on every rank).

        Args:
            data: Measured values, shape :attr:`data_shape`, the same on every rank.
            noise_std: Standard deviation of the measurement noise: one number, or one per value
                (shape :attr:`data_shape`).

        Raises:
            ValueError: on every rank for a wrong shape, NaN/inf data, a noise level that is not positive, or data
                that differ between ranks.
        """
        comm = self.basis.V.mesh.comm
        error: str | None = None
        values = std = np.zeros(0)
        try:
            values = np.array(data, dtype=np.float64)
            if values.shape != self.data_shape:
                raise ValueError(f"Sensor data must have shape {self.data_shape}, got {values.shape}.")
            if not np.all(np.isfinite(values)):
                raise ValueError("Sensor data hold NaN or inf.")
            std = _positive_std(noise_std, self.data_shape, "noise_std")
        except (TypeError, ValueError) as err:
            error = str(err)
        check_collectively(comm, error)
        values = values.reshape(-1)
        if comm.size > 1:
            ref_values, ref_std = comm.bcast((values, std), root=0)
            same = np.array_equal(ref_values, values) and np.array_equal(ref_std, std)
            check_collectively(comm, None if same else "Sensor data or noise differ between ranks; give the same.")
        return SensorObservations(basis=self.basis, matrix=self.matrix, data=values, noise_std=std, sensors=self)


@dataclass(frozen=True, eq=False, kw_only=True)
class Observations(ABC):
    r"""Data that are linear in the reduced coefficients: :math:`d = B c + e`, :math:`e \sim \mathcal{N}(0, \Sigma)`.

    Build them with :meth:`Sensors.observe` or :func:`observe_field`. The data misfit of coefficients :math:`c` is

    .. math:: \Phi(c) = \tfrac12 \| \Sigma^{-1/2} (B c - d) \|^2 + \rho,

    where the constant :math:`\rho` (``residual``) is the part of an observed field outside the reduced space
    (zero for sensors), so that :math:`\Phi` is the misfit of the field :math:`\Phi c` itself.

    Attributes:
        basis: The basis whose coefficients are observed.
        matrix: :math:`B`, shape ``(k, r)``.
        data: :math:`d`, shape ``(k,)``.
        noise_std: :math:`\sigma_i`, shape ``(k,)``.
        residual: The constant :math:`\rho`.
    """

    basis: PODBasis = field(repr=False)
    matrix: npt.NDArray[np.float64] = field(repr=False)
    data: npt.NDArray[np.float64] = field(repr=False)
    noise_std: npt.NDArray[np.float64] = field(repr=False)
    residual: float = 0.0

    @property
    def n_observations(self) -> int:
        """Number :math:`k` of reduced observations (rows of :math:`B`)."""
        return self.matrix.shape[0]

    def predict(self, coefficients: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Predicted observations :math:`B c` for coefficients ``(r,)`` or ``(n, r)`` (local)."""
        return np.asarray(coefficients, dtype=np.float64) @ self.matrix.T

    def misfit(self, coefficients: npt.ArrayLike) -> float:
        r"""The data misfit :math:`\Phi(c)` of coefficients ``(r,)`` (local)."""
        weighted = (self.predict(coefficients) - self.data) / self.noise_std
        return 0.5 * float(weighted @ weighted) + self.residual

    @abstractmethod
    def field_misfit(self, u: fem.Function) -> float:
        """The data misfit of a full finite-element field ``u``, observed by its own evaluation (collective)."""


@dataclass(frozen=True, eq=False, kw_only=True)
class SensorObservations(Observations):
    """Values at point sensors (see :meth:`Sensors.observe`).

    Attributes:
        sensors: The sensors.
    """

    sensors: Sensors = field(repr=False)

    def field_misfit(self, u: fem.Function) -> float:
        """Misfit of a Function evaluated at the sensors by DOLFINx's point evaluation, not the basis (collective)."""
        weighted = (self.sensors.evaluate(u).reshape(-1) - self.data) / self.noise_std
        return 0.5 * float(weighted @ weighted)


@dataclass(frozen=True, eq=False, kw_only=True)
class FieldObservations(Observations):
    """An observed field on the surrogate's space (see :func:`observe_field`).

    Attributes:
        values: Owned dof values of the observed field.
        norm: ``"values"`` or ``"projection"``.
    """

    values: npt.NDArray[np.float64] = field(repr=False)
    norm: Literal["values", "projection"] = "values"

    def field_misfit(self, u: fem.Function) -> float:
        """Misfit of a Function's own dof values against the observed field (collective)."""
        V = self.basis.V
        mismatch = space_mismatch(V, u.function_space) if isinstance(u, fem.Function) else "it is not a Function"
        check_collectively(V.mesh.comm, None if mismatch is None else f"Cannot compare fields: {mismatch}.")
        difference = u.x.array[: n_owned(V)] - self.values
        sigma = float(self.noise_std[0])
        if self.norm == "projection":
            return 0.5 * float(self.basis.inner_product.norms(difference)[0] / sigma) ** 2
        return 0.5 * float(V.mesh.comm.allreduce(float(difference @ difference), op=MPI.SUM)) / sigma**2


def observe_field(
    surrogate: Surrogate | PODBasis,
    u: fem.Function,
    *,
    noise_std: float,
    norm: Literal["values", "projection"] = "values",
) -> FieldObservations:
    r"""Observe a whole field on the surrogate's function space (collective).

    ``norm="values"`` takes every dof value as a datum with noise :math:`\sigma`: the misfit
    :math:`\frac{1}{2\sigma^2}\|\Phi c - u\|_2^2` is written exactly as :math:`\frac12 \|(L^T c - L^{-1}\Phi^T u)/
    \sigma\|^2 + \rho` with the Cholesky factor :math:`L L^T = \Phi^T \Phi` (so :math:`B = L^T`, :math:`r` rows).
    ``norm="projection"`` observes the field through its POD projection: :math:`B = I`, :math:`d = \Phi^T M u`
    (:math:`M` the basis' inner product), and the misfit :math:`\frac{1}{2\sigma^2}\|\Phi c - u\|_M^2`;
    :math:`\sigma` is then the noise level of each reduced coefficient. In both cases :math:`\rho` is the
    misfit of the part of :math:`u` that the basis cannot represent.

    Args:
        surrogate: The surrogate (or its basis).
        u: The observed field, a Function on the surrogate's space.
        noise_std: Noise standard deviation :math:`\sigma > 0`.
        norm: ``"values"`` or ``"projection"``.

    Raises:
        ValueError: on every rank for a Function on another space, NaN/inf values, a bad noise level or norm.
    """
    basis = _basis_of(surrogate)
    V = basis.V
    comm = V.mesh.comm
    error: str | None = None
    values = np.zeros(n_owned(V))
    std = np.ones(1)
    try:
        if norm not in ("values", "projection"):
            raise ValueError(f"norm must be 'values' or 'projection', got {norm!r}.")
        if not isinstance(u, fem.Function):
            raise ValueError(f"The observed field must be a dolfinx.fem.Function, got {type(u).__name__}.")
        mismatch = space_mismatch(V, u.function_space)
        if mismatch is not None:
            raise ValueError(f"The observed field is not on the surrogate's function space: {mismatch}.")
        values = np.array(u.x.array[: n_owned(V)], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("The observed field holds NaN or inf.")
        std = _positive_std(noise_std, (), "noise_std")
    except (TypeError, ValueError) as err:
        error = str(err)
    check_collectively(comm, error)
    sigma = float(std[0])
    r = basis.n_modes
    if norm == "projection":
        data = basis.project(values)[:, 0]
        rest = values - basis.reconstruct(data)
        residual = 0.5 * float(basis.inner_product.norms(rest)[0] / sigma) ** 2
        matrix = np.eye(r)
    else:
        euclidean = InnerProduct(V, None, name="euclidean")
        gram = euclidean.gram(basis.modes)
        phi_t_u = euclidean.gram(basis.modes, values)[:, 0]
        try:
            factor = linalg.cholesky(gram, lower=True)
        except linalg.LinAlgError as err:  # the same Gram matrix on every rank: all raise alike
            raise ValueError("The modes are linearly dependent in the Euclidean product (Gram not SPD).") from err
        data = linalg.solve_triangular(factor, phi_t_u, lower=True)
        rest = values - basis.reconstruct(linalg.cho_solve((factor, True), phi_t_u))
        residual = 0.5 * float(comm.allreduce(float(rest @ rest), op=MPI.SUM)) / sigma**2
        matrix = factor.T.copy()
    return FieldObservations(
        basis=basis,
        matrix=matrix,
        data=data,
        noise_std=np.full(r, sigma),
        residual=residual,
        values=values,
        norm=norm,
    )


def _owned_cells_containing(msh: Mesh, points: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]:
    """Local index of an owned cell containing each point, or -1 (local)."""
    tdim = msh.topology.dim
    n_cells = msh.topology.index_map(tdim).size_local
    cells = np.full(points.shape[0], -1, dtype=np.int32)
    if n_cells == 0:
        return cells
    tree = geometry.bb_tree(msh, tdim, entities=np.arange(n_cells, dtype=np.int32))  # type: ignore[arg-type]
    candidates = geometry.compute_collisions_points(tree, points)
    colliding = geometry.compute_colliding_cells(msh, candidates, points)  # type: ignore[arg-type]
    for i in range(points.shape[0]):
        links = colliding.links(i)
        if len(links):
            cells[i] = links[0]
    return cells


# --------------------------------------------------------------------------------------------------------------
# Estimation
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gaussian:
    r"""An independent Gaussian prior :math:`\mu_i \sim \mathcal{N}(m_i, s_i^2)` (a Tikhonov term).

    Attributes:
        mean: Prior mean: ``(p,)`` or ``{name: value}``.
        std: Prior standard deviation: one positive number or ``(p,)`` (or ``{name: value}``).
    """

    mean: npt.ArrayLike | Mapping[str, float]
    std: npt.ArrayLike | Mapping[str, float]


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


class _TorchPosterior:
    r"""The surrogate rebuilt in torch (float64, ensemble stacked) and the objective :math:`J`.

    The network members' linear layers are stacked into ``(members, in, out)`` tensors, so one batched product
    per layer evaluates the whole ensemble; the mean over the members is the ensemble prediction, exactly as
    :class:`~fem_ml.networks.CoefficientNetwork` computes it.

    The optimizer's objective takes a shorter path with the same value: the network's input is affine in
    :math:`s = \mathrm{sigmoid}(z)` (the box map and the input scaling compose to one affine map, also for log
    inputs, where :math:`\log` undoes the geometric map), so that map is folded into the first layer; the ensemble
    mean, the output scaling, :math:`B`, :math:`d` and :math:`\Sigma^{-1/2}` are affine too and are folded into
    the last layer. Small tensors make torch's per-operation overhead the cost, so fewer operations are faster.
    """

    def __init__(
        self,
        rom: Surrogate,
        observations: Observations,
        box: ParameterSpace,
        prior_mean: npt.NDArray[np.float64] | None,
        prior_std: npt.NDArray[np.float64] | None,
    ):
        def tensor(a: npt.ArrayLike) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float64))

        network = rom.network
        linears = [[layer for layer in m.layers if isinstance(layer, torch.nn.Linear)] for m in network.models]
        self.weights = [
            torch.stack([member[k].weight.detach().to(torch.float64).T for member in linears])
            for k in range(len(linears[0]))
        ]
        self.biases = [
            torch.stack([member[k].bias.detach().to(torch.float64)[None, :] for member in linears])
            for k in range(len(linears[0]))
        ]
        self.activation = next(layer for layer in network.models[0].layers if not isinstance(layer, torch.nn.Linear))
        self.log = network.input_transform == "log"
        self.in_shift, self.in_scale = tensor(network.input_scaler.shift), tensor(network.input_scaler.scale)
        self.out_shift, self.out_scale = tensor(network.output_scaler.shift), tensor(network.output_scaler.scale)
        self.matrix = tensor(observations.matrix)
        self.data = tensor(observations.data)
        self.inv_std = 1.0 / tensor(observations.noise_std)
        self.prior = None
        if prior_mean is not None and prior_std is not None:
            self.prior = (tensor(prior_mean), 1.0 / tensor(prior_std))
        # The box map: unit coordinates s in (0, 1) to mu, geometric for log-scaled inputs.
        lower, upper = box.lower, box.upper
        self.geometric = self.log and bool(np.all(lower > 0))
        self.lo = tensor(np.log(lower) if self.geometric else lower)
        self.width = tensor(np.log(upper) - np.log(lower) if self.geometric else upper - lower)
        self.n_calls = 0
        self.folded = self.geometric == self.log
        if self.folded:
            first_w, first_b = self.weights[0], self.biases[0]
            gain, offset = self.width / self.in_scale, (self.lo - self.in_shift) / self.in_scale
            self.first = (gain[None, :, None] * first_w, first_b + offset[None, None, :] @ first_w)
            last_w, last_b = self.weights[-1], self.biases[-1]
            to_residual = self.out_scale[:, None] * self.matrix.T * self.inv_std[None, :]  # (r, k)
            self.last = (last_w @ to_residual).reshape(-1, self.matrix.shape[0]).T / last_w.shape[0]
            c0 = last_b.mean(dim=0)[0] * self.out_scale + self.out_shift
            self.offset = (self.matrix @ c0 - self.data) * self.inv_std

    def coefficients(self, mu: torch.Tensor) -> torch.Tensor:
        """Coefficients ``(n, r)`` of parameters ``(n, p)``: transform, scale, ensemble mean, unscale."""
        self.n_calls += mu.shape[0]
        x = torch.log(mu) if self.log else mu
        h = ((x - self.in_shift) / self.in_scale)[None]
        last = len(self.weights) - 1
        for k, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h.expand(W.shape[0], -1, -1), W)
            if k < last:
                h = self.activation(h)
        return h.mean(dim=0) * self.out_scale + self.out_shift

    def to_parameters(self, z: torch.Tensor) -> torch.Tensor:
        r"""The box map :math:`\mu = a + (b - a)\,\mathrm{sigmoid}(z)` (on :math:`\log\mu` for log inputs)."""
        y = self.lo + self.width * torch.sigmoid(z)
        return torch.exp(y) if self.geometric else y

    def to_unconstrained(self, unit: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The :math:`z` of points given in unit coordinates ``(0, 1)`` of the box."""
        return np.log(unit) - np.log1p(-unit)

    def to_unit(self, mu: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Unit coordinates of parameter points."""
        y = np.log(mu) if self.geometric else mu
        return (y - self.lo.numpy()) / self.width.numpy()

    def misfit(self, mu: torch.Tensor) -> torch.Tensor:
        """Data misfit (without the constant residual) of one point ``(p,)``."""
        weighted = (self.coefficients(mu[None])[0] @ self.matrix.T - self.data) * self.inv_std
        return 0.5 * torch.dot(weighted, weighted)

    def objective(self, mu: torch.Tensor) -> torch.Tensor:
        """Misfit plus prior term of one point ``(p,)``."""
        return self._add_prior(self.misfit(mu), mu)

    def _add_prior(self, value: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        if self.prior is None:
            return value
        mean, inv_std = self.prior
        weighted = (mu - mean) * inv_std
        return value + 0.5 * torch.dot(weighted, weighted)

    def objective_z(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`objective` at ``to_parameters(z)``, through the folded layers where possible."""
        if not self.folded:
            return self.objective(self.to_parameters(z))
        self.n_calls += 1
        first_w, first_b = self.first
        h = torch.baddbmm(first_b, torch.sigmoid(z)[None, None, :].expand(first_w.shape[0], -1, -1), first_w)
        for W, b in zip(self.weights[1:-1], self.biases[1:-1], strict=True):
            h = torch.baddbmm(b, self.activation(h), W)
        weighted = torch.addmv(self.offset, self.last, self.activation(h).reshape(-1))
        value = 0.5 * torch.dot(weighted, weighted)
        return self._add_prior(value, self.to_parameters(z)) if self.prior is not None else value

    def minimize(
        self, z0: npt.NDArray[np.float64], *, max_iterations: int, tolerance_grad: float
    ) -> tuple[npt.NDArray[np.float64], float, int, int]:
        """L-BFGS from ``z0``; returns the parameters reached, the objective, forward calls and iterations."""
        calls_before = self.n_calls
        z = torch.tensor(z0, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [z],
            lr=1.0,
            max_iter=max_iterations,
            history_size=20,
            line_search_fn="strong_wolfe",
            tolerance_grad=tolerance_grad,
            tolerance_change=1e-13,
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            value = self.objective_z(z)
            value.backward()  # type: ignore[no-untyped-call]
            return value

        optimizer.step(closure)  # type: ignore[no-untyped-call]
        iterations = int(optimizer.state[z].get("n_iter", 0))
        with torch.no_grad():
            mu = self.to_parameters(z)
            value = float(self.objective(mu))
        return mu.numpy().copy(), value, self.n_calls - calls_before, iterations

    def jacobian(self, mu: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        r""":math:`B\, \partial c / \partial \mu` at one point, ``(k, p)``, by automatic differentiation.

        One backward pass: the point is repeated once per coefficient, row :math:`i` keeps only :math:`c_i`, and
        the gradient of :math:`\sum_i c_i(\mu^{(i)})` with respect to the copies :math:`\mu^{(i)}` holds
        :math:`\nabla c_i` in row :math:`i` (far faster than one backward pass per output for small networks).
        """
        copies = torch.tensor(mu, dtype=torch.float64).repeat(self.matrix.shape[1], 1).requires_grad_(True)
        self.coefficients(copies).diagonal().sum().backward()  # type: ignore[no-untyped-call]
        assert copies.grad is not None
        return self.matrix.numpy() @ copies.grad.numpy()


def _prior_arrays(
    rom: Surrogate, prior: Gaussian | None
) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None]:
    """Prior mean and std as ``(p,)`` arrays (or None); raises ValueError for bad ones (local)."""
    if prior is None:
        return None, None
    if not isinstance(prior, Gaussian):
        raise ValueError(f"prior must be None or fem_ml.Gaussian, got {type(prior).__name__}.")
    space = rom.space
    mean = space.validate(prior.mean, expected=1, check_bounds=False)[0]  # type: ignore[arg-type]
    if isinstance(prior.std, Mapping):
        std_values: npt.ArrayLike = space.validate(prior.std, expected=1, check_bounds=False)[0]
    else:
        std_values = prior.std
    std = _positive_std(std_values, (space.dim,), "The prior's std")
    return mean, std


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


def _covariance(
    jacobian: npt.NDArray[np.float64], noise_std: npt.NDArray[np.float64], prior_std: npt.NDArray[np.float64] | None
) -> npt.NDArray[np.float64]:
    r""":math:`(J^T \Sigma^{-1} J + \Sigma_0^{-1})^{-1}`, symmetric; a pseudo-inverse (and a warning) if singular."""
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


def _check_observations(rom: Surrogate, observations: Observations) -> None:
    if not isinstance(rom, Surrogate):
        raise ValueError(f"Expected a fem_ml.Surrogate, got {type(rom).__name__}.")
    if not isinstance(observations, Observations):
        raise ValueError(f"Expected fem_ml.Observations (Sensors.observe, observe_field), got {type(observations)}.")
    if observations.basis is not rom.basis:
        raise ValueError("The observations were built for another surrogate (their basis is not this surrogate's).")


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
    \mu_0)\|^2` (prior term only with ``prior``) by torch's L-BFGS (strong Wolfe line search) with the gradient
    from automatic differentiation of the surrogate network, rebuilt in float64 from the trained members.

    **Bounds.** The search box :math:`[a, b]` is the surrogate's parameter box, or a narrower one given by
    ``bounds`` (e.g. to keep away from the edges of the training box, where networks are least accurate). The
    optimizer works on an unconstrained :math:`z \in \mathbb{R}^p` mapped into the open box by
    :math:`\mu = a + (b - a)\,\mathrm{sigmoid}(z)`, or on :math:`\log \mu` between the log-bounds when the network
    takes log-scaled inputs. Every iterate is therefore inside the bounds; an estimate at a bound is approached
    asymptotically (the gradient in :math:`z` vanishes there).

    **Starts.** The points in ``initial``, then ``n_starts`` Latin-hypercube points (seeded by ``seed``) of the
    inner box :math:`[0.05, 0.95]^p` in the unit coordinates of the map. Starts run independently and are spread
    over the ranks; the start with the lowest objective (the first one among equals) gives the estimate, so the
    result does not depend on the rank count. Each start costs a few tens of milliseconds (torch's per-operation
    overhead dominates for such small networks); the first call in a process also pays torch's one-time set-up
    of its optimizers (1 to 2 s).

    **Uncertainty.** The Laplace approximation of the posterior at :math:`\hat\mu` has the Gauss-Newton
    covariance :math:`(J_\mu^T \Sigma^{-1} J_\mu + \Sigma_0^{-1})^{-1}` with :math:`J_\mu = B\, \partial c /
    \partial\mu` (automatic differentiation), in the parameters' own units.

    Args:
        rom: The surrogate.
        observations: From :meth:`Sensors.observe` or :func:`observe_field` for this surrogate.
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
            option values.
    """
    start_time = time.perf_counter()
    comm = rom.V.mesh.comm if isinstance(rom, Surrogate) else MPI.COMM_WORLD
    error: str | None = None
    prior_mean = prior_std = None
    starts = np.zeros((0, 1))
    box = rom.space if isinstance(rom, Surrogate) else ParameterSpace({"x": (0.0, 1.0)})  # replaced or raised below
    try:
        _check_observations(rom, observations)
        box = _search_box(rom, bounds)
        prior_mean, prior_std = _prior_arrays(rom, prior)
        if int(n_starts) != n_starts or n_starts < 0:
            raise ValueError(f"n_starts must be a non-negative int, got {n_starts!r}.")
        if int(max_iterations) != max_iterations or max_iterations < 1:
            raise ValueError(f"max_iterations must be a positive int, got {max_iterations!r}.")
        if not (tolerance_grad > 0 and math.isfinite(tolerance_grad)):
            raise ValueError(f"tolerance_grad must be positive, got {tolerance_grad!r}.")
        extra = np.zeros((0, box.dim)) if initial is None else box.validate(initial)
        if extra.shape[0] + n_starts == 0:
            raise ValueError("No starting point: give n_starts >= 1 or initial points.")
        starts = extra
    except (TypeError, ValueError) as err:
        error = str(err)
    check_collectively(comm, error)

    model = _TorchPosterior(rom, observations, box, prior_mean, prior_std)
    # Starts in unit coordinates: the given points (moved off the bounds, where z would be infinite), then LHS.
    unit = np.clip(model.to_unit(starts), 1e-9, 1 - 1e-9)
    if n_starts > 0:
        lhs = qmc.LatinHypercube(d=rom.space.dim, rng=np.random.default_rng(seed)).random(int(n_starts))
        unit = np.vstack([unit, _START_MARGIN + (1 - 2 * _START_MARGIN) * lhs])
    z_starts = model.to_unconstrained(unit)
    with torch.no_grad():
        start_points = model.to_parameters(torch.as_tensor(z_starts)).numpy().copy()

    def task(k: int) -> Callable[[], tuple[npt.NDArray[np.float64], float, int, int]]:
        return lambda: model.minimize(z_starts[k], max_iterations=int(max_iterations), tolerance_grad=tolerance_grad)

    # Short tasks: the waiting ranks poll often, so the result is not delayed by a long sleep.
    outcomes = run_distributed(comm, [task(k) for k in range(len(z_starts))], poll_interval=2e-4)
    calls_before = model.n_calls  # this rank's starts are counted in the outcomes
    objectives = np.array([o[1] for o in outcomes])
    best = int(np.argmin(np.where(np.isfinite(objectives), objectives, np.inf)))
    estimate = outcomes[best][0]

    jacobian = model.jacobian(estimate)
    covariance = _covariance(jacobian, observations.noise_std, prior_std)
    with torch.no_grad():
        coefficients = model.coefficients(torch.as_tensor(estimate)[None])[0].numpy()
    predicted = observations.predict(coefficients)
    result = IdentificationResult(
        names=rom.space.names,
        estimate=estimate,
        covariance=covariance,
        std=np.sqrt(np.diag(covariance)),
        misfit=observations.misfit(coefficients),
        objective=float(objectives[best]) + observations.residual,
        predicted=predicted,
        n_surrogate_calls=int(sum(o[2] for o in outcomes)) + model.n_calls - calls_before,
        starts=start_points,
        start_estimates=np.array([o[0] for o in outcomes]),
        start_objectives=objectives + observations.residual,
        n_iterations=np.array([o[3] for o in outcomes], dtype=np.int64),
        time_s=time.perf_counter() - start_time,
        lower=box.lower.copy(),
        upper=box.upper.copy(),
        prior=prior,
    )
    if comm.size > 1:
        result = comm.bcast(result, root=0)  # every rank returns rank 0's numbers, bit for bit
    logger.info(
        "identify: estimate %s, misfit %.4g, %d surrogate calls, %.3f s",
        np.array2string(result.estimate, precision=5),
        result.misfit,
        result.n_surrogate_calls,
        result.time_s,
    )
    if verify is None:
        return result
    start_verify = time.perf_counter()
    truth_misfit = observations.field_misfit(verify(result.estimate.copy()))
    verification = Verification(
        misfit=truth_misfit,
        surrogate_misfit=result.misfit,
        time_s=float(comm.allreduce(time.perf_counter() - start_verify, op=MPI.MAX)),
    )
    logger.info("identify: verification solve misfit %.4g (surrogate %.4g)", truth_misfit, result.misfit)
    return dataclasses.replace(result, verification=verification)


# --------------------------------------------------------------------------------------------------------------
# Posterior sampling
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PosteriorSamples:
    """Samples of the surrogate posterior from :func:`sample_posterior`; the same on every rank.

    Attributes:
        names: Parameter names.
        samples: The chain after burn-in, ``(n_samples, p)``.
        acceptance_rate: Fraction of accepted proposals (burn-in included).
        effective_sample_size: Per parameter, from the chain's autocorrelation (:func:`effective_sample_size`).
        n_surrogate_calls: Forward evaluations of the surrogate.
        time_s: Wall time.
    """

    names: tuple[str, ...]
    samples: npt.NDArray[np.float64]
    acceptance_rate: float
    effective_sample_size: npt.NDArray[np.float64]
    n_surrogate_calls: int
    time_s: float

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """Posterior mean estimate, ``(p,)``."""
        return self.samples.mean(axis=0)

    @property
    def std(self) -> npt.NDArray[np.float64]:
        """Posterior standard deviation estimate, ``(p,)``."""
        return self.samples.std(axis=0, ddof=1)


def effective_sample_size(chain: npt.ArrayLike) -> npt.NDArray[np.float64]:
    r"""Effective sample size :math:`n / \tau` of each column of a chain ``(n,)`` or ``(n, p)``.

    The integrated autocorrelation time :math:`\tau = -1 + 2 \sum_{k \ge 0} (\rho_{2k} + \rho_{2k+1})` sums
    Geyer's initial positive sequence of the pair sums of the empirical autocorrelations :math:`\rho`, made
    monotone (the initial monotone sequence estimator). A constant column has an effective size of 1.
    """
    x = np.asarray(chain, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    n = x.shape[0]
    centered = x - x.mean(axis=0)
    spectrum = np.fft.rfft(centered, n=2 * n, axis=0)
    autocov = np.fft.irfft(spectrum * np.conj(spectrum), axis=0)[:n] / n
    ess = np.ones(x.shape[1])
    for j in range(x.shape[1]):
        if autocov[0, j] <= 0:
            continue
        rho = autocov[:, j] / autocov[0, j]
        pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
        positive = np.flatnonzero(pairs <= 0)
        pairs = pairs[: positive[0]] if positive.size else pairs
        pairs = np.minimum.accumulate(pairs)
        tau = max(-1.0 + 2.0 * float(pairs.sum()), 1.0 / n)
        ess[j] = n / tau
    return ess


def sample_posterior(
    rom: Surrogate,
    observations: Observations,
    result: IdentificationResult,
    *,
    n_samples: int = 5000,
    burn_in: int = 1000,
    seed: int = 0,
    step_scale: float | None = None,
) -> PosteriorSamples:
    r"""Random-walk Metropolis on the surrogate posterior :math:`\pi(\mu) \propto e^{-J(\mu)}` on the box (collective).

    Proposals are :math:`\mu' = \mu + s L \xi`, :math:`\xi \sim \mathcal{N}(0, I)`, with :math:`L L^T` the
    Laplace covariance of ``result`` and :math:`s = 2.38/\sqrt{p}` by default (the optimal scale for a Gaussian
    target). A proposal outside the search box of ``result`` is rejected (the box is a uniform prior);
    ``result.prior`` is used as in the estimation. The chain starts at ``result.estimate`` and runs on rank 0
    (the other ranks wait without spinning); every rank receives the same samples, which depend only on ``seed``.

    Args:
        rom: The surrogate.
        observations: The observations used for ``result``.
        result: An :func:`identify` result: the start and the proposal covariance.
        n_samples: Samples kept after burn-in.
        burn_in: Samples discarded first.
        seed: Seed of the chain.
        step_scale: The factor :math:`s`.

    Returns:
        The samples, the acceptance rate and the effective sample sizes.

    Raises:
        ValueError: on every rank for observations of another surrogate or bad option values.
    """
    comm = rom.V.mesh.comm if isinstance(rom, Surrogate) else MPI.COMM_WORLD
    error: str | None = None
    prior_mean = prior_std = None
    try:
        _check_observations(rom, observations)
        if not isinstance(result, IdentificationResult) or result.estimate.shape != (rom.space.dim,):
            raise ValueError("result must be the IdentificationResult of identify() for this surrogate.")
        prior_mean, prior_std = _prior_arrays(rom, result.prior)
        if int(n_samples) != n_samples or n_samples < 2 or int(burn_in) != burn_in or burn_in < 0:
            raise ValueError(f"Need n_samples >= 2 and burn_in >= 0, got {n_samples!r} and {burn_in!r}.")
        if step_scale is not None and not (step_scale > 0 and math.isfinite(step_scale)):
            raise ValueError(f"step_scale must be positive, got {step_scale!r}.")
    except (TypeError, ValueError) as err:
        error = str(err)
    check_collectively(comm, error)
    p = rom.space.dim
    scale = 2.38 / math.sqrt(p) if step_scale is None else float(step_scale)
    eigenvalues, vectors = np.linalg.eigh(result.covariance)
    factor = vectors * np.sqrt(np.maximum(eigenvalues, 0.0)) * scale
    lower, upper = result.lower, result.upper

    def log_posterior(mu: npt.NDArray[np.float64]) -> float:
        c = rom.network(mu[None, :])[0]
        value = observations.misfit(c)
        if prior_mean is not None and prior_std is not None:
            value += 0.5 * float(np.sum(((mu - prior_mean) / prior_std) ** 2))
        return -value

    def chain() -> tuple[npt.NDArray[np.float64], int, int, float]:
        start = time.perf_counter()
        rng = np.random.default_rng(seed)
        total = int(n_samples) + int(burn_in)
        samples = np.empty((total, p))
        current = result.estimate.copy()
        current_lp = log_posterior(current)
        calls, accepted = 1, 0
        for i in range(total):
            proposal = current + factor @ rng.standard_normal(p)
            log_u = math.log(rng.random())
            if np.all(proposal >= lower) and np.all(proposal <= upper):
                proposal_lp = log_posterior(proposal)
                calls += 1
                if log_u < proposal_lp - current_lp:
                    current, current_lp = proposal, proposal_lp
                    accepted += 1
            samples[i] = current
        return samples[int(burn_in) :], accepted, calls, time.perf_counter() - start

    samples, accepted, calls, seconds = run_distributed(comm, [chain])[0]
    return PosteriorSamples(
        names=rom.space.names,
        samples=samples,
        acceptance_rate=accepted / (int(n_samples) + int(burn_in)),
        effective_sample_size=effective_sample_size(samples),
        n_surrogate_calls=calls,
        time_s=seconds,
    )
