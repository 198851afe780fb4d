# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Assembly helpers of :mod:`fem_ml.constitutive`'s data and system: quadrature degree, owned dofs, force vectors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from dolfinx import fem, la

from fem_ml._fem import n_owned

__all__ = ["internal_force", "owned_dofs", "resolve_quadrature_degree"]


def resolve_quadrature_degree(V: fem.FunctionSpace, degree: int | None) -> int:
    r"""``degree`` if given, else :math:`\max(1, 2(p - 1) + 1)` for the element degree :math:`p` of ``V``."""
    if degree is not None:
        return int(degree)
    return max(1, 2 * (V.element.basix_element.degree - 1) + 1)


def owned_dofs(V: fem.FunctionSpace, dofs: npt.ArrayLike) -> npt.NDArray[np.int32]:
    """The owned entries of the local (unrolled) dof indices ``dofs``, sorted and without repeats."""
    idx = np.unique(np.asarray(dofs, dtype=np.int64))
    return idx[idx < n_owned(V)].astype(np.int32)


def internal_force(V: fem.FunctionSpace, form: fem.Form) -> npt.NDArray[np.float64]:
    """Assemble ``form`` (linear in the test function) and return the owned entries, ghosts accumulated."""
    b = fem.assemble_vector(form)
    b.scatter_reverse(la.InsertMode.add)
    return b.array[: n_owned(V)].copy()
