# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""POD time against one GEMM of the same shape, and POD peak memory against the snapshot matrix.

Run: ``mpirun -n 2 python benchmarks/pod_scaling.py`` (defaults: 200 snapshots of the thermal block on a 500 x 500
grid, 251,001 dofs). It

1. fills a snapshot store (ensemble mode, one group per rank) unless the store already holds the samples;
2. times ``fem_ml.pod`` (H1, in memory, on all ranks) and, in the same run on the same ranks and the same local
   blocks, one GEMM :math:`U^T V` with :math:`V` a copy of :math:`U` (a true GEMM: NumPy would turn ``U.T @ U``
   into a SYRK of half the work). Best of ``--repeat`` runs each;
3. measures peak memory in fresh one-rank processes: the resident-set high-water mark (``VmHWM``) is reset
   after the mesh and inner product exist, then the snapshots are loaded and the POD computed ("in memory"),
   or the POD streams from the store ("streaming"). The increase is compared with the size of the snapshot
   matrix, :math:`8 N n` bytes.

Writes ``benchmarks/results/pod_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mpi4py import MPI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demos"))

from thermal_block import build_problem

import fem_ml

SPACE = fem_ml.ParameterSpace({f"mu{i}": (0.1, 1.0) for i in range(4)})


def rss_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (``VmRSS`` or ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def reset_peak() -> None:
    """Reset this process' peak resident set size to the current one (Linux ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def fill_store(store_path: Path, n_cells: int, n_samples: int) -> float:
    """Make sure the store holds ``n_samples`` snapshots; returns the generation wall time (collective)."""
    world = MPI.COMM_WORLD
    ensemble = fem_ml.Ensemble(world, group_size=1)
    V, solve = build_problem(ensemble.comm, n_cells)
    store = fem_ml.SnapshotStore(store_path, V, space=SPACE)
    world.barrier()
    start = time.perf_counter()
    fem_ml.collect_snapshots(
        solve, SPACE.sample(n_samples, method="lhs", seed=0), V, store=store, ensemble=ensemble, progress=False
    )
    elapsed = time.perf_counter() - start
    ensemble.destroy()
    return elapsed


def time_pod_and_gemm(store_path: Path, n_cells: int, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` wall times of the in-memory POD and of one GEMM on the same blocks (collective)."""
    comm = MPI.COMM_WORLD
    V, _ = build_problem(comm, n_cells)
    snapshots = fem_ml.SnapshotStore(store_path, V).snapshots()
    ip = fem_ml.assemble_inner_product(V, "h1")
    U = snapshots.values
    other = U.copy()
    t_pod, t_gemm = [], []
    basis = None
    for _ in range(repeat):
        comm.barrier()
        start = time.perf_counter()
        basis = fem_ml.pod(snapshots, ip, tol=1e-7)
        t_pod.append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
        comm.barrier()
        start = time.perf_counter()
        product = U.T @ other
        t_gemm.append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
        del product
    assert basis is not None
    ip.destroy()
    return {
        "n_modes": basis.n_modes,
        "t_pod_s": min(t_pod),
        "t_gemm_s": min(t_gemm),
        "pod_over_gemm": min(t_pod) / min(t_gemm),
    }


def measure_memory(store_path: Path, n_cells: int, mode: str, chunk_size: int) -> dict[str, float]:
    """Peak memory of one POD in this (one-rank) process, relative to the snapshot matrix."""
    V, _ = build_problem(MPI.COMM_SELF, n_cells)
    store = fem_ml.SnapshotStore(store_path, V)
    ip = fem_ml.assemble_inner_product(V, "h1")
    n = sum(1 for r in store.records().values() if r.ok)
    matrix_bytes = 8.0 * fem_ml.snapshots.n_global(V) * n
    base = rss_kib("VmRSS")
    reset_peak()
    start = time.perf_counter()
    if mode == "in_memory":
        snapshots = store.snapshots()
        basis = fem_ml.pod(snapshots, ip, tol=1e-7, chunk_size=chunk_size)
    else:
        basis = fem_ml.pod(store, ip, tol=1e-7, chunk_size=chunk_size)
    elapsed = time.perf_counter() - start
    peak = rss_kib("VmHWM")
    return {
        "mode": mode,
        "n_modes": basis.n_modes,
        "snapshot_matrix_mib": matrix_bytes / 2**20,
        "peak_increase_mib": (peak - base) / 1024,
        "peak_over_matrix": (peak - base) * 1024 / matrix_bytes,
        "time_s": elapsed,
    }


def main() -> None:
    """Run the three steps and write the JSON (collective)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, default=500)
    parser.add_argument("--n-snapshots", type=int, default=200)
    parser.add_argument("--store", type=Path, default=ROOT / "results" / "pod_scaling_store")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--memory", choices=["in_memory", "streaming"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:  # child process of step 3
        print(json.dumps(measure_memory(args.store, args.n_cells, args.memory, args.chunk_size)), flush=True)
        return

    comm = MPI.COMM_WORLD
    t_generate = fill_store(args.store, args.n_cells, args.n_snapshots)
    timing = time_pod_and_gemm(args.store, args.n_cells, args.repeat)
    memory: list[dict[str, float]] = []
    if comm.rank == 0:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_", "MPIR_", "MPICH_"))}
        for mode in ("in_memory", "streaming"):
            command = [sys.executable, __file__, "--memory", mode, "--n-cells", str(args.n_cells)]
            command += ["--store", str(args.store), "--chunk-size", str(args.chunk_size)]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            memory.append(json.loads(out.strip().splitlines()[-1]))
    memory = comm.bcast(memory, root=0)
    result = {
        "n_ranks": comm.size,
        "cpu_count": os.cpu_count(),
        "n_dofs": (args.n_cells + 1) ** 2,
        "n_snapshots": args.n_snapshots,
        "t_generate_snapshots_s": t_generate,
        **timing,
        "memory": memory,
        "versions": fem_ml.archive.versions(),
    }
    if comm.rank == 0:
        print(f"{args.n_snapshots} snapshots x {result['n_dofs']} dofs on {comm.size} rank(s)")
        t_pod, t_gemm = timing["t_pod_s"], timing["t_gemm_s"]
        print(f"  POD {t_pod:.3f} s, GEMM U^T V {t_gemm:.3f} s: ratio {timing['pod_over_gemm']:.2f}")
        for m in memory:
            print(
                f"  {m['mode']:>9}: peak +{m['peak_increase_mib']:.0f} MiB = {m['peak_over_matrix']:.2f} x the "
                f"snapshot matrix ({m['snapshot_matrix_mib']:.0f} MiB), {m['time_s']:.2f} s"
            )
    fem_ml.write_json(ROOT / "benchmarks" / "results" / "pod_scaling.json", result, comm=comm)


if __name__ == "__main__":
    main()
