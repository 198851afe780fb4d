# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The discovered model: a readable equation, coefficients with uncertainty, and a UFL form DOLFINx time-steps.

:class:`DiscoveredModel` holds, for each component :math:`u_c` of the field, the coefficients :math:`\xi_{ci}` of
:math:`\partial_t u_c = \sum_i \xi_{ci}\theta_i(u)` (zero off the support), their bootstrap spread and the
terms' inclusion probabilities. :meth:`DiscoveredModel.residual` is the :math:`\theta`-scheme residual

.. math::
    F(u; v) = \int_\Omega \frac{u - u_{\text{old}}}{\Delta t}\cdot v\,dx - \sum_{c,i} \xi_{ci}
    \int_\Omega \left[\vartheta\, \theta_i(u) + (1 - \vartheta)\, \theta_i(u_{\text{old}})\right] v_c \,dx,

(:math:`\vartheta = 1`: implicit Euler, :math:`\vartheta = 1/2`: Crank-Nicolson) with the terms' ``model``
integrands (natural boundary conditions unless Dirichlet conditions are given), and :meth:`DiscoveredModel.simulate`
solves it with :class:`dolfinx.fem.petsc.NonlinearProblem`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import ufl
from dolfinx import fem
from dolfinx.fem.petsc import NonlinearProblem

from fem_ml._mpi import check_collectively
from fem_ml.discovery.library import Library

__all__ = ["Candidate", "DiscoveredModel", "format_equation"]


@dataclass(frozen=True)
class Candidate:
    r"""A candidate model of one component met during model selection.

    Attributes:
        support: Boolean mask of the active terms.
        threshold: The smallest threshold (normalized units) that selected this support.
        cv_error: Mean over the folds of the relative test residual :math:`\\|y - \\Theta\\xi\\| / \\|y\\|`.
        cv_std_error: Standard error of that mean over the folds.
    """

    support: npt.NDArray[np.bool_]
    threshold: float
    cv_error: float
    cv_std_error: float

    @property
    def n_terms(self) -> int:
        """Number of active terms."""
        return int(self.support.sum())


def format_equation(component: str, names: Sequence[str], coefficients: npt.ArrayLike, *, digits: int = 4) -> str:
    """``"u_t = 0.01 Δu + 1.002 u - 0.998 u^3"``: the nonzero terms with ``digits`` significant digits."""
    parts = []
    for name, c in zip(names, np.asarray(coefficients, dtype=float), strict=True):
        if c == 0.0:
            continue
        magnitude = f"{abs(c):.{digits}g}"
        body = magnitude if name == "1" else f"{magnitude} {name}"
        parts.append(("- " if c < 0 else "+ ") + body)
    if not parts:
        return f"{component}_t = 0"
    text = " ".join(parts)
    text = text[2:] if text.startswith("+ ") else "-" + text[2:]
    return f"{component}_t = {text}"


