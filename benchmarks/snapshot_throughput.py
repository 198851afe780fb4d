# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Snapshot generation throughput: one rank, two ranks by domain decomposition, two ranks as an ensemble.

Run: ``mpirun -n 2 python benchmarks/snapshot_throughput.py`` (defaults: thermal block on a 200 x 200 grid,
40,401 dofs, 100 Latin-hypercube samples, MUMPS). All three modes run in the same job, one after the other, each
writing a fresh snapshot store:

- ``1 rank``: rank 0 alone (``COMM_SELF``); rank 1 sleeps in a non-blocking barrier;
- ``2 ranks, domain decomposition``: one mesh on ``COMM_WORLD``, both ranks solve every sample together;
- ``2 ranks, ensemble``: ``fem_ml.Ensemble(COMM_WORLD, group_size=1)``, each rank solves half the samples on its
  own copy of the mesh.

Speedup is the 1-rank time over the 2-rank time; efficiency is the speedup over 2. Writes
``benchmarks/results/snapshot_throughput.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mpi4py import MPI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demos"))

from thermal_block import build_problem

import fem_ml
from fem_ml._mpi import wait_for_all

SPACE = fem_ml.ParameterSpace({f"mu{i}": (0.1, 1.0) for i in range(4)})


def timed_collect(comm: MPI.Comm, store: Path, n_cells: int, n_samples: int, ensemble=None) -> float:
    """Build the problem on ``comm`` and time ``collect_snapshots`` into a new store (collective on ``comm``)."""
    V, solve = build_problem(comm, n_cells)
    target = fem_ml.SnapshotStore(store, V, space=SPACE)
    points = SPACE.sample(n_samples, method="lhs", seed=0)
    (ensemble.world if ensemble is not None else comm).barrier()
    start = time.perf_counter()
    fem_ml.collect_snapshots(solve, points, V, space=SPACE, store=target, ensemble=ensemble, progress=False)
    return time.perf_counter() - start


def main() -> None:
    """Run the three modes and write the JSON (collective)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, default=200)
    parser.add_argument("--n-samples", type=int, default=100)
    args = parser.parse_args()
    world = MPI.COMM_WORLD
    if world.size != 2:
        raise SystemExit("Run with mpirun -n 2.")
    scratch = Path(world.bcast(tempfile.mkdtemp(prefix="fem_ml_throughput_") if world.rank == 0 else None))

    t_one = None
    if world.rank == 0:
        t_one = timed_collect(MPI.COMM_SELF, scratch / "one", args.n_cells, args.n_samples)
    wait_for_all(world)
    t_one = world.bcast(t_one, root=0)

    t_dd = world.allreduce(timed_collect(world, scratch / "dd", args.n_cells, args.n_samples), op=MPI.MAX)

    ensemble = fem_ml.Ensemble(world, group_size=1)
    elapsed = timed_collect(ensemble.comm, scratch / "ensemble", args.n_cells, args.n_samples, ensemble)
    t_ensemble = world.allreduce(elapsed, op=MPI.MAX)
    ensemble.destroy()

    result = {
        "n_ranks": world.size,
        "cpu_count": os.cpu_count(),
        "n_dofs": (args.n_cells + 1) ** 2,
        "n_samples": args.n_samples,
        "one_rank": {"time_s": t_one, "snapshots_per_s": args.n_samples / t_one},
        "domain_decomposition": {
            "time_s": t_dd,
            "snapshots_per_s": args.n_samples / t_dd,
            "speedup": t_one / t_dd,
            "efficiency": t_one / t_dd / 2,
        },
        "ensemble": {
            "time_s": t_ensemble,
            "snapshots_per_s": args.n_samples / t_ensemble,
            "speedup": t_one / t_ensemble,
            "efficiency": t_one / t_ensemble / 2,
        },
        "versions": fem_ml.archive.versions(),
    }
    if world.rank == 0:
        print(f"{args.n_samples} snapshots of {result['n_dofs']} dofs (store included)")
        print(f"{'mode':<28}{'time [s]':>10}{'snap/s':>10}{'speedup':>10}{'efficiency':>12}")
        print(f"{'1 rank':<28}{t_one:>10.2f}{args.n_samples / t_one:>10.1f}{1.0:>10.2f}{1.0:>12.2f}")
        for label, key in (("2 ranks, domain decomp.", "domain_decomposition"), ("2 ranks, ensemble", "ensemble")):
            r = result[key]
            print(
                f"{label:<28}{r['time_s']:>10.2f}{r['snapshots_per_s']:>10.1f}{r['speedup']:>10.2f}{r['efficiency']:>12.2f}"
            )
        shutil.rmtree(scratch, ignore_errors=True)
    fem_ml.write_json(ROOT / "benchmarks" / "results" / "snapshot_throughput.json", result, comm=world)


if __name__ == "__main__":
    main()
