# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Unsupervised discovery of hyperelastic laws from displacements and reaction forces (EUCLID-style).

The data are full-field displacements :math:`u_s` at several load steps :math:`s` and the total reaction forces
:math:`R_{s,b}` on the loaded boundaries :math:`b`; no stresses. The strain energy is a linear combination of
library terms in the invariants of the isochoric right Cauchy-Green tensor,

.. math::

    W(F) = \sum_k \theta_k Q_k(\tilde I_1, \tilde I_2, J), \qquad \tilde I_1 = J^{-2/3} I_1,\;
    \tilde I_2 = J^{-4/3} I_2,\; J = \det F,

for example :math:`(\tilde I_1 - 3)^i (\tilde I_2 - 3)^j` with :math:`1 \le i + j \le 3`, :math:`\log(\tilde I_2/3)`
and :math:`(J - 1)^2` (:func:`default_library`). In 2-D the mesh is a plane-strain section: :math:`F` is embedded
in 3-D with :math:`F_{33} = 1`. Each term's first Piola-Kirchhoff stress :math:`P_k = \partial Q_k / \partial F`
comes from :func:`ufl.diff`, and DOLFINx assembles, for each step and term, the internal-force vector

.. math::

    f_{s,k}[a] = \int_\Omega P_k(u_s) : \nabla v_a \,\mathrm{d}x .

The internal forces are linear in :math:`\theta`. Weak-form equilibrium asks the rows of the free dofs (those
without Dirichlet conditions) to vanish, :math:`A_s \theta = 0`; force balance asks the sum of the rows of each
loaded boundary's dofs, in the load direction, to equal the measured reaction, :math:`B_s \theta = R_s`. EUCLID's
cost (Flaschel, Kumar and De Lorenzis, CMAME 381, 2021) weights the two with :math:`\lambda_r`:

.. math::

    \min_{\theta \ge 0}\; \sum_s \|A_s \theta\|^2 + \lambda_r \|B_s \theta - R_s\|^2 .

:func:`assemble_system` reduces each step's tall distributed block :math:`A_s` to a small upper-triangular factor
by a tall-skinny QR (a local QR on each rank, then a QR of the stacked small factors), so the dense system is
replicated on every rank and does not depend on the partition beyond rounding. :func:`discover_law` then selects a
sparse, non-negative model: for every model size it finds the best support by non-negative least squares (all
supports up to ``max_terms``, or a sequential-thresholding path for large libraries), scores each size by
leave-one-load-step-out cross-validation, and keeps the smallest model whose cross-validated error is within a
tolerance of the best. The result (:class:`DiscoveredLaw`) prints as an equation and is a :class:`StrainEnergy`
that :func:`solve_displacement_controlled` solves with DOLFINx (SNES Newton), returning the reaction forces.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.optimize
import ufl
from dolfinx import fem, la, mesh

from fem_ml._fem import n_owned
from fem_ml._layout import DofLayout
from fem_ml._mpi import check_collectively, collectively
from fem_ml.plots import save_plot
from fem_ml.snapshots import check_converged

__all__ = [
    "ConstitutiveSystem",
    "DiscoveredLaw",
    "EnergyTerm",
    "Invariants",
    "LoadPath",
    "ModelCandidate",
    "StrainEnergy",
    "add_displacement_noise",
    "assemble_system",
    "default_library",
    "deformation_invariants",
    "discover_law",
    "plate_with_hole",
    "plot_discovery",
    "reaction_forces",
    "solve_displacement_controlled",
]

logger = logging.getLogger(__name__)

