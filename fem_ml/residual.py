# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The finite-element residual of a field: does a prediction obey the physics?

Given the problem's weak form :math:`F(u; \mu)(v) = 0` for all test functions :math:`v`, the residual of a field
:math:`w` is the assembled vector :math:`R(w; \mu)_i = F(w; \mu)(\phi_i)` on the free dofs (rows of Dirichlet
dofs removed). :class:`ResidualCheck` reports it relative to the load :math:`R(0; \mu)`, in one of two norms:

``"dual"`` (default)
    :math:`\|R\|_{V'} = (R^T M^{-1} R)^{1/2}`, the dual norm through the inner-product matrix :math:`M` (the
    :math:`H^1` product by default) restricted to the free dofs. It is mesh independent, and for a coercive
    problem the relative dual residual equals the relative error in the energy norm up to the coercivity and
    continuity constants: a residual figure that reads like an error.
``"l2"``
    :math:`\|R\|_2`, the Euclidean norm of the assembled vector on the free dofs. Cheap (no solve) but it grows
    under mesh refinement.

The true solution's residual is at solver tolerance; a surrogate's is small where it is accurate. A prediction
whose relative residual exceeds the check's ``threshold`` is flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx.fem.petsc as fem_petsc
import numpy as np
import numpy.typing as npt
import ufl
from dolfinx import fem, la

from fem_ml._fem import function_from_owned, n_owned, space_mismatch
from fem_ml._mpi import check_collectively
from fem_ml.pod import named_form
from fem_ml.snapshots import SnapshotSet, check_converged

__all__ = ["ResidualCheck", "ResidualReport"]


@dataclass(frozen=True)
class ResidualReport:
    """Relative residuals of the truth, the POD projection and the surrogate at test points.

    Attributes:
        parameters: The points ``(n, p)``.
        truth: Relative residual of the true solutions (solver tolerance).
        projection: Relative residual of their POD projections (what the basis allows).
        surrogate: Relative residual of the surrogate's predictions.
        flagged: ``surrogate > threshold``: predictions not to be trusted.
        threshold: The flagging threshold used.
        norm: ``"dual"`` or ``"l2"``.
    """

    parameters: npt.NDArray[np.float64]
    truth: npt.NDArray[np.float64]
    projection: npt.NDArray[np.float64]
    surrogate: npt.NDArray[np.float64]
    flagged: npt.NDArray[np.bool_]
    threshold: float
    norm: str

    def summary(self) -> dict[str, float]:
        """Means and maxima, and the number of flagged predictions."""
        out: dict[str, float] = {}
        for name in ("truth", "projection", "surrogate"):
            out[f"residual_{name}_mean"] = float(np.mean(getattr(self, name)))
            out[f"residual_{name}_max"] = float(np.max(getattr(self, name)))
        out["n_flagged"] = int(np.sum(self.flagged))
        return out


