# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Loading experiments: displacement-controlled solves with a known law, reaction forces, noise, the test specimen.

:func:`solve_displacement_controlled` solves the hyperelastic problem of a
:class:`~fem_ml.constitutive.energy.StrainEnergy` along a load path with DOLFINx (SNES Newton) and returns the
displacements and reaction forces of each step (:class:`LoadPath`); :func:`reaction_forces` evaluates the reaction
forces of a law at one displacement. :func:`add_displacement_noise` adds Gaussian noise that does not depend on the
number of ranks, and :func:`plate_with_hole` builds EUCLID's specimen, a quarter plate with a hole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
import ufl
from dolfinx import fem, mesh

from fem_ml._fem import n_owned
from fem_ml._layout import DofLayout
from fem_ml._mpi import check_collectively
from fem_ml.constitutive._assembly import internal_force, owned_dofs, resolve_quadrature_degree
from fem_ml.constitutive.energy import StrainEnergy
from fem_ml.snapshots import check_converged

__all__ = ["LoadPath", "add_displacement_noise", "plate_with_hole", "reaction_forces", "solve_displacement_controlled"]


def reaction_forces(
    energy: StrainEnergy,
    u: fem.Function,
    reaction_dofs: Sequence[npt.ArrayLike],
    *,
    quadrature_degree: int | None = None,
) -> npt.NDArray[np.float64]:
    r"""Reaction forces :math:`\sum_{a \in D_b} \int_\Omega P(u) : \nabla v_a` of each dof set :math:`D_b` (collective).

    Args:
        energy: The strain energy.
        u: Displacement.
        reaction_dofs: One array of local (unrolled) dof indices per loaded boundary: the dofs of the boundary in
            the load direction, e.g. ``fem.locate_dofs_topological(V.sub(0), fdim, facets)``.
        quadrature_degree: Quadrature degree (default from the element degree).
    """
    V = u.function_space
    v = ufl.TestFunction(V)
    dx = ufl.dx(metadata={"quadrature_degree": resolve_quadrature_degree(V, quadrature_degree)})
    f = internal_force(V, fem.form(ufl.inner(energy.stress(u), ufl.grad(v)) * dx))
    local = np.array([f[owned_dofs(V, d)].sum() for d in reaction_dofs], dtype=np.float64)
    return np.asarray(V.mesh.comm.allreduce(local, op=MPI.SUM), dtype=np.float64)


@dataclass
class LoadPath:
    """Displacements and reaction forces along a displacement-controlled load path.

    Attributes:
        load_factors: The load factor of each step.
        displacements: Owned dof values of the displacement at each step.
        reactions: Reaction force of each loaded boundary at each step, ``(n_steps, n_boundaries)``.
    """

    load_factors: npt.NDArray[np.float64]
    displacements: list[npt.NDArray[np.float64]]
    reactions: npt.NDArray[np.float64]


def solve_displacement_controlled(
    energy: StrainEnergy,
    u: fem.Function,
    bcs: Sequence[fem.DirichletBC],
    set_load: Callable[[float], None],
    load_factors: Sequence[float],
    reaction_dofs: Sequence[npt.ArrayLike],
    *,
    quadrature_degree: int | None = None,
    petsc_options: dict[str, Any] | None = None,
    prefix: str = "constitutive_",
) -> LoadPath:
    r"""Solve a displacement-controlled hyperelastic problem with ``energy`` and return the reaction forces.

    Newton's method (PETSc SNES through :class:`dolfinx.fem.petsc.NonlinearProblem`) solves
    :math:`\int_\Omega P(u) : \nabla v \,\mathrm{d}x = 0` for each load factor in turn, each step starting from the
    previous solution; ``set_load(t)`` updates the prescribed displacements (the ``fem.Constant`` or Function
    values of ``bcs``). A step whose Newton iteration fails raises :class:`fem_ml.snapshots.SolveFailed` on every rank.
    The PETSc objects are destroyed before returning (collective).

    Args:
        energy: The strain energy (e.g. a :class:`~fem_ml.constitutive.discovery.DiscoveredLaw`).
        u: Displacement Function; it holds the last step's solution on return. Start it at zero.
        bcs: Dirichlet conditions.
        set_load: Called with each load factor before its solve.
        load_factors: The load factors, in order.
        reaction_dofs: Dof sets whose reaction forces to return (see :func:`reaction_forces`).
        quadrature_degree: Quadrature degree (default from the element degree).
        petsc_options: SNES/KSP options (default: Newton with line search, LU by MUMPS, relative tolerance 1e-10).
        prefix: PETSc options prefix.
    """
    from dolfinx.fem.petsc import NonlinearProblem

    V = u.function_space
    v = ufl.TestFunction(V)
    dx = ufl.dx(metadata={"quadrature_degree": resolve_quadrature_degree(V, quadrature_degree)})
    P = energy.stress(u)
    residual = ufl.inner(P, ufl.grad(v)) * dx
    options = {
        "snes_type": "newtonls", "snes_linesearch_type": "bt", "snes_rtol": 1e-10, "snes_atol": 1e-12,
        "snes_max_it": 50, "ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps",
    }  # fmt: skip
    options.update(petsc_options or {})
    problem = NonlinearProblem(residual, u, bcs=list(bcs), petsc_options_prefix=prefix, petsc_options=options)
    force_form = fem.form(residual)
    owned = [owned_dofs(V, d) for d in reaction_dofs]
    displacements: list[npt.NDArray[np.float64]] = []
    reactions = np.zeros((len(load_factors), len(owned)))
    try:
        for step, t in enumerate(load_factors):
            set_load(float(t))
            problem.solve()
            check_converged(problem.solver, what=f"Newton (load step {step}, load factor {t:g})")
            u.x.scatter_forward()
            displacements.append(u.x.array[: n_owned(V)].copy())
            f = internal_force(V, force_form)
            reactions[step] = V.mesh.comm.allreduce(np.array([f[d].sum() for d in owned]), op=MPI.SUM)
    finally:
        problem.solver.destroy()
        problem.A.destroy()
        problem.b.destroy()
        problem.x.destroy()
    return LoadPath(np.asarray(load_factors, dtype=np.float64), displacements, reactions)


