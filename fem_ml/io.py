# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Output for ParaView: truth, prediction and error fields as XDMF or VTX, written atomically.

Each file holds named fields at a sequence of steps (one step per parameter point); a JSON side file records the
parameter values of each step. Files are first written under a temporary name in the target folder and renamed
into place once complete, so a crash never leaves a half-written file under the final name.

XDMF output needs fields whose element matches the mesh geometry (e.g. P1 on an affine mesh); other Lagrange
fields are interpolated into that space for XDMF. VTX (ADIOS2 ``.bp`` folders) writes any Lagrange degree as is.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from mpi4py import MPI

import basix
import basix.ufl
import numpy as np
import numpy.typing as npt
from dolfinx import fem, io

from fem_ml._fem import function_from_owned, n_owned
from fem_ml._mpi import check_collectively
from fem_ml.pod import PODBasis
from fem_ml.snapshots import SnapshotSet
from fem_ml.surrogate import Surrogate

__all__ = ["OutputFormat", "write_comparison", "write_fields", "write_json", "write_modes", "write_sweep"]

OutputFormat = Literal["xdmf", "vtx"]


def write_fields(
    path: str | os.PathLike[str],
    V: fem.FunctionSpace,
    steps: Sequence[Mapping[str, npt.NDArray[np.float64]]],
    *,
    times: Sequence[float] | None = None,
    metadata: Mapping[str, object] | None = None,
    units: Mapping[str, str] | None = None,
) -> Path:
    """Write named fields on ``V`` at several steps to XDMF (``.xdmf``) or VTX (``.bp``), atomically (collective).

    Args:
        path: Output path; its suffix picks the format: ``.xdmf`` (with its ``.h5``) or ``.bp`` (a folder).
        V: Function space of the fields.
        steps: One mapping ``{field name: owned dof values}`` per step; every step has the same names.
        times: The time value of each step (default ``0, 1, 2, ...``).
        metadata: If given, written to ``<path>.json`` beside the output (e.g. the parameters of each step).
        units: Unit of each field, ``{field name: unit}``, recorded as ``"units"`` in ``<path>.json`` (XDMF and
            VTX have no place for units; the array names are the field names as given).

    Returns:
        The path written.
    """
    comm = V.mesh.comm
    target = Path(path)
    fmt = {".xdmf": "xdmf", ".bp": "vtx"}.get(target.suffix)
    error: str | None = None
    if fmt is None:
        error = f"Output path {target} must end in .xdmf or .bp."
    elif not steps:
        error = "Nothing to write: no steps given."
    else:
        names = list(steps[0])
        for k, step in enumerate(steps):
            if list(step) != names:
                error = f"Step {k} has fields {list(step)}, step 0 has {names}."
                break
            for name, values in step.items():
                if np.shape(values) != (n_owned(V),):
                    error = f"Field {name!r} of step {k} has shape {np.shape(values)}, expected ({n_owned(V)},)."
                    break
    if times is not None and error is None and len(times) != len(steps):
        error = f"{len(times)} times given for {len(steps)} steps."
    if units is not None and error is None and not set(units) <= set(steps[0]):
        error = f"Units given for {sorted(set(units) - set(steps[0]))}, which are not fields of {list(steps[0])}."
    check_collectively(comm, error)
    if units is not None:
        metadata = {**(metadata or {}), "units": dict(units)}
    step_times = [float(t) for t in times] if times is not None else [float(k) for k in range(len(steps))]

    tmp_dir = _shared_tmp_dir(comm, target)
    try:
        tmp_path = tmp_dir / target.name
        out_space = _output_space(V) if fmt == "xdmf" else V
        functions = {name: fem.Function(out_space, name=name) for name in steps[0]}
        source = {name: fem.Function(V) for name in steps[0]} if out_space is not V else {}
        if fmt == "xdmf":
            with io.XDMFFile(comm, tmp_path, "w") as xdmf:
                xdmf.write_mesh(V.mesh)
                for step, t in zip(steps, step_times, strict=True):
                    for name, values in step.items():
                        _fill(V, values, functions[name], source.get(name))
                        xdmf.write_function(functions[name], t)
        else:
            with io.VTXWriter(comm, tmp_path, list(functions.values()), engine="BP4") as vtx:
                for step, t in zip(steps, step_times, strict=True):
                    for name, values in step.items():
                        _fill(V, values, functions[name], None)
                    vtx.write(t)
        if metadata is not None and comm.rank == 0:
            (tmp_dir / (target.name + ".json")).write_text(json.dumps(metadata, indent=2) + "\n")
        comm.barrier()
        if comm.rank == 0:
            _move_into_place(tmp_dir, target.parent)
        comm.barrier()
    finally:
        if comm.rank == 0:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def write_comparison(
    path: str | os.PathLike[str],
    surrogate: Surrogate,
    parameters: npt.ArrayLike,
    truth: SnapshotSet | npt.NDArray[np.float64],
    *,
    names: tuple[str, str, str] = ("truth", "prediction", "error"),
    times: Sequence[float] | None = None,
    unit: str | None = None,
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

    Returns:
        The path written.
    """
    points = surrogate.space.validate(parameters)
    values = truth.values if isinstance(truth, SnapshotSet) else np.asarray(truth, dtype=np.float64)
    check_collectively(
        surrogate.V.mesh.comm,
        None
        if values.shape == (n_owned(surrogate.V), points.shape[0])
        else f"Truth has shape {values.shape}, expected {(n_owned(surrogate.V), points.shape[0])}.",
    )
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
    return write_fields(path, surrogate.V, steps, times=step_times, metadata=metadata, units=units)


def write_modes(
    path: str | os.PathLike[str], basis: PODBasis, *, n_modes: int | None = None, name: str = "mode"
) -> Path:
    r"""Write the POD modes as a series, step ``k`` holding mode ``k`` (collective).

    ParaView plays the modes like a time series. ``<path>.json`` records each mode's singular value and the
    energy retained up to it, :math:`\sum_{j \le k} \sigma_j^2 / \sum_j \sigma_j^2`.

    Args:
        path: ``.xdmf`` or ``.bp`` output path.
        basis: The reduced basis.
        n_modes: Number of leading modes to write (default: all).
        name: Field name of the modes.

    Returns:
        The path written.
    """
    n = basis.n_modes if n_modes is None else n_modes
    check_collectively(
        basis.V.mesh.comm,
        None if 1 <= n <= basis.n_modes else f"n_modes must be in [1, {basis.n_modes}], got {n}.",
    )
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
    return write_fields(path, basis.V, steps, times=[float(k) for k in range(n)], metadata=metadata)


def write_sweep(
    path: str | os.PathLike[str],
    surrogate: Surrogate,
    parameter: str,
    values: npt.ArrayLike,
    *,
    at: npt.ArrayLike | Mapping[str, float] | None = None,
    name: str = "prediction",
    unit: str | None = None,
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

    Returns:
        The path written.
    """
    space = surrogate.space
    error: str | None = None
    sweep = np.atleast_1d(np.asarray(values, dtype=np.float64))
    points = np.empty((0, space.dim))
    try:
        if parameter not in space.names:
            raise ValueError(f"Unknown parameter {parameter!r}; the parameters are {space.names}.")
        if sweep.ndim != 1 or sweep.size == 0 or np.any(np.diff(sweep) <= 0):
            raise ValueError(f"Sweep values must be a non-empty, strictly increasing 1D sequence, got {sweep}.")
        base = 0.5 * (space.lower + space.upper) if at is None else space.validate(at, expected=1)[0]
        points = np.repeat(base[None, :], sweep.size, axis=0)
        points[:, space.names.index(parameter)] = sweep
        points = space.validate(points)
    except ValueError as err:
        error = str(err)
    check_collectively(surrogate.V.mesh.comm, error)
    prediction = surrogate.predict_values(points)
    metadata = {
        "parameter_names": list(space.names),
        "swept_parameter": parameter,
        "steps": [{"time": float(v), "parameters": space.to_dict(p)} for v, p in zip(sweep, points, strict=True)],
    }
    steps = [{name: prediction[:, k]} for k in range(sweep.size)]
    units = None if unit is None else {name: unit}
    return write_fields(path, surrogate.V, steps, times=sweep.tolist(), metadata=metadata, units=units)


def write_json(path: str | os.PathLike[str], data: Mapping[str, object], *, comm: MPI.Comm) -> Path:
    """Write ``data`` as JSON from rank 0, atomically (temporary file, then rename); collective.

    Args:
        path: Output path.
        data: JSON-serializable mapping.
        comm: Communicator; every rank must call, rank 0 writes.

    Returns:
        The path written.
    """
    target = Path(path)
    error = None
    if comm.rank == 0:
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except (OSError, TypeError, ValueError) as err:
            tmp.unlink(missing_ok=True)
            error = f"Cannot write {target}: {err}"
    check_collectively(comm, error, OSError)
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


def _shared_tmp_dir(comm: MPI.Comm, target: Path) -> Path:
    """A fresh hidden folder next to ``target``, created by rank 0 and known to all ranks."""
    name = comm.bcast(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}" if comm.rank == 0 else None, root=0)
    tmp_dir = target.parent / name
    error = None
    if comm.rank == 0:
        try:
            tmp_dir.mkdir(parents=True)
        except OSError as err:
            error = f"Cannot create output folder next to {target}: {err}"
    check_collectively(comm, error, OSError)
    return tmp_dir


def _move_into_place(tmp_dir: Path, dest: Path) -> None:
    """Rename every entry of ``tmp_dir`` into ``dest``; the main file (``.xdmf``) last."""
    entries = sorted(tmp_dir.iterdir(), key=lambda p: p.suffix == ".xdmf")
    for entry in entries:
        final = dest / entry.name
        if entry.is_dir():
            if final.exists():
                trash = dest / f".{entry.name}.old-{uuid.uuid4().hex[:8]}"
                final.rename(trash)
                entry.rename(final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                entry.rename(final)
        else:
            os.replace(entry, final)
