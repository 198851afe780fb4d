# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""A saved surrogate on another rank count: does it rebuild the demo's prediction?

Run the demo first (``bash run.sh demo``: 2 ranks), then, for any N,
``mpirun -n N python benchmarks/archive_ranks.py``. The script loads ``results/thermal_block/thermal_block.femml``
standalone on N ranks, predicts the parameters of ``comparison.xdmf`` and compares with the demo's prediction
there, node by node through the coordinates. Writes ``benchmarks/results/archive_ranks_n<N>.json``.
"""

import json
import time
from pathlib import Path

from mpi4py import MPI

import h5py
import numpy as np

import fem_ml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "results" / "thermal_block"


def sorted_by_x(x: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Rows of ``values`` ordered by the coordinates ``x``."""
    return values[np.lexsort((np.round(x[:, 1], 10), np.round(x[:, 0], 10)))]


def main() -> None:
    """Load, predict, compare, report."""
    comm = MPI.COMM_WORLD
    start = time.perf_counter()
    rom = fem_ml.load(DEMO / "thermal_block.femml", comm=comm)
    t_load = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    steps = json.loads((DEMO / "comparison.xdmf.json").read_text())["steps"]
    points = np.array([[s["parameters"][n] for n in rom.space.names] for s in steps])
    n = rom.V.dofmap.index_map.size_local
    x = rom.V.tabulate_dof_coordinates()[:n, :2]
    values = rom.predict_values(points)
    all_x, all_v = np.vstack(comm.allgather(x)), np.vstack(comm.allgather(values))
    ours = sorted_by_x(all_x, all_v)
    with h5py.File(DEMO / "comparison.h5", "r") as f:
        geometry = f["Mesh/mesh/geometry"][()]
        demo = np.column_stack([f[f"Function/temperature_prediction/{k}"][()].reshape(-1) for k in range(len(steps))])
    theirs = sorted_by_x(geometry, demo)
    result = {
        "n_ranks": comm.size,
        "saved_on_ranks": fem_ml.archive.describe(DEMO / "thermal_block.femml")["saved_on_ranks"],
        "n_points": len(steps),
        "max_abs_diff_over_max_abs": float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))),
        "t_load_s": t_load,
    }
    if comm.rank == 0:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    fem_ml.write_json(ROOT / "benchmarks" / "results" / f"archive_ranks_n{comm.size}.json", result, comm=comm)
    rom.destroy()


if __name__ == "__main__":
    main()
