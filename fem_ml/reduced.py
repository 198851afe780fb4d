# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Reduced operators of a linear problem: the reduced residual, the POD-Galerkin model and physics losses.

For a linear problem :math:`A(\mu) u = f(\mu)` (homogeneous Dirichlet conditions, so the POD modes vanish on the
Dirichlet boundary) and the :math:`M`-orthonormal basis :math:`\Phi`, the reduced residual of coefficients
:math:`c` is

.. math:: r(c; \mu) = \Phi^T \big(f(\mu) - A(\mu) \Phi c\big) = f_r(\mu) - A_r(\mu)\, c .

Because :math:`\Phi^T M \Phi = I`, :math:`\|r\|_2` is the dual norm of the full residual restricted to the span
of the basis: the part of the residual the basis can see. :math:`r = 0` defines the POD-Galerkin reduced model
:math:`c_G(\mu) = A_r(\mu)^{-1} f_r(\mu)`.

Two ways to obtain :math:`A_r, f_r`:

* :class:`AffineReducedOperators`: for forms affine in the parameters, :math:`A(\mu) = \sum_q \theta_q(\mu)
  A_q`, :math:`f(\mu) = \sum_q \vartheta_q(\mu) f_q`, the :math:`r \times r` blocks :math:`\Phi^T A_q \Phi` and
  :math:`\Phi^T f_q` are assembled once; any :math:`\mu` then costs :math:`O(Q r^2)`, exact.
* :func:`assemble_reduced_systems`: for any linear form, one assembly per parameter point (no solve).

Either gives a :class:`ReducedSystems` at a set of points, which physics-reinforced training uses as a loss at
points without snapshots (Chen, Wang, Hesthaven, Zhang, J. Comput. Phys. 2021).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
import ufl
from dolfinx import fem

from fem_ml._agree import check_same
from fem_ml._linalg import DualNorm, LocalOperator, assemble_matrix, owned_dirichlet_dofs, owned_vector
from fem_ml._mpi import collectively
from fem_ml.pod import PODBasis

__all__ = [
    "AffineReducedOperators",
    "ParameterFunction",
    "ReducedSystems",
    "assemble_reduced_systems",
]

#: :math:`\theta(\mu)`: parameter points ``(n, p)`` to one coefficient per point ``(n,)``.
ParameterFunction = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


@dataclass(frozen=True)
class ReducedSystems:
    r"""Reduced systems :math:`A_r(\mu_j) c = f_r(\mu_j)` at a set of parameter points (replicated on every rank).

    Attributes:
        parameters: The points ``(m, p)``.
        matrices: :math:`A_r(\mu_j)`, shape ``(m, r, r)``.
        rhs: :math:`f_r(\mu_j)`, shape ``(m, r)``.
    """

    parameters: npt.NDArray[np.float64]
    matrices: npt.NDArray[np.float64]
    rhs: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        m = self.parameters.shape[0]
        r = self.rhs.shape[1] if self.rhs.ndim == 2 else -1
        if self.rhs.shape != (m, r) or self.matrices.shape != (m, r, r):
            raise ValueError(
                f"Inconsistent reduced systems: parameters {self.parameters.shape}, matrices "
                f"{self.matrices.shape}, rhs {self.rhs.shape}."
            )

    def __len__(self) -> int:
        return self.parameters.shape[0]

    def residual(self, coefficients: npt.ArrayLike) -> npt.NDArray[np.float64]:
        r"""Relative reduced residual :math:`\|f_r - A_r c\|_2 / \|f_r\|_2` of coefficients ``(m, r)``, per point."""
        c = np.asarray(coefficients, dtype=np.float64)
        if c.shape != self.rhs.shape:
            raise ValueError(f"Coefficients must have shape {self.rhs.shape}, got {c.shape}.")
        r = self.rhs - np.einsum("mij,mj->mi", self.matrices, c)
        return np.linalg.norm(r, axis=1) / np.maximum(np.linalg.norm(self.rhs, axis=1), 1e-300)

    def galerkin(self) -> npt.NDArray[np.float64]:
        r"""POD-Galerkin coefficients :math:`c_G = A_r^{-1} f_r` at every point, shape ``(m, r)``."""
        return np.linalg.solve(self.matrices, self.rhs[:, :, None])[:, :, 0]


