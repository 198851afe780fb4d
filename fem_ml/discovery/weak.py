# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The weak-form regression system of equation discovery, assembled by DOLFINx under MPI.

For a field :math:`u` with components :math:`u_c` and candidate terms :math:`\theta_i`, the model
:math:`\partial_t u_c = \sum_i \xi_{ci} \theta_i(u)` is tested with products of smooth, compactly supported
bumps in space, :math:`\phi_j(x)`, and smooth windows in time, :math:`\psi_w(t)`:

.. math::
    -\int \psi_w'(t) \int_\Omega u_c\, \phi_j \,dx\,dt = \sum_i \xi_{ci} \int \psi_w(t) \int_\Omega
    \theta_i(u)\, \phi_j \,dx\,dt,

one row per pair :math:`(j, w)` (and trajectory). The time derivative is on :math:`\psi_w` (it vanishes at the
ends of its window), the space derivatives of :math:`\theta_i` are moved onto :math:`\phi_j` as far as the term
allows (:class:`~fem_ml.discovery.library.Term`), so the data is differentiated at most once. The time integrals
use the trapezoidal rule on the snapshot times.

Alternatively (``time_derivative="fd"``) the time derivative is taken from the data by the three-point central
difference :math:`\partial_t u(t_k) \approx` the derivative of the parabola through
:math:`(t_{k-1}, t_k, t_{k+1})` (second order, also for uneven steps), with one row per bump and interior time.

Assembly: the bumps are interpolated into the degree-1 Lagrange space, :math:`\phi_j = \sum_a \Phi_{aj} N_a`.
Per snapshot, one vector assembly over a blocked test space (one block per term) gives
:math:`b_{ai} = \int \theta_i(u) N_a` for all terms at once; then :math:`\int \theta_i \phi_j = \sum_a \Phi_{aj}
b_{ai}`: a local product over owned nodes and, after all snapshots, one ``MPI_Allreduce``. The dense system
(rows x terms) is small and the same on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
import ufl
from dolfinx import fem, la, mesh

from fem_ml._mpi import check_collectively
from fem_ml.discovery.data import FieldData
from fem_ml.discovery.library import Library

__all__ = ["BumpFunctions", "TimeWindows", "WeakSystem", "assemble_system", "bump_functions"]


@dataclass(frozen=True)
class BumpFunctions:
    r"""Smooth, compactly supported test functions :math:`\phi_j(x) = (1 - |x - c_j|^2 / R^2)_+^q` in space.

    Attributes:
        centers: ``(n_bumps, gdim)`` centres :math:`c_j`, the same on every rank.
        radius: Support radius :math:`R`.
        degree: Exponent :math:`q` (the bump has :math:`q - 1` continuous derivatives).
        coefficients: ``(n_owned_vertices, n_bumps)`` values at this rank's owned nodes of the degree-1 Lagrange
            space (the interpolants, which vanish on the boundary).
    """

    centers: npt.NDArray[np.float64]
    radius: float
    degree: int
    coefficients: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.centers.shape[0])


def bump_functions(domain: mesh.Mesh, *, radius: float, spacing: float, degree: int = 4) -> BumpFunctions:
    """Bumps centred on a grid of step ``spacing`` over the mesh's bounding box, kept where they vanish on the boundary.

    A bump is kept if its interpolant is zero at every boundary vertex (so it is a valid test function for
    derivatives moved by parts) and nonzero somewhere. Collective.

    Args:
        domain: The mesh.
        radius: Support radius.
        spacing: Step of the grid of centres.
        degree: Exponent of the bump.

    Raises:
        ValueError: on every rank, for non-positive sizes or when no bump fits inside the domain.
    """
    comm = domain.comm
    error = None
    if not (radius > 0 and spacing > 0 and degree >= 1):
        error = f"radius and spacing must be > 0 and degree >= 1, got {radius}, {spacing}, {degree}."
    check_collectively(comm, error)
    gdim = domain.geometry.dim
    W = fem.functionspace(domain, ("Lagrange", 1))
    n_local = W.dofmap.index_map.size_local
    coords = W.tabulate_dof_coordinates()[:, :gdim]
    x = domain.geometry.x[:, :gdim]
    lower = np.array(x.min(axis=0) if x.size else np.full(gdim, np.inf), dtype=np.float64)
    upper = np.array(x.max(axis=0) if x.size else np.full(gdim, -np.inf), dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, lower, op=MPI.MIN)
    comm.Allreduce(MPI.IN_PLACE, upper, op=MPI.MAX)
    axes = [
        np.arange(lo + radius, hi - radius + 1e-12 * (hi - lo), spacing) for lo, hi in zip(lower, upper, strict=True)
    ]
    centers = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1).reshape(-1, gdim)
    tdim = domain.topology.dim
    domain.topology.create_connectivity(tdim - 1, tdim)
    boundary = fem.locate_dofs_topological(W, tdim - 1, mesh.exterior_facet_indices(domain.topology))

    def values(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        r2 = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2) / radius**2
        return np.where(r2 < 1.0, np.clip(1.0 - r2, 0.0, None) ** degree, 0.0)

    on_boundary = np.ascontiguousarray(values(coords[boundary]).max(axis=0, initial=0.0), dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, on_boundary, op=MPI.MAX)
    phi = values(coords[:n_local])
    mass = np.ascontiguousarray(phi.sum(axis=0), dtype=np.float64)
    comm.Allreduce(MPI.IN_PLACE, mass, op=MPI.SUM)
    keep = (on_boundary == 0.0) & (mass > 0.0)
    error = None if keep.any() else f"No bump of radius {radius} fits inside the domain."
    check_collectively(comm, error)
    return BumpFunctions(centers[keep], float(radius), int(degree), np.ascontiguousarray(phi[:, keep]))


