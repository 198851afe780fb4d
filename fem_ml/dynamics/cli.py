# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Command line for reduced dynamics: simulate a saved model and write the fields at given times.

.. code-block:: bash

    python -m fem_ml predict burgers.femml --t 0.5,1.0,1.5 --mu nu=0.02 -o out.xdmf
    mpirun -n 2 python -m fem_ml predict burgers.femml --t 0:2:41 --mu nu=0.02 -o out.xdmf
    python -m fem_ml predict beam.femml --t 0:0.1:101 --input 1.0 -o displacement.xdmf
    mpirun -n 2 python -m fem_ml predict beam.femml --t 0:0.1:101 --input history.npy -o displacement.xdmf

``--t`` lists output times (``a,b,c``) or a range ``start:stop:count``. A first-order model
(:class:`~fem_ml.dynamics.model.ReducedDynamics`) starts at the first time from the initial state of the training
trajectory nearest to ``--mu``. A second-order model (:class:`~fem_ml.dynamics.second_order.SecondOrderModel`) has
no parameters (``--mu`` is an error) and starts at rest, zero displacement and velocity, at the first time; a model
with inputs needs ``--input``: one constant per input (``1.0`` or ``1.0,-0.5``), held over the whole run, or a
``.npy`` file (NumPy's format, read without pickle) of floats of shape ``(n_times,)`` (one input) or
``(n_times, m)``, the input values at the ``--t`` times. The fields (``--name``: default ``prediction``, or
``displacement`` for a second-order model) go to XDMF or VTX with the simulation time as the file's time;
``<output>.json`` records the model file, the parameters or the inputs, and the simulation report. A blow-up, a bad
file or bad arguments give exit status 2 on every rank with the message on rank 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

from fem_ml._mpi import check_collectively, collectively
from fem_ml.dynamics.archive import load
from fem_ml.dynamics.second_order import SecondOrderModel
from fem_ml.dynamics.simulate import BlowUpError

__all__ = ["main", "parse_times", "read_inputs"]


def parse_times(text: str) -> np.ndarray:
    """Parse ``"0.1,0.2,0.5"`` or ``"0:2:41"`` (start:stop:count) into increasing times.

    Raises:
        ValueError: for text that is not numbers, a count below 1, or times that do not increase.
    """
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            times = np.linspace(float(start), float(stop), int(count))
        else:
            times = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise ValueError(f"--t takes 'a,b,c' or 'start:stop:count', got {text!r}.") from None
    if times.size < 1 or not np.isfinite(times).all() or np.any(np.diff(times) <= 0):
        raise ValueError(f"--t must give finite, strictly increasing times, got {text!r}.")
    return times


def _parse_point(text: str) -> dict[str, float]:
    """``"nu=0.02,a=1"`` as ``{"nu": 0.02, "a": 1.0}``."""
    point: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or name.strip() in point:
            raise ValueError(f"--mu entries look like name=value, each name once; got {text!r}.")
        try:
            point[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"The value of {name.strip()!r} is not a number: {value!r}.") from None
    return point


def read_inputs(text: str | None, n_inputs: int, n_times: int) -> tuple[npt.NDArray[np.float64], dict[str, Any]]:
    """The input values of ``--input`` at ``n_times`` times, ``(n_times, n_inputs)``, and a summary for the report.

    Args:
        text: One constant per input (``"1.0,-0.5"``), or the path of a ``.npy`` file of floats shaped
            ``(n_times,)`` (one input) or ``(n_times, n_inputs)``; None for a model without inputs.
        n_inputs: The model's number of inputs.
        n_times: The number of output times.

    Returns:
        The values, ``(n_times, n_inputs)`` float64, and a JSON-ready summary (the constants, or the file and the
        range of each input).

    Raises:
        ValueError: for a missing or superfluous ``--input``, a file that is not such an array (pickled objects are
            refused), a wrong count or shape, or values that are not finite.
    """
    if n_inputs == 0:
        if text is not None:
            raise ValueError("--input: the model has no inputs.")
        return np.zeros((n_times, 0)), {"n_inputs": 0}
    if text is None:
        raise ValueError(
            f"The model has {n_inputs} input(s): give --input, one constant per input (a,b,...) or a .npy file of "
            "the values at the --t times."
        )
    if text.endswith(".npy"):
        try:  # mapped, not read: the shape is checked before any value is loaded
            values = np.load(text, mmap_mode="r", allow_pickle=False)
        except Exception as err:  # missing, unreadable, pickled or malformed: all the same to the user
            raise ValueError(f"--input {text}: not a readable .npy array ({type(err).__name__}: {err}).") from None
        if not isinstance(values, np.ndarray) or values.dtype.kind != "f":
            raise ValueError(f"--input {text}: expected an array of floats, got {getattr(values, 'dtype', values)}.")
        if values.ndim == 1 and n_inputs == 1:
            values = values[:, None]
        if values.shape != (n_times, n_inputs):
            raise ValueError(
                f"--input {text}: expected shape ({n_times}, {n_inputs}) (one row per --t time), got {values.shape}."
            )
        values = np.array(values, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"--input {text}: the values contain NaN or inf.")
        return values, {"n_inputs": n_inputs, "file": text, "min": values.min(axis=0).tolist(),
                        "max": values.max(axis=0).tolist()}  # fmt: skip
    try:
        constants = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise ValueError(f"--input takes numbers a,b,... or a .npy file, got {text!r}.") from None
    if constants.size != n_inputs or not np.isfinite(constants).all():
        raise ValueError(f"--input: the model has {n_inputs} input(s); give as many finite numbers, got {text!r}.")
    return np.tile(constants, (n_times, 1)), {"n_inputs": n_inputs, "constant": constants.tolist()}


def main(argv: Sequence[str] | None = None, *, comm: MPI.Comm | None = None) -> int:
    """Run ``predict`` on a dynamics file; returns the exit status (0, or 2 for an error).

    Args:
        argv: Arguments after ``predict`` (the model file first).
        comm: Communicator (default ``MPI.COMM_WORLD``).
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    parser = argparse.ArgumentParser(prog="python -m fem_ml predict", description="Simulate a reduced model.")
    parser.add_argument("model", help="a .femml file of fem_ml.dynamics")
    parser.add_argument("--t", required=True, help="output times: a,b,c or start:stop:count")
    parser.add_argument("--mu", default=None, metavar="NAME=VALUE,...", help="the parameters (first-order model)")
    parser.add_argument(
        "--input", default=None, metavar="A,B,...|FILE.npy",
        help="the inputs (second-order model): one constant per input, or a .npy file of the values at the --t times",
    )  # fmt: skip
    parser.add_argument("-o", "--output", required=True, help="output file: .xdmf or .bp")
    parser.add_argument("--name", default=None, help="field name (default: prediction; second order: displacement)")
    args = parser.parse_args(argv)
    try:
        times = parse_times(args.t)
        mu = _parse_point(args.mu) if args.mu else None
        if not args.output.endswith((".xdmf", ".bp")):
            raise ValueError(f"The output must end in .xdmf or .bp, got {args.output!r}.")
        model = load(args.model, comm=comm)
        if model.basis is None:
            raise ValueError(f"{args.model} holds no POD basis: it cannot write fields.")
        if isinstance(model, SecondOrderModel):
            path, n_steps, name = _predict_second_order(model, args, times, comm)
        else:
            if args.input is not None:
                raise ValueError("--input is for second-order models; this first-order model takes --mu.")
            name = args.name or "prediction"
            result = model.simulate(mu, model.initial_state(mu), times, raise_on_blowup=True)
            path = result.write_xdmf(args.output, name=name, metadata={"model": str(args.model), "parameters": mu})
            n_steps = result.t.size
        if comm.rank == 0:
            print(f"wrote {n_steps} time step(s) of {name!r} to {path}", flush=True)
        return 0
    except Exception as err:  # every type: raised on every rank by the collectively blocks and collective checks
        if comm.rank == 0:
            print(f"error: {err}", file=sys.stderr, flush=True)
        return 2


def _predict_second_order(
    model: SecondOrderModel, args: argparse.Namespace, times: npt.NDArray[np.float64], comm: MPI.Comm
) -> tuple[Path, int, str]:
    """Simulate a second-order model from rest and write its displacement (collective); path, steps, field name."""
    from fem_ml.io import write_fields

    if args.mu is not None:
        raise ValueError("--mu sets the parameters of a first-order model; a second-order model has none.")
    inputs: tuple[npt.NDArray[np.float64], dict[str, Any]] | None = None
    with collectively(comm):  # rank 0 reads the file of inputs; every rank gets the values
        if comm.rank == 0:
            inputs = read_inputs(args.input, model.n_inputs, times.size)
    values, summary = comm.bcast(inputs, root=0)
    run = model.simulate(None, times, values)
    blowup = None if run.completed else f"The reduced simulation stopped: {run.blowup}."
    check_collectively(comm, blowup, BlowUpError)
    basis = model.basis
    assert basis is not None
    name = args.name or "displacement"
    fields = basis.reconstruct(run.coefficients.T)
    report = {
        "completed": run.completed,
        "n_times_requested": int(times.size),
        "n_times_reached": int(run.times.size),
        "energy_initial": float(run.energy[0]),
        "energy_final": float(run.energy[-1]),
        "max_norm_coefficients": float(np.max(np.linalg.norm(run.coefficients, axis=1))),
    }
    metadata = {"model": str(args.model), "kind": "second_order", "inputs": summary, "simulation": report,
                "modal": model.modal_analysis().as_dict()}  # fmt: skip
    steps = [{name: fields[:, k]} for k in range(run.times.size)]
    path = write_fields(args.output, basis.V, steps, times=run.times.tolist(), metadata=metadata,
                        protect=[args.model])  # fmt: skip
    return path, int(run.times.size), name
