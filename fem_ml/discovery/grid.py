# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Field data on a regular grid, for tools that need one: sampling DOLFINx data, and PySINDy's weak-form SINDy.

:func:`sample_on_grid` evaluates the snapshots of a :class:`~fem_ml.discovery.data.FieldData` at the points of a
tensor grid (collective; the result is the same on every rank). :func:`pysindy_weak` runs PySINDy's
``WeakPDELibrary`` on such data and returns its regression system and the supports and coefficients of STLSQ over
a sequence of thresholds, so a comparison can report PySINDy at its best threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem, geometry

from fem_ml._mpi import check_collectively
from fem_ml.discovery.data import FieldData

__all__ = ["PySINDyPath", "pysindy_weak", "sample_on_grid"]


def sample_on_grid(data: FieldData, axes: Sequence[npt.ArrayLike]) -> list[npt.NDArray[np.float64]]:
    """The snapshots at the points of the grid ``axes[0] x axes[1] (x axes[2])`` (collective).

    Args:
        data: The field data.
        axes: One 1-D array of coordinates per geometric dimension.

    Returns:
        Per trajectory, an array ``(n_x, n_y[, n_z], n_times, n_components)``, the same on every rank.

    Raises:
        ValueError: on every rank if a grid point lies outside the mesh.
    """
    V, comm = data.V, data.comm
    domain = V.mesh
    gdim = domain.geometry.dim
    grids = np.meshgrid(*[np.asarray(a, dtype=float) for a in axes], indexing="ij")
    shape = grids[0].shape
    points = np.zeros((grids[0].size, 3))
    for d, g in enumerate(grids[:gdim]):
        points[:, d] = g.ravel()
    tdim = domain.topology.dim
    n_cells = domain.topology.index_map(tdim).size_local
    tree = geometry.bb_tree(domain, tdim, entities=np.arange(n_cells, dtype=np.int32))
    colliding = geometry.compute_colliding_cells(domain, geometry.compute_collisions_points(tree, points), points)
    cells = np.array([colliding.links(i)[0] if len(colliding.links(i)) else -1 for i in range(points.shape[0])])
    owner = np.ascontiguousarray(np.where(cells >= 0, comm.rank, comm.size), dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, owner, op=MPI.MIN)
    check_collectively(comm, None if (owner < comm.size).all() else "Some grid points lie outside the mesh.")
    mine = np.flatnonzero(owner == comm.rank)
    u = fem.Function(V)
    n_owned = V.dofmap.index_map.size_local * V.dofmap.index_map_bs
    nc = data.n_components
    out = []
    for values in data.values:
        sampled = np.zeros((values.shape[0], points.shape[0], nc))
        for k, snapshot in enumerate(values):
            u.x.array[:n_owned] = snapshot
            u.x.scatter_forward()
            if mine.size:
                sampled[k, mine] = u.eval(points[mine], cells[mine].astype(np.int32)).reshape(mine.size, nc)
        comm.Allreduce(MPI.IN_PLACE, sampled, op=MPI.SUM)
        comm.Bcast(sampled, root=0)
        out.append(np.moveaxis(sampled.reshape(values.shape[0], *shape, nc), 0, -2).copy())
    return out


@dataclass(frozen=True)
class PySINDyPath:
    """PySINDy's weak-form system and its STLSQ fits over thresholds.

    Attributes:
        names: Feature names (PySINDy's, with the given variable names).
        theta: ``(n_rows, n_features)`` PySINDy's weak-form library.
        lhs: ``(n_rows, n_components)`` its weak time derivatives.
        thresholds: The thresholds tried.
        coefficients: ``(n_thresholds, n_components, n_features)`` STLSQ's coefficients at each threshold.
    """

    names: list[str]
    theta: npt.NDArray[np.float64]
    lhs: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]
    coefficients: npt.NDArray[np.float64]

    def best(self, truth: Mapping[str, Mapping[str, float]], variables: Sequence[str]) -> tuple[bool, float, float]:
        """PySINDy at its best threshold for a known model ``truth[variable][feature name]`` (an oracle choice).

        Among the thresholds whose support is exactly the true one, the one with the smallest largest relative
        coefficient error; if none has the true support, the smallest error over all thresholds.

        Returns:
            ``(support recovered, largest relative coefficient error, threshold)``.
        """
        expected = np.zeros(self.coefficients.shape[1:])
        for variable, terms in truth.items():
            for name, value in terms.items():
                expected[list(variables).index(variable), self.names.index(name)] = value
        active = expected != 0.0
        exact = [bool(np.array_equal(c != 0.0, active)) for c in self.coefficients]
        errors = [
            float((np.abs(c[active] - expected[active]) / np.abs(expected[active])).max()) for c in self.coefficients
        ]
        pool = [i for i in range(len(errors)) if exact[i]] or list(range(len(errors)))
        i = min(pool, key=lambda k: errors[k])
        return exact[i], errors[i], float(self.thresholds[i])


