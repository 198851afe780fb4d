# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Observations that are linear in the reduced coefficients: point sensors and observed fields.

The data :math:`d \in \mathbb{R}^k` are modelled as :math:`d = B\, c(\mu) + e`, :math:`e \sim \mathcal{N}(0,
\Sigma)`, with :math:`B \in \mathbb{R}^{k \times r}` precomputed once: at sensors it holds the modes evaluated at
the sensor points (:class:`~fem_ml.inverse.Sensors`); for a whole observed field it is a factor of the Gram
matrix of the modes (:func:`~fem_ml.inverse.observe_field`). A misfit then costs :math:`O(kr)`, whatever the mesh size.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem, geometry
from dolfinx.mesh import Mesh
from scipy import linalg

from fem_ml._fem import function_from_owned, n_owned, space_mismatch
from fem_ml._mpi import check_collectively, collectively
from fem_ml.inverse._checks import check_same_on_all_ranks, positive_std
from fem_ml.pod import InnerProduct, PODBasis
from fem_ml.surrogate import Surrogate

__all__ = ["FieldObservations", "Observations", "SensorObservations", "Sensors", "observe_field"]

logger = logging.getLogger(__name__)


def _basis_of(source: Surrogate | PODBasis) -> PODBasis:
    """The basis of a surrogate, or the basis itself."""
    return source.basis if isinstance(source, Surrogate) else source


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
        with collectively(comm):
            array = np.array(points, dtype=np.float64)
            if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] not in (gdim, 3):
                raise ValueError(f"Sensor points must have shape (m, {gdim}) or (m, 3), got {array.shape}.")
            if not np.all(np.isfinite(array)):
                raise ValueError("Sensor points hold NaN or inf.")
            xyz = np.zeros((array.shape[0], 3))
            xyz[:, : array.shape[1]] = array
        check_same_on_all_ranks(comm, "Sensor points", xyz)
        self.points = xyz
        self.value_size = int(np.prod(V.value_shape, dtype=np.int64))

        cells = _owned_cells_containing(msh, xyz)
        found = np.where(cells >= 0, comm.rank, comm.size).astype(np.int32)
        owners = np.empty_like(found)
        comm.Allreduce(found, owners, op=MPI.MIN)
        missing = np.flatnonzero(owners == comm.size)  # the same on every rank: all raise alike
        if missing.size:
            shown = ", ".join(f"{i}: {tuple(float(v) for v in xyz[i, :gdim])}" for i in missing[:5])
            more = ", ..." if missing.size > 5 else ""
            raise ValueError(f"{missing.size} sensor point(s) lie outside the mesh (index: coordinates {shown}{more}).")
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
        with collectively(comm):
            values = np.array(data, dtype=np.float64)
            if values.shape != self.data_shape:
                raise ValueError(f"Sensor data must have shape {self.data_shape}, got {values.shape}.")
            if not np.all(np.isfinite(values)):
                raise ValueError("Sensor data hold NaN or inf.")
            std = positive_std(noise_std, self.data_shape, "noise_std")
        values = values.reshape(-1)
        check_same_on_all_ranks(comm, "Sensor data or noise", values, std)
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

    def check_surrogate(self, rom: Surrogate) -> None:
        """Raise ValueError unless ``rom`` is a surrogate whose basis these observations were built for (local)."""
        if not isinstance(rom, Surrogate):
            raise ValueError(f"Expected a fem_ml.Surrogate, got {type(rom).__name__}.")
        if self.basis is not rom.basis:
            raise ValueError("The observations were built for another surrogate (their basis is not this surrogate's).")

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
    with collectively(comm):
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
        std = positive_std(noise_std, (), "noise_std")
    check_same_on_all_ranks(comm, "The noise level or norm", std, norm)
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
