# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Command line for reduced dynamics: simulate a saved model and write the fields at given times.

.. code-block:: bash

    python -m fem_ml predict burgers.femml --t 0.5,1.0,1.5 --mu nu=0.02 -o out.xdmf
    mpirun -n 2 python -m fem_ml predict burgers.femml --t 0:2:41 --mu nu=0.02 -o out.xdmf

``--t`` lists output times (``a,b,c``) or a range ``start:stop:count``; the simulation starts at the first time
from the initial state of the training trajectory nearest to ``--mu``. The fields go to XDMF or VTX with the
simulation time as the file's time; ``<output>.json`` records the parameters and the simulation report. A
blow-up, a bad file or bad arguments give exit status 2 on every rank with the message on rank 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mpi4py import MPI

import numpy as np

from fem_ml._h5 import FileFormatError
from fem_ml.dynamics.archive import load
from fem_ml.dynamics.simulate import BlowUpError

__all__ = ["main", "parse_times"]


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
    parser.add_argument("--mu", default=None, metavar="NAME=VALUE,...", help="the parameters")
    parser.add_argument("-o", "--output", required=True, help="output file: .xdmf or .bp")
    parser.add_argument("--name", default="prediction", help="field name")
    args = parser.parse_args(argv)
    try:
        times = parse_times(args.t)
        mu = _parse_point(args.mu) if args.mu else None
        if not args.output.endswith((".xdmf", ".bp")):
            raise ValueError(f"The output must end in .xdmf or .bp, got {args.output!r}.")
        model = load(args.model, comm=comm)
        if model.basis is None:
            raise ValueError(f"{args.model} holds no POD basis: it cannot write fields.")
        result = model.simulate(mu, model.initial_state(mu), times, raise_on_blowup=True)
        path = result.write_xdmf(args.output, name=args.name, metadata={"model": str(args.model), "parameters": mu})
        if comm.rank == 0:
            print(f"wrote {result.t.size} time step(s) of {args.name!r} to {path}", flush=True)
        return 0
    except (FileFormatError, ValueError, OSError, BlowUpError) as err:
        if comm.rank == 0:
            print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
