# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Command line: inspect a saved surrogate and write predictions for ParaView.

.. code-block:: bash

    python -m fem_ml info model.femml
    python -m fem_ml predict model.femml --mu k0=0.3,k1=0.7 -o out.xdmf
    mpirun -n 4 python -m fem_ml predict model.femml --mu k0=0.3,k1=0.7 --mu k0=0.5,k1=0.5 -o sweep.xdmf
    python -m fem_ml predict dynamics.femml --t 0:2:41 --mu nu=0.03 -o trajectory.xdmf
    python -m fem_ml predict beam.femml --t 0:0.1:101 --input history.npy -o displacement.xdmf

A reduced dynamics file (:mod:`fem_ml.dynamics`) is simulated at the times ``--t`` instead: a first-order model at
the parameters ``--mu``, a second-order model from rest with the inputs ``--input`` (constants, or a ``.npy`` file of
the values at the times); see :mod:`fem_ml.dynamics.cli`.

``predict`` loads the surrogate on all ranks of ``mpirun`` (any number, whatever the number that saved it) and
writes one step per ``--mu`` to XDMF (``.xdmf``), VTX (``.bp``) or a format meshio writes (``.vtu``, ...), with
the parameters of each step in ``<output>.json``. Parameter values are ASCII decimal or scientific numbers
(``0.5``, ``-1e-3``); anything else (``0.5_5``, non-ASCII digits, ``nan``) is an error. The output never replaces the
model file, nor an existing file that fem_ml did not write unless ``--force`` is given.

Every failure (a bad file, an unknown parameter, a value out of bounds, an output that cannot be written, any
other exception) is printed as ``error: ...`` on rank 0 and gives exit status 2 on every rank, without a
traceback: each step that may fail on some ranks only runs in a :func:`~fem_ml._mpi.collectively` block.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence

from mpi4py import MPI

from fem_ml._mpi import collectively
from fem_ml.archive import describe, load

__all__ = ["main", "parse_number", "parse_point"]


def parse_point(text: str) -> dict[str, float]:
    """Parse ``"k0=0.3,k1=0.7"`` into ``{"k0": 0.3, "k1": 0.7}``.

    Raises:
        ValueError: for an entry without ``=``, a repeated name or a value that is not an ASCII number
            (see :func:`parse_number`).
    """
    point: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--mu entries look like name=value, got {item!r} in {text!r}.")
        if name in point:
            raise ValueError(f"Parameter {name!r} is given twice in {text!r}.")
        point[name] = parse_number(value, name)
    return point


_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def parse_number(text: str, name: str = "value") -> float:
    """A finite ASCII decimal or scientific number (``0.5``, ``-2``, ``1e-3``); surrounding blanks are allowed.

    Python's ``float`` also takes ``0.5_5``, non-ASCII digits, ``nan`` and ``inf``: all are refused here.

    Raises:
        ValueError: naming ``name``, for anything else.
    """
    stripped = text.strip(" \t")
    if not _NUMBER.fullmatch(stripped):
        raise ValueError(f"The value of {name!r} is not a number: {text!r} (use ASCII digits, e.g. 0.5 or 1e-3).")
    value = float(stripped)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"The value of {name!r} is out of range: {text!r}.")
    return value


