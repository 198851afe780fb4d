# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Equation discovery side by side: fem_ml (weak form on the FE mesh) against PySINDy (WeakPDELibrary on a grid).

Run: ``mpirun -n 2 python benchmarks/discovery_pysindy.py``. It runs the reaction-diffusion and Burgers demos at
their full sizes (each gives both tools the same noisy data, PySINDy's sampled on a grid) and writes, for each
equation and noise level, the support recovered, the largest relative coefficient error and the wall time of each
tool to ``benchmarks/results/discovery_pysindy.json``. PySINDy's threshold is chosen knowing the true equation
(its best case); fem_ml's by cross-validation.

``--from-runs DIR`` collects the same figures from demo runs already made (``DIR/discover_reaction_diffusion``
and ``DIR/discover_burgers``, each with its ``summary.json``) instead of running the demos again; the JSON
records which.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from mpi4py import MPI

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "demos")]

import discover_burgers
import discover_reaction_diffusion


def main() -> None:
    """Run both demos (or read their summaries) and collect the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from-runs", type=Path, default=None, help="folder of demo runs to collect instead")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    results: dict[str, object] = {"n_ranks": comm.size, "load_average_start": os.getloadavg()}
    if args.from_runs is not None:
        results["source"] = f"collected from {args.from_runs}"
    for name, module in (("reaction_diffusion", discover_reaction_diffusion), ("burgers", discover_burgers)):
        start = time.perf_counter()
        if args.from_runs is None:
            summary = module.main(comm, out_dir=ROOT / "results" / f"discover_{name}")
        else:
            summary = json.loads((args.from_runs / f"discover_{name}" / "summary.json").read_text())
            results["n_ranks"] = summary["n_ranks"]
        results[name] = {
            "noise_levels": summary["noise_levels"],
            "n_candidate_terms": summary["n_candidate_terms"],
            "n_dofs": summary["n_dofs"],
            "fem_ml": {
                "support_recovered": summary["support_recovered"],
                "coef_rel_error_max": summary["coef_rel_error_max"],
                "wall_time_s": summary["t_identify_s"],
                "resimulation_rel_l2_error": summary["resimulation_rel_l2_error"],
            },
            "pysindy": {
                "support_recovered": summary["pysindy_support_recovered"],
                "coef_rel_error_max": summary["pysindy_coef_rel_error_max"],
                "wall_time_s": summary["t_pysindy_s"],
            },
            "demo_wall_time_s": (
                comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
                if args.from_runs is None
                else summary.get("t_total_s")
            ),
        }
    results["load_average_end"] = os.getloadavg()
    if comm.rank == 0:
        target = ROOT / "benchmarks" / "results" / "discovery_pysindy.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        os.replace(tmp, target)
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
