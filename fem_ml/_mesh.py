# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The element and the mesh of a function space as file entries, and back: shared by fem_ml's file formats.

A surrogate file (:mod:`fem_ml.archive`) and a reduced-dynamics file (:mod:`fem_ml.dynamics.archive`) both hold the
mesh (cells in input order with input node numbers, node coordinates, the coordinate element) and the Lagrange
element of the space, so that a file loads on any number of ranks without the script that wrote it.
"""

from __future__ import annotations

from typing import Any

from mpi4py import MPI

import basix
import basix.ufl
import numpy as np
from dolfinx import fem, mesh

from fem_ml._fem import element_signature
from fem_ml._mpi import collectively

__all__ = ["element_from_tree", "element_tree", "gather_mesh", "mesh_from_tree"]


def element_tree(V: fem.FunctionSpace, *, what: str = "surrogates") -> dict[str, Any]:
    """Describe ``V``'s Lagrange element well enough to rebuild it (local).

    Raises:
        ValueError: For a mixed element or another family than Lagrange/DG (``what`` names what is being saved).
    """
    e = V.ufl_element()
    shape = tuple(e.reference_value_shape)
    base = e.sub_elements[0] if shape else e
    if getattr(e, "is_mixed", False) or (shape and len(e.sub_elements) != int(np.prod(shape))):
        raise ValueError(f"saving {what} on the mixed element {e} is not supported; save a collapsed sub-space")
    family = base.element_family
    if family not in (basix.ElementFamily.P,):
        raise ValueError(f"saving {what} on {family.name} elements is not supported (Lagrange/DG only)")
    return {
        "family": family.name,
        "degree": int(base.degree),
        "lagrange_variant": int(base.lagrange_variant),
        "discontinuous": bool(base.discontinuous),
        "shape": np.asarray(shape if shape else (0,), dtype=np.int64),
        "scalar": not shape,
        "signature": element_signature(V),
    }


def element_from_tree(small: dict[str, Any]) -> basix.ufl._ElementBase:
    """The element described by the entries ``element/*`` and ``mesh/cell_type`` of a validated file (local)."""
    shape = None if small["element/scalar"] else tuple(int(s) for s in small["element/shape"])
    return basix.ufl.element(
        basix.ElementFamily[str(small["element/family"])],
        str(small["mesh/cell_type"]),
        int(small["element/degree"]),
        lagrange_variant=basix.LagrangeVariant(int(small["element/lagrange_variant"])),
        discontinuous=bool(small["element/discontinuous"]),
        shape=shape,
        dtype=np.float64,
    )


def gather_mesh(msh: mesh.Mesh) -> dict[str, Any]:
    """The entries ``mesh/*`` of a file on rank 0, an empty dict elsewhere (collective).

    Cells (rows in input cell order, input node numbers), node coordinates, cell type and coordinate element.
    """
    comm = msh.comm
    tdim = msh.topology.dim
    n_cells = msh.topology.index_map(tdim).size_local
    geometry = msh.geometry
    input_ids = np.asarray(geometry.input_global_indices, dtype=np.int64)
    cells = input_ids[geometry.dofmaps[0][:n_cells]]
    original = np.asarray(msh.topology.original_cell_index[:n_cells], dtype=np.int64)
    n_nodes = geometry.index_map().size_local
    x = geometry.x[:n_nodes, : geometry.dim]
    parts = comm.gather((original, cells, input_ids[:n_nodes], x), root=0)
    result: dict[str, Any] = {}
    with collectively(comm):
        if comm.rank == 0:
            assert parts is not None
            original = np.concatenate([p[0] for p in parts])
            cells = np.vstack([p[1] for p in parts])
            ids = np.concatenate([p[2] for p in parts])
            x = np.vstack([p[3] for p in parts])
            if not np.array_equal(np.sort(original), np.arange(original.size)):
                raise ValueError("Cannot store the mesh: its original cell indices are not a permutation of 0..n-1.")
            unique_ids, first = np.unique(ids, return_index=True)
            cells_out = np.empty_like(cells)
            cells_out[original] = np.searchsorted(unique_ids, cells)
            cmap = msh.geometry.cmaps[0]
            result = {
                "mesh/cells": cells_out,
                "mesh/x": np.ascontiguousarray(x[first], dtype=np.float64),
                "mesh/cell_type": msh.topology.cell_name(),
                "mesh/degree": int(cmap.degree),
                "mesh/lagrange_variant": int(cmap.variant),
            }
    return result


def mesh_from_tree(comm: MPI.Comm, tree: dict[str, Any], small: dict[str, Any]) -> mesh.Mesh:
    """Rebuild the mesh from a validated file (collective; rank 0 passes all cells, DOLFINx distributes them).

    Raises:
        ValueError: on every rank, if the coordinate element the file describes cannot be built.
    """
    shape = comm.bcast((np.shape(tree["mesh/cells"])[1], np.shape(tree["mesh/x"])[1]) if comm.rank == 0 else None)
    with collectively(comm):
        coordinate_element = basix.ufl.element(
            "Lagrange",
            str(small["mesh/cell_type"]),
            int(small["mesh/degree"]),
            lagrange_variant=basix.LagrangeVariant(int(small["mesh/lagrange_variant"])),
            shape=(shape[1],),
            dtype=np.float64,
        )
    cells = np.asarray(tree["mesh/cells"], dtype=np.int64) if comm.rank == 0 else np.empty((0, shape[0]), np.int64)
    x = np.asarray(tree["mesh/x"], dtype=np.float64) if comm.rank == 0 else np.empty((0, shape[1]), np.float64)
    return mesh.create_mesh(comm, cells, coordinate_element, x)  # type: ignore[arg-type]