SUPERSCRIPTS = {1: "", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶"}


@dataclass(frozen=True)
class Invariants:
    r"""Isochoric invariants and volume ratio of a deformation gradient, as UFL expressions.

    Attributes:
        I1: :math:`\tilde I_1 = J^{-2/3}\,\mathrm{tr}\,C`.
        I2: :math:`\tilde I_2 = J^{-4/3}\,\tfrac12\bigl((\mathrm{tr}\,C)^2 - \mathrm{tr}(C^2)\bigr)`.
        J: :math:`J = \det F`.
    """

    I1: Any
    I2: Any
    J: Any


def deformation_invariants(F: Any) -> Invariants:
    r"""The invariants of ``F`` (UFL, ``(d, d)``); a 2-D ``F`` is a plane-strain section (:math:`F_{33} = 1`).

    With :math:`C = \mathrm{diag}(C_{2\times2}, 1)` the 3-D invariants are :math:`I_1 = \mathrm{tr}\,C_{2\times2} + 1`
    and :math:`I_2 = \det C_{2\times2} + \mathrm{tr}\,C_{2\times2}`.
    """
    d = F.ufl_shape[0]
    C = F.T * F
    J = ufl.det(F)
    if d == 2:
        I1 = ufl.tr(C) + 1.0
        I2 = ufl.det(C) + ufl.tr(C)
    elif d == 3:
        I1 = ufl.tr(C)
        I2 = 0.5 * (ufl.tr(C) ** 2 - ufl.tr(C * C))
    else:
        raise ValueError(f"Deformation gradients of dimension 2 or 3 only, got {d}.")
    return Invariants(I1=I1 * J ** (-2.0 / 3.0), I2=I2 * J ** (-4.0 / 3.0), J=J)


@dataclass(frozen=True)
class EnergyTerm:
    """One candidate term :math:`Q_k` of the strain energy.

    Attributes:
        name: How the term prints in an equation, e.g. ``"(Ĩ1-3)²"``.
        energy: ``energy(invariants) -> UFL expression`` of the term (:class:`Invariants` in).
        nonnegative: Whether physical admissibility asks for a non-negative coefficient (true for every term of
            :func:`default_library`: each is non-negative and vanishes at :math:`F = I`, so non-negative
            coefficients give a non-negative energy that vanishes in the reference state).
        key: A short identifier (ASCII) for files and summaries.
    """

    name: str
    energy: Callable[[Invariants], Any]
    nonnegative: bool = True
    key: str = ""


def _power(base: str, k: int) -> str:
    return f"{base}{SUPERSCRIPTS.get(k, f'^{k}')}"


def default_library(max_degree: int = 3, *, log_i2: bool = True, volumetric: Sequence[int] = (2,)) -> list[EnergyTerm]:
    r"""The EUCLID-style library: generalized Mooney-Rivlin, Gent-Thomas and volumetric terms.

    Terms, in this order: :math:`(\tilde I_1-3)^i (\tilde I_2-3)^j` for :math:`1 \le i+j \le` ``max_degree``
    (by degree, then by falling :math:`i`), :math:`\log(\tilde I_2/3)` if ``log_i2``, and :math:`(J-1)^m` for each
    ``m`` in ``volumetric`` (even powers). With the defaults that is 9 + 1 + 1 = 11 terms.

    Args:
        max_degree: Highest total degree of the Mooney-Rivlin terms.
        log_i2: Include the Gent-Thomas term :math:`\log(\tilde I_2/3)`.
        volumetric: Even powers ``m`` of the volumetric terms :math:`(J-1)^m`.
    """
    if max_degree < 1:
        raise ValueError(f"max_degree must be at least 1, got {max_degree}.")
    if any(m < 2 or m % 2 for m in volumetric):
        raise ValueError(f"volumetric powers must be even and >= 2, got {list(volumetric)}.")
    terms: list[EnergyTerm] = []
    for degree in range(1, max_degree + 1):
        for i in range(degree, -1, -1):
            j = degree - i

            def energy(inv: Invariants, i: int = i, j: int = j) -> Any:
                return (inv.I1 - 3.0) ** i * (inv.I2 - 3.0) ** j

            name = "".join(_power(f"(Ĩ{n}-3)", p) for n, p in ((1, i), (2, j)) if p > 0)  # e.g. (Ĩ1-3)²(Ĩ2-3)
            terms.append(EnergyTerm(name=name, energy=energy, key=f"K1^{i}K2^{j}"))
    if log_i2:
        terms.append(EnergyTerm(name="log(Ĩ2/3)", energy=lambda inv: ufl.ln(inv.I2 / 3.0), key="logI2"))
    for m in volumetric:

        def volume(inv: Invariants, m: int = m) -> Any:
            return (inv.J - 1.0) ** m

        terms.append(EnergyTerm(name=_power("(J-1)", m), energy=volume, key=f"J^{m}"))
    return terms


class StrainEnergy:
    r"""A strain energy :math:`W = \sum_k \theta_k Q_k` over a library of :class:`EnergyTerm`.

    Args:
        library: The terms.
        coefficients: One coefficient per term (zeros for inactive terms).

    Attributes:
        library: The terms.
        coefficients: The coefficients, a read-only copy.
    """

    def __init__(self, library: Sequence[EnergyTerm], coefficients: npt.ArrayLike):
        theta = np.array(coefficients, dtype=np.float64).reshape(-1)
        if theta.shape != (len(library),):
            raise ValueError(f"{theta.size} coefficients given for {len(library)} library terms.")
        if not np.all(np.isfinite(theta)):
            raise ValueError("The coefficients must be finite.")
        self.library = list(library)
        theta.setflags(write=False)
        self.coefficients = theta

    @property
    def support(self) -> npt.NDArray[np.intp]:
        """Indices of the active (non-zero) terms."""
        return np.flatnonzero(self.coefficients)

    def __str__(self) -> str:
        """The equation, e.g. ``W = 0.500 (Ĩ1-3) + 1.500 (J-1)²``."""
        parts = [f"{abs(c):.3f} {self.library[k].name}" for k, c in enumerate(self.coefficients) if c != 0.0]
        if not parts:
            return "W = 0"
        signs = [" - " if c < 0 else " + " for c in self.coefficients if c != 0.0]
        text = ("-" if signs[0] == " - " else "") + parts[0]
        for sign, part in zip(signs[1:], parts[1:], strict=True):
            text += sign + part
        return f"W = {text}"

    def __repr__(self) -> str:
        return f"StrainEnergy({self})"

    def energy(self, F: Any, coefficients: Sequence[Any] | None = None) -> Any:
        """UFL strain energy of the deformation gradient ``F`` (only the active terms).

        Args:
            F: Deformation gradient, a UFL ``(d, d)`` expression (a :func:`ufl.variable` to differentiate).
            coefficients: UFL coefficients of the active terms, in support order (e.g. ``fem.Constant``: the
                compiled form then does not depend on the values); default the numbers themselves.
        """
        inv = deformation_invariants(F)
        support = self.support
        values = [float(self.coefficients[k]) for k in support] if coefficients is None else list(coefficients)
        if len(values) != len(support):
            raise ValueError(f"{len(values)} UFL coefficients given for {len(support)} active terms.")
        W: Any = 0.0
        for c, k in zip(values, support, strict=True):
            W = W + c * self.library[k].energy(inv)
        return W

    def stress(self, u: fem.Function) -> Any:
        r"""First Piola-Kirchhoff stress :math:`P = \partial W / \partial F` at ``u`` (UFL, one Constant per term)."""
        F = ufl.variable(ufl.Identity(len(u)) + ufl.grad(u))
        domain = u.function_space.mesh
        constants = [fem.Constant(domain, float(self.coefficients[k])) for k in self.support]
        return ufl.diff(self.energy(F, constants), F)


def _quadrature_degree(V: fem.FunctionSpace, degree: int | None) -> int:
    if degree is not None:
        return int(degree)
    return max(1, 2 * (V.element.basix_element.degree - 1) + 1)


def _owned_dofs(V: fem.FunctionSpace, dofs: npt.ArrayLike) -> npt.NDArray[np.int32]:
    idx = np.unique(np.asarray(dofs, dtype=np.int64))
    return idx[idx < n_owned(V)].astype(np.int32)


def _internal_force(V: fem.FunctionSpace, form: fem.Form) -> npt.NDArray[np.float64]:
    """Assemble ``form`` (linear in the test function) and return the owned entries, ghosts accumulated."""
    b = fem.assemble_vector(form)
    b.scatter_reverse(la.InsertMode.add)
    return b.array[: n_owned(V)].copy()


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
    dx = ufl.dx(metadata={"quadrature_degree": _quadrature_degree(V, quadrature_degree)})
    f = _internal_force(V, fem.form(ufl.inner(energy.stress(u), ufl.grad(v)) * dx))
    local = np.array([f[_owned_dofs(V, d)].sum() for d in reaction_dofs], dtype=np.float64)
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
        energy: The strain energy (e.g. a :class:`DiscoveredLaw`).
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
    dx = ufl.dx(metadata={"quadrature_degree": _quadrature_degree(V, quadrature_degree)})
    P = energy.stress(u)
    residual = ufl.inner(P, ufl.grad(v)) * dx
    options = {
        "snes_type": "newtonls", "snes_linesearch_type": "bt", "snes_rtol": 1e-10, "snes_atol": 1e-12,
        "snes_max_it": 50, "ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps",
    }  # fmt: skip
    options.update(petsc_options or {})
    problem = NonlinearProblem(residual, u, bcs=list(bcs), petsc_options_prefix=prefix, petsc_options=options)
    force_form = fem.form(residual)
    owned = [_owned_dofs(V, d) for d in reaction_dofs]
    displacements: list[npt.NDArray[np.float64]] = []
    reactions = np.zeros((len(load_factors), len(owned)))
    try:
        for step, t in enumerate(load_factors):
            set_load(float(t))
            problem.solve()
            check_converged(problem.solver, what=f"Newton (load step {step}, load factor {t:g})")
            u.x.scatter_forward()
            displacements.append(u.x.array[: n_owned(V)].copy())
            f = _internal_force(V, force_form)
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


@dataclass
class ConstitutiveSystem:
    r"""The linear system in the coefficients, reduced to small dense blocks replicated on every rank.

    For each load step :math:`s`: ``equilibrium[s]`` is the upper-triangular factor :math:`T_s` with
    :math:`T_s^T T_s = A_s^T A_s` (the free-dof rows of the internal forces), ``force_matrix[s]`` is
    :math:`B_s` (one row per loaded boundary: the summed internal forces of its dofs), ``forces[s]`` the measured
    reactions :math:`R_s`. The objective of a coefficient vector is
    :math:`\sum_s \|T_s\theta\|^2 + \lambda_r\|B_s\theta - R_s\|^2`.

    Attributes:
        library: The terms.
        equilibrium: ``(n_steps, n_terms, n_terms)``.
        force_matrix: ``(n_steps, n_boundaries, n_terms)``.
        forces: ``(n_steps, n_boundaries)``.
        balance: :math:`\lambda_r`, the weight of the force rows (EUCLID uses 100).
        n_free_rows: Number of equilibrium rows per step (free dofs, or bump test functions), over all ranks.
        comm: The communicator of the mesh the system was assembled on.
    """

    library: list[EnergyTerm]
    equilibrium: npt.NDArray[np.float64]
    force_matrix: npt.NDArray[np.float64]
    forces: npt.NDArray[np.float64]
    balance: float
    n_free_rows: int
    comm: MPI.Comm = field(default_factory=lambda: MPI.COMM_WORLD, repr=False)

    @classmethod
    def concatenate(cls, systems: Sequence[ConstitutiveSystem]) -> ConstitutiveSystem:
        """The steps of several systems (e.g. of load paths with other boundary conditions) in one system.

        The systems must share the library (the same objects), the number of loaded boundaries and the balance.
        """
        first = systems[0]
        for other in systems[1:]:
            if other.library != first.library or other.forces.shape[1] != first.forces.shape[1]:
                raise ValueError("Systems to concatenate need the same library and number of loaded boundaries.")
            if other.balance != first.balance:
                raise ValueError("Systems to concatenate need the same balance.")
        return cls(
            first.library,
            np.concatenate([s.equilibrium for s in systems]),
            np.concatenate([s.force_matrix for s in systems]),
            np.concatenate([s.forces for s in systems]),
            first.balance,
            first.n_free_rows,
            first.comm,
        )

    @property
    def n_steps(self) -> int:
        """Number of load steps."""
        return int(self.forces.shape[0])

    def least_squares(
        self, steps: Sequence[int] | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        r"""The stacked small least-squares problem :math:`\min\|M\theta - r\|^2` of the given steps (default all)."""
        chosen = range(self.n_steps) if steps is None else steps
        w = math.sqrt(self.balance)
        M = np.vstack([np.vstack([self.equilibrium[s], w * self.force_matrix[s]]) for s in chosen])
        r = np.concatenate([np.concatenate([np.zeros(len(self.library)), w * self.forces[s]]) for s in chosen])
        return M, r

    def gram(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        r"""Normal equations :math:`(M^T M, M^T r)` of all steps (for comparisons across rank counts)."""
        M, r = self.least_squares()
        return M.T @ M, M.T @ r

    def objective(self, theta: npt.ArrayLike, steps: Sequence[int] | None = None) -> float:
        """The cost of ``theta`` on the given steps (default all)."""
        M, r = self.least_squares(steps)
        return float(np.sum((M @ np.asarray(theta, dtype=np.float64) - r) ** 2))

    def force_scale(self, steps: Sequence[int] | None = None) -> float:
        r""":math:`\lambda_r \sum_s \|R_s\|^2` of the given steps: the cost of :math:`\theta = 0`."""
        chosen = list(range(self.n_steps) if steps is None else steps)
        return float(self.balance * np.sum(self.forces[chosen] ** 2))


def _tsqr(comm: MPI.Comm, local: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Upper-triangular ``T`` with ``T^T T = A^T A`` for the row-distributed ``A`` (collective; same on all ranks).

    Each rank reduces its rows by a QR; rank 0 stacks the small factors in rank order, reduces them again and
    broadcasts the result, so every rank holds the same bits.
    """
    n = local.shape[1]
    small = np.linalg.qr(local, mode="r") if local.shape[0] > 0 else np.zeros((0, n))
    gathered = comm.gather(small, root=0)
    T = None
    if comm.rank == 0:
        assert gathered is not None
        stacked = np.vstack(gathered)
        T = np.linalg.qr(stacked, mode="r") if stacked.shape[0] > 0 else np.zeros((0, n))
        if T.shape[0] < n:
            T = np.vstack([T, np.zeros((n - T.shape[0], n))])
        T = T[:n]
        T = T * np.where(np.diag(T) < 0, -1.0, 1.0)[:, None]  # unique up to signs: fix them
    return np.asarray(comm.bcast(T, root=0))


def _check_inputs(
    library: Sequence[EnergyTerm],
    V: fem.FunctionSpace,
    displacements: Sequence[npt.ArrayLike | fem.Function],
    fixed: npt.NDArray[np.int64],
    reaction_dofs: Sequence[npt.ArrayLike],
    forces: npt.NDArray[np.float64],
    balance: float,
    bumps: int | None,
) -> None:
    """Raise ValueError for bad inputs of :func:`assemble_system` (this rank's view; no collectives)."""
    n_local = n_owned(V)
    n_full = (V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts) * V.dofmap.index_map_bs
    if not library:
        raise ValueError("The library of terms is empty.")
    if not displacements:
        raise ValueError("No displacement fields given.")
    if forces.shape != (len(displacements), len(reaction_dofs)):
        raise ValueError(
            f"reaction_forces has shape {forces.shape}, expected (n_steps, n_boundaries) = "
            f"({len(displacements)}, {len(reaction_dofs)})."
        )
    if not np.all(np.isfinite(forces)):
        raise ValueError("reaction_forces must be finite.")
    if bumps is not None and not (isinstance(bumps, int | np.integer) and bumps >= 1):
        raise ValueError(f"bumps must be None or an integer >= 1, got {bumps!r}.")
    if not (math.isfinite(balance) and balance > 0):
        raise ValueError(f"balance must be finite and > 0, got {balance}.")
    for s, d in enumerate(displacements):
        if isinstance(d, fem.Function):
            if d.function_space is not V and d.function_space != V:
                raise ValueError(f"Displacement {s} lives on another function space.")
            continue
        a = np.asarray(d)
        if a.shape not in {(n_local,), (n_full,)}:
            raise ValueError(f"Displacement {s} has shape {a.shape}, expected ({n_local},) owned values.")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"Displacement {s} holds NaN or inf.")
    if fixed.size and (fixed.min() < 0 or fixed.max() >= n_full):
        raise ValueError("dirichlet_dofs holds indices outside the local dof range.")
    for b, d in enumerate(reaction_dofs):
        idx = np.asarray(d, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n_full):
            raise ValueError(f"reaction_dofs[{b}] holds indices outside the local dof range.")


def assemble_system(
    library: Sequence[EnergyTerm],
    V: fem.FunctionSpace,
    displacements: Sequence[npt.ArrayLike | fem.Function],
    *,
    dirichlet_dofs: npt.ArrayLike,
    reaction_dofs: Sequence[npt.ArrayLike],
    reaction_forces: npt.ArrayLike,
    balance: float = 100.0,
    bumps: int | None = None,
    quadrature_degree: int | None = None,
) -> ConstitutiveSystem:
    r"""Assemble the EUCLID system from displacement fields and reaction forces (collective).

    One form per library term, :math:`\int_\Omega P_k(u):\nabla v\,\mathrm{d}x` with
    :math:`P_k = \partial Q_k/\partial F` by :func:`ufl.diff`, is compiled once; for each step the measured
    displacement is copied into its coefficient and each term's vector is assembled (one vector assembly per term
    and step). The free-dof rows are reduced by a tall-skinny QR (``_tsqr``), the force rows are summed over
    the ranks.

    Args:
        library: The candidate terms (e.g. :func:`default_library`).
        V: Vector function space of the displacement (blocked, ``(gdim,)``).
        displacements: One field per step: a Function on ``V`` or the owned dof values (``n_owned`` entries).
        dirichlet_dofs: Local (unrolled) indices of every dof with a Dirichlet condition, of any component (these
            rows are left out of the equilibrium rows).
        reaction_dofs: One dof set per loaded boundary (local unrolled indices, in the load direction).
        reaction_forces: Measured reactions, ``(n_steps, n_boundaries)``.
        balance: :math:`\lambda_r`, weight of the force rows.
        bumps: None: one equilibrium row per free dof (test functions = the FE basis functions, as EUCLID).
            An integer :math:`m`: smooth test functions instead, :math:`v = \varphi_c\, e_i` for each component
            :math:`i` and each of :math:`m^d` centres :math:`c` on a grid over the mesh's bounding box, with
            :math:`\varphi_c(x) = (1 - |x - c|^2/\rho^2)_+^2`, :math:`\rho` 1.5 grid spacings, interpolated
            and set to zero at the Dirichlet dofs (still test functions of the weak form). Integrating the
            equilibrium against smooth weights averages the displacement noise over many cells, so the rows
            are far less noisy; the rows are local weighted sums of the assembled vectors, summed over ranks.
        quadrature_degree: Quadrature degree (default from the element degree); use the one of the data's solver
            for noise-free synthetic data.

    Returns:
        The system, the same on every rank.

    Its length (over 80 lines) is mostly this docstring; the body is the setup of the forms and test functions
    and one loop over the steps, kept together so the order of the collective calls is visible in one place.
    """
    comm = V.mesh.comm
    n_local = n_owned(V)
    forces = np.asarray(reaction_forces, dtype=np.float64)
    fixed = np.asarray(dirichlet_dofs, dtype=np.int64).reshape(-1)
    with collectively(comm):
        _check_inputs(library, V, displacements, fixed, reaction_dofs, forces, balance, bumps)
    free = np.ones(n_local, dtype=bool)
    free[fixed[fixed < n_local]] = False
    owned_reactions = [_owned_dofs(V, d) for d in reaction_dofs]
    weights, radius = (None, 0.0) if bumps is None else _bump_weights(V, free, int(bumps))
    force_weights = [_ramp_weights(V, d, free, radius) if weights is not None else None for d in owned_reactions]
    n_free_rows = int(comm.allreduce(int(free.sum()), op=MPI.SUM)) if weights is None else weights.shape[1]

    u = fem.Function(V)
    v = ufl.TestFunction(V)
    F = ufl.variable(ufl.Identity(len(u)) + ufl.grad(u))
    inv = deformation_invariants(F)
    dx = ufl.dx(metadata={"quadrature_degree": _quadrature_degree(V, quadrature_degree)})
    forms = [fem.form(ufl.inner(ufl.diff(term.energy(inv), F), ufl.grad(v)) * dx) for term in library]

    n_terms = len(library)
    n_steps = len(displacements)
    equilibrium = np.zeros((n_steps, n_terms, n_terms))
    force_matrix = np.zeros((n_steps, len(reaction_dofs), n_terms))
    for s, d in enumerate(displacements):
        values = d.x.array if isinstance(d, fem.Function) else np.asarray(d, dtype=np.float64)
        u.x.array[:n_local] = values[:n_local]
        u.x.scatter_forward()
        columns = np.empty((n_local, n_terms))
        for k, form in enumerate(forms):
            columns[:, k] = _internal_force(V, form)
        with collectively(comm):
            if not np.all(np.isfinite(columns)):
                raise ValueError(f"Step {s}: non-finite internal forces (is J > 0 everywhere?).")
        if weights is None:
            equilibrium[s] = _tsqr(comm, columns[free])
        else:
            rows = comm.allreduce(weights.T @ columns, op=MPI.SUM)
            equilibrium[s] = _tsqr(MPI.COMM_SELF, rows) if comm.rank == 0 else 0.0
            comm.Bcast(equilibrium[s], root=0)
        sums = [
            columns[d].sum(axis=0) if w is None else w @ columns
            for d, w in zip(owned_reactions, force_weights, strict=True)
        ]
        local = np.array(sums).reshape(len(reaction_dofs), n_terms)
        force_matrix[s] = comm.allreduce(local, op=MPI.SUM)
        if comm.rank == 0:
            logger.debug("assembled step %d of %d", s + 1, n_steps)
    return ConstitutiveSystem(
        list(library), equilibrium, force_matrix, forces.copy(), float(balance), n_free_rows, comm
    )


def _ramp_weights(
    V: fem.FunctionSpace, dofs: npt.NDArray[np.int32], free: npt.NDArray[np.bool_], radius: float
) -> npt.NDArray[np.float64]:
    r"""Owned dof values of a smooth test function that is 1 on ``dofs`` and decays to 0 within ``radius``.

    :math:`\psi = (1 - \min(d/\rho, 1)^2)^2` of the distance :math:`d` of a dof's node to the nodes of ``dofs``
    (over all ranks), on the free dofs of the same components as ``dofs``; zero at every other Dirichlet dof.
    """
    from scipy.spatial import cKDTree

    comm = V.mesh.comm
    bs = V.dofmap.index_map_bs
    gdim = V.mesh.geometry.dim
    x = V.tabulate_dof_coordinates()[: V.dofmap.index_map.size_local, :gdim]
    own = np.concatenate(comm.allgather(x[dofs // bs])) if comm.size > 1 else x[dofs // bs]
    components = np.unique(np.concatenate(comm.allgather(dofs % bs)))
    psi = np.zeros(len(x) * bs)
    if len(own):
        d = cKDTree(own).query(x)[0]
        ramp = (1.0 - np.minimum(d / radius, 1.0) ** 2) ** 2
        for i in components:
            psi[i::bs] = ramp
    psi[~free] = 0.0
    psi[dofs] = 1.0
    return psi


def _bump_weights(V: fem.FunctionSpace, free: npt.NDArray[np.bool_], m: int) -> tuple[npt.NDArray[np.float64], float]:
    """Owned dof values of the bump test functions, ``(n_owned, m**d * bs)`` (zero at Dirichlet dofs), radius."""
    comm = V.mesh.comm
    bs = V.dofmap.index_map_bs
    nodes = V.tabulate_dof_coordinates()[: V.dofmap.index_map.size_local]
    gdim = V.mesh.geometry.dim
    x = nodes[:, :gdim]
    lo, hi = np.empty(gdim), np.empty(gdim)
    comm.Allreduce(x.min(axis=0) if len(x) else np.full(gdim, np.inf), lo, op=MPI.MIN)
    comm.Allreduce(x.max(axis=0) if len(x) else np.full(gdim, -np.inf), hi, op=MPI.MAX)
    spacing = (hi - lo) / m
    radius = 1.5 * float(spacing.max())
    axes = [lo[i] + spacing[i] * (np.arange(m) + 0.5) for i in range(gdim)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, gdim)
    r2 = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1) / radius**2
    phi = np.clip(1.0 - r2, 0.0, None) ** 2  # (n_nodes, n_centres)
    weights = np.zeros((len(x) * bs, len(centres) * bs))
    for i in range(bs):
        weights[i::bs, i::bs] = phi
    weights[~free] = 0.0
    return weights, radius


@dataclass(frozen=True)
class ModelCandidate:
    """The best model of one size found by :func:`discover_law`.

    Attributes:
        support: Indices of its terms.
        coefficients: All coefficients (zeros off the support).
        cost_rel: Training cost relative to the cost of zero coefficients.
        cv_rel: Leave-one-load-step-out cross-validated cost, relative likewise.
    """

    support: tuple[int, ...]
    coefficients: npt.NDArray[np.float64]
    cost_rel: float
    cv_rel: float


class DiscoveredLaw(StrainEnergy):
    """A discovered strain energy: a :class:`StrainEnergy` plus how it was selected.

    Attributes:
        candidates: The best model of each size (the Pareto front of cost against number of terms).
        selected: Index into ``candidates`` of the chosen model.
        system: The system it was discovered from.
    """

    def __init__(self, system: ConstitutiveSystem, candidates: list[ModelCandidate], selected: int):
        super().__init__(system.library, candidates[selected].coefficients)
        self.system = system
        self.candidates = candidates
        self.selected = selected


def _bounded_fit(M: npt.NDArray, r: npt.NDArray, nonneg: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Least squares ``min |M x - r|`` with ``x_k >= 0`` where ``nonneg[k]``."""
    if M.shape[1] == 0:
        return np.zeros(0)
    if np.all(nonneg):
        return np.asarray(scipy.optimize.nnls(M, r, maxiter=50 * M.shape[1])[0])
    if not np.any(nonneg):
        return np.asarray(scipy.linalg.lstsq(M, r)[0])
    lower = np.where(nonneg, 0.0, -np.inf)
    return np.asarray(scipy.optimize.lsq_linear(M, r, bounds=(lower, np.inf), method="bvls").x)


def _candidate_supports(
    M: npt.NDArray, r: npt.NDArray, nonneg: npt.NDArray[np.bool_], max_terms: int, method: str
) -> dict[int, tuple[int, ...]]:
    """The best support of each size 1..max_terms (by training cost), exhaustively or by thresholding."""
    n = M.shape[1]
    best: dict[int, tuple[float, tuple[int, ...]]] = {}

    def consider(support: tuple[int, ...]) -> None:
        cols = list(support)
        x = _bounded_fit(M[:, cols], r, nonneg[cols])
        size = np.abs(x) * np.linalg.norm(M[:, cols], axis=0)
        active = tuple(c for c, w in zip(cols, size, strict=True) if w > 1e-12 * max(size.max(), 1e-300))
        if not active:
            return
        if active != support:  # a bound is active: the fit is that of the smaller support
            x = _bounded_fit(M[:, list(active)], r, nonneg[list(active)])
        cost = float(np.sum((M[:, list(active)] @ x - r) ** 2))
        k = len(active)
        if k not in best or cost < best[k][0] - 1e-14 * abs(best[k][0]):
            best[k] = (cost, active)

    if method == "exhaustive":
        for k in range(1, max_terms + 1):
            for support in itertools.combinations(range(n), k):
                consider(support)
    else:  # sequentially thresholded non-negative least squares over a path of thresholds
        scale = np.linalg.norm(M, axis=0)
        scale[scale == 0] = 1.0
        Ms = M / scale
        for tau in np.logspace(-6, 0, 61):
            support = tuple(range(n))
            for _ in range(n):
                x = _bounded_fit(Ms[:, list(support)], r, nonneg[list(support)])
                weight = np.abs(x) * np.linalg.norm(Ms[:, list(support)], axis=0)
                keep = tuple(c for c, w in zip(support, weight, strict=True) if w > tau * weight.max())
                if keep == support or not keep:
                    break
                support = keep
            if len(support) <= max_terms:
                consider(support)
    return {k: s for k, (_, s) in sorted(best.items())}


def discover_law(
    system: ConstitutiveSystem,
    *,
    max_terms: int = 6,
    method: str = "auto",
    rtol: float = 0.1,
    atol: float = 1e-8,
) -> DiscoveredLaw:
    r"""Select a sparse, physically admissible law from the system (collective on ``system.comm``).

    For each model size :math:`k \le` ``max_terms`` the support of smallest cost is found with non-negative
    least squares (coefficients of terms with ``nonnegative=True`` are bounded below by 0: physical
    admissibility): over all supports (``method="exhaustive"``) or along a path of sequentially thresholded fits
    (``"threshold"``; ``"auto"`` is exhaustive when there are at most 5000 supports). Each size's best support
    is then refitted with one load step left out, for each step in turn, and scored on the step left out
    (leave-one-step-out cross-validation, relative to the cost of zero coefficients). The smallest model whose
    cross-validated cost is at most ``(1 + rtol) * best + atol`` is chosen: more terms must earn their place on
    unseen load steps.

    Rank 0 computes and broadcasts, so every rank returns the same bits.

    Args:
        system: From :func:`assemble_system` (at least 2 load steps for the cross-validation).
        max_terms: Largest model size considered.
        method: ``"auto"``, ``"exhaustive"`` or ``"threshold"``.
        rtol: Relative tolerance on the cross-validated cost.
        atol: Absolute tolerance on the relative cross-validated cost (two models below it both fit the data
            to round-off).
    """
    comm = system.comm
    n = len(system.library)
    check_collectively(
        comm,
        None if method in {"auto", "exhaustive", "threshold"} else f"Unknown method {method!r}.",
        ValueError,
    )
    with collectively(comm):
        if system.n_steps < 2:
            raise ValueError("Cross-validation over load steps needs at least 2 load steps.")
        if max_terms < 1:
            raise ValueError(f"max_terms must be >= 1, got {max_terms}.")
        if not (rtol >= 0 and atol >= 0):
            raise ValueError("rtol and atol must be >= 0.")
    result = None
    with collectively(comm):
        if comm.rank == 0:
            result = _discover(system, min(max_terms, n), method, rtol, atol)
    candidates, selected = comm.bcast(result, root=0)
    return DiscoveredLaw(system, candidates, selected)


def _discover(
    system: ConstitutiveSystem, max_terms: int, method: str, rtol: float, atol: float
) -> tuple[list[ModelCandidate], int]:
    n = len(system.library)
    nonneg = np.array([t.nonnegative for t in system.library])
    if method == "auto":
        count = sum(math.comb(n, k) for k in range(1, max_terms + 1))
        method = "exhaustive" if count <= 5000 else "threshold"
    M, r = system.least_squares()
    zero_cost = system.force_scale()
    supports = _candidate_supports(M, r, nonneg, max_terms, method)
    candidates: list[ModelCandidate] = []
    for support in supports.values():
        cols = list(support)
        theta = np.zeros(n)
        theta[cols] = _bounded_fit(M[:, cols], r, nonneg[cols])
        cv = 0.0
        for s in range(system.n_steps):
            train = [q for q in range(system.n_steps) if q != s]
            Mt, rt = system.least_squares(train)
            x = np.zeros(n)
            x[cols] = _bounded_fit(Mt[:, cols], rt, nonneg[cols])
            cv += system.objective(x, [s])
        candidates.append(ModelCandidate(support, theta, system.objective(theta) / zero_cost, cv / zero_cost))
        logger.info(
            "%d terms: cost %.3e, cv %.3e  %s",
            len(support),
            candidates[-1].cost_rel,
            candidates[-1].cv_rel,
            StrainEnergy(system.library, theta),
        )
    best = min(c.cv_rel for c in candidates)
    selected = next(i for i, c in enumerate(candidates) if c.cv_rel <= (1 + rtol) * best + atol)
    return candidates, selected


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


def plot_discovery(
    law: DiscoveredLaw,
    path: str | os.PathLike[str],
    *,
    truth: npt.ArrayLike | None = None,
    comm: MPI.Comm | None = None,
) -> Path:
    """Pareto front (cost and cross-validated cost against the number of terms) and the coefficients (collective).

    Rank 0 draws and writes the PNG atomically; errors are raised on every rank.

    Args:
        law: The discovered law.
        path: Output PNG.
        truth: True coefficients to draw beside the discovered ones.
        comm: Communicator (default the one of the law's system).
    """
    comm = law.system.comm if comm is None else comm

    def draw(axes: Any) -> None:
        ax0, ax1 = axes
        sizes = [len(c.support) for c in law.candidates]
        ax0.semilogy(sizes, [max(c.cost_rel, 1e-300) for c in law.candidates], "o-", label="training cost")
        ax0.semilogy(sizes, [max(c.cv_rel, 1e-300) for c in law.candidates], "s--", label="cross-validated")
        ax0.axvline(sizes[law.selected], color="k", lw=0.8, label="selected")
        ax0.set_xlabel("number of terms")
        ax0.set_ylabel("relative cost")
        ax0.legend()
        k = np.arange(len(law.library))
        ax1.bar(k - 0.2, law.coefficients, 0.4, label="discovered")
        if truth is not None:
            ax1.bar(k + 0.2, np.asarray(truth, dtype=np.float64), 0.4, label="true")
        ax1.set_xticks(k, [term.name for term in law.library], rotation=60, ha="right", fontsize=7)
        ax1.set_ylabel("coefficient")
        ax1.legend()
        ax0.figure.suptitle(str(law), fontsize=8)

    return save_plot(comm, path, draw, ncols=2, figsize=(11, 4))
