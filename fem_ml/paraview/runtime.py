# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Evaluate a saved surrogate without DOLFINx or torch: the engine of the ParaView plugin.

ParaView's Python (Debian's ParaView 5.11 runs Python 3.11 with Debian's NumPy and h5py) has neither DOLFINx nor
torch, so the plugin cannot ``import fem_ml``. This module needs only NumPy and h5py. It reads a ``.femml`` file
with fem_ml's own validating reader (the schema, checksum and value checks of :func:`fem_ml.archive.load`), evaluates
the
network with fem_ml's own stacked forward pass (:mod:`fem_ml._stacked`) and reconstructs the field
:math:`u = \Phi \bar c(\mu)` at the points of an unstructured grid:

- Lagrange P1 (and Q1 on quadrilaterals and hexahedra): the grid's points are the mesh vertices;
- Lagrange P2 on triangles and tetrahedra: the points are the vertices and edge midpoints, and the cells are
  VTK's quadratic triangles and tetrahedra, so ParaView interpolates the field as the finite element does.

The grid is built once per file: the dof coordinates stored in the file are matched with the vertices and edge
midpoints of each cell. An ensemble's deviation field is the members' standard deviation at each point. A query
costs one small forward pass and one product with the modes.

It imports fem_ml's file reader (:mod:`fem_ml._h5`, :mod:`fem_ml._formats`) and :mod:`fem_ml._stacked`, which need
only NumPy and h5py; in ParaView, whose Python cannot run ``fem_ml/__init__.py``, the plugin registers the package
without running it (see ``plugin.py``), so the plugin shares their code rather than a copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fem_ml._formats import SURROGATE
from fem_ml._h5 import FileFormatError, read_tree, resolve_key
from fem_ml._stacked import StackedMLP, scale_inputs

__all__ = ["SUPPORTED", "SurrogateModel"]

#: The VTK cell type and the grid points of one cell, for each cell type and Lagrange degree. Each point is the
#: midpoint of two vertices of the cell (in the mesh's vertex order), a vertex when both are the same.
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