class AffineReducedOperators:
    r"""Reduced operators of a problem affine in the parameters, assembled once (collective).

    .. math::
        A_r(\mu) = \sum_q \theta_q(\mu)\, \Phi^T A_q \Phi, \qquad
        f_r(\mu) = \sum_q \vartheta_q(\mu)\, \Phi^T f_q .

    Args:
        basis: The reduced basis; its modes must vanish on the Dirichlet boundary (checked against ``bcs``).
        bilinear: Pairs :math:`(\theta_q, a_q)` of a parameter function and a bilinear UFL form on the basis'
            space.
        linear: Pairs :math:`(\vartheta_q, f_q)` of a parameter function and a linear UFL form.
        bcs: The problem's (homogeneous) Dirichlet conditions; the modes are checked to vanish on their dofs.
        dual_norm: If given (``"h1"``, ``"l2"`` or a bilinear UFL form), also precompute what
            :meth:`dual_residual` needs: the Gram matrix, in :math:`M^{-1}`, of the vectors :math:`f_q` and
            :math:`A_q \varphi_j` on the free dofs (:math:`Q r + Q_f` solves with one LU factorization of
            :math:`M`).
    """

    def __init__(
        self,
        basis: PODBasis,
        bilinear: Sequence[tuple[ParameterFunction, ufl.Form]],
        linear: Sequence[tuple[ParameterFunction, ufl.Form]],
        *,
        bcs: Sequence[fem.DirichletBC] = (),
        dual_norm: str | ufl.Form | None = None,
    ):
        comm = basis.V.mesh.comm
        with collectively(comm):
            if not bilinear or not linear:
                raise ValueError("Give at least one bilinear and one linear term.")
            if any(len(form.arguments()) != 2 for _, form in bilinear) or any(
                len(form.arguments()) != 1 for _, form in linear
            ):
                raise ValueError("bilinear terms need forms a(u, v), linear terms forms f(v).")
        _check_modes_vanish(basis, bcs)
        self.basis = basis
        self._theta_a = [theta for theta, _ in bilinear]
        self._theta_f = [theta for theta, _ in linear]
        # Owned rows of A_q Phi and of f_q: reduced here, and kept for the dual residual if asked for.
        A_Phi = [_full_matrix_times_modes(basis, form) for _, form in bilinear]
        f_full = [_full_vector(basis, form) for _, form in linear]
        self.matrices = np.stack([comm.allreduce(basis.modes.T @ block, op=MPI.SUM) for block in A_Phi])
        self.vectors = np.stack([comm.allreduce(basis.modes.T @ f, op=MPI.SUM) for f in f_full])
        self._gram: npt.NDArray[np.float64] | None = None
        if dual_norm is not None:
            # Y = [f_1 .. f_Qf, A_1 Phi, .., A_Q Phi] on the free dofs, and its Gram matrix Y^T M^{-1} Y.
            Y = np.hstack([np.column_stack(f_full), *A_Phi])
            Y[owned_dirichlet_dofs(bcs)] = 0.0
            dual = DualNorm(basis.V, dual_norm, bcs)
            try:
                self._gram = comm.allreduce(Y.T @ dual.riesz(Y), op=MPI.SUM)
            finally:
                dual.destroy()

    @property
    def n_terms(self) -> tuple[int, int]:
        """Number of affine terms of the operator and of the right-hand side."""
        return len(self._theta_a), len(self._theta_f)

    def systems(self, parameters: npt.ArrayLike) -> ReducedSystems:
        """The reduced systems at parameter points ``(m, p)`` (local, cheap)."""
        mu = np.atleast_2d(np.asarray(parameters, dtype=np.float64))
        theta_a = np.column_stack([_evaluate(theta, mu) for theta in self._theta_a])
        theta_f = np.column_stack([_evaluate(theta, mu) for theta in self._theta_f])
        return ReducedSystems(
            mu, np.einsum("mq,qij->mij", theta_a, self.matrices), np.einsum("mq,qi->mi", theta_f, self.vectors)
        )

    def galerkin(self, parameters: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """POD-Galerkin coefficients at parameter points, shape ``(m, r)`` (local)."""
        return self.systems(parameters).galerkin()

    def dual_residual(self, parameters: npt.ArrayLike, coefficients: npt.ArrayLike) -> npt.NDArray[np.float64]:
        r"""Relative dual norm of the full residual of :math:`\Phi c` at each point, ``(m,)`` (local, cheap).

        .. math:: \frac{\|f(\mu) - A(\mu) \Phi c\|_{V'}}{\|f(\mu)\|_{V'}}, \qquad
            \|R\|_{V'}^2 = w^T (Y^T M^{-1} Y)\, w, \quad w = (\vartheta(\mu), -\theta(\mu) \otimes c),

        the same figure :class:`~fem_ml.residual.ResidualCheck` assembles (norm ``"dual"``), at the cost of a
        small quadratic form; accurate while the relative residual is above about :math:`10^{-7}` (the
        quadratic form cancels below). Needs ``dual_norm`` at construction.
        """
        if self._gram is None:
            raise ValueError("dual_residual needs the operators built with dual_norm='h1' (or another product).")
        mu = np.atleast_2d(np.asarray(parameters, dtype=np.float64))
        c = np.atleast_2d(np.asarray(coefficients, dtype=np.float64))
        if c.shape != (mu.shape[0], self.basis.n_modes):
            raise ValueError(f"Coefficients must have shape {(mu.shape[0], self.basis.n_modes)}, got {c.shape}.")
        theta_a = np.column_stack([_evaluate(theta, mu) for theta in self._theta_a])
        theta_f = np.column_stack([_evaluate(theta, mu) for theta in self._theta_f])
        w = np.hstack([theta_f, -(theta_a[:, :, None] * c[:, None, :]).reshape(mu.shape[0], -1)])
        n_f = theta_f.shape[1]
        total = np.einsum("mi,ij,mj->m", w, self._gram, w)
        load = np.einsum("mi,ij,mj->m", theta_f, self._gram[:n_f, :n_f], theta_f)
        return np.sqrt(np.maximum(total, 0.0) / np.maximum(load, 1e-300))


def assemble_reduced_systems(
    basis: PODBasis,
    a: ufl.Form,
    L: ufl.Form,
    set_parameters: Callable[[npt.NDArray[np.float64]], None],
    parameters: npt.ArrayLike,
    *,
    bcs: Sequence[fem.DirichletBC] = (),
) -> ReducedSystems:
    r"""Reduced systems of a general linear problem by assembly at each point (collective; no solves).

    Args:
        basis: The reduced basis (modes vanishing on the Dirichlet boundary).
        a: The bilinear form :math:`a(u, v; \mu)`.
        L: The linear form :math:`f(v; \mu)`.
        set_parameters: Sets the coefficients of the forms (``fem.Constant`` values, Function arrays) to a point.
        parameters: The points ``(m, p)``.
        bcs: The Dirichlet conditions, to check that the modes vanish there.
    """
    _check_modes_vanish(basis, bcs)
    mu = np.atleast_2d(np.asarray(parameters, dtype=np.float64))
    check_same(basis.V.mesh.comm, "The parameter points of assemble_reduced_systems", mu)
    a_form, L_form = fem.form(a), fem.form(L)
    matrices, rhs = [], []
    for point in mu:
        set_parameters(point)
        matrices.append(_reduce_matrix(basis, a_form))
        rhs.append(_reduce_vector(basis, L_form))
    return ReducedSystems(mu, np.array(matrices), np.array(rhs))


def _evaluate(theta: ParameterFunction, mu: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    values = np.asarray(theta(mu), dtype=np.float64)
    if values.shape != (mu.shape[0],):
        raise ValueError(f"A parameter function returned shape {values.shape} for {mu.shape[0]} points.")
    return values


def _full_matrix_times_modes(basis: PODBasis, form: ufl.Form | fem.Form) -> npt.NDArray[np.float64]:
    r"""Owned rows of :math:`A \Phi` (collective)."""
    matrix = assemble_matrix(form)
    try:
        return LocalOperator.build(matrix, basis.V.mesh.comm).apply(basis.modes)
    finally:
        matrix.destroy()


def _full_vector(basis: PODBasis, form: ufl.Form | fem.Form) -> npt.NDArray[np.float64]:
    """Owned entries of the assembled vector (collective)."""
    return owned_vector(basis.V, form)


def _reduce_matrix(basis: PODBasis, form: ufl.Form | fem.Form) -> npt.NDArray[np.float64]:
    r""":math:`\Phi^T A \Phi` (collective)."""
    local = basis.modes.T @ _full_matrix_times_modes(basis, form)
    return basis.V.mesh.comm.allreduce(local, op=MPI.SUM)


def _reduce_vector(basis: PODBasis, form: ufl.Form | fem.Form) -> npt.NDArray[np.float64]:
    r""":math:`\Phi^T f` (collective)."""
    local = basis.modes.T @ _full_vector(basis, form)
    return basis.V.mesh.comm.allreduce(local, op=MPI.SUM)


def _check_modes_vanish(basis: PODBasis, bcs: Sequence[fem.DirichletBC]) -> None:
    """Raise on every rank unless every mode is zero on the owned Dirichlet dofs (to rounding)."""
    rows = owned_dirichlet_dofs(bcs)
    worst = float(np.max(np.abs(basis.modes[rows]))) if rows.size else 0.0
    scale = float(np.max(np.abs(basis.modes))) if basis.modes.size else 0.0
    comm = basis.V.mesh.comm
    worst, scale = comm.allreduce(worst, op=MPI.MAX), comm.allreduce(scale, op=MPI.MAX)
    if worst > 1e-10 * max(scale, 1e-300):  # the same on every rank (after the reductions)
        raise ValueError(
            f"The modes do not vanish on the Dirichlet dofs (max {worst:.3e}): reduced operators need "
            "homogeneous Dirichlet conditions (subtract a lifting from the snapshots first)."
        )