@dataclass(frozen=True)
class DiscoveredModel:
    """The result of :func:`~fem_ml.discovery.selection.discover`.

    Attributes:
        library: The candidate terms.
        coefficients: ``(n_components, n_terms)``, zero off the support.
        std: ``(n_components, n_terms)`` standard deviation of each coefficient over the bootstrap fits.
        inclusion: ``(n_components, n_terms)`` fraction of bootstrap fits that keep each term.
        candidates: Per component, the candidate models of the threshold path with their cross-validation errors.
        selected: Per component, the index in ``candidates`` of the model chosen.
        method: The sparse method.
        n_rows: Rows of the regression system.
    """

    library: Library
    coefficients: npt.NDArray[np.float64]
    std: npt.NDArray[np.float64]
    inclusion: npt.NDArray[np.float64]
    candidates: tuple[tuple[Candidate, ...], ...]
    selected: tuple[int, ...]
    method: str
    n_rows: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def support(self) -> npt.NDArray[np.bool_]:
        """``(n_components, n_terms)`` mask of the active terms."""
        return self.coefficients != 0.0

    def equation(self, *, digits: int = 4) -> str:
        """The discovered equations, one line per component, e.g. ``u_t = 0.01 Δu + 1.002 u - 0.998 u^3``."""
        return "\n".join(
            format_equation(name, self.library.names, self.coefficients[c], digits=digits)
            for c, name in enumerate(self.library.components)
        )

    def __str__(self) -> str:
        return self.equation()

    def coefficient(self, component: str, term: str) -> float:
        """The coefficient of ``term`` in the equation of ``component``."""
        return float(self.coefficients[self.library.components.index(component), self.library.index(term)])

    def score(self, truth: Mapping[str, Mapping[str, float]]) -> tuple[bool, float]:
        """Compare with a known model: ``truth[component][term]`` are its nonzero coefficients.

        Returns:
            Whether the active terms are exactly those of ``truth`` (none missing, none extra), and the largest
            relative error of a true coefficient (a missing term counts as error 1).

        Raises:
            KeyError: for an unknown component or term name.
        """
        expected = np.zeros_like(self.coefficients)
        for component, terms in truth.items():
            c = self.library.components.index(component) if component in self.library.components else None
            if c is None:
                raise KeyError(f"No component {component!r}; components: {self.library.components}.")
            for term, value in terms.items():
                expected[c, self.library.index(term)] = value
        active = expected != 0.0
        recovered = bool(np.array_equal(active, self.support))
        errors = np.abs(self.coefficients[active] - expected[active]) / np.abs(expected[active])
        return recovered, float(errors.max(initial=0.0))

    def rhs(self, u: ufl.core.expr.Expr, v: ufl.core.expr.Expr) -> ufl.core.expr.Expr:
        r"""The integrand :math:`\sum_{c,i} \xi_{ci}\, \theta_i(u)\, v_c` of the discovered right-hand side."""
        n = len(self.library.components)
        total: ufl.core.expr.Expr = ufl.as_ufl(0.0) * (v if n == 1 else v[0])
        for c in range(n):
            vc = v if n == 1 else v[c]
            for i, term in enumerate(self.library.terms):
                if self.coefficients[c, i] != 0.0:
                    total = total + float(self.coefficients[c, i]) * term.model_integrand(u, vc)
        return total

    def residual(
        self, u: fem.Function, u_old: fem.Function, v: ufl.Argument, dt: float | fem.Constant, *, theta: float = 0.5
    ) -> ufl.Form:
        r"""The :math:`\vartheta`-scheme residual :math:`F(u; v)` of one time step (see the module docstring)."""
        rate = ufl.inner(u - u_old, v) / dt
        return (rate - theta * self.rhs(u, v) - (1.0 - theta) * self.rhs(u_old, v)) * ufl.dx

    def simulate(
        self,
        u0: fem.Function,
        times: npt.ArrayLike,
        *,
        dt: float,
        theta: float = 0.5,
        bcs: Sequence[fem.DirichletBC] = (),
        petsc_options: dict[str, object] | None = None,
    ) -> Iterator[fem.Function]:
        """Time-step the discovered model from ``u0`` (at time 0) and yield the solution at ``times`` (collective).

        Newton's method (PETSc SNES, direct LU solves by default) on :meth:`residual` at each step of ``dt``. The
        same Function is yielded each time; copy its values to keep them. The solver's PETSc objects are destroyed
        when the generator finishes or is closed (collective: run it to the end, or close it, on every rank).

        Args:
            u0: Initial condition on the field's space.
            times: Increasing output times, multiples of ``dt`` (rounded to the nearest step).
            dt: Time step.
            theta: 1 for implicit Euler, 0.5 for Crank-Nicolson.
            bcs: Dirichlet conditions (none: natural boundary conditions of the terms' weak forms).
            petsc_options: Options of the SNES and its linear solver.

        Raises:
            ValueError: on every rank, for times that are not increasing or positive, or a bad ``dt``/``theta``.
            fem_ml.snapshots.SolveFailed: on every rank, if Newton's method does not converge.
        """
        from fem_ml.snapshots import check_converged

        out = np.asarray(times, dtype=float).reshape(-1)
        comm = u0.function_space.mesh.comm
        error = None
        if not (dt > 0 and 0.0 <= theta <= 1.0):
            error = f"dt must be > 0 and theta in [0, 1], got {dt}, {theta}."
        elif out.size == 0 or not np.isfinite(out).all() or out[0] <= 0 or np.any(np.diff(out) <= 0):
            error = "times must be positive and strictly increasing."
        check_collectively(comm, error)
        V = u0.function_space
        u, u_old = fem.Function(V, name=u0.name), fem.Function(V)
        u.x.array[:] = u0.x.array
        u_old.x.array[:] = u0.x.array
        F = self.residual(u, u_old, ufl.TestFunction(V), dt, theta=theta)
        options = {"snes_type": "newtonls", "snes_rtol": 1e-10, "snes_atol": 1e-12, "ksp_type": "preonly",
                   "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}  # fmt: skip
        options.update(petsc_options or {})
        problem = NonlinearProblem(
            F, u, bcs=list(bcs), petsc_options_prefix="fem_ml_discovered_", petsc_options=options
        )
        steps = np.rint(out / dt).astype(int)
        try:
            for step in range(1, int(steps[-1]) + 1):
                problem.solve()
                check_converged(problem.solver, what="the discovered model's Newton solver")
                u_old.x.array[:] = u.x.array
                if step in steps:
                    yield u
        finally:
            problem.__del__()  # its PETSc objects, now and on every rank together (destroy is idempotent)