class SurrogateModel:
    """A ``.femml`` surrogate ready to evaluate on an unstructured grid (local; no MPI).

    Args:
        path: The file.
        key: Require a valid HMAC-SHA256 signature under this key (default: the environment variable
            ``FEM_ML_KEY``, if set), as :func:`fem_ml.archive.load` does.

    Raises:
        FileFormatError: If the file is not a valid fem_ml surrogate: the checks of :func:`fem_ml.archive.load` (format,
            structure, schema, shapes, checksum, finite values, known names), or dof coordinates that are not the
            vertices and edge midpoints of its mesh.
        ValueError: If its element or cell type is not one the grid supports (Lagrange P1/P2 on triangles and
            tetrahedra, Q1 on quadrilaterals and hexahedra, on an affine mesh; scalar or vector fields).

    Attributes:
        names: Parameter names.
        lower: Lower bounds.
        upper: Upper bounds.
        field_name: Name of the predicted field (the file's metadata ``"field"``, else ``"prediction"``).
        points: Grid points ``(n_points, 3)``.
        cells: Grid connectivity ``(n_cells, points per cell)``.
        cell_type: VTK cell type of every cell.
        n_components: Components of the field (1 for a scalar; 3 for a vector, 2-D vectors padded with a 0).
        n_members: Ensemble size.
    """

    def __init__(self, path: str | Path, *, key: bytes | str | None = None):
        self.path = Path(path)
        tree = read_tree(
            self.path,
            kind=SURROGATE.kind,
            version=SURROGATE.version,
            what=SURROGATE.what,
            schema=SURROGATE.schema,
            key=resolve_key(key),
        )
        self.names: list[str] = json.loads(str(tree["parameters/names"]))
        self.lower = np.asarray(tree["parameters/lower"], dtype=np.float64)
        self.upper = np.asarray(tree["parameters/upper"], dtype=np.float64)
        field = json.loads(str(tree["metadata"])).get("field")
        self.field_name = field if isinstance(field, str) and field else "prediction"
        if "kernel/method" in tree:
            raise ValueError(
                f"{self.path}: a kernel surrogate ({tree['kernel/method']}); the ParaView plugin evaluates "
                "network surrogates only"
            )
        if "blend/weights" in tree:
            raise ValueError(
                f"{self.path}: a blend of a kernel regressor ({tree['blend/kernel/method']}) and a network; the "
                "ParaView plugin evaluates network surrogates only"
            )
        self._read_network(tree)
        self._read_space(tree)
        self._build_grid(tree)

    def _read_network(self, tree: dict[str, Any]) -> None:
        """The stacked network and its scalers (the schema checked the layers' shapes and values)."""
        self.n_members = int(tree["network/n_networks"])
        members = []
        for m in range(self.n_members):
            prefix = f"network/member_{m}/layers."
            indices = sorted({int(k[len(prefix) :].split(".")[0]) for k in tree if k.startswith(prefix)})
            members.append([(tree[f"{prefix}{i}.weight"], tree[f"{prefix}{i}.bias"]) for i in indices])
        self._network = StackedMLP.from_members(members, str(tree["network/activation"]))
        self._transform = str(tree["network/input_transform"])
        self._in_shift, self._in_scale, self._out_shift, self._out_scale = (
            np.asarray(tree[f"network/{side}_scaler/{part}"], dtype=np.float64)
            for side in ("input", "output")
            for part in ("shift", "scale")
        )
        # The factor exp(w0 + w . x) of a network trained with a norm model (output_norm="log-linear").
        self._norm: tuple[float, npt.NDArray[np.float64]] | None = None
        if "network/norm_model/slopes" in tree:
            slopes = np.asarray(tree["network/norm_model/slopes"], dtype=np.float64)
            self._norm = (float(np.asarray(tree["network/norm_model/intercept"])), slopes)

    def _read_space(self, tree: dict[str, Any]) -> None:
        """The element and cell type, refused unless the grid can show them."""
        degree = int(tree["element/degree"])
        cell_type = str(tree["mesh/cell_type"])
        if bool(tree["element/discontinuous"]):
            raise ValueError(f"{self.path}: the ParaView reader shows continuous Lagrange fields, not DG{degree}")
        if (cell_type, degree) not in SUPPORTED or int(tree["mesh/degree"]) != 1:
            raise ValueError(
                f"{self.path}: the ParaView reader supports P1/P2 on triangles and tetrahedra and Q1 on "
                f"quadrilaterals and hexahedra, on affine meshes; not degree {degree} on {cell_type} "
                f"(mesh degree {tree['mesh/degree']})"
            )
        shape = np.asarray(tree["element/shape"])
        self._bs = 1 if bool(tree["element/scalar"]) else int(np.prod(shape))
        if shape.ndim != 1 or len(shape) > 1 or not 1 <= self._bs <= 3:
            raise ValueError(f"{self.path}: the ParaView reader shows scalar and vector fields, not shape {shape}")
        self._cell_type, self._degree = cell_type, degree

    def _build_grid(self, tree: dict[str, Any]) -> None:
        """Grid points (one per dof point, in canonical order) and each cell's points, found by coordinates."""
        x = np.asarray(tree["mesh/x"], dtype=np.float64)
        cells = np.asarray(tree["mesh/cells"], dtype=np.int64)
        coordinates = np.asarray(tree["layout/coordinates"], dtype=np.float64)
        if coordinates.shape[0] % self._bs:
            self._fail("layout/coordinates", f"{coordinates.shape[0]} rows, not a multiple of {self._bs}")
        self._modes = np.asarray(tree["basis/modes"], dtype=np.float64)
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

    def _fail(self, entry: str, problem: str) -> None:
        raise FileFormatError(f"{self.path} is not a valid {SURROGATE.what}: {entry!r}: {problem}.")

    def _match(self, wanted: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Index of the grid point at each of ``wanted``'s coordinates (all must be grid points)."""
        tol = 1e-8 * max(1.0, float(np.abs(self.points).max(initial=0.0)))
        keys_have = np.round(self.points / tol).astype(np.int64)
        keys_want = np.round(wanted / tol).astype(np.int64)
        order = np.lexsort(keys_have.T[::-1])
        view = np.dtype([("x", np.int64), ("y", np.int64), ("z", np.int64)])
        have = np.ascontiguousarray(keys_have[order]).view(view).ravel()
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
        inputs = scale_inputs(self.check(mu)[None, :], self._transform, self._in_shift, self._in_scale)
        coefficients = self._network(inputs)[:, 0, :] * self._out_scale + self._out_shift
        if self._norm is not None:
            coefficients = coefficients * np.exp(self._norm[0] + float(inputs[0] @ self._norm[1]))  # in the box
        return coefficients

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
