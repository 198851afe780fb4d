# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Cost of the rank-agreement check of a surrogate query: ``rom(mu)`` with and without it.

Every collective surrogate call (``rom(mu)``, ``rom.coefficients``, ``rom.uncertainty``, ``rom.errors``) checks that
all ranks passed the same points: a BLAKE2b digest of the points and one ``MPI_Allreduce`` of three integers. This
script measures, on the thermal block (P1) at two sizes:

* ``rom(mu, out=u)``: the query as users call it (check included);
* the same query without the check: ``rom.domain.check`` (validation, extrapolation policy), the network
  (``rom.network.from_inputs``) and ``rom.basis.function(c, out=u)``, exactly the steps of ``rom(mu)`` after the
  check;
* the check alone (digest and Allreduce).

Median over many calls, slowest rank, the ranks released together by a barrier before each call. Run:
``OMP_NUM_THREADS=1 mpirun -n 2 python benchmarks/rank_check_cost.py`` (and serially: there the check is skipped).
Prints a table and writes ``benchmarks/results/rank_check_cost_n<ranks>.json``.
"""

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from mpi4py import MPI

import dolfinx
import numpy as np
from dolfinx import fem

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demos"))

from thermal_block import build_problem

import fem_ml
from fem_ml._agree import check_same

SPACE = fem_ml.ParameterSpace({f"mu{i}": (0.1, 1.0) for i in range(4)})


def median_time(comm: MPI.Comm, call: Callable[[np.ndarray], object], points: np.ndarray, n_calls: int) -> float:
    """Median seconds of ``call(point)`` cycling over ``points`` after a warm-up, slowest rank."""
    for k in range(10):
        call(points[k % len(points)])
    times = np.empty(n_calls)
    for k in range(n_calls):
        comm.barrier()
        start = time.perf_counter()
        call(points[k % len(points)])
        times[k] = time.perf_counter() - start
    return float(comm.allreduce(float(np.median(times)), op=MPI.MAX))


def measure(comm: MPI.Comm, n_cells: int, n_calls: int) -> dict:
    """Query times with and without the check on an ``n_cells`` x ``n_cells`` thermal block."""
    V, solve = build_problem(comm, n_cells)
    train = SPACE.sample(20, method="lhs", seed=0)
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=SPACE, progress=False)
    options = fem_ml.TrainingOptions(hidden_layers=(64, 64, 64), adam_epochs=50, lbfgs_iterations=0, progress=False)
    with (
        fem_ml.pod(snapshots, "h1", tol=1e-7) as basis,
        fem_ml.train_surrogate(basis, snapshots, SPACE, options=options) as rom,
    ):
        points = SPACE.sample(50, method="uniform", seed=1)
        u = fem.Function(V)

        def unchecked(mu: np.ndarray) -> None:
            c = rom.network.from_inputs(rom.domain.check(mu, expected=1)[1])[0]
            rom.basis.function(c, out=u)

        with_check = median_time(comm, lambda mu: rom(mu, out=u), points, n_calls)
        without = median_time(comm, unchecked, points, n_calls)
        check_only = median_time(comm, lambda mu: check_same(comm, "points", mu), points, n_calls)
        n_modes = rom.n_modes
    return {
        "n_dofs": int(V.dofmap.index_map.size_global),
        "n_modes": n_modes,
        "query_with_check_s": with_check,
        "query_without_check_s": without,
        "check_only_s": check_only,
        "overhead_s": with_check - without,
        "overhead_fraction": (with_check - without) / without,
    }


def main() -> None:
    """Measure at the given sizes, print a table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 100])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rows = [measure(comm, n, args.calls) for n in args.sizes]
    if comm.rank == 0:
        print(f"{'dofs':>8} {'modes':>5} {'with check':>12} {'without':>12} {'check alone':>12} {'overhead':>9}")
        for r in rows:
            print(
                f"{r['n_dofs']:>8} {r['n_modes']:>5} {r['query_with_check_s'] * 1e6:>10.1f}us "
                f"{r['query_without_check_s'] * 1e6:>10.1f}us {r['check_only_s'] * 1e6:>10.1f}us "
                f"{100 * r['overhead_fraction']:>8.1f}%"
            )
        out = args.out or ROOT / "benchmarks" / "results" / f"rank_check_cost_n{comm.size}.json"
        result = {
            "script": "benchmarks/rank_check_cost.py",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "ranks": comm.size,
            "cores": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "machine": platform.platform(),
            "versions": {"fem_ml": fem_ml.__version__, "dolfinx": dolfinx.__version__, "numpy": np.__version__},
            "calls_per_median": args.calls,
            "sizes": rows,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
