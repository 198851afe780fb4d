# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""How stage types turn into file entries: a generic dataclass <-> tree mapping, and distributed sparse matrices.

Each stage type (:class:`~fem_ml.pod.PODBasis`, :class:`~fem_ml.networks.CoefficientNetwork`,
:class:`~fem_ml.networks.TrainingHistory`, :class:`~fem_ml.networks.AffineScaler`,
:class:`~fem_ml.surrogate.ErrorReport`) has ``to_tree()``/``from_tree()`` methods built on these helpers, so adding
a field to a dataclass adds it to the file. Trees use names relative to the stage (``"modes"``); the archive puts
them under the stage's group (``"basis/modes"``) with :func:`prefixed` and takes them out with :func:`subtree`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # PETSc and DOLFINx only where matrices are written or read: reading a file needs neither
    from mpi4py import MPI
    from petsc4py import PETSc

    from fem_ml._layout import DofLayout

__all__ = ["coo_from_matrix", "dataclass_kwargs", "dataclass_tree", "matrix_from_coo", "prefixed", "subtree"]


def dataclass_tree(obj: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of a dataclass instance as tree entries: arrays and lists as arrays, scalars as they are.

    Fields whose value is None are left out (they load as their default).
    """
    tree: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name in exclude:
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue
        if isinstance(value, np.ndarray | list | tuple):
            tree[f.name] = np.asarray(value)
        elif isinstance(value, np.generic):
            tree[f.name] = value.item()
        else:
            tree[f.name] = value
    return tree


def dataclass_kwargs(cls: type, tree: Mapping[str, Any], *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Constructor arguments of dataclass ``cls`` from tree entries, converted by each field's annotation.

    Raises:
        KeyError: naming the entry, for a field without a default that the tree lacks.
    """
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        if f.name not in tree:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise KeyError(f.name)
            continue
        kwargs[f.name] = _convert(str(f.type), tree[f.name])
    return kwargs


def _convert(annotation: str, value: Any) -> Any:
    if "NDArray" in annotation:
        return np.array(value)
    if annotation.startswith("list[float]"):
        return [float(v) for v in np.asarray(value).reshape(-1)]
    if annotation.startswith("list[int]"):
        return [int(v) for v in np.asarray(value).reshape(-1)]
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if annotation.split(" | ")[0] == name:
            return kind(value)
    return value


def prefixed(prefix: str, tree: Mapping[str, Any]) -> dict[str, Any]:
    """``tree`` with ``prefix/`` in front of every name."""
    return {f"{prefix}/{k}": v for k, v in tree.items()}


def subtree(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``tree`` under ``prefix/``, with the prefix removed."""
    start = prefix + "/"
    return {k.removeprefix(start): v for k, v in tree.items() if k.startswith(start)}


def coo_from_matrix(matrix: PETSc.Mat, layout: DofLayout) -> dict[str, npt.NDArray[Any]] | None:
    """A distributed PETSc matrix as COO triplets in canonical dof order, on rank 0 (None elsewhere; collective)."""
    indptr, columns, values = matrix.getValuesCSR()
    start = matrix.getOwnershipRange()[0]
    rows = start + np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    parts = layout.comm.gather((rows, np.asarray(columns, dtype=np.int64), np.asarray(values)), root=0)
    if layout.comm.rank != 0:
        return None
    assert parts is not None
    canonical = layout.canonical_positions()
    return {
        "rows": canonical[np.concatenate([p[0] for p in parts])],
        "columns": canonical[np.concatenate([p[1] for p in parts])],
        "values": np.concatenate([p[2] for p in parts]).astype(np.float64),
    }


def matrix_from_coo(layout: DofLayout, coo: Mapping[str, npt.NDArray[Any]] | None) -> PETSc.Mat:
    """The PETSc matrix of canonical COO triplets given on rank 0, in ``layout``'s distribution (collective).

    The triplets must be valid (indices within the dofs, as the file's schema checks).
    """
    from petsc4py import PETSc

    comm: MPI.Comm = layout.comm
    rows = columns = np.empty(0, dtype=PETSc.IntType)
    values = np.empty(0, dtype=PETSc.ScalarType)
    if comm.rank == 0:
        assert coo is not None
        order = layout.global_positions()
        rows = order[np.asarray(coo["rows"], dtype=np.int64)].astype(PETSc.IntType)
        columns = order[np.asarray(coo["columns"], dtype=np.int64)].astype(PETSc.IntType)
        values = np.asarray(coo["values"], dtype=PETSc.ScalarType)
    matrix = PETSc.Mat().create(comm=comm)  # type: ignore[arg-type]
    matrix.setSizes(((layout.n_owned, layout.n_global), (layout.n_owned, layout.n_global)))
    matrix.setType(PETSc.Mat.Type.AIJ)
    matrix.setPreallocationCOO(rows, columns)  # type: ignore[arg-type]
    matrix.setValuesCOO(values)  # type: ignore[arg-type]
    matrix.assemble()
    return matrix