def _format_info(info: dict) -> str:
    lines = [f"fem_ml surrogate {info['file']}"]
    lines.append("parameters:")
    lines += [f"  {n:<12} [{a:.6g}, {b:.6g}]" for n, (a, b) in info["parameters"].items()]
    lines.append(
        f"reduced basis: {info['n_modes']} modes of {info['n_dofs']} dofs, inner product {info['inner_product']}, "
        f"retained energy {info['retained_energy']:.12f}"
    )
    lines.append(f"element: {info['element']}; mesh: {info['mesh_cells']} cells, {info['mesh_nodes']} nodes")
    if "blend" in info:
        b = info["blend"]
        lines.append(
            f"blend: {b['kernel_weight']:.6g} x kernel regressor + {b['network_weight']:.6g} x network (below)"
        )
    if "kernel" in info:
        k = info["kernel"]
        scales = ", ".join(f"{v:.3g}" for v in k["length_scales"])
        lines.append(
            f"kernel regressor: {k['method']} ({k['kernel']} kernel) on {k['n_train']} points, input transform "
            f"{k['input_transform']}, length scales [{scales}], amplitude {k['amplitude']:.3g}, noise {k['noise']:.3g}"
        )
        if "warping" in k:
            lines.append("  inputs warped by rates [" + ", ".join(f"{v:.3g}" for v in k["warping"]) + "]")
    if "network" in info:
        net = info["network"]
        lines.append(
            f"network: {net['n_networks']} x MLP {net['hidden_layers']} {net['activation']}, "
            f"input transform {net['input_transform']}"
            + (", outputs times a log-linear norm model" if "norm_model" in net else "")
        )
        options = info["training"][0].get("options") if info["training"] else None
        if options:
            shown = ["hidden_layers", "input_transform", "output_norm", "n_networks", "adam_epochs", "polish"]
            shown += ["lbfgs_iterations"]
            shown += ["lm_iterations", "patience"]
            shown += ["adam_dtype", "dtype", "backend", "learning_rate", "validation_fraction", "seed"]
            automatic = set(options.get("automatic", []))
            lines.append(
                "training options (* chosen from the data): "
                + ", ".join(f"{k}={options[k]}{'*' if k in automatic else ''}" for k in shown if k in options)
            )
    for m, t in enumerate(info["training"]):
        lines.append(
            f"  member {m}: best train loss {t['best_train_loss']:.3e}, best validation loss "
            f"{t['best_validation_loss']:.3e} ({t['adam_epochs']} Adam epochs, {t['lbfgs_iterations']} L-BFGS "
            f"and {t.get('lm_iterations', 0)} Levenberg-Marquardt iterations, {t['time_s']:.1f} s)"
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
    if len(args_list) > 1 and args_list[0] == "predict":  # DOLFINx is imported only for the commands that need it
        from fem_ml.dynamics.archive import is_dynamics_file
        from fem_ml.dynamics.cli import main as dynamics_main

        if is_dynamics_file(args_list[1], comm=comm):
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
    predict.add_argument(
        "-o", "--output", required=True, help="output file: .xdmf, .bp, .vtu (or another meshio format)"
    )
    predict.add_argument("--name", default=None, help="field name (default: metadata 'field' or 'prediction')")
    predict.add_argument("--force", action="store_true", help="replace existing output files fem_ml did not write")
    plugin = commands.add_parser(
        "paraview-plugin", help="print how to load the ParaView plugin; with a model, write its plugin with sliders"
    )
    plugin.add_argument("model", nargs="?", help="a .femml file: write a plugin with one slider per parameter")
    plugin.add_argument("-o", "--output-dir", default=".", help="where the model's plugin goes (default: .)")
    args = parser.parse_args(argv)
    try:
        commands_run = {"info": _info, "predict": _predict, "paraview-plugin": _paraview_plugin}
        return commands_run[args.command](args, comm)
    except Exception as err:  # every type: raised on every rank by the collectively blocks
        if comm.rank == 0:
            print(f"error: {err}", file=sys.stderr, flush=True)
        return 2


def _paraview_plugin(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """``paraview-plugin``: print the plugin's path and how to load it; write a model's plugin (rank 0)."""
    from fem_ml.paraview import load_script, plugin_path, write_model_plugin

    with collectively(comm):
        if comm.rank == 0:
            lines = [f"reader plugin: {plugin_path()}"]
            if args.model is not None:
                written = write_model_plugin(args.model, args.output_dir)
                lines.append(f"plugin with one slider per parameter of {args.model}: {written}")
            folder = load_script().parent
            lines += [
                "in ParaView's Python shell or pvpython:",
                f"    import sys; sys.path.insert(0, {str(folder)!r}); import load_plugin",
                "    reader = fem_mlsurrogate(FileName='model.femml'); reader.Parameters = [...]",
            ]
            if args.model is not None:
                lines.append(f"    load_plugin.load({str(written)!r}); source = {written.stem}()")
            print("\n".join(lines), flush=True)
    return 0


def _info(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """``info``: rank 0 reads and prints; a failure there is raised on every rank."""
    with collectively(comm):
        if comm.rank == 0:
            summary = describe(args.model)
            print(json.dumps(summary, indent=2) if args.json else _format_info(summary), flush=True)
    return 0


def _predict(args: argparse.Namespace, comm: MPI.Comm) -> int:
    """``predict``: every rank loads, predicts and writes (collective)."""
    from fem_ml.io import write_fields

    with collectively(comm):
        points = [parse_point(text) for text in args.mu]
    rom = load(args.model, comm=comm)
    try:
        with collectively(comm):
            validated = [rom.space.validate(p) for p in points]
            name = args.name or str(rom.metadata.get("field", "prediction"))
            metadata = {
                "model": str(args.model),
                "parameter_names": list(rom.space.names),
                "steps": [{"time": float(k), "parameters": rom.space.to_dict(p)} for k, p in enumerate(validated)],
            }
        values = rom.predict_values(points)  # type: ignore[arg-type]
        steps = [{name: values[:, k]} for k in range(len(points))]
        path = write_fields(args.output, rom.V, steps, metadata=metadata, overwrite=args.force, protect=[args.model])
    finally:
        rom.destroy()
    with collectively(comm):
        if comm.rank == 0:
            print(f"wrote {len(points)} prediction(s) of {name!r} to {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
