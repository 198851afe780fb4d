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

import numpy as np
import numpy.typing as npt
import ufl
from dolfinx import fem

from fem_ml._agree import agreed, check_same
from fem_ml._fem import function_from_owned, n_owned, space_mismatch
from fem_ml._linalg import DualNorm, owned_dirichlet_dofs, owned_vector
from fem_ml._mpi import collectively
from fem_ml.evaluation import Predictor, checked_truth
from fem_ml.snapshots import SnapshotSet

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
        inner_product: For the dual norm: ``"h1"`` (default), ``"l2"``, ``"h1_semi"`` (see
            :func:`~fem_ml.pod.named_form`) or a bilinear UFL form on ``u``'s space. The ``"l2"`` norm uses no inner
            product: giving one with it is an error.
        threshold: Relative residual above which a prediction is flagged.

    Raises:
        ValueError: on every rank, for an unknown norm, a form that is not a residual form, a threshold that is not
            positive, an inner product with ``norm="l2"``, or a norm, product name or threshold that differs
            between ranks.
    """

    def __init__(
        self,
        F: ufl.Form,
        u: fem.Function,
        parameters: Sequence[fem.Constant] | Callable[[npt.NDArray[np.float64]], None],
        *,
        bcs: Sequence[fem.DirichletBC] = (),
        norm: Literal["dual", "l2"] = "dual",
        inner_product: str | ufl.Form | None = None,
        threshold: float = 5e-2,
    ):
        V = u.function_space
        comm = V.mesh.comm
        with collectively(comm):
            if norm not in ("dual", "l2"):
                raise ValueError(f"norm must be 'dual' or 'l2', got {norm!r}.")
            if len(F.arguments()) != 1:
                raise ValueError("F must be a residual form F(u; mu)(v), linear in one test function.")
            if not threshold > 0:
                raise ValueError(f"threshold must be positive, got {threshold}.")
            if norm == "l2" and inner_product is not None:
                raise ValueError("inner_product is for the dual norm; norm='l2' uses none (it would be ignored).")
        product_name = inner_product if isinstance(inner_product, str | None) else "form"
        check_same(comm, "The norm, inner product or threshold of ResidualCheck", norm, product_name, float(threshold))
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
        self._fixed = owned_dirichlet_dofs(bcs)
        self._dual = DualNorm(V, "h1" if inner_product is None else inner_product, bcs) if norm == "dual" else None

    def __call__(self, mu: npt.ArrayLike, field: fem.Function | npt.NDArray[np.float64]) -> float:
        """Relative residual of one field (a Function on the space, or owned dof values) at one point (collective).

        Raises:
            ValueError: on every rank, for a field on another space, of the wrong shape or holding NaN/inf, a
                non-finite point, or points that differ between ranks.
        """

        def check() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
            point = np.asarray(mu, dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(point)):
                raise ValueError(f"The parameter point {point} holds NaN or inf.")
            if isinstance(field, fem.Function):
                mismatch = space_mismatch(self.V, field.function_space)
                if mismatch is not None:
                    raise ValueError(f"The field is on another function space: {mismatch}.")
                values = field.x.array[: n_owned(self.V)]
            else:
                values = np.asarray(field, dtype=np.float64)
                if values.shape != (n_owned(self.V),):
                    raise ValueError(f"Field values must have shape ({n_owned(self.V)},), got {values.shape}.")
            if not np.all(np.isfinite(values)):
                raise ValueError("The field holds NaN or inf.")
            return point, values

        point, values = agreed(self.V.mesh.comm, check, "The parameter point of ResidualCheck", key=lambda c: c[0])
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
        with collectively(self.V.mesh.comm):
            if values.shape != (n_owned(self.V), points.shape[0]):
                raise ValueError(f"Values must have shape {(n_owned(self.V), points.shape[0])}, got {values.shape}.")
        return np.array([self(points[k], values[:, k]) for k in range(points.shape[0])])

    def report(self, rom: Predictor, parameters: npt.ArrayLike, truth: SnapshotSet) -> ResidualReport:
        """Residuals of the truth, its projection on ``rom``'s basis and ``rom``'s prediction (collective).

        Args:
            rom: A :class:`~fem_ml.surrogate.Surrogate` on this space (any :class:`~fem_ml.evaluation.Predictor`).
            parameters: The points ``(n, p)``.
            truth: True solutions at the points.
        """
        points, values = checked_truth(rom, parameters, truth)
        with collectively(self.V.mesh.comm):
            if not (
                truth.parameters.shape == points.shape and np.allclose(truth.parameters, points, rtol=1e-12, atol=0)
            ):
                raise ValueError("truth does not hold the solutions at these parameters (its parameters differ).")
        projection = rom.basis.reconstruct(rom.basis.project(values))
        surrogate = self.residuals(points, rom.basis.reconstruct(rom.coefficients(points).T))
        return ResidualReport(
            parameters=points,
            truth=self.residuals(points, values),
            projection=self.residuals(points, projection),
            surrogate=surrogate,
            flagged=surrogate > self.threshold,
            threshold=self.threshold,
            norm=self.norm,
        )

    def _assemble(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        r"""Owned entries of :math:`R(w; \mu)` on the free dofs (zero on Dirichlet dofs), for owned values of w."""
        function_from_owned(self.V, values, out=self.u)
        residual = owned_vector(self.V, self._form)
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
