# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Distributed linear algebra shared by the POD, the residual and the reduced operators (private module).

* :class:`LocalOperator`: the local rows of a distributed PETSc matrix as SciPy CSR, with the halo exchange that a
  block product :math:`M X` needs (one ``Alltoallv`` per block).
* :func:`named_form`, :data:`INNER_PRODUCT_NAMES`: the one table of named inner products (``"l2"``, ``"h1"``,
  ``"h1_semi"``; ``"euclidean"`` has no form).
* :func:`assemble_matrix`, :func:`owned_vector`: assembly of a bilinear form to a PETSc matrix, of a linear form to
  the owned entries of its vector.
* :class:`DualNorm`: the Riesz map :math:`M^{-1}` of an inner product restricted to the free dofs.
* :func:`owned_dirichlet_dofs`: the owned dofs fixed by Dirichlet conditions.

Nothing here is public API; the public modules (:mod:`fem_ml.pod`, :mod:`fem_ml.residual`, :mod:`fem_ml.reduced`)
import these names.
"""

from __future__ import annotations

from collections.abc import Sequence

from mpi4py import MPI
from petsc4py import PETSc

import dolfinx.fem.petsc as fem_petsc
import numpy as np
import numpy.typing as npt
import ufl
from dolfinx import fem, la
from scipy import sparse

from fem_ml._fem import n_owned
from fem_ml._formats import NAMED_PRODUCTS
from fem_ml._mpi import collectively
from fem_ml.snapshots import check_converged

__all__ = [
    "INNER_PRODUCT_NAMES",
    "DualNorm",
    "LocalOperator",
    "assemble_matrix",
    "named_form",
    "owned_dirichlet_dofs",
    "owned_vector",
]

#: Names of the built-in inner products: the Euclidean one on the dof values and those of :func:`named_form` (the
#: table that the file schemas check, :data:`fem_ml._formats.NAMED_PRODUCTS`).
INNER_PRODUCT_NAMES: tuple[str, ...] = NAMED_PRODUCTS


class LocalOperator:
    """The local rows of a distributed matrix as SciPy CSR over owned + halo columns, with a halo-row exchange.

    Args:
        comm: The matrix' communicator.
        csr: Local rows; columns ``0:n_rows`` are the owned ones, the rest the halo (in :attr:`recv` order).
        send: For each rank, the owned rows of a block that it needs.
        recv: For each rank, the halo columns it sends.
    """

    def __init__(self, comm: MPI.Comm, csr: sparse.csr_matrix, send: list[npt.NDArray], recv: list[npt.NDArray]):
        self.comm, self.send, self.recv = comm, send, recv
        self.n_ghost = csr.shape[1] - csr.shape[0]
        self.exchange = comm.size > 1 and comm.allreduce(self.n_ghost, op=MPI.MAX) > 0
        # Owned columns and halo columns apart: blocks of M X need no copy of X with the halo rows appended.
        self.own = csr[:, : csr.shape[0]].tocsr()
        self.ext = csr[:, csr.shape[0] :].tocsr()

    @classmethod
    def build(cls, matrix: PETSc.Mat, comm: MPI.Comm) -> LocalOperator:
        """Extract the local rows and the exchange plan for the off-process columns they use (collective)."""
        indptr, columns, values = matrix.getValuesCSR()
        start, stop = matrix.getOwnershipRange()
        ranges = np.asarray(matrix.getOwnershipRanges(), dtype=np.int64)
        columns = np.asarray(columns, dtype=np.int64)
        outside = (columns < start) | (columns >= stop)
        halo = np.unique(columns[outside])
        local = columns - start
        local[outside] = (stop - start) + np.searchsorted(halo, columns[outside])
        n_rows = stop - start
        csr = sparse.csr_matrix((np.asarray(values), local, np.asarray(indptr)), shape=(n_rows, n_rows + len(halo)))
        # Exchange plan: this rank needs the rows ``halo`` from their owners, and sends what the others need.
        owners = np.searchsorted(ranges, halo, side="right") - 1
        wanted = [halo[owners == r] for r in range(comm.size)]
        recv = [np.flatnonzero(owners == r) for r in range(comm.size)]
        asked = comm.alltoall(wanted) if comm.size > 1 else wanted
        send = [np.asarray(g, dtype=np.int64) - start for g in asked]
        return cls(comm, csr, send, recv)

    def halo_rows(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The rows of ``X`` that the local rows of :math:`M` reference on other ranks (collective)."""
        k = X.shape[1]
        recvbuf = np.empty((self.n_ghost, k))
        if not self.exchange:
            return recvbuf
        sendbuf = np.concatenate([X[idx] for idx in self.send]) if self.send else np.empty((0, k))
        send_counts = [len(idx) * k for idx in self.send]
        recv_counts = [len(idx) * k for idx in self.recv]
        self.comm.Alltoallv([np.ascontiguousarray(sendbuf), send_counts], [recvbuf, recv_counts])
        # The halo is sorted and owners own contiguous ranges, so rank-ordered receipt is halo order.
        return recvbuf

    def rows(
        self, start: int, stop: int, X: npt.NDArray[np.float64], halo: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Rows ``start:stop`` of :math:`M X`, given the halo rows of ``X`` (local)."""
        out = self.own[start:stop] @ X
        if self.n_ghost:
            out += self.ext[start:stop] @ halo
        return np.asarray(out)

    def apply(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """:math:`M X` for an owned block ``(n_owned, k)`` (collective when there are ghosts)."""
        X = np.ascontiguousarray(X)
        return self.rows(0, X.shape[0], X, self.halo_rows(X))


def named_form(V: fem.FunctionSpace, kind: str) -> ufl.Form:
    r"""The bilinear form of a named inner product on ``V``: ``"l2"``, ``"h1"`` or ``"h1_semi"``.

    .. math:: (u, v)_{L^2} = \int u v, \quad (u, v)_{H^1} = \int u v + \nabla u \cdot \nabla v, \quad
        (u, v)_{H^1_0} = \int \nabla u \cdot \nabla v .

    Raises:
        ValueError: for another name.
    """
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    l2 = ufl.inner(u, v) * ufl.dx
    semi = ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx
    forms = {"l2": l2, "h1": l2 + semi, "h1_semi": semi}
    if kind not in forms:
        raise ValueError(f"Unknown inner product {kind!r}; use one of {sorted(forms)} or a UFL form.")
    return forms[kind]


def assemble_matrix(form: ufl.Form | fem.Form, bcs: Sequence[fem.DirichletBC] = ()) -> PETSc.Mat:
    """The assembled PETSc matrix of a bilinear form (collective; the caller destroys it)."""
    matrix = fem_petsc.assemble_matrix(form if isinstance(form, fem.Form) else fem.form(form), bcs=list(bcs))
    matrix.assemble()
    return matrix


def owned_vector(V: fem.FunctionSpace, form: ufl.Form | fem.Form) -> npt.NDArray[np.float64]:
    """Owned entries of the assembled vector of a linear form, contributions of all ranks summed (collective)."""
    vector = fem.assemble_vector(form if isinstance(form, fem.Form) else fem.form(form))
    vector.scatter_reverse(la.InsertMode.add)
    return vector.array[: n_owned(V)].copy()


class DualNorm:
    r"""Riesz map :math:`M^{-1}` of an inner product restricted to the free dofs (one LU factorization; collective).

    Dirichlet rows and columns of :math:`M` become identity, so vectors that vanish on the Dirichlet dofs are
    mapped to vectors that vanish there. The object owns its PETSc matrix, solver and vectors; :meth:`destroy`
    (collective) frees them.

    Args:
        V: Function space.
        inner_product: A name of :func:`named_form` or a bilinear UFL form on ``V``.
        bcs: The Dirichlet conditions whose dofs are not free.
    """

    def __init__(self, V: fem.FunctionSpace, inner_product: str | ufl.Form, bcs: Sequence[fem.DirichletBC]):
        comm = V.mesh.comm
        with collectively(comm):
            form = named_form(V, inner_product) if isinstance(inner_product, str) else inner_product
        self.comm = comm
        self.M = assemble_matrix(form, bcs)
        self.ksp = PETSc.KSP().create(comm)
        self.ksp.setOperators(self.M)
        self.ksp.setType("preonly")
        self.ksp.getPC().setType("lu")
        self.ksp.getPC().setFactorSolverType("mumps")
        self.rhs, self.sol = self.M.createVecs()  # type: ignore[misc]

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


def owned_dirichlet_dofs(bcs: Sequence[fem.DirichletBC]) -> npt.NDArray[np.int64]:
    """Owned (unrolled) dof values fixed by the Dirichlet conditions (local)."""
    owned = []
    for bc in bcs:
        dofs, first_ghost = bc.dof_indices()
        owned.append(np.asarray(dofs[:first_ghost], dtype=np.int64))
    return np.unique(np.concatenate(owned)) if owned else np.empty(0, dtype=np.int64)
