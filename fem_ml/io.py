# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Output for ParaView and other tools: truth, prediction and error fields as XDMF, VTX or VTU, written atomically.

Each output holds named fields at a sequence of steps (one step per parameter point); a JSON side file records the
parameter values of each step. All files of one output (``.xdmf`` with its ``.h5`` and ``.json``; a ``.bp``
folder and its ``.json``; a ``.vtu``...) are written under temporary names and moved into place together once
every rank succeeded (:mod:`fem_ml._atomic`), so a failure never leaves a partial or mixed output. An existing
file that fem_ml did not write is not replaced unless ``overwrite=True``.

XDMF output needs fields whose element matches the mesh geometry (e.g. P1 on an affine mesh); other Lagrange
fields are interpolated into that space for XDMF. VTX (ADIOS2 ``.bp`` folders) writes any Lagrange degree as is.
Any other suffix meshio knows (``.vtu`` first; also ``.vtk``, ``.msh``...) is written by meshio on rank 0 from
fields interpolated to continuous P1 and gathered there: at most :data:`MESHIO_MAX_VALUES` values in all (nodes
times components times steps), a limit that keeps rank 0's memory small; larger outputs should use XDMF or VTX.
With several steps, meshio files hold one array per field and step, named ``<field>_<step>`` (4 digits).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from mpi4py import MPI

import basix
import basix.ufl
import numpy as np
import numpy.typing as npt
from dolfinx import fem, io

from fem_ml._agree import check_same
from fem_ml._atomic import output_set
from fem_ml._fem import function_from_owned, n_owned
from fem_ml._mpi import collectively
from fem_ml.pod import PODBasis
from fem_ml.snapshots import SnapshotSet
from fem_ml.surrogate import Surrogate

__all__ = [
    "MESHIO_MAX_VALUES",
    "OutputFormat",
    "write_comparison",
    "write_fields",
    "write_json",
    "write_modes",
    "write_sweep",
]

OutputFormat = Literal["xdmf", "vtx", "meshio"]

#: Largest meshio output, in values gathered on rank 0 (nodes x components x steps).
MESHIO_MAX_VALUES = 50_000_000