class ResidualCheck:
    r"""Relative residual of fields in a problem's weak form (collective).

    Args:
        F: The residual form :math:`F(u; \mu)(v)`, linear in the test function, written with ``u`` (a Function on
            the surrogate's space) as the unknown.
        u: The Function ``F`` is written in; its values are replaced by the field to check.
        parameters: One ``fem.Constant`` per parameter, in the parameter space's order, or a callable that sets
            the form's coefficients for a parameter point.
        bcs: The Dirichlet conditions; their dofs are not free and are left out.
        norm: ``"dual"`` or ``"l2"`` (see the module docstring).
        inner_product: For the dual norm: ``"h1"``, ``"l2"``, ``"h1_semi"`` (see :func:`~fem_ml.pod.named_form`) or
            a bilinear UFL form on ``u``'s space.
        threshold: Relative residual above which a prediction is flagged.
    """

    def __init__(
        self,
        F: ufl.Form,
        u: fem.Function,
        parameters: Sequence[fem.Constant] | Callable[[npt.NDArray[np.float64]], None],
        *,
        bcs: Sequence[fem.DirichletBC] = (),
        norm: Literal["dual", "l2"] = "dual",
        inner_product: str | ufl.Form = "h1",
        threshold: float = 5e-2,
    ):
        V = u.function_space
        comm = V.mesh.comm
        error = None
        if norm not in ("dual", "l2"):
            error = f"norm must be 'dual' or 'l2', got {norm!r}."
        elif len(F.arguments()) != 1:
            error = "F must be a residual form F(u; mu)(v), linear in one test function."
        elif not threshold > 0:
            error = f"threshold must be positive, got {threshold}."
        check_collectively(comm, error)
        self.u, self.V, self.norm, self.threshold = u, V, norm, float(threshold)
        self._form = fem.form(F)
        if callable(parameters):
            self._set_parameters = parameters
        else:
            constants = list(parameters)

            def set_constants(mu: npt.NDArray[np.float64]) -> None:
                if len(mu) != len(constants):
                    raise ValueError(f"{len(constants)} parameter Constants, but points have {len(mu)} values.")
                for constant, value in zip(constants, mu, strict=True):
                    constant.value = value

            self._set_parameters = set_constants
        self._fixed = _owned_dirichlet_dofs(bcs)
        self._dual = _DualNorm(V, inner_product, bcs) if norm == "dual" else None

    def __call__(self, mu: npt.ArrayLike, field: fem.Function | npt.NDArray[np.float64]) -> float:
        """Relative residual of one field (a Function on the space, or owned dof values) at one point."""
        point = np.asarray(mu, dtype=np.float64).reshape(-1)
        error = None
        if isinstance(field, fem.Function):
            mismatch = space_mismatch(self.V, field.function_space)
            error = None if mismatch is None else f"The field is on another function space: {mismatch}."
            values = field.x.array[: n_owned(self.V)]
        else:
            values = np.asarray(field, dtype=np.float64)
            if values.shape != (n_owned(self.V),):
                error = f"Field values must have shape ({n_owned(self.V)},), got {values.shape}."
        if error is None and not np.all(np.isfinite(values)):
            error = "The field holds NaN or inf."
        check_collectively(self.V.mesh.comm, error)
        self._set_parameters(point)
        return self._norm(values) / max(self._norm(np.zeros(n_owned(self.V))), 1e-300)

    def riesz(self, mu: npt.ArrayLike, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        r"""Owned values of the residual's Riesz representative :math:`M^{-1} R(w; \mu)`, a field to look at.

        Its norm in the inner product is the dual norm of the residual; where it is large, the field violates
        the equations (collective; needs the ``"dual"`` norm).
        """
        if self._dual is None:
            raise ValueError("riesz needs a ResidualCheck with norm='dual'.")
        self._set_parameters(np.asarray(mu, dtype=np.float64).reshape(-1))
        return self._dual.riesz(self._assemble(np.asarray(values, dtype=np.float64))[:, None])[:, 0]

    def residuals(self, parameters: npt.ArrayLike, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Relative residuals of fields ``(n_owned, n)`` at points ``(n, p)`` (collective)."""
        points = np.atleast_2d(np.asarray(parameters, dtype=np.float64))
        check_collectively(
            self.V.mesh.comm,
            None
            if values.shape == (n_owned(self.V), points.shape[0])
            else f"Values must have shape {(n_owned(self.V), points.shape[0])}, got {values.shape}.",
        )
        return np.array([self(points[k], values[:, k]) for k in range(points.shape[0])])

    def report(self, rom: object, parameters: npt.ArrayLike, truth: SnapshotSet) -> ResidualReport:
        """Residuals of the truth, its projection on ``rom``'s basis and ``rom``'s prediction (collective).

        Args:
            rom: A :class:`~fem_ml.surrogate.Surrogate` on this space.
            parameters: The points ``(n, p)``.
            truth: True solutions at the points.
        """
        from fem_ml.surrogate import Surrogate

        if not isinstance(rom, Surrogate):
            raise TypeError(f"rom must be a Surrogate, got {type(rom).__name__}.")
        points = rom.check_points(parameters)
        check_collectively(
            self.V.mesh.comm,
            None
            if truth.parameters.shape == points.shape and np.allclose(truth.parameters, points, rtol=1e-12, atol=0)
            else "truth does not hold the solutions at these parameters (its parameters differ).",
        )
        projection = rom.basis.reconstruct(rom.basis.project(truth.values))
        surrogate = self.residuals(points, rom.predict_values(points))
        return ResidualReport(
            parameters=points,
            truth=self.residuals(points, truth.values),
            projection=self.residuals(points, projection),
            surrogate=surrogate,
            flagged=surrogate > self.threshold,
            threshold=self.threshold,
            norm=self.norm,
        )

    def _assemble(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        r"""Owned entries of :math:`R(w; \mu)` on the free dofs (zero on Dirichlet dofs), for owned values of w."""
        function_from_owned(self.V, values, out=self.u)
        vector = fem.assemble_vector(self._form)
        vector.scatter_reverse(la.InsertMode.add)
        residual = vector.array[: n_owned(self.V)].copy()
        residual[self._fixed] = 0.0
        return residual

    def _norm(self, values: npt.NDArray[np.float64]) -> float:
        residual = self._assemble(values)
        if self._dual is None:
            return float(np.sqrt(self.V.mesh.comm.allreduce(float(residual @ residual), op=MPI.SUM)))
        return self._dual.norm(residual)

    def destroy(self) -> None:
        """Destroy the PETSc objects of the dual norm (collective)."""
        if self._dual is not None:
            self._dual.destroy()
            self._dual = None


class _DualNorm:
    r"""Riesz map :math:`M^{-1}` of an inner product restricted to the free dofs (one LU factorization).

    Dirichlet rows and columns of :math:`M` become identity, so vectors that vanish on the Dirichlet dofs are
    mapped to vectors that vanish there.
    """

    def __init__(self, V: fem.FunctionSpace, inner_product: str | ufl.Form, bcs: Sequence[fem.DirichletBC]):
        comm = V.mesh.comm
        error, form = None, None
        try:
            form = named_form(V, inner_product) if isinstance(inner_product, str) else inner_product
        except ValueError as err:
            error = str(err)
        check_collectively(comm, error)
        assert form is not None
        self.comm = comm
        self.M = fem_petsc.assemble_matrix(fem.form(form), bcs=list(bcs))
        self.M.assemble()
        self.ksp = PETSc.KSP().create(comm)
        self.ksp.setOperators(self.M)
        self.ksp.setType("preonly")
        self.ksp.getPC().setType("lu")
        self.ksp.getPC().setFactorSolverType("mumps")
        self.rhs, self.sol = self.M.createVecs()

    def riesz(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """:math:`M^{-1} Y` for owned columns ``(n_owned, k)`` (collective)."""
        out = np.empty_like(values)
        for j in range(values.shape[1]):
            self.rhs.array[:] = values[:, j]
            self.ksp.solve(self.rhs, self.sol)
            check_converged(self.ksp, what="the Riesz map of the residual's dual norm")
            out[:, j] = self.sol.array
        return out

    def norm(self, residual: npt.NDArray[np.float64]) -> float:
        r""":math:`(R^T M^{-1} R)^{1/2}` of owned values (collective)."""
        z = self.riesz(residual[:, None])[:, 0]
        return float(np.sqrt(max(self.comm.allreduce(float(residual @ z), op=MPI.SUM), 0.0)))

    def destroy(self) -> None:
        """Destroy the PETSc objects (collective)."""
        for obj in (self.ksp, self.M, self.rhs, self.sol):
            obj.destroy()


def _owned_dirichlet_dofs(bcs: Sequence[fem.DirichletBC]) -> npt.NDArray[np.int64]:
    """Owned (unrolled) dof values fixed by the Dirichlet conditions."""
    owned = []
    for bc in bcs:
        dofs, first_ghost = bc.dof_indices()
        owned.append(np.asarray(dofs[:first_ghost], dtype=np.int64))
    return np.unique(np.concatenate(owned)) if owned else np.empty(0, dtype=np.int64)
