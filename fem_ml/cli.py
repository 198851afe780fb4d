# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Command line: inspect a saved surrogate and write predictions for ParaView.

.. code-block:: bash

    python -m fem_ml info model.femml
    python -m fem_ml predict model.femml --mu k0=0.3,k1=0.7 -o out.xdmf
    mpirun -n 4 python -m fem_ml predict model.femml --mu k0=0.3,k1=0.7 --mu k0=0.5,k1=0.5 -o sweep.xdmf
    python -m fem_ml predict dynamics.femml --t 0:2:41 --mu nu=0.03 -o trajectory.xdmf

A reduced dynamics file (:mod:`fem_ml.dynamics`) is simulated at the times ``--t`` instead; see
:mod:`fem_ml.dynamics.cli`.

``predict`` loads the surrogate on all ranks of ``mpirun`` (any number, whatever the number that saved it) and
writes one step per ``--mu`` to XDMF (``.xdmf``) or VTX (``.bp``), with the parameters of each step in
``<output>.json``. Errors (a bad file, an unknown parameter, a value out of bounds) are printed on rank 0 and
give exit status 2 on every rank.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from mpi4py import MPI

from fem_ml._h5 import FileFormatError
from fem_ml.archive import describe, load
from fem_ml.dynamics.archive import is_dynamics_file
from fem_ml.dynamics.cli import main as dynamics_main
from fem_ml.io import write_fields

__all__ = ["main", "parse_point"]


def parse_point(text: str) -> dict[str, float]:
    """Parse ``"k0=0.3,k1=0.7"`` into ``{"k0": 0.3, "k1": 0.7}``.

    Raises:
        ValueError: for an entry without ``=``, a repeated name or a value that is not a number.
    """
    point: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--mu entries look like name=value, got {item!r} in {text!r}.")
        if name in point:
            raise ValueError(f"Parameter {name!r} is given twice in {text!r}.")
        try:
            point[name] = float(value)
        except ValueError:
            raise ValueError(f"The value of {name!r} is not a number: {value!r}.") from None
    return point


def _format_info(info: dict) -> str:
    lines = [f"fem_ml surrogate {info['file']}"]
    lines.append("parameters:")
    lines += [f"  {n:<12} [{a:.6g}, {b:.6g}]" for n, (a, b) in info["parameters"].items()]
    lines.append(
        f"reduced basis: {info['n_modes']} modes of {info['n_dofs']} dofs, inner product {info['inner_product']}, "
        f"retained energy {info['retained_energy']:.12f}"
    )
    lines.append(f"element: {info['element']}; mesh: {info['mesh_cells']} cells, {info['mesh_nodes']} nodes")
    net = info["network"]
    lines.append(
        f"network: {net['n_networks']} x MLP {net['hidden_layers']} {net['activation']}, "
        f"input transform {net['input_transform']}"
    )
    for m, t in enumerate(info["training"]):
        lines.append(
            f"  member {m}: best train loss {t['best_train_loss']:.3e}, best validation loss "
            f"{t['best_validation_loss']:.3e} ({t['adam_epochs']} Adam epochs, {t['lbfgs_iterations']} L-BFGS "
            f"iterations, {t['time_s']:.1f} s)"
        )
    if "test_errors" in info:
        e = info["test_errors"]
        lines.append(
            f"test errors ({e['n_test']} samples): relative H1 mean {e['rel_error_h1_mean']:.3e} "
            f"(max {e['rel_error_h1_max']:.3e}), L2 mean {e['rel_error_l2_mean']:.3e}; "
            f"projection H1 mean {e['proj_error_h1_mean']:.3e}"
        )
    else:
        lines.append("test errors: not stored")
    lines.append(
        f"saved on {info['saved_on_ranks']} rank(s) with " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    )
    if info["metadata"]:
        lines.append(f"metadata: {json.dumps(info['metadata'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, comm: MPI.Comm | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 for a user error).

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
        comm: Communicator for ``predict`` (default ``MPI.COMM_WORLD``).
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    args_list = list(sys.argv[1:] if argv is None else argv)
    if len(args_list) > 1 and args_list[0] == "predict" and is_dynamics_file(args_list[1], comm=comm):
        return dynamics_main(args_list[1:], comm=comm)  # a reduced dynamics model: simulate at given times
    parser = argparse.ArgumentParser(prog="python -m fem_ml", description="Inspect and evaluate fem_ml surrogates.")
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print what a saved surrogate holds")
    info.add_argument("model", help="a .femml file")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict = commands.add_parser("predict", help="write predictions for ParaView")
    predict.add_argument("model", help="a .femml file")
    predict.add_argument(
        "--mu", action="append", required=True, metavar="NAME=VALUE,...", help="a parameter point; repeat for steps"
    )
    predict.add_argument("-o", "--output", required=True, help="output file: .xdmf or .bp")
    predict.add_argument("--name", default=None, help="field name (default: metadata 'field' or 'prediction')")
    args = parser.parse_args(argv)

    try:
        if args.command == "info":
            error = None
            if comm.rank == 0:
                try:
                    summary = describe(args.model)
                    print(json.dumps(summary, indent=2) if args.json else _format_info(summary), flush=True)
                except (FileFormatError, KeyError, ValueError, OSError) as err:
                    error = str(err)
            error = comm.bcast(error, root=0)  # the same exit status on every rank
            if error is not None:
                raise FileFormatError(error)
            return 0
        points = [parse_point(text) for text in args.mu]
        if not args.output.endswith((".xdmf", ".bp")):
            raise ValueError(f"The output must end in .xdmf or .bp, got {args.output!r}.")
        rom = load(args.model, comm=comm)
        try:
            values = rom.predict_values(points)  # type: ignore[arg-type]
            name = args.name or str(rom.metadata.get("field", "prediction"))
            steps = [{name: values[:, k]} for k in range(len(points))]
            path = write_fields(
                args.output,
                rom.V,
                steps,
                metadata={
                    "model": str(args.model),
                    "parameter_names": list(rom.space.names),
                    "steps": [
                        {"time": float(k), "parameters": rom.space.to_dict(rom.space.validate(p))}
                        for k, p in enumerate(points)
                    ],
                },
            )
        finally:
            rom.destroy()
        if comm.rank == 0:
            print(f"wrote {len(points)} prediction(s) of {name!r} to {path}", flush=True)
        return 0
    except (FileFormatError, ValueError, OSError) as err:
        if comm.rank == 0:
            print(f"error: {err}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
