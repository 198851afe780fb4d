# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Speed of the surrogate against the full DOLFINx solve, thermal block (P1) at three mesh sizes.

Run: ``mpirun -n 2 python benchmarks/speedup.py`` (about 10k, 100k and 1M dofs: ``--sizes 100 316 1000``). For each
size it collects training snapshots, builds the POD basis (H1, ``tol=1e-7``), trains the network ensemble and
measures, on test points the surrogate has not seen:

* the full solve (assembly and MUMPS LU; median wall time of the test solves, slowest rank);
* one surrogate query, parameter in, finished ``dolfinx.fem.Function`` out (ghosts updated): ``rom(mu, out=u)``,
  median over many calls, slowest rank; and its two parts, the network (``rom.coefficients``) and the
  reconstruction ``rom.basis.function(c, out=u)``;
* batched throughput of the coefficients alone, ``rom.coefficients(batch)``, best of a few repetitions. The network
  is replicated on every rank, so this is the throughput of one rank (the slowest).

Training length does not change the speed; it changes the test error, which is recorded beside the timings. A quick
check: ``mpirun -n 2 python benchmarks/speedup.py --sizes 20 40 --n-train 20 --adam-epochs 100
--lbfgs-iterations 10 --out /tmp/speedup.json``. Prints a table per size and writes
``benchmarks/results/speedup.json`` (rewritten after each size, atomically).
"""

import argparse
import gc
import logging
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
import torch
from dolfinx import fem

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demos"))

from thermal_block import build_problem

import fem_ml

SPACE = fem_ml.ParameterSpace({f"mu{i}": (0.1, 1.0) for i in range(4)})


def slowest(comm: MPI.Comm, seconds: float) -> float:
    """The largest of the ranks' values."""
    return float(comm.allreduce(float(seconds), op=MPI.MAX))


def median_call_time(
    comm: MPI.Comm, call: Callable[[np.ndarray], object], points: np.ndarray, n_calls: int, n_warmup: int = 5
) -> float:
    """Median wall time of ``call(point)`` over ``n_calls`` calls cycling over ``points``, slowest rank.

    Each call starts after a barrier, so the ranks start together and a collective call is timed as a whole.

    Args:
        comm: Communicator of the ranks.
        call: The callable, ``call(point)``; collective if it communicates.
        points: The points to cycle over, ``(n, p)``.
        n_calls: Number of timed calls.
        n_warmup: Untimed calls before.

    Returns:
        The median seconds per call on the slowest rank.
    """
    for k in range(n_warmup):
        call(points[k % len(points)])
    times = np.empty(n_calls)
    for k in range(n_calls):
        comm.barrier()
        start = time.perf_counter()
        call(points[k % len(points)])
        times[k] = time.perf_counter() - start
    return slowest(comm, np.median(times))


def run_size(comm: MPI.Comm, n_cells: int, n_train: int, args: argparse.Namespace) -> dict[str, object]:
    """Build, train and time the surrogate of the thermal block on an ``n_cells x n_cells`` mesh.

    Args:
        comm: Communicator of the mesh.
        n_cells: Cells per side.
        n_train: Number of training snapshots.
        args: The command-line options.

    Returns:
        One record of results.
    """
    start = time.perf_counter()
    V, solve = build_problem(comm, n_cells)
    t_setup = slowest(comm, time.perf_counter() - start)
    train = SPACE.sample(n_train, method="lhs", seed=0)
    test = SPACE.sample(args.n_test, method="uniform", seed=1)

    start = time.perf_counter()
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=SPACE, progress=args.progress)
    t_snapshots = slowest(comm, time.perf_counter() - start)
    start = time.perf_counter()
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=args.tol)
    t_pod = slowest(comm, time.perf_counter() - start)
    start = time.perf_counter()
    rom = fem_ml.train_surrogate(
        basis,
        snapshots,
        SPACE,
        seed=0,
        input_transform="log",
        hidden_layers=(128, 128, 128),
        n_networks=2,
        adam_epochs=args.adam_epochs,
        lbfgs_iterations=args.lbfgs_iterations,
        progress=False,
    )
    t_train = slowest(comm, time.perf_counter() - start)

    # Full solves at the test points: truth for the errors, and the reference time.
    truth = fem_ml.collect_snapshots(solve, test, V, space=SPACE, progress=args.progress)
    errors = rom.errors(test, truth).summary()
    t_full = slowest(comm, np.median(truth.solve_times))

    # One query: parameter in, finished Function (ghosts updated) out; then its two parts separately.
    u = fem.Function(V, name="prediction")
    t_surrogate = median_call_time(comm, lambda mu: rom(mu, out=u), test, args.n_calls)
    t_network = median_call_time(comm, rom.coefficients, test, args.n_calls)
    coefficients = rom.coefficients(test)
    t_reconstruct = median_call_time(comm, lambda c: rom.basis.function(c, out=u), coefficients, args.n_calls)
    # The same query with the single-precision copy of the modes (half the memory traffic).
    rom.reconstruction_dtype = "float32"
    t_surrogate32 = median_call_time(comm, lambda mu: rom(mu, out=u), test, args.n_calls)
    rom.reconstruction_dtype = "float64"

    # Batched coefficients (local: the network is replicated on every rank).
    batch = SPACE.sample(args.batch_size, method="uniform", seed=2)
    rom.coefficients(batch)
    best = np.inf
    for _ in range(args.batch_repeats):
        start = time.perf_counter()
        rom.coefficients(batch)
        best = min(best, time.perf_counter() - start)
    t_batch = slowest(comm, best)

    record: dict[str, object] = {
        "n_cells": n_cells,
        "n_dofs": snapshots.n_dofs,
        "n_ranks": comm.size,
        "n_train": n_train,
        "n_test": len(test),
        "n_modes": basis.n_modes,
        "retained_energy": basis.retained_energy,
        "adam_epochs": args.adam_epochs,
        "lbfgs_iterations": args.lbfgs_iterations,
        "t_full_solve_median_s": t_full,
        "t_surrogate_median_s": t_surrogate,
        "speedup_median": t_full / t_surrogate,
        "t_surrogate_float32_median_s": t_surrogate32,
        "speedup_float32_median": t_full / t_surrogate32,
        "t_network_median_s": t_network,
        "t_reconstruct_median_s": t_reconstruct,
        "n_surrogate_calls": args.n_calls,
        "batch_size": args.batch_size,
        "t_batch_best_s": t_batch,
        "batched_points_per_s": args.batch_size / t_batch,
        "batched_points_per_s_is_per_rank": True,
        **errors,
        "t_setup_s": t_setup,
        "t_snapshots_s": t_snapshots,
        "t_pod_s": t_pod,
        "t_train_s": t_train,
        "n_failed_solves": len(snapshots.failures) + len(truth.failures),
    }
    rom.destroy()
    basis.destroy()  # the inner product pod assembled
    return record


