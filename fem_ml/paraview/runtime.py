# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Evaluate a saved surrogate without DOLFINx or torch: the engine of the ParaView plugin.

ParaView's Python (Debian's ParaView 5.11 runs Python 3.11 with Debian's NumPy and h5py) has neither DOLFINx nor
torch, so the plugin cannot ``import fem_ml``. This module needs only NumPy and h5py. It reads a ``.femml`` file
with fem_ml's own checked reader (the checksum and format checks of :func:`fem_ml.load`), validates every array
it uses, evaluates the network with fem_ml's own stacked forward pass (:mod:`fem_ml._stacked`) and reconstructs
the field :math:`u = \Phi \bar c(\mu)` at the points of an unstructured grid:

- Lagrange P1 (and Q1 on quadrilaterals and hexahedra): the grid's points are the mesh vertices;
- Lagrange P2 on triangles and tetrahedra: the points are the vertices and edge midpoints, and the cells are
  VTK's quadratic triangles and tetrahedra, so ParaView interpolates the field as the finite element does.

The grid is built once per file: the dof coordinates stored in the file are matched with the vertices and edge
midpoints of each cell. An ensemble's deviation field is the members' standard deviation at each point. A query
costs one small forward pass and one product with the modes.

The fem_ml modules this one uses are loaded from their files next to this package when fem_ml itself cannot be
imported (see :func:`sibling`), so that the plugin shares their code rather than a copy of it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SUPPORTED", "SurrogateModel", "sibling"]

#: VTK cell type and the grid points of one cell, per (cell type, Lagrange degree): each point is the midpoint
#: of two vertices of the cell (in the mesh's vertex order), a vertex when both are the same.
SUPPORTED: dict[tuple[str, int], tuple[int, tuple[tuple[int, int], ...]]] = {
    ("triangle", 1): (5, ((0, 0), (1, 1), (2, 2))),
    ("triangle", 2): (22, ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0))),
    ("tetrahedron", 1): (10, ((0, 0), (1, 1), (2, 2), (3, 3))),
    ("tetrahedron", 2): (
        24,
        ((0, 0), (1, 1), (2, 2), (3, 3), (0, 1), (1, 2), (0, 2), (0, 3), (1, 3), (2, 3)),
    ),
    ("quadrilateral", 1): (9, ((0, 0), (1, 1), (3, 3), (2, 2))),
    ("hexahedron", 1): (12, ((0, 0), (1, 1), (3, 3), (2, 2), (4, 4), (5, 5), (7, 7), (6, 6))),
}
_VERTICES = {"triangle": 3, "tetrahedron": 4, "quadrilateral": 4, "hexahedron": 8}
_FORMAT, _VERSION = "fem_ml.surrogate", 1