@dataclass(frozen=True)
class TimeWindows:
    r"""Smooth windows in time :math:`\psi_w(t) = (1 - ((t - t_w) / H)^2)^q` on :math:`[t_w - H, t_w + H]`.

    Attributes:
        n_windows: Number of windows per trajectory, centres evenly spread so that each window fits.
        width: Full width :math:`2H` as a fraction of the trajectory's duration.
        degree: Exponent :math:`q`.
    """

    n_windows: int = 12
    width: float = 0.25
    degree: int = 4

    def weights(self, times: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        r"""Quadrature weights ``(n_windows, n_times)`` of :math:`\int \psi_w f\,dt` and :math:`\int \psi_w' f\,dt`.

        The trapezoidal rule on ``times`` (the windows vanish with :math:`q` derivatives at their ends).
        """
        t0, t1 = float(times[0]), float(times[-1])
        half = 0.5 * self.width * (t1 - t0)
        centres = np.linspace(t0 + half, t1 - half, self.n_windows)
        q = np.zeros_like(times)
        dt = np.diff(times)
        q[:-1] += 0.5 * dt
        q[1:] += 0.5 * dt
        s = (times[None, :] - centres[:, None]) / half
        inside = np.abs(s) < 1.0
        base = np.where(inside, 1.0 - s**2, 0.0)
        psi = base**self.degree
        dpsi = np.where(inside, self.degree * base ** (self.degree - 1) * (-2.0 * s / half), 0.0)
        return psi * q, dpsi * q


@dataclass(frozen=True)
class WeakSystem:
    """The dense regression system, the same on every rank.

    Attributes:
        theta: ``(n_rows, n_terms)`` the tested candidate terms.
        lhs: ``(n_rows, n_components)`` the tested time derivative of each component.
        groups: ``(n_rows,)`` group of each row for cross-validation: the time window (or block of times) and
            trajectory it comes from.
        library: The candidate terms.
        time_derivative: ``"weak"`` or ``"fd"``.
    """

    theta: npt.NDArray[np.float64]
    lhs: npt.NDArray[np.float64]
    groups: npt.NDArray[np.int64]
    library: Library
    time_derivative: str


def _tested(data: FieldData, library: Library, bumps: BumpFunctions, quadrature_degree: int | None) -> list:
    """Per trajectory: ``G (n_terms, n_times, n_bumps)``, ``H (n_components, n_times, n_bumps)``, summed over ranks."""
    V, comm = data.V, data.comm
    domain = V.mesh
    nt, nc = len(library), data.n_components
    Wt = fem.functionspace(domain, ("Lagrange", 1, (nt,)))
    Wc = fem.functionspace(domain, ("Lagrange", 1, (nc,)))
    u = fem.Function(V)
    vt, vc = ufl.TestFunction(Wt), ufl.TestFunction(Wc)
    metadata = {} if quadrature_degree is None else {"quadrature_degree": quadrature_degree}
    dx = ufl.Measure("dx", domain=domain, metadata=metadata)
    # one integral per term, so that each keeps its own estimated quadrature degree
    terms = sum((term.weak(u, vt[i]) * dx for i, term in enumerate(library.terms)), ufl.as_ufl(0.0) * vt[0] * dx)
    field = sum(((u if nc == 1 else u[c]) * vc[c] * dx for c in range(nc)), ufl.as_ufl(0.0) * vc[0] * dx)
    form_terms, form_field = fem.form(terms), fem.form(field)
    n_local = Wt.dofmap.index_map.size_local
    n_owned = V.dofmap.index_map.size_local * V.dofmap.index_map_bs
    phi = bumps.coefficients
    out = []
    for values in data.values:
        G = np.empty((nt, values.shape[0], len(bumps)))
        H = np.empty((nc, values.shape[0], len(bumps)))
        for k, snapshot in enumerate(values):
            u.x.array[:n_owned] = snapshot
            u.x.scatter_forward()
            for target, form, bs in ((G, form_terms, nt), (H, form_field, nc)):
                b = fem.assemble_vector(form)
                b.scatter_reverse(la.InsertMode.add)
                target[:, k, :] = b.array[: n_local * bs].reshape(n_local, bs).T @ phi
        out += [G, H]
    flat = np.concatenate([a.ravel() for a in out])
    comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
    comm.Bcast(flat, root=0)  # bitwise the same on every rank, whatever the reduction order
    result, offset = [], 0
    for a in out:
        result.append(flat[offset : offset + a.size].reshape(a.shape))
        offset += a.size
    return [(result[2 * r], result[2 * r + 1]) for r in range(len(data.values))]


def assemble_system(
    data: FieldData,
    library: Library,
    bumps: BumpFunctions,
    *,
    windows: TimeWindows | None = None,
    time_derivative: str = "weak",
    quadrature_degree: int | None = None,
) -> WeakSystem:
    """Assemble the weak-form regression system of ``data`` for the candidate ``library`` (collective).

    Args:
        data: Snapshots of the field.
        library: Candidate terms; their ``weak`` integrands are used.
        bumps: Test functions in space (:func:`bump_functions` on the field's mesh).
        windows: Test functions in time (``time_derivative="weak"``; default :class:`TimeWindows()`); with
            ``"fd"``, ``windows.n_windows`` is the number of blocks of times that form the cross-validation groups.
        time_derivative: ``"weak"`` (integration by parts in time) or ``"fd"`` (central differences).
        quadrature_degree: Quadrature degree of the term integrals (default: estimated by UFL).

    Returns:
        The system, the same on every rank.

    Raises:
        ValueError: on every rank, for an unknown ``time_derivative``, a field whose number of components does not
            match the library, or too few snapshots for the windows.
    """
    windows = windows or TimeWindows()
    error = None
    if time_derivative not in ("weak", "fd"):
        error = f"time_derivative must be 'weak' or 'fd', got {time_derivative!r}."
    elif data.n_components != len(library.components):
        error = f"The field has {data.n_components} components, the library {len(library.components)}."
    elif windows.n_windows < 1 or not 0 < windows.width <= 1 or windows.degree < 1:
        error = f"Invalid time windows {windows}."
    elif bumps.coefficients.shape[0] != data.V.dofmap.index_map.size_local:
        error = "The bumps were built on another mesh."
    check_collectively(data.comm, error)
    tested = _tested(data, library, bumps, quadrature_degree)
    thetas, lhss, groups = [], [], []
    n_groups = 0
    for times, (G, H) in zip(data.times, tested, strict=True):
        if time_derivative == "weak":
            psi, dpsi = windows.weights(times)
            thetas.append(np.einsum("wk,ikj->wji", psi, G).reshape(-1, G.shape[0]))
            lhss.append(-np.einsum("wk,ckj->wjc", dpsi, H).reshape(-1, H.shape[0]))
            groups.append(np.repeat(np.arange(windows.n_windows), G.shape[2]) + n_groups)
            n_groups += windows.n_windows
        else:
            t = times
            h0, h1 = (t[1:-1] - t[:-2]), (t[2:] - t[1:-1])
            a, c = -h1 / (h0 * (h0 + h1)), h0 / (h1 * (h0 + h1))
            derivative = (
                a[None, :, None] * H[:, :-2] + (-a - c)[None, :, None] * H[:, 1:-1] + c[None, :, None] * H[:, 2:]
            )
            thetas.append(G[:, 1:-1].transpose(1, 2, 0).reshape(-1, G.shape[0]))
            lhss.append(derivative.transpose(1, 2, 0).reshape(-1, H.shape[0]))
            block = np.minimum((np.arange(t.size - 2) * windows.n_windows) // (t.size - 2), windows.n_windows - 1)
            groups.append(np.repeat(block, G.shape[2]) + n_groups)
            n_groups += windows.n_windows
    return WeakSystem(
        np.concatenate(thetas), np.concatenate(lhss), np.concatenate(groups).astype(np.int64), library, time_derivative
    )
