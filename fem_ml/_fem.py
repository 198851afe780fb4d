# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Small DOLFINx helpers shared by the modules: owned dof counts, space checks, Functions from owned values."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from dolfinx import fem

__all__ = ["element_signature", "function_from_owned", "n_global", "n_owned", "space_mismatch"]


def element_signature(V: fem.FunctionSpace) -> str:
    """A readable description of ``V``'s element and cell, used to recognise the same space in files."""
    return f"{V.ufl_element()!s} on {V.mesh.topology.cell_name()}"


def n_owned(V: fem.FunctionSpace) -> int:
    """Number of owned dof values on this rank, ``index_map.size_local * bs``."""
    return V.dofmap.index_map.size_local * V.dofmap.index_map_bs


def n_global(V: fem.FunctionSpace) -> int:
    """Global number of dof values, ``index_map.size_global * bs``."""
    return V.dofmap.index_map.size_global * V.dofmap.index_map_bs


def space_mismatch(expected: fem.FunctionSpace, got: fem.FunctionSpace) -> str | None:
    """Describe why ``got`` is not the space ``expected``, or return None if they are the same.

    Two spaces are the same when they are one object, or live on the same mesh object with the same element
    (then their dof layouts coincide).
    """
    if got is expected or got == expected:
        return None
    if got.mesh is not expected.mesh and got.mesh._cpp_object is not expected.mesh._cpp_object:
        return "the Function lives on another mesh than the surrogate's function space"
    if got.ufl_element() != expected.ufl_element():
        return f"the Function's element {got.ufl_element()} differs from the expected {expected.ufl_element()}"
    if n_owned(got) != n_owned(expected):
        return "the Function's dof layout differs from the expected function space"
    return None


def function_from_owned(
    V: fem.FunctionSpace,
    values: npt.NDArray[np.floating],
    *,
    out: fem.Function | None = None,
    name: str | None = None,
) -> fem.Function:
    """Return a Function on ``V`` holding the owned dof ``values``, with ghosts updated (collective).

    Args:
        V: Function space.
        values: Owned dof values, shape ``(n_owned(V),)``.
        out: Function to fill instead of a new one; it must live on ``V``.
        name: Name given to the Function (shown in ParaView).
    """
    u = fem.Function(V) if out is None else out
    n = n_owned(V)
    u.x.array[:n] = values
    u.x.scatter_forward()
    if name is not None:
        u.name = name
    return u
