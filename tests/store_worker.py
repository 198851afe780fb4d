# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Snapshot generation into a store, run as a separate process by test_store.py (and killed there).

Usage: ``python store_worker.py STORE N_SAMPLES DELAY`` (under ``mpirun`` too). Prints ``SOLVES <k>``: how many
samples this run solved (the others came from the store).
"""

from __future__ import annotations

import sys
import time

from mpi4py import MPI

from problems import build_problem

import fem_ml

SPACE = fem_ml.ParameterSpace({f"mu{i}": (0.1, 1.0) for i in range(4)})


def main() -> None:
    """Collect snapshots into the store given on the command line."""
    path, n, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    comm = MPI.COMM_WORLD
    V, solve = build_problem(comm, 16, lu_solver="superlu_dist")  # bitwise reproducible on any rank count
    count = 0

    def slow_solve(mu):
        nonlocal count
        count += 1
        time.sleep(delay)
        return solve(mu)

    store = fem_ml.SnapshotStore(path, V, space=SPACE)
    parameters = SPACE.sample(n, method="lhs", seed=3)
    snapshots = fem_ml.collect_snapshots(slow_solve, parameters, V, space=SPACE, store=store, progress=False)
    assert len(snapshots) == n
    if comm.rank == 0:
        print(f"SOLVES {count}", flush=True)


if __name__ == "__main__":
    main()