def sibling(name: str) -> ModuleType:
    """fem_ml's module ``name`` (one that needs neither DOLFINx nor torch, e.g. ``"_stacked"``).

    Imported from the package when fem_ml is importable; otherwise (ParaView's Python) loaded from its file next
    to this package under a private name, without running ``fem_ml/__init__.py``.
    """
    if "fem_ml" in sys.modules:
        return importlib.import_module(f"fem_ml.{name}")
    alias = f"_fem_ml_paraview.{name}"
    if alias not in sys.modules:
        spec = importlib.util.spec_from_file_location(alias, Path(__file__).resolve().parents[1] / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load fem_ml's module {name!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[alias] = module
        spec.loader.exec_module(module)
    return sys.modules[alias]


class SurrogateModel:
    """A ``.femml`` surrogate ready to evaluate on an unstructured grid (local; no MPI).

    Args:
        path: The file.

    Raises:
        FileFormatError: (fem_ml's, a ``ValueError``) if the file is not a readable, intact fem_ml surrogate or
            holds arrays of the wrong shape, dtype or with non-finite values.
        ValueError: If its element or cell type is not one the grid supports (Lagrange P1/P2 on triangles and
            tetrahedra, Q1 on quadrilaterals and hexahedra, on an affine mesh).

    Attributes:
        names: Parameter names.
        lower: Lower bounds.
        upper: Upper bounds.
        points: Grid points ``(n_points, 3)``.
        cells: Grid connectivity ``(n_cells, points per cell)``.
        cell_type: VTK cell type of every cell.
        n_components: Components of the field (1 for a scalar; 3 for a vector, 2-D vectors padded with a 0).
        n_members: Ensemble size.
    """

    def __init__(self, path: str | Path):
        h5 = sibling("_h5")
        self.path = Path(path)
        self._error = h5.FileFormatError
        tree = h5.read_tree(self.path, kind=_FORMAT, version=_VERSION, what="fem_ml surrogate")
        self._read_parameters(tree)
        self._read_network(tree)
        self._read_space(tree)
        self._build_grid(tree)

    # -- reading and validation ------------------------------------------------------------------------------

    def _fail(self, entry: str, problem: str) -> None:
        raise self._error(f"{self.path}: entry {entry!r} {problem}.")

    def _array(self, tree: dict[str, Any], name: str, *, kind: str, shape: tuple[int | None, ...]) -> npt.NDArray[Any]:
        """``tree[name]`` checked: present, numeric of ``kind`` (``"f"`` float, ``"i"`` integer), shape, finite."""
        value = tree.get(name)
        if not isinstance(value, np.ndarray):
            self._fail(name, "is missing or not an array")
        assert isinstance(value, np.ndarray)
        if value.dtype.kind not in ("f" if kind == "f" else "iu"):
            self._fail(name, f"has dtype {value.dtype}, expected {'floats' if kind == 'f' else 'integers'}")
        if len(shape) != value.ndim or any(s is not None and s != n for s, n in zip(shape, value.shape, strict=True)):
            expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            self._fail(name, f"has shape {value.shape}, expected {expected}")
        if kind == "f" and not np.all(np.isfinite(value)):
            self._fail(name, "holds NaN or inf values")
        return value.astype(np.float64) if kind == "f" else value.astype(np.int64)

    def _scalar(self, tree: dict[str, Any], name: str, types: type | tuple[type, ...]) -> Any:
        """``tree[name]``, checked to be one of ``types`` (a bool is not taken for an int)."""
        value = tree.get(name)
        allowed = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            self._fail(name, f"is {value!r}, expected a value of type {types}")
        return value

    def _read_parameters(self, tree: dict[str, Any]) -> None:
        try:
            names = json.loads(self._scalar(tree, "parameters/names", str))
        except json.JSONDecodeError:
            names = None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            self._fail("parameters/names", "is not a list of parameter names")
        self.names: list[str] = names
        p = len(names)
        self.lower = self._array(tree, "parameters/lower", kind="f", shape=(p,))
        self.upper = self._array(tree, "parameters/upper", kind="f", shape=(p,))
        if not np.all(self.lower < self.upper):
            self._fail("parameters/upper", "is not above the lower bounds")

    def _read_network(self, tree: dict[str, Any]) -> None:
        stacked = sibling("_stacked")
        p = len(self.names)
        n_members = self._scalar(tree, "network/n_networks", int)
        n_out = self._scalar(tree, "network/n_out", int)
        if not 1 <= n_members <= 1024:
            self._fail("network/n_networks", f"is {n_members}")
        if self._scalar(tree, "network/n_in", int) != p:
            self._fail("network/n_in", f"does not match the {p} parameters")
        transform = self._scalar(tree, "network/input_transform", str)
        if transform not in ("linear", "log") or (transform == "log" and not np.all(self.lower > 0)):
            self._fail("network/input_transform", f"is {transform!r} for bounds {self.lower}..{self.upper}")
        self._transform = transform
        self._in_shift = self._array(tree, "network/input_scaler/shift", kind="f", shape=(p,))
        self._in_scale = self._array(tree, "network/input_scaler/scale", kind="f", shape=(p,))
        self._out_shift = self._array(tree, "network/output_scaler/shift", kind="f", shape=(n_out,))
        self._out_scale = self._array(tree, "network/output_scaler/scale", kind="f", shape=(n_out,))
        if np.any(self._in_scale == 0.0):
            self._fail("network/input_scaler/scale", "has zero entries")
        members = []
        for m in range(n_members):
            prefix = f"network/member_{m}/layers."
            indices = sorted(int(k[len(prefix) :].split(".")[0]) for k in tree if k.startswith(prefix))
            layers, width = [], p
            for index in dict.fromkeys(indices):
                weight = self._array(tree, f"{prefix}{index}.weight", kind="f", shape=(None, width))
                bias = self._array(tree, f"{prefix}{index}.bias", kind="f", shape=(weight.shape[0],))
                layers.append((weight, bias))
                width = weight.shape[0]
            if not layers or width != n_out:
                self._fail(f"network/member_{m}", f"has layers ending in width {width}, expected {n_out}")
            members.append(layers)
        try:
            self._network = stacked.StackedMLP.from_members(members, self._scalar(tree, "network/activation", str))
        except ValueError as err:
            self._fail("network", str(err))
        self.n_members = n_members

    def _read_space(self, tree: dict[str, Any]) -> None:
        family = self._scalar(tree, "element/family", str)
        degree = self._scalar(tree, "element/degree", int)
        cell_type = self._scalar(tree, "mesh/cell_type", str)
        if self._scalar(tree, "element/discontinuous", (bool, np.bool_)) or family not in ("P", "Q"):
            raise ValueError(
                f"{self.path}: the ParaView reader shows continuous Lagrange fields only, not {family}{degree}"
            )
        if (cell_type, degree) not in SUPPORTED or self._scalar(tree, "mesh/degree", int) != 1:
            raise ValueError(
                f"{self.path}: the ParaView reader supports P1/P2 on triangles and tetrahedra and Q1 on "
                f"quadrilaterals and hexahedra on affine meshes, not degree {degree} on {cell_type} "
                f"(mesh degree {tree.get('mesh/degree')})"
            )
        shape = self._array(tree, "element/shape", kind="i", shape=(None,))
        scalar = bool(self._scalar(tree, "element/scalar", (bool, np.bool_)))
        self._bs = 1 if scalar else int(np.prod(shape))
        if not 1 <= self._bs <= 3 or len(shape) > 1:
            raise ValueError(f"{self.path}: the ParaView reader shows scalar and vector fields, not shape {shape}")
        self._cell_type, self._degree = cell_type, degree

    def _build_grid(self, tree: dict[str, Any]) -> None:
        """Grid points (one per dof point, in canonical order) and each cell's points, found by coordinates."""
        n_modes = self._network.n_out
        nv = _VERTICES[self._cell_type]
        x = self._array(tree, "mesh/x", kind="f", shape=(None, None))
        cells = self._array(tree, "mesh/cells", kind="i", shape=(None, nv))
        if not 1 <= x.shape[1] <= 3:
            self._fail("mesh/x", f"has {x.shape[1]} coordinates per node")
        if cells.size and (cells.min() < 0 or cells.max() >= x.shape[0]):
            self._fail("mesh/cells", f"refers to nodes outside 0..{x.shape[0] - 1}")
        coordinates = self._array(tree, "layout/coordinates", kind="f", shape=(None, 3))
        n_values = coordinates.shape[0]
        if n_values % self._bs:
            self._fail("layout/coordinates", f"has {n_values} rows, not a multiple of the block size {self._bs}")
        self._modes = self._array(tree, "basis/modes", kind="f", shape=(n_modes, n_values))
        self._array(tree, "layout/keys", kind="i", shape=(n_values,))
        self.points = np.ascontiguousarray(coordinates[:: self._bs])
        vtk_type, pairs = SUPPORTED[(self._cell_type, self._degree)]
        xyz = np.zeros((x.shape[0], 3))
        xyz[:, : x.shape[1]] = x
        a = np.array([p[0] for p in pairs])
        b = np.array([p[1] for p in pairs])
        wanted = 0.5 * (xyz[cells[:, a]] + xyz[cells[:, b]])  # (n_cells, points per cell, 3)
        self.cells = self._match(wanted.reshape(-1, 3)).reshape(len(cells), len(pairs))
        self.cell_type = vtk_type
        self.n_components = 1 if self._bs == 1 else 3

    def _match(self, wanted: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Index of the grid point at each of ``wanted``'s coordinates (all must be grid points)."""
        scale = max(1.0, float(np.abs(self.points).max(initial=0.0)))
        tol = 1e-8 * scale
        keys_have = np.round(self.points / tol).astype(np.int64)
        keys_want = np.round(wanted / tol).astype(np.int64)
        order = np.lexsort(keys_have.T[::-1])
        sorted_have = keys_have[order]
        view = np.dtype([("x", np.int64), ("y", np.int64), ("z", np.int64)])
        have = np.ascontiguousarray(sorted_have).view(view).ravel()
        want = np.ascontiguousarray(keys_want).view(view).ravel()
        position = np.clip(np.searchsorted(have, want), 0, len(have) - 1)
        found = have[position] == want
        if not np.all(found):
            self._fail("layout/coordinates", f"lacks {int(np.sum(~found))} dof points of the mesh's cells")
        return order[position]

    # -- evaluation ------------------------------------------------------------------------------------------

    def check(self, mu: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``mu`` as a float array of one value per parameter, finite and within the bounds.

        Raises:
            ValueError: Naming the parameter that is out of its bounds, or the shape that is wrong.
        """
        point = np.asarray(mu, dtype=np.float64).reshape(-1)
        if point.shape != (len(self.names),):
            raise ValueError(f"{len(point)} parameter values given, expected {len(self.names)} ({self.names})")
        for name, value, lo, hi in zip(self.names, point, self.lower, self.upper, strict=True):
            if not lo <= value <= hi:  # also False for NaN
                raise ValueError(f"parameter {name} = {value} is outside its bounds [{lo}, {hi}]")
        return point

    def coefficients(self, mu: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Reduced coefficients of every ensemble member at ``mu``, shape ``(n_members, n_modes)``."""
        stacked = sibling("_stacked")
        inputs = stacked.scale_inputs(self.check(mu)[None, :], self._transform, self._in_shift, self._in_scale)
        return self._network(inputs)[:, 0, :] * self._out_scale + self._out_shift

    def evaluate(self, mu: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """The predicted field at the grid points and, for an ensemble, the members' standard deviation.

        Returns:
            ``(mean, deviation)``, each ``(n_points, n_components)``; ``deviation`` is None for one member.
        """
        members = self.coefficients(mu)
        mean = self._points(members.mean(axis=0) @ self._modes)
        if self.n_members < 2:
            return mean, None
        fields = np.stack([self._points(c @ self._modes) for c in members])
        return mean, np.sqrt(np.mean((fields - mean) ** 2, axis=0))

    def _points(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Canonical dof values as ``(n_points, n_components)``: 2-D vectors padded to three components."""
        block = values.reshape(-1, self._bs)
        if self._bs == 2:
            block = np.hstack([block, np.zeros((block.shape[0], 1))])
        return block