def pysindy_weak(
    grid_values: Sequence[npt.NDArray[np.float64]],
    axes: Sequence[npt.ArrayLike],
    times: Sequence[npt.ArrayLike],
    *,
    variables: Sequence[str],
    degree: int,
    derivative_order: int = 2,
    n_subdomains: int = 500,
    half_widths: Sequence[float] | None = None,
    p: int = 4,
    thresholds: npt.ArrayLike,
    seed: int = 0,
) -> PySINDyPath:
    """PySINDy's weak SINDy (``WeakPDELibrary`` + STLSQ with normalized columns) over a sequence of thresholds.

    Serial (call it on one rank). The library is PySINDy's polynomials of the variables up to ``degree`` (with a
    bias) times their spatial derivatives up to ``derivative_order``, tested on ``n_subdomains`` random
    spatio-temporal subdomains of half-widths ``half_widths`` (PySINDy's default: a twentieth of each extent) with
    its polynomial test functions of exponent ``p``.

    Args:
        grid_values: Per trajectory, ``(n_x, n_y, n_times, n_components)`` (:func:`sample_on_grid`).
        axes: The grid's coordinates per spatial dimension.
        times: Per trajectory, the times (uniform steps).
        variables: Names of the components.
        degree: Polynomial degree.
        derivative_order: Highest spatial derivative.
        n_subdomains: PySINDy's ``K``.
        half_widths: PySINDy's ``H_xt`` (space axes, then time).
        p: Exponent of the test functions.
        thresholds: STLSQ thresholds, relative to the largest norm of a component's weak time derivative (STLSQ
            thresholds the coefficients of unit-norm columns, which scale with that norm).
        seed: Seed of NumPy's global generator, which PySINDy uses to place the subdomains.
    """
    import pysindy as ps

    captured: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []

    class Capture(ps.STLSQ):
        """STLSQ that keeps the system it is given."""

        def fit(self, x_, y, **kwargs):  # type: ignore[no-untyped-def]
            captured.append((np.asarray(x_), np.asarray(y)))
            return super().fit(x_, y, **kwargs)

    state = np.random.get_state()  # noqa: NPY002  PySINDy draws its subdomains from the legacy global generator
    np.random.seed(seed)  # noqa: NPY002
    try:
        t0 = np.asarray(times[0], dtype=float)
        grids = np.meshgrid(*[np.asarray(a, dtype=float) for a in axes], t0, indexing="ij")
        library = ps.WeakPDELibrary(
            function_library=ps.PolynomialLibrary(degree=degree, include_bias=False),
            derivative_order=derivative_order,
            spatiotemporal_grid=np.stack(grids, axis=-1),
            include_bias=True,
            K=n_subdomains,
            H_xt=None if half_widths is None else list(half_widths),
            p=p,
        )
        model = ps.SINDy(feature_library=library, optimizer=Capture(threshold=0.0, normalize_columns=True))
        model.fit(list(grid_values), t=[np.asarray(t, dtype=float) for t in times])
    finally:
        np.random.set_state(state)  # noqa: NPY002
    theta, lhs = captured[-1]
    lhs = lhs.reshape(theta.shape[0], -1)
    names = library.get_feature_names(list(variables))
    levels = np.asarray(thresholds, dtype=float) * float(np.linalg.norm(lhs, axis=0).max())
    coefficients = np.zeros((levels.size, lhs.shape[1], theta.shape[1]))
    for i, threshold in enumerate(levels):
        optimizer = ps.STLSQ(threshold=float(threshold), normalize_columns=True, alpha=1e-8)
        optimizer.fit(theta, lhs)
        coefficients[i] = np.asarray(optimizer.coef_).reshape(lhs.shape[1], -1)
    return PySINDyPath(names, theta, lhs, levels, coefficients)