def add_displacement_noise(
    V: fem.FunctionSpace,
    displacements: Sequence[npt.NDArray[np.float64]],
    level: float,
    *,
    scale: float = 1.0,
    seed: int = 0,
) -> list[npt.NDArray[np.float64]]:
    r"""Add Gaussian noise of standard deviation ``level * scale`` to every dof value (collective).

    The noise is drawn on rank 0 in a dof order that does not depend on the partition
    (:class:`fem_ml._layout.DofLayout`), so the same ``seed`` gives the same noisy field on any number of ranks.
    EUCLID's noise levels are absolute on a specimen of unit size: pass its size as ``scale``.

    Args:
        V: Function space of the displacements.
        displacements: Owned dof values, one array per step.
        level: Relative noise level (0 returns copies).
        scale: Length the level is relative to.
        seed: Seed of the random generator.
    """
    check_collectively(
        V.mesh.comm,
        None if math.isfinite(level) and level >= 0 and math.isfinite(scale) and scale > 0
        else f"Noise level must be finite and >= 0 and scale > 0, got {level} and {scale}.",
    )  # fmt: skip
    if level == 0:
        return [np.array(d, dtype=np.float64) for d in displacements]
    layout = DofLayout(V)
    rng = np.random.default_rng(seed)
    out = []
    for d in displacements:
        noise = rng.normal(0.0, level * scale, layout.n_global) if V.mesh.comm.rank == 0 else None
        out.append(np.asarray(d, dtype=np.float64) + layout.scatter(noise))
    return out


def plate_with_hole(
    comm: MPI.Comm, n: int = 16, *, radius: float = 0.3, length: float = 1.0, grading: float = 1.5
) -> mesh.Mesh:
    r"""A quarter plate with a hole, :math:`[0, L]^2` minus the disc :math:`|x| < r`, by a structured mapping.

    The hole's arc and the two outer edges (:math:`x = L` and :math:`y = L`, :math:`2n` cells) are joined by
    straight rays of :math:`n` cells, graded towards the hole (``grading`` > 1); each quadrilateral is split into
    two triangles. The symmetry edges are :math:`x = 0` and :math:`y = 0`. Rank 0 builds the cells and DOLFINx
    distributes them (collective).

    Args:
        comm: Communicator of the mesh.
        n: Cells along each outer edge and along each ray (``4 n**2`` triangles).
        radius: Radius of the hole, ``0 < radius < length``.
        length: Edge length of the quarter plate.
        grading: Ray spacing exponent: node ``j`` of a ray sits at :math:`(j/n)^{g}`.
    """
    import basix.ufl

    check_collectively(
        comm,
        None if n >= 1 and 0 < radius < length and grading > 0
        else f"plate_with_hole needs n >= 1, 0 < radius < length and grading > 0; got {n}, {radius}, {length}.",
    )  # fmt: skip
    element: Any = basix.ufl.element("Lagrange", "triangle", 1, shape=(2,))
    if comm.rank != 0:
        return mesh.create_mesh(comm, np.empty((0, 3), dtype=np.int64), element, np.empty((0, 2)))
    n_t, n_s = 2 * n, n
    t = np.linspace(0.0, 2.0, n_t + 1)
    s = np.linspace(0.0, 1.0, n_s + 1) ** grading
    angle = t * np.pi / 4
    inner = radius * np.column_stack([np.cos(angle), np.sin(angle)])
    outer = length * np.column_stack([np.where(t <= 1, 1.0, 2.0 - t), np.where(t <= 1, t, 1.0)])
    x = (1 - s[None, :, None]) * inner[:, None, :] + s[None, :, None] * outer[:, None, :]
    x = x.reshape(-1, 2)
    node = np.arange((n_t + 1) * (n_s + 1)).reshape(n_t + 1, n_s + 1)
    a, b = node[:-1, :-1].ravel(), node[1:, :-1].ravel()
    c, d = node[1:, 1:].ravel(), node[:-1, 1:].ravel()
    flip = (np.add.outer(np.arange(n_t), np.arange(n_s)) % 2).ravel().astype(bool)
    first = np.where(flip[:, None], np.column_stack([a, b, d]), np.column_stack([a, b, c]))
    second = np.where(flip[:, None], np.column_stack([b, c, d]), np.column_stack([a, c, d]))
    cells = np.vstack([first, second]).astype(np.int64)
    return mesh.create_mesh(comm, cells, element, x)
