# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Write snapshot-store entries without solving, run as a separate process by test_hostile.py.

Usage: ``python store_writer.py STORE FIRST LAST``: opens (or creates) the store on a 4 x 4 P1 mesh and writes
samples ``FIRST..LAST-1`` with values ``index + x``. Prints ``WROTE <n>``.
"""

from __future__ import annotations

import sys

from mpi4py import MPI

import numpy as np
from dolfinx import fem, mesh

import fem_ml


def main() -> None:
    """Write the entries given on the command line."""
    path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    comm = MPI.COMM_WORLD
    V = fem.functionspace(mesh.create_unit_square(comm, 4, 4), ("Lagrange", 1))
    x = V.tabulate_dof_coordinates()[: V.dofmap.index_map.size_local, 0]
    store = fem_ml.SnapshotStore(path, V)
    for index in range(first, last):
        store.write(index, np.array([index / 100.0]), index + x, solve_time=0.0)
    if comm.rank == 0:
        print(f"WROTE {last - first}", flush=True)


if __name__ == "__main__":
    main()
