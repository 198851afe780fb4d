# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""A dof numbering that does not depend on the number of ranks, for files written on N ranks and read on M.

DOLFINx numbers dofs by rank: the same mesh on 1 and on 3 ranks gives different numberings. The mesh's input
cell ordering does not change, though (``mesh.topology.original_cell_index``), nor does the position of a dof
in the reference element of a cell. Every dof value therefore gets the key

.. math::

    k = \bigl(\min_{c \ni \text{dof}} (n_c\, \mathrm{orig}(c) + i_c)\bigr)\, b + j,

the smallest (input cell index, local dof index) pair over the cells that contain the dof, times the block size
:math:`b`, plus the component :math:`j`. Sorting the keys gives the *canonical order* in which files store dof
values. Rank 0 gathers and scatters in that order; the dof coordinates are stored beside the values so a reader
can check that the mesh really is the same.
"""

from __future__ import annotations

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._fem import n_owned

__all__ = ["DofLayout"]


class DofLayout:
    """Rank-count independent numbering of the dof values of a function space (collective to create).

    Args:
        V: The function space (a collapsed space: a sub-space view has no dof numbering of its own).

    Attributes:
        comm: The function space's communicator.
        n_owned: Owned dof values on this rank.
        n_global: Global number of dof values.
        keys: Canonical keys of all dof values, sorted (rank 0 only; empty elsewhere).
    """

    def __init__(self, V: fem.FunctionSpace):
        self.comm: MPI.Comm = V.mesh.comm
        self._V = V
        self.n_owned = n_owned(V)
        self.n_global = V.dofmap.index_map.size_global * V.dofmap.index_map_bs
        self._local_keys = _owned_keys(V)
        counts = self.comm.gather(self.n_owned, root=0)
        gathered = self._gather_raw(self._local_keys, counts)
        self._counts = counts
        self.keys = np.empty(0, dtype=np.int64)
        self._order = np.empty(0, dtype=np.int64)
        if self.comm.rank == 0:
            assert gathered is not None
            self._order = np.argsort(gathered, kind="stable")
            self.keys = gathered[self._order]

    def canonical_positions(self) -> npt.NDArray[np.int64]:
        """For each global (PETSc) dof index, its position in canonical order (rank 0 only)."""
        positions = np.empty_like(self._order)
        positions[self._order] = np.arange(self._order.size, dtype=np.int64)
        return positions

    def global_positions(self) -> npt.NDArray[np.int64]:
        """For each canonical position, the global (PETSc) dof index on this communicator (rank 0 only).

        Owned values are numbered contiguously by rank, so gathering them in rank order yields the global
        numbering: the order that sorts the gathered keys maps canonical positions to global indices.
        """
        return self._order.copy()

    def _gather_raw(self, local: npt.NDArray, counts: list[int] | None, width: int = 1) -> npt.NDArray | None:
        """Gatherv in rank order (rows of ``width`` values)."""
        local = np.ascontiguousarray(local)
        if self.comm.size == 1:
            return local.copy()
        if self.comm.rank == 0:
            assert counts is not None
            out = np.empty((sum(counts), *local.shape[1:]), dtype=local.dtype)
            self.comm.Gatherv(local, (out, [c * width for c in counts]), root=0)
            return out
        self.comm.Gatherv(local, None, root=0)
        return None

    def gather(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64] | None:
        """Collect owned values ``(n_owned,)`` or ``(n_owned, k)`` on rank 0 in canonical order (collective).

        Returns:
            The ``(n_global,)`` or ``(n_global, k)`` array on rank 0, None on the other ranks.
        """
        values = np.ascontiguousarray(values, dtype=np.float64)
        problem = (
            None
            if values.ndim >= 1 and values.shape[0] == self.n_owned
            else (f"Expected {self.n_owned} owned values, got shape {values.shape}")
        )
        width = int(np.prod(values.shape[1:], dtype=np.int64))
        widths = self.comm.allgather((problem, width)) if self.comm.size > 1 else [(problem, width)]
        for rank, (found, w) in enumerate(widths):
            if found is not None or w != width:
                raise ValueError(f"{found or 'Arrays of different widths on the ranks'} (rank {rank}).")
        gathered = self._gather_raw(values, self._counts, width)
        return None if gathered is None else gathered[self._order]

    def scatter(self, values: npt.NDArray[np.float64] | None, *, width: int | None = None) -> npt.NDArray[np.float64]:
        """Distribute a canonical-order array from rank 0 to the owners (collective).

        Args:
            values: ``(n_global,)`` or ``(n_global, k)`` on rank 0; ignored elsewhere.
            width: ``k`` for 2D arrays (needed on every rank), None for 1D.

        Returns:
            The owned part, ``(n_owned,)`` or ``(n_owned, k)``.
        """
        shape: tuple[int, ...] = (self.n_owned,) if width is None else (self.n_owned, width)
        k = 1 if width is None else width
        out = np.empty(shape, dtype=np.float64)
        send = None
        problem: str | None = None
        if self.comm.rank == 0:
            expected = (self.n_global,) if width is None else (self.n_global, width)
            if values is None or values.shape != expected:
                problem = f"Expected an array of shape {expected}, got {None if values is None else values.shape}."
            else:
                send = np.empty(values.shape, dtype=np.float64)  # C order: rows are contiguous for Scatterv
                send[self._order] = values
        problem = self.comm.bcast(problem, root=0) if self.comm.size > 1 else problem
        if problem is not None:
            raise ValueError(problem)
        if self.comm.size == 1:
            assert send is not None
            out[...] = send
        else:
            assert self._counts is not None or self.comm.rank != 0
            counts = None if self._counts is None else [c * k for c in self._counts]
            self.comm.Scatterv(None if send is None else (send, counts), out, root=0)  # type: ignore[arg-type]
        return out

    def coordinates(self) -> npt.NDArray[np.float64] | None:
        """Coordinates of every dof value in canonical order, ``(n_global, 3)`` on rank 0 (collective)."""
        bs = self._V.dofmap.index_map_bs
        x = self._V.tabulate_dof_coordinates()[: self._V.dofmap.index_map.size_local]
        return self.gather(np.repeat(x, bs, axis=0))

    def mismatch(
        self, keys: npt.NDArray[np.int64] | None, coordinates: npt.NDArray[np.float64] | None, *, rtol: float = 1e-10
    ) -> str | None:
        """Compare with a stored layout read on rank 0 (collective).

        Args:
            keys: Stored canonical keys (rank 0; ignored elsewhere).
            coordinates: Stored dof coordinates ``(n_global, 3)`` (rank 0; ignored elsewhere).
            rtol: Tolerance on coordinates, relative to the largest coordinate (at least 1).

        Returns:
            None when the layouts agree, else a description of the difference (on every rank).
        """
        own = self.coordinates()
        problem: str | None = None
        if self.comm.rank == 0:
            assert keys is not None and coordinates is not None and own is not None
            if keys.shape != self.keys.shape:
                problem = f"it has {keys.shape[0]} dof values, the function space {self.keys.shape[0]}"
            elif not np.array_equal(keys, self.keys):
                problem = "its dofs lie in other cells of the mesh (another mesh, input ordering or element)"
            elif coordinates.shape != own.shape:
                problem = f"its dof coordinates have shape {coordinates.shape}, expected {own.shape}"
            else:
                scale = max(float(np.max(np.abs(coordinates))) if coordinates.size else 1.0, 1.0)
                gap = float(np.max(np.abs(own - coordinates))) if own.size else 0.0
                if gap > rtol * scale:
                    problem = f"its dof coordinates differ from the function space's by up to {gap:.3e}"
        return self.comm.bcast(problem, root=0)


def _owned_keys(V: fem.FunctionSpace) -> npt.NDArray[np.int64]:
    """Canonical keys of the owned dof values of ``V`` (collective)."""
    mesh = V.mesh
    comm = mesh.comm
    tdim = mesh.topology.dim
    n_cells = mesh.topology.index_map(tdim).size_local
    try:
        original = np.asarray(mesh.topology.original_cell_index[:n_cells], dtype=np.int64)
    except RuntimeError as err:  # e.g. a submesh: DOLFINx keeps no input cell order for it
        raise ValueError(
            f"This mesh has no input cell ordering ({err}); files need one to be read on another rank count. "
            "Use a mesh created from cells and points (not a submesh)."
        ) from err
    imap = V.dofmap.index_map
    bs = V.dofmap.index_map_bs
    cell_dofs = V.dofmap.list[:n_cells]
    n_local = imap.size_local + imap.num_ghosts
    per_cell = cell_dofs.shape[1]
    candidate = original[:, None] * per_cell + np.arange(per_cell, dtype=np.int64)[None, :]
    block_keys = np.full(n_local, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(block_keys, cell_dofs.ravel(), candidate.ravel())

    if comm.size > 1:
        # A dof owned here may lie in cells owned by other ranks, where it is a ghost: send those keys home.
        owners = imap.owners
        ghosts = imap.ghosts
        ghost_keys = block_keys[imap.size_local :]
        send = [(ghosts[owners == r], ghost_keys[owners == r]) for r in range(comm.size)]
        received = comm.alltoall(send)
        first = imap.local_range[0]
        for indices, keys in received:
            np.minimum.at(block_keys, np.asarray(indices, dtype=np.int64) - first, keys)
    owned = block_keys[: imap.size_local]
    if np.any(owned == np.iinfo(np.int64).max):
        raise RuntimeError("A dof owned on this rank lies in no cell; cannot build a rank-independent numbering.")
    return (owned[:, None] * bs + np.arange(bs, dtype=np.int64)[None, :]).ravel()