def print_record(record: dict[str, object]) -> None:
    """Print one record as a two-column table."""
    print(f"--- n_cells = {record['n_cells']}, {record['n_dofs']} dofs ---")
    for key, value in record.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:>32}: {text}")
    sys.stdout.flush()


def print_summary(records: list[dict[str, object]]) -> None:
    """Print one line per size."""
    header = (
        f"{'dofs':>9} {'modes':>5} {'full [s]':>10} {'surr. [s]':>10} {'speedup':>9} {'net [s]':>9} "
        f"{'recon [s]':>9} {'batch pts/s/rank':>16} {'H1 err':>9} {'train [s]':>9}"
    )
    print(header)
    for r in records:
        print(
            f"{r['n_dofs']:>9} {r['n_modes']:>5} {r['t_full_solve_median_s']:>10.3e} {r['t_surrogate_median_s']:>10.3e}"
            f" {r['speedup_median']:>9.3g} {r['t_network_median_s']:>9.2e} {r['t_reconstruct_median_s']:>9.2e}"
            f" {r['batched_points_per_s']:>16.3e} {r['rel_error_h1_mean']:>9.2e} {r['t_train_s']:>9.1f}"
        )
    sys.stdout.flush()


def machine() -> dict[str, object]:
    """Hardware and software the numbers were measured with."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "fem_ml": fem_ml.__version__,
        "dolfinx": dolfinx.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "mpi": MPI.Get_library_version().splitlines()[0].strip(),
    }


def main() -> None:
    """Parse the options, run every size, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 316, 1000], help="cells per side")
    parser.add_argument(
        "--n-train", type=int, nargs="+", default=[100], help="training snapshots: one count, or one per size"
    )
    parser.add_argument("--n-test", type=int, default=10, help="test points (errors and full-solve times)")
    parser.add_argument("--tol", type=float, default=1e-7, help="POD energy tolerance")
    parser.add_argument("--adam-epochs", type=int, default=3000)
    parser.add_argument("--lbfgs-iterations", type=int, default=1000)
    parser.add_argument("--n-calls", type=int, default=200, help="timed single queries")
    parser.add_argument("--batch-size", type=int, default=10_000, help="points of the batched evaluation")
    parser.add_argument("--batch-repeats", type=int, default=5, help="repetitions of the batched evaluation")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speedup.json")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    if len(args.n_train) not in (1, len(args.sizes)):
        parser.error(f"--n-train takes one count or one per size ({len(args.sizes)}), got {len(args.n_train)}.")
    n_train = args.n_train * len(args.sizes) if len(args.n_train) == 1 else args.n_train

    comm = MPI.COMM_WORLD
    logging.basicConfig(level=logging.INFO if comm.rank == 0 else logging.WARNING)
    data: dict[str, object] = {
        "benchmark": "thermal block (P1): surrogate vs full DOLFINx solve",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "n_ranks": comm.size,
        "machine": machine(),
        "notes": (
            "Times are medians of the slowest rank. Full solve: assembly + MUMPS LU. Surrogate: rom(mu, out=u), "
            "parameter in, Function with ghosts updated out. batched_points_per_s: rom.coefficients on one rank "
            "(the network is replicated on every rank)."
        ),
        "records": [],
    }
    records: list[dict[str, object]] = []
    for n_cells, n in zip(args.sizes, n_train, strict=True):
        records.append(run_size(comm, n_cells, n, args))
        gc.collect()
        data["records"] = records
        fem_ml.write_json(args.out, data, comm=comm)
        if comm.rank == 0:
            print_record(records[-1])
    if comm.rank == 0:
        print_summary(records)
        print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