def write_fields(
    path: str | os.PathLike[str],
    V: fem.FunctionSpace,
    steps: Sequence[Mapping[str, npt.NDArray[np.float64]]],
    *,
    times: Sequence[float] | None = None,
    metadata: Mapping[str, object] | None = None,
    units: Mapping[str, str] | None = None,
    overwrite: bool = False,
    protect: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write named fields on ``V`` at several steps to XDMF, VTX or a meshio format, atomically (collective).

    Args:
        path: Output path; its suffix picks the format: ``.xdmf`` (with its ``.h5``), ``.bp`` (a folder), or a
            suffix meshio writes (``.vtu``, ``.vtk``...; see the module description for its size limit).
        V: Function space of the fields.
        steps: One mapping ``{field name: owned dof values}`` per step; every step has the same names.
        times: The time value of each step (default ``0, 1, 2, ...``).
        metadata: If given, written to ``<path>.json`` beside the output (e.g. the parameters of each step).
        units: Unit of each field, ``{field name: unit}``, recorded as ``"units"`` in ``<path>.json`` (XDMF and
            VTX have no place for units; the array names are the field names as given).
        overwrite: Replace existing files at the output's paths that fem_ml did not write.
        protect: Paths the output must never replace (e.g. the model file being read).

    Returns:
        The path written.

    Raises:
        ValueError: on every rank, for inconsistent steps, an unknown suffix, a destination that must not be
            replaced, or a path, step count, field names, times or options that differ between ranks.
        OSError: on every rank, if a file cannot be written.
    """
    comm = V.mesh.comm
    target = Path(path)
    with collectively(comm):
        fmt = _format(target)
        _check_steps(V, steps, times, units)
    step_times = [float(t) for t in times] if times is not None else [float(k) for k in range(len(steps))]
    # Different paths, step counts or names would reach the writers' collectives with other files or sizes.
    check_same(comm, "The output path, steps, times or options of write_fields", str(target), len(steps),
               list(steps[0]), step_times, metadata is not None, units and dict(units), overwrite,
               [str(p) for p in protect])  # fmt: skip
    if units is not None:
        metadata = {**(metadata or {}), "units": dict(units)}
    files = [target]
    if fmt == "xdmf":
        files.append(target.with_suffix(".h5"))
    if metadata is not None:
        files.append(Path(str(target) + ".json"))
    if fmt == "meshio":
        n_values = comm.allreduce(_nodes(V) * len(steps) * len(steps[0]) * max(1, int(np.prod(V.value_shape))))
        if n_values > MESHIO_MAX_VALUES:
            raise ValueError(
                f"{target}: {n_values} values are more than meshio output gathers on rank 0 "
                f"({MESHIO_MAX_VALUES}); write .xdmf or .bp instead."
            )
    folders = [target] if fmt == "vtx" else []
    with output_set(comm, files, folders=folders, overwrite=overwrite, protect=protect) as tmp:
        if fmt == "xdmf":
            _write_xdmf(tmp[target], V, steps, step_times)
        elif fmt == "vtx":
            _write_vtx(tmp[target], V, steps, step_times)
        else:
            _write_meshio(tmp[target], V, steps)
        with collectively(comm):
            if metadata is not None and comm.rank == 0:
                tmp[files[-1]].write_text(json.dumps(metadata, indent=2) + "\n")
    return target


def _format(target: Path) -> OutputFormat:
    """The output format of a path, by its suffix (raises ValueError)."""
    if target.suffix == ".xdmf":
        return "xdmf"
    if target.suffix == ".bp":
        return "vtx"
    import meshio

    if target.suffix in (".h5", ".xmf", ".json") or target.suffix not in meshio.extension_to_filetypes:
        raise ValueError(f"Output path {target} must end in .xdmf, .bp or a suffix meshio writes (.vtu, .vtk, ...).")
    return "meshio"


def _check_steps(
    V: fem.FunctionSpace,
    steps: Sequence[Mapping[str, npt.NDArray[np.float64]]],
    times: Sequence[float] | None,
    units: Mapping[str, str] | None,
) -> None:
    """Raise ValueError for steps without fields, with other field names or shapes, or unmatched times/units."""
    if not steps:
        raise ValueError("Nothing to write: no steps given.")
    names = list(steps[0])
    for k, step in enumerate(steps):
        if list(step) != names:
            raise ValueError(f"Step {k} has fields {list(step)}, step 0 has {names}.")
        for name, values in step.items():
            if np.shape(values) != (n_owned(V),):
                raise ValueError(f"Field {name!r} of step {k} has shape {np.shape(values)}, expected ({n_owned(V)},).")
    if times is not None and len(times) != len(steps):
        raise ValueError(f"{len(times)} times given for {len(steps)} steps.")
    if units is not None and not set(units) <= set(names):
        raise ValueError(f"Units given for {sorted(set(units) - set(names))}, which are not fields of {names}.")


def _write_xdmf(
    path: Path, V: fem.FunctionSpace, steps: Sequence[Mapping[str, npt.NDArray]], times: Sequence[float]
) -> None:
    """XDMF with its HDF5 file (collective)."""
    out_space = _output_space(V)
    functions = {name: fem.Function(out_space, name=name) for name in steps[0]}
    work = fem.Function(V) if out_space is not V else None
    with io.XDMFFile(V.mesh.comm, path, "w") as xdmf:
        xdmf.write_mesh(V.mesh)
        for step, t in zip(steps, times, strict=True):
            for name, values in step.items():
                _fill(V, values, functions[name], work)
                xdmf.write_function(functions[name], t)


def _write_vtx(
    path: Path, V: fem.FunctionSpace, steps: Sequence[Mapping[str, npt.NDArray]], times: Sequence[float]
) -> None:
    """A VTX (ADIOS2 BP4) folder (collective)."""
    functions = {name: fem.Function(V, name=name) for name in steps[0]}
    with io.VTXWriter(V.mesh.comm, path, list(functions.values()), engine="BP4") as vtx:
        for step, t in zip(steps, times, strict=True):
            for name, values in step.items():
                _fill(V, values, functions[name], None)
            vtx.write(t)


def _p1_space(V: fem.FunctionSpace) -> fem.FunctionSpace:
    """Continuous P1 with ``V``'s value shape (raises ValueError on a curved mesh)."""
    mesh = V.mesh
    if mesh.geometry.cmaps[0].degree != 1:
        raise ValueError("meshio output supports affine meshes only; write .xdmf or .bp for curved meshes.")
    element = V.ufl_element().basix_element
    if element.family == basix.ElementFamily.P and element.degree == 1 and not element.discontinuous:
        return V
    return fem.functionspace(mesh, basix.ufl.element("Lagrange", mesh.basix_cell(), 1, shape=tuple(V.value_shape)))


def _nodes(V: fem.FunctionSpace) -> int:
    """Points this rank sends for meshio output (its P1 dofs, owned and ghost)."""
    imap = V.mesh.geometry.index_map()
    return imap.size_local + imap.num_ghosts


_VTK_TO_MESHIO = {3: "line", 5: "triangle", 9: "quad", 10: "tetra", 12: "hexahedron", 13: "wedge"}


def _write_meshio(path: Path, V: fem.FunctionSpace, steps: Sequence[Mapping[str, npt.NDArray]]) -> None:
    """A meshio file written on rank 0 from P1 fields gathered there (collective).

    Each rank sends its cells and the points and values of its P1 dofs (owned and ghost: a point shared by ranks
    appears once per rank; the cells refer to their own rank's copy).
    """
    from dolfinx import plot

    comm = V.mesh.comm
    with collectively(comm):
        P1 = _p1_space(V)
    topology, cell_types, x = plot.vtk_mesh(P1)  # type: ignore[arg-type]
    u = fem.Function(P1)
    work = fem.Function(V) if P1 is not V else None
    bs = P1.dofmap.index_map_bs
    data: dict[str, npt.NDArray[Any]] = {}
    for k, step in enumerate(steps):
        for name, values in step.items():
            _fill(V, values, u, work)
            key = name if len(steps) == 1 else f"{name}_{k:04d}"
            data[key] = u.x.array.reshape(-1, bs).copy()
    parts = comm.gather((topology, cell_types, x, data), root=0)
    with collectively(comm):
        if comm.rank == 0:
            import meshio

            assert parts is not None
            offset = 0
            cells: dict[str, list[npt.NDArray]] = {}
            for top, types, points, _ in parts:
                per_cell = top.reshape(len(types), -1)[:, 1:] + offset if len(types) else np.empty((0, 0), int)
                for vtk_type in np.unique(types):
                    cells.setdefault(_VTK_TO_MESHIO[int(vtk_type)], []).append(per_cell[types == vtk_type])
                offset += points.shape[0]
            points = np.vstack([p[2] for p in parts])[:, : V.mesh.geometry.dim]
            point_data = {
                key: np.concatenate([p[3][key] for p in parts]).squeeze(axis=1)
                if bs == 1
                else np.concatenate([p[3][key] for p in parts])
                for key in data
            }
            mesh = meshio.Mesh(points, [(t, np.vstack(c)) for t, c in cells.items()], point_data=point_data)
            mesh.write(path, file_format=meshio.extension_to_filetypes[path.suffix][0])


def write_comparison(
    path: str | os.PathLike[str],
    surrogate: Surrogate,
    parameters: npt.ArrayLike,
    truth: SnapshotSet | npt.NDArray[np.float64],
    *,
    names: tuple[str, str, str] = ("truth", "prediction", "error"),
    times: Sequence[float] | None = None,
    unit: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write truth, surrogate prediction and their difference for each parameter point (collective).

    One step per point (step ``k`` at time ``k``, or at ``times[k]``, e.g. the physical times of a trajectory);
    ``<path>.json`` lists the parameter values of each step.

    Args:
        path: ``.xdmf`` or ``.bp`` output path.
        surrogate: The surrogate.
        parameters: Points ``(n, p)``.
        truth: True solutions at the points (a :class:`~fem_ml.snapshots.SnapshotSet` or owned values ``(n_owned, n)``).
        names: Field names of truth, prediction and error (``error = prediction - truth``).
        times: Time value of each step (default ``0, 1, 2, ...``).
        unit: Unit of the three fields, recorded in ``<path>.json``.
        overwrite: Replace existing files that fem_ml did not write.

    Returns:
        The path written.
    """
    points = surrogate.space.validate(parameters)
    values = truth.values if isinstance(truth, SnapshotSet) else np.asarray(truth, dtype=np.float64)
    with collectively(surrogate.V.mesh.comm):
        if values.shape != (n_owned(surrogate.V), points.shape[0]):
            raise ValueError(f"Truth has shape {values.shape}, expected {(n_owned(surrogate.V), points.shape[0])}.")
    prediction = surrogate.predict_values(points)
    steps = [
        {names[0]: values[:, k], names[1]: prediction[:, k], names[2]: prediction[:, k] - values[:, k]}
        for k in range(points.shape[0])
    ]
    step_times = [float(k) for k in range(points.shape[0])] if times is None else [float(t) for t in times]
    metadata = {
        "parameter_names": list(surrogate.space.names),
        "steps": [
            {"time": step_times[k], "parameters": surrogate.space.to_dict(points[k])} for k in range(points.shape[0])
        ],
    }
    units = None if unit is None else dict.fromkeys(names, unit)
    return write_fields(path, surrogate.V, steps, times=step_times, metadata=metadata, units=units, overwrite=overwrite)


def write_modes(
    path: str | os.PathLike[str],
    basis: PODBasis,
    *,
    n_modes: int | None = None,
    name: str = "mode",
    overwrite: bool = False,
) -> Path:
    r"""Write the POD modes as a series, step ``k`` holding mode ``k`` (collective).

    ParaView plays the modes like a time series. ``<path>.json`` records each mode's singular value and the
    energy retained up to it, :math:`\sum_{j \le k} \sigma_j^2 / \sum_j \sigma_j^2`.

    Args:
        path: ``.xdmf`` or ``.bp`` output path.
        basis: The reduced basis.
        n_modes: Number of leading modes to write (default: all).
        name: Field name of the modes.
        overwrite: Replace existing files that fem_ml did not write.

    Returns:
        The path written.
    """
    n = basis.n_modes if n_modes is None else n_modes
    with collectively(basis.V.mesh.comm):
        if not 1 <= n <= basis.n_modes:
            raise ValueError(f"n_modes must be in [1, {basis.n_modes}], got {n}.")
    sigma = np.asarray(basis.singular_values, dtype=np.float64)
    energy = basis.energy_curve
    metadata = {
        "inner_product": basis.inner_product.name,
        "steps": [
            {"time": float(k), "mode": k, "singular_value": float(sigma[k]), "retained_energy": float(energy[k])}
            for k in range(n)
        ],
    }
    steps = [{name: basis.modes[:, k]} for k in range(n)]
    times = [float(k) for k in range(n)]
    return write_fields(path, basis.V, steps, times=times, metadata=metadata, overwrite=overwrite)


def write_sweep(
    path: str | os.PathLike[str],
    surrogate: Surrogate,
    parameter: str,
    values: npt.ArrayLike,
    *,
    at: npt.ArrayLike | Mapping[str, float] | None = None,
    name: str = "prediction",
    unit: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the surrogate's prediction along a sweep of one parameter, one step per value (collective).

    The step's time is the parameter value, so ParaView's time slider walks through the sweep and shows the
    value; ``<path>.json`` records every step's full parameter point.

    Args:
        path: ``.xdmf`` or ``.bp`` output path.
        surrogate: The surrogate.
        parameter: Name of the swept parameter.
        values: Its values, strictly increasing, within the bounds.
        at: The other parameters' values (default: the centre of the parameter box).
        name: Field name of the prediction.
        unit: Unit of the field, recorded in ``<path>.json``.
        overwrite: Replace existing files that fem_ml did not write.

    Returns:
        The path written.
    """
    space = surrogate.space
    sweep = np.atleast_1d(np.asarray(values, dtype=np.float64))
    points = np.empty((0, space.dim))
    with collectively(surrogate.V.mesh.comm):
        if parameter not in space.names:
            raise ValueError(f"Unknown parameter {parameter!r}; the parameters are {space.names}.")
        if sweep.ndim != 1 or sweep.size == 0 or np.any(np.diff(sweep) <= 0):
            raise ValueError(f"Sweep values must be a non-empty, strictly increasing 1D sequence, got {sweep}.")
        base = 0.5 * (space.lower + space.upper) if at is None else space.validate(at, expected=1)[0]
        points = np.repeat(base[None, :], sweep.size, axis=0)
        points[:, space.names.index(parameter)] = sweep
        points = space.validate(points)
    prediction = surrogate.predict_values(points)
    metadata = {
        "parameter_names": list(space.names),
        "swept_parameter": parameter,
        "steps": [{"time": float(v), "parameters": space.to_dict(p)} for v, p in zip(sweep, points, strict=True)],
    }
    steps = [{name: prediction[:, k]} for k in range(sweep.size)]
    units = None if unit is None else {name: unit}
    return write_fields(
        path, surrogate.V, steps, times=sweep.tolist(), metadata=metadata, units=units, overwrite=overwrite
    )


def write_json(
    path: str | os.PathLike[str], data: Mapping[str, object], *, comm: MPI.Comm, overwrite: bool = False
) -> Path:
    """Write ``data`` as JSON from rank 0, atomically (collective).

    Args:
        path: Output path.
        data: JSON-serializable mapping.
        comm: Communicator; every rank must call, rank 0 writes.
        overwrite: Replace an existing file at ``path`` that is not valid JSON (see :mod:`fem_ml._atomic`).

    Returns:
        The path written.
    """
    target = Path(path)
    text = ""
    with collectively(comm):
        if comm.rank == 0:
            try:
                text = json.dumps(data, indent=2) + "\n"
            except (TypeError, ValueError) as err:
                raise TypeError(f"Cannot write {target}: the data is not JSON-serializable ({err}).") from None
    with output_set(comm, [target], overwrite=overwrite) as tmp, collectively(comm):
        if comm.rank == 0:
            tmp[target].write_text(text)
    return target


def _fill(V: fem.FunctionSpace, values: npt.NDArray[np.float64], out: fem.Function, work: fem.Function | None) -> None:
    if work is None:
        function_from_owned(V, values, out=out)
    else:
        function_from_owned(V, values, out=work)
        out.interpolate(work)


def _output_space(V: fem.FunctionSpace) -> fem.FunctionSpace:
    """The space XDMF stores ``V``'s fields in.

    That is ``V`` itself for Lagrange of the geometry's degree and for cellwise constants (cell data), else the
    Lagrange space of the geometry's degree with ``V``'s value shape.
    """
    mesh = V.mesh
    degree = mesh.geometry.cmaps[0].degree
    element = V.ufl_element().basix_element
    if element.family == basix.ElementFamily.P and element.degree == degree and not element.discontinuous:
        return V
    if element.family == basix.ElementFamily.P and element.degree == 0:
        return V
    shape = tuple(V.value_shape)
    return fem.functionspace(mesh, basix.ufl.element("Lagrange", mesh.basix_cell(), degree, shape=shape))
