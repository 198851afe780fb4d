# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The EUCLID system: the internal forces of each library term at each load step, reduced to small dense blocks.

:func:`assemble_system` assembles, for each step :math:`s` and term :math:`k`, the internal-force vector
:math:`f_{s,k}[a] = \int_\Omega P_k(u_s) : \nabla v_a \,\mathrm{d}x`, linear in the coefficients. The free-dof rows
(or their weighted sums against smooth test functions) are reduced by a tall-skinny QR to a small upper-triangular
factor, and the rows of each loaded boundary are summed into the force rows; the result
(:class:`ConstitutiveSystem`) is replicated on every rank and gives the least-squares problem of the discovery.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
import ufl
from dolfinx import fem

from fem_ml._fem import n_owned
from fem_ml._mpi import collectively
from fem_ml.constitutive._assembly import internal_force, owned_dofs, resolve_quadrature_degree
from fem_ml.constitutive.energy import EnergyTerm, deformation_invariants

__all__ = ["ConstitutiveSystem", "assemble_system"]

logger = logging.getLogger(__name__)


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
        library: The candidate terms (e.g. :func:`~fem_ml.constitutive.energy.default_library`).
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
    """
    comm = V.mesh.comm
    n_local = n_owned(V)
    forces = np.asarray(reaction_forces, dtype=np.float64)
    fixed = np.asarray(dirichlet_dofs, dtype=np.int64).reshape(-1)
    with collectively(comm):
        _check_inputs(library, V, displacements, fixed, reaction_dofs, forces, balance, bumps)
    free = np.ones(n_local, dtype=bool)
    free[fixed[fixed < n_local]] = False
    owned_reactions = [owned_dofs(V, d) for d in reaction_dofs]
    weights, radius = (None, 0.0) if bumps is None else _bump_weights(V, free, int(bumps))
    force_weights = [_ramp_weights(V, d, free, radius) if weights is not None else None for d in owned_reactions]
    n_free_rows = int(comm.allreduce(int(free.sum()), op=MPI.SUM)) if weights is None else weights.shape[1]

    u = fem.Function(V)
    forms = _term_forms(library, u, quadrature_degree)

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
            columns[:, k] = internal_force(V, form)
        equilibrium[s], force_matrix[s] = _reduce_step(comm, s, columns, free, weights, owned_reactions, force_weights)
        if comm.rank == 0:
            logger.debug("assembled step %d of %d", s + 1, n_steps)
    return ConstitutiveSystem(
        list(library), equilibrium, force_matrix, forces.copy(), float(balance), n_free_rows, comm
    )


def _term_forms(library: Sequence[EnergyTerm], u: fem.Function, quadrature_degree: int | None) -> list[fem.Form]:
    r"""One compiled form per term: the internal force :math:`\int_\Omega P_k(u):\nabla v\,\mathrm{d}x` at ``u``."""
    V = u.function_space
    v = ufl.TestFunction(V)
    F = ufl.variable(ufl.Identity(len(u)) + ufl.grad(u))
    inv = deformation_invariants(F)
    dx = ufl.dx(metadata={"quadrature_degree": resolve_quadrature_degree(V, quadrature_degree)})
    return [fem.form(ufl.inner(ufl.diff(term.energy(inv), F), ufl.grad(v)) * dx) for term in library]


def _reduce_step(
    comm: MPI.Comm,
    step: int,
    columns: npt.NDArray[np.float64],
    free: npt.NDArray[np.bool_],
    weights: npt.NDArray[np.float64] | None,
    reactions: Sequence[npt.NDArray[np.int32]],
    force_weights: Sequence[npt.NDArray[np.float64] | None],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The equilibrium factor and the force rows of one step, the same on every rank (collective).

    ``columns`` holds this rank's owned entries of each term's internal-force vector, ``(n_owned, n_terms)``.
    Without test-function ``weights`` the free rows are reduced by :func:`_tsqr`; with them, the weighted sums over
    all ranks are reduced on rank 0 and broadcast. Each loaded boundary's force row is the sum of its dofs' rows
    (or their sum weighted by its ramp), over all ranks.
    """
    n_terms = columns.shape[1]
    with collectively(comm):
        if not np.all(np.isfinite(columns)):
            raise ValueError(f"Step {step}: non-finite internal forces (is J > 0 everywhere?).")
    if weights is None:
        factor = _tsqr(comm, columns[free])
    else:
        rows = comm.allreduce(weights.T @ columns, op=MPI.SUM)
        factor = _tsqr(MPI.COMM_SELF, rows) if comm.rank == 0 else np.zeros((n_terms, n_terms))
        comm.Bcast(factor, root=0)
    sums = [columns[d].sum(axis=0) if w is None else w @ columns for d, w in zip(reactions, force_weights, strict=True)]
    local = np.array(sums).reshape(len(reactions), n_terms)
    return factor, comm.allreduce(local, op=MPI.SUM)


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
