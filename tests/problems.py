# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The test problems: small DOLFINx models that the tests solve, independent of the demos.

The demos in ``demos/`` are tutorials: editing one must not break the suite, so the tests build their own
problems here (the same equations as the demos, which the demo tests run as scripts):

- :func:`build_problem`: the thermal block, conductivities as a DG0 Function (``demos/thermal_block.py``);
- :func:`affine_thermal_block`: the same, affine in the parameters, with its weak form
  (``demos/trust_thermal_block.py``);
- :func:`heat_problem`: a transient heat equation with a moving source (``demos/heat.py``);
- :func:`hyperelastic_problem`: a neo-Hookean cantilever solved by Newton in load steps (``demos/hyperelasticity.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mpi4py import MPI

import numpy as np
import ufl
from dolfinx import fem, mesh
from dolfinx.fem.petsc import LinearProblem, NonlinearProblem

import fem_ml

#: The thermal block's four conductivities.
SPACE = fem_ml.ParameterSpace({f"mu{i}": (0.1, 1.0) for i in range(4)})

#: The heat problem's parameters: conductivity, source strength and source position.
HEAT_SPACE = fem_ml.ParameterSpace({"kappa": (0.01, 0.1), "s": (1.0, 5.0), "c": (0.3, 0.7)})
HEAT_DT = 0.01


def _lu(solver: str = "mumps") -> dict[str, str]:
    """PETSc options of a direct solve by ``solver``."""
    return {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": solver}


def _boundary_dofs(V: fem.FunctionSpace) -> np.ndarray:
    """The dofs of ``V`` on the boundary of its mesh."""
    domain = V.mesh
    tdim = domain.topology.dim
    domain.topology.create_connectivity(tdim - 1, tdim)
    return fem.locate_dofs_topological(V, tdim - 1, mesh.exterior_facet_indices(domain.topology))


def build_problem(
    comm: MPI.Comm, n_cells: int = 16, *, lu_solver: str = "mumps"
) -> tuple[fem.FunctionSpace, Callable[[np.ndarray], fem.Function]]:
    """Thermal block on an ``n_cells x n_cells`` triangulated unit square; returns ``(V, solve)``.

    :math:`-\\nabla \\cdot (\\kappa \\nabla u) = 1`, :math:`u = 0` on the boundary, :math:`\\kappa = \\mu_i` on
    quadrant :math:`i`. ``lu_solver="superlu_dist"`` is bitwise reproducible in parallel (MUMPS is not).
    """
    domain = mesh.create_unit_square(comm, n_cells, n_cells, mesh.CellType.triangle)
    V = fem.functionspace(domain, ("Lagrange", 1))
    Q = fem.functionspace(domain, ("DG", 0))
    block = fem.Function(Q)  # quadrant index of each cell (DG0 interpolation evaluates at cell midpoints)
    block.interpolate(lambda x: (x[0] > 0.5).astype(np.float64) + 2.0 * (x[1] > 0.5))
    block_index = np.rint(block.x.array).astype(np.int64)
    kappa = fem.Function(Q)
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = ufl.inner(kappa * ufl.grad(u), ufl.grad(v)) * ufl.dx
    L = fem.Constant(domain, 1.0) * v * ufl.dx
    bc = fem.dirichletbc(0.0, _boundary_dofs(V), V)
    uh = fem.Function(V, name="u")
    problem = LinearProblem(
        a, L, bcs=[bc], u=uh, petsc_options_prefix="thermal_block_",
        petsc_options=_lu(lu_solver),
    )  # fmt: skip

    def solve(mu: np.ndarray) -> fem.Function:
        kappa.x.array[:] = mu[block_index]
        problem.solve()
        return uh

    return V, solve


@dataclass
class AffineThermalBlock:
    """The thermal block with its weak form exposed: what the residual and reduced-operator tests need."""

    V: fem.FunctionSpace
    solve: Callable[[np.ndarray], fem.Function]
    residual: ufl.Form
    u: fem.Function
    constants: list[fem.Constant]
    bcs: list[fem.DirichletBC]
    bilinear: list[tuple[Callable[[np.ndarray], np.ndarray], ufl.Form]]
    linear: list[tuple[Callable[[np.ndarray], np.ndarray], ufl.Form]]


def affine_thermal_block(comm: MPI.Comm, n_cells: int = 16) -> AffineThermalBlock:
    """The thermal block with the conductivities as ``fem.Constant``\\ s on tagged quadrants (``n_cells`` even)."""
    if n_cells % 2:
        raise ValueError(f"n_cells must be even (the quadrants are unions of cells), got {n_cells}.")
    domain = mesh.create_unit_square(comm, n_cells, n_cells, mesh.CellType.triangle)
    tdim = domain.topology.dim
    eps = 1e-10
    quadrants = [
        lambda x: (x[0] <= 0.5 + eps) & (x[1] <= 0.5 + eps),
        lambda x: (x[0] >= 0.5 - eps) & (x[1] <= 0.5 + eps),
        lambda x: (x[0] <= 0.5 + eps) & (x[1] >= 0.5 - eps),
        lambda x: (x[0] >= 0.5 - eps) & (x[1] >= 0.5 - eps),
    ]
    cells = [mesh.locate_entities(domain, tdim, marker) for marker in quadrants]
    tags = np.concatenate([np.full(c.size, q, dtype=np.int32) for q, c in enumerate(cells)])
    order = np.argsort(np.concatenate(cells))
    cell_tags = mesh.meshtags(domain, tdim, np.concatenate(cells)[order], tags[order])
    dx = ufl.Measure("dx", domain=domain, subdomain_data=cell_tags)

    V = fem.functionspace(domain, ("Lagrange", 1))
    constants = [fem.Constant(domain, 1.0) for _ in range(4)]
    w, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    stiffness = [ufl.inner(ufl.grad(w), ufl.grad(v)) * dx(q) for q in range(4)]
    load = fem.Constant(domain, 1.0) * v * ufl.dx
    bc = fem.dirichletbc(0.0, _boundary_dofs(V), V)
    uh = fem.Function(V, name="temperature")
    problem = LinearProblem(
        sum(k * a for k, a in zip(constants, stiffness, strict=True)), load, bcs=[bc], u=uh,
        petsc_options_prefix="trust_block_", petsc_options=_lu(),
    )  # fmt: skip

    def solve(mu: np.ndarray) -> fem.Function:
        for constant, value in zip(constants, mu, strict=True):
            constant.value = value
        problem.solve()
        return uh

    u = fem.Function(V, name="u")
    residual = sum(k * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx(q) for q, k in enumerate(constants)) - load
    bilinear = [((lambda mu, q=q: mu[:, q]), a) for q, a in enumerate(stiffness)]
    linear = [((lambda mu: np.ones(mu.shape[0])), load)]
    return AffineThermalBlock(V, solve, residual, u, constants, [bc], bilinear, linear)


@dataclass(frozen=True)
class Recipe:
    """Network and training settings for surrogates of the thermal block (log-scaled inputs)."""

    hidden_layers: tuple[int, ...] = (64, 64, 64)
    adam_epochs: int = 3000
    lbfgs_iterations: int = 500
    seed: int = 0

    def train(
        self, basis: fem_ml.PODBasis, snapshots: fem_ml.SnapshotSet, *, n_networks: int = 1, physics=None
    ) -> fem_ml.Surrogate:
        """Train a surrogate on ``snapshots`` (and the reduced residual at ``physics``' points, if given)."""
        return fem_ml.train_surrogate(
            basis, snapshots, SPACE, seed=self.seed, input_transform="log", hidden_layers=self.hidden_layers,
            n_networks=n_networks, adam_epochs=self.adam_epochs, lbfgs_iterations=self.lbfgs_iterations,
            physics=physics, progress=False,
        )  # fmt: skip


def heat_problem(
    comm: MPI.Comm, n_cells: int = 8
) -> tuple[fem.FunctionSpace, Callable[[np.ndarray, np.ndarray], Iterator[fem.Function]]]:
    """Heat equation (implicit Euler, step :data:`HEAT_DT`) on the unit square; returns ``(V, solve)``.

    ``solve(mu, times)`` integrates from 0 and yields the solution at each of ``times`` (multiples of the step).
    """
    domain = mesh.create_unit_square(comm, n_cells, n_cells)
    V = fem.functionspace(domain, ("Lagrange", 1))
    kappa, strength, centre = fem.Constant(domain, 0.05), fem.Constant(domain, 1.0), fem.Constant(domain, 0.5)
    x = ufl.SpatialCoordinate(domain)
    source = strength * ufl.exp(-((x[0] - centre) ** 2 + (x[1] - 0.5) ** 2) / (2 * 0.1**2))
    u_old, uh = fem.Function(V), fem.Function(V, name="temperature")
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = (u * v + HEAT_DT * kappa * ufl.inner(ufl.grad(u), ufl.grad(v))) * ufl.dx
    L = (u_old + HEAT_DT * source) * v * ufl.dx
    bc = fem.dirichletbc(0.0, _boundary_dofs(V), V)
    problem = LinearProblem(
        a, L, bcs=[bc], u=uh, petsc_options_prefix="heat_", petsc_options=_lu()
    )  # fmt: skip

    def solve(mu: np.ndarray, times: np.ndarray) -> Iterator[fem.Function]:
        kappa.value, strength.value, centre.value = mu
        u_old.x.array[:] = 0.0
        steps = np.rint(np.asarray(times) / HEAT_DT).astype(int)
        for step in range(1, steps[-1] + 1):
            problem.solve()
            u_old.x.array[:] = uh.x.array
            if step in steps:
                yield uh

    return V, solve


def hyperelastic_problem(
    comm: MPI.Comm, n_cells: tuple[int, int, int] = (6, 2, 2), *, load_steps: int = 5
) -> tuple[fem.FunctionSpace, Callable[[np.ndarray], fem.Function]]:
    """Neo-Hookean cantilever (parameters: shear modulus, end load) solved by Newton in ``load_steps`` steps.

    A sample whose Newton solve diverges raises :class:`fem_ml.SolveFailed` (from :func:`fem_ml.check_converged`).
    """
    lame = 10.0
    domain = mesh.create_box(comm, [np.zeros(3), np.array([1.0, 0.2, 0.2])], list(n_cells), mesh.CellType.tetrahedron)
    V = fem.functionspace(domain, ("Lagrange", 1, (3,)))
    u, v = fem.Function(V, name="displacement"), ufl.TestFunction(V)
    mu, load = fem.Constant(domain, 1.0), fem.Constant(domain, 0.0)
    F = ufl.variable(ufl.Identity(3) + ufl.grad(u))
    J, I_C = ufl.det(F), ufl.tr(F.T * F)
    psi = (mu / 2) * (I_C - 3) - mu * ufl.ln(J) + (lame / 2) * ufl.ln(J) ** 2
    P = ufl.diff(psi, F)
    fdim = domain.topology.dim - 1
    end = mesh.locate_entities_boundary(domain, fdim, lambda x: np.isclose(x[0], 1.0))
    ds = ufl.Measure("ds", domain=domain, subdomain_data=mesh.meshtags(domain, fdim, end, np.ones_like(end)))
    residual = ufl.inner(P, ufl.grad(v)) * ufl.dx - ufl.inner(ufl.as_vector((0.0, 0.0, -load)), v) * ds(1)
    clamped = fem.locate_dofs_topological(
        V, fdim, mesh.locate_entities_boundary(domain, fdim, lambda x: np.isclose(x[0], 0.0))
    )
    problem = NonlinearProblem(
        residual, u, bcs=[fem.dirichletbc(np.zeros(3), clamped, V)], petsc_options_prefix="hyperelasticity_",
        petsc_options={"snes_type": "newtonls", "snes_linesearch_type": "basic", "snes_rtol": 1e-9,
                       "snes_atol": 1e-12, "snes_max_it": 30, **_lu()},
    )  # fmt: skip

    def solve(p: np.ndarray) -> fem.Function:
        mu.value = p[0]
        u.x.array[:] = 0.0  # every sample starts from the undeformed beam: results depend on p only
        for step in range(1, load_steps + 1):
            load.value = p[1] * step / load_steps
            problem.solve()
            fem_ml.check_converged(problem.solver, what=f"Newton (load step {step})")
        return u

    return V, solve
