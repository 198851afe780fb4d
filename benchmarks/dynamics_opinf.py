# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""fem_ml's operator inference side by side with the opinf package and the time-as-input network, same data.

Run: ``OMP_NUM_THREADS=1 mpirun -n 2 python benchmarks/dynamics_opinf.py`` (needs ``opinf==0.6.0``, in the ``bench``
and ``test`` extras). It runs the viscous Burgers demo (``demos/dynamics_burgers.py``) once: the same POD basis and
reduced trajectories (five viscosities, t in [0, T]) go to

* ``fem_ml.dynamics.fit_operator_inference`` (``nu A q + H q⊗q``, regularization selected by re-simulation with a
  growth bound and, as in the demo, the discrepancy principle ``discrepancy=1.0``), simulated by VODE's BDF with
  the analytic Jacobian;
* ``opinf.roms.ParametricROM`` with ``AffineLinearOperator([nu])`` and ``QuadraticOperator``, fitted by its
  ``fit_regselect_continuous`` (grid of 13 candidates 1e-10 ... 1e2, then its own optimization, the same
  ``test_time_length`` and growth margin), simulated by its ``predict`` (scipy ``solve_ivp`` BDF);
* fem_ml's time-as-input network (``train_surrogate`` on ``(nu, t)``), queried at every output time.

At viscosities not in the training set it records the mean relative L2 error over [0, T] and [T, 2T] against the
full DOLFINx solution, the fit time and the simulate (or query) time of one trajectory over [0, 2T]. Prints a table
and writes ``benchmarks/results/dynamics_opinf.json``. A quick check: ``python benchmarks/dynamics_opinf.py
--n-cells 16 --adam-epochs 100 --out /tmp/dynamics_opinf.json``.
"""

import argparse
import logging
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from mpi4py import MPI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demos"))

import opinf
from dynamics_burgers import main

import fem_ml


def run(args: argparse.Namespace) -> dict:
    """Run the demo once and collect the side-by-side table (collective)."""
    comm = MPI.COMM_WORLD
    summary = main(
        comm, n_cells=args.n_cells, n_modes=args.n_modes, adam_epochs=args.adam_epochs,
        lbfgs_iterations=args.lbfgs_iterations, out_dir=args.work_dir, progress=False,
    )  # fmt: skip
    rows = {
        "fem_ml": {
            "error_train_window": summary["rel_l2_error_mean_train_window"],
            "error_extrapolation": summary["rel_l2_error_mean_extrapolation"],
            "t_fit_s": summary["t_fit_s"],
            "t_simulate_s": summary["t_reduced_median_s"],
            "n_failures": summary["n_blowups"],
            "discrepancy": summary["discrepancy"],
            "regularization": summary["regularization"],
        },
        "opinf": {
            "error_train_window": summary["opinf_rel_l2_error_mean_train_window"],
            "error_extrapolation": summary["opinf_rel_l2_error_mean_extrapolation"],
            "t_fit_s": summary["opinf_t_fit_s"],
            "t_simulate_s": summary["opinf_t_simulate_median_s"],
            "n_failures": summary["opinf_n_failures"],
        },
        "time_input_net": {
            "error_train_window": summary["time_input_net_rel_l2_error_mean_train_window"],
            "error_extrapolation": summary["time_input_net_rel_l2_error_mean_extrapolation"],
            "t_fit_s": summary["time_input_net_t_fit_s"],
            "t_simulate_s": summary["time_input_net_t_predict_median_s"],
            "n_failures": 0,
        },
    }
    return {
        "benchmark": "dynamics_opinf",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "ranks": comm.size,
            "load_average": list(os.getloadavg()),
        },
        "versions": {"fem_ml": fem_ml.__version__, "opinf": opinf.__version__},
        "problem": {k: summary[k] for k in ("n_dofs", "n_modes", "n_train", "n_test", "t_end_train")},
        "t_full_median_s": summary["t_full_median_s"],
        "speedup_median": summary["speedup_median"],
        "methods": rows,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-cells", type=int, default=48)
    parser.add_argument("--n-modes", type=int, default=24)
    parser.add_argument("--adam-epochs", type=int, default=2000)
    parser.add_argument("--lbfgs-iterations", type=int, default=500)
    parser.add_argument("--work-dir", default="results/dynamics_burgers")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dynamics_opinf.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if MPI.COMM_WORLD.rank == 0 else logging.WARNING)
    result = run(args)
    if MPI.COMM_WORLD.rank == 0:
        print(f"{'method':<16}{'err [0,T]':>12}{'err [T,2T]':>12}{'fit s':>10}{'simulate s':>12}{'failures':>10}")
        for name, row in result["methods"].items():
            print(f"{name:<16}{row['error_train_window']:>12.3e}{row['error_extrapolation']:>12.3e}"
                  f"{row['t_fit_s']:>10.2f}{row['t_simulate_s']:>12.4f}{row['n_failures']:>10d}")  # fmt: skip
        print(f"full DOLFINx [0, 2T]: {result['t_full_median_s']:.2f} s; speedup {result['speedup_median']:.0f}x")
    fem_ml.write_json(args.out, result, comm=MPI.COMM_WORLD)
