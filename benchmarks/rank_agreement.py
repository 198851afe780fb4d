# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Agreement of POD modes, coefficients and surrogate fields between COMM_WORLD and one rank, at demo size.

Run: ``mpirun -n 2 python benchmarks/rank_agreement.py``. It prints the largest relative differences (fields
compared entry by entry through dof coordinates) and writes ``benchmarks/results/rank_agreement.json``.
"""

import sys
from pathlib import Path

from mpi4py import MPI

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "demos")]

from conftest import SPACE, by_coordinates
from thermal_block import build_problem

import fem_ml


def main() -> None:
    """Compare the pipeline on COMM_WORLD with the same pipeline on COMM_SELF."""
    comm = MPI.COMM_WORLD
    V, solve = build_problem(comm, 100)
    V1, solve1 = build_problem(MPI.COMM_SELF, 100)
    train = SPACE.sample(100, method="lhs", seed=0)
    test = SPACE.sample(5, method="uniform", seed=1)
    S = fem_ml.collect_snapshots(solve, train, V, progress=False)
    S1 = fem_ml.collect_snapshots(solve1, train, V1, progress=False)
    b, b1 = fem_ml.pod(S, "h1", tol=1e-7), fem_ml.pod(S1, "h1", tol=1e-7)
    modes, modes1 = by_coordinates(V, b.modes), by_coordinates(V1, b1.modes)
    c, c1 = b.project(S), b1.project(S1)
    options = dict(seed=0, input_transform="log", adam_epochs=1000, lbfgs_iterations=300, progress=False)
    rom, rom1 = fem_ml.train_surrogate(b, S, SPACE, **options), fem_ml.train_surrogate(b1, S1, SPACE, **options)
    p, p1 = by_coordinates(V, rom.predict_values(test)), by_coordinates(V1, rom1.predict_values(test))
    result = {
        "n_ranks": comm.size,
        "n_modes": b.n_modes,
        "modes_rel_diff_max": float((np.linalg.norm(modes - modes1, axis=0) / np.linalg.norm(modes1, axis=0)).max()),
        "coefficients_rel_diff_max": float((np.linalg.norm(c - c1, axis=1) / np.linalg.norm(c1, axis=1)).max()),
        "surrogate_field_rel_diff_max": float((np.linalg.norm(p - p1, axis=0) / np.linalg.norm(p1, axis=0)).max()),
    }
    for key, value in result.items():
        if comm.rank == 0:
            print(f"{key:>30}: {value}")
    fem_ml.write_json(ROOT / "benchmarks" / "results" / "rank_agreement.json", result, comm=comm)


if __name__ == "__main__":
    main()
