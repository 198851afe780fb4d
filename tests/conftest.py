# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Shared fixtures: an MPI-safe temporary folder and a small thermal-block problem (from :mod:`problems`)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

from mpi4py import MPI

import numpy as np
import pytest
from problems import SPACE, build_problem

import fem_ml
from fem_ml._mpi import wait_for_all

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Under MPI, pause automatic garbage collection; :func:`_collect_garbage_together` collects after each test.

    Garbage holding PETSc objects (a ``LinearProblem`` in a reference cycle) is destroyed collectively; the
    automatic collector runs at moments that differ between ranks, and a collection on one rank alone hangs.
    """
    if MPI.COMM_WORLD.size > 1:
        gc.disable()


@pytest.fixture(autouse=True)
def _collect_garbage_together():
    """Collect garbage on every rank at the same point: after each test.

    What survives the collection (modules, session fixtures) is then frozen (:func:`gc.freeze`): a full collection
    traverses every tracked object, and with DOLFINx, torch and SciPy loaded that took about 0.4 s per test; frozen
    objects are skipped, so the next collection costs only what the test itself left behind.
    """
    yield
    gc.collect()
    gc.freeze()
    MPI.COMM_WORLD.barrier()


@pytest.fixture
def comm() -> MPI.Comm:
    return MPI.COMM_WORLD


@pytest.fixture
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder created on rank 0 and shared by all ranks; barrier at teardown."""
    comm = MPI.COMM_WORLD
    path = str(tmp_path_factory.mktemp("fem_ml")) if comm.rank == 0 else None
    yield Path(comm.bcast(path, root=0))
    comm.barrier()


@pytest.fixture(scope="session")
def problem():
    """A 16 x 16 thermal block on COMM_WORLD: (V, solve)."""
    return build_problem(MPI.COMM_WORLD, 16)


@pytest.fixture(scope="session")
def serial_problem():
    """The same thermal block on COMM_SELF (every rank holds the whole mesh): (V, solve)."""
    return build_problem(MPI.COMM_SELF, 16)


@pytest.fixture(scope="session")
def snapshots(problem) -> fem_ml.SnapshotSet:
    V, solve = problem
    train = SPACE.sample(40, method="lhs", seed=0)
    return fem_ml.collect_snapshots(solve, train, V, space=SPACE, progress=False)


@pytest.fixture(scope="session")
def test_snapshots(problem) -> fem_ml.SnapshotSet:
    V, solve = problem
    test = SPACE.sample(8, method="uniform", seed=1)
    return fem_ml.collect_snapshots(solve, test, V, space=SPACE, progress=False)


def by_coordinates(V, values: np.ndarray) -> np.ndarray:
    """Owned dof values of a scalar P1 field gathered to every rank, sorted by dof coordinates.

    Makes fields from different rank counts comparable entry by entry.
    """
    comm = V.mesh.comm
    n = V.dofmap.index_map.size_local
    x = V.tabulate_dof_coordinates()[:n, :2]
    values = values.reshape(n, -1)
    all_x = np.vstack(comm.allgather(x))
    all_v = np.vstack(comm.allgather(values))
    order = np.lexsort((np.round(all_x[:, 1], 10), np.round(all_x[:, 0], 10)))
    return all_v[order]


def raises_on_all_ranks(comm: MPI.Comm, exc_type: type[BaseException], match: str, func, /, *args, **kwargs) -> None:
    """Assert that ``func`` raises ``exc_type`` matching ``match`` on this rank, and that every rank got here."""
    with pytest.raises(exc_type, match=match):
        func(*args, **kwargs)
    assert comm.allreduce(1) == comm.size


def forged_surrogate_files(
    comm: MPI.Comm, path: Path, forgeries, directory: Path, prefix: str
) -> list[tuple[str, str]]:
    """Rank 0 writes each ``(label, tree)`` of ``forgeries(tree of path)`` as a valid surrogate file; all get the list.

    The files carry valid checksums, so only the loader's validation of their entries can refuse them.
    """
    from fem_ml._formats import SURROGATE
    from fem_ml._h5 import read_tree, write_tree

    cases = []
    if comm.rank == 0:
        tree = read_tree(path, kind=SURROGATE.kind, version=SURROGATE.version, what="test", schema=SURROGATE.schema)
        for k, (label, forged) in enumerate(forgeries(tree)):
            target = directory / f"{prefix}_{k:03d}.femml"
            write_tree(target, forged, kind=SURROGATE.kind, version=SURROGATE.version)
            cases.append((label, str(target)))
    return comm.bcast(cases, root=0)


def clean_env() -> dict[str, str]:
    """The environment for a child process: without the MPI launcher's variables (so it starts an MPI job of its
    own), one OpenMP thread, and this checkout's fem_ml first on the path (a script run from ``demos/`` or
    ``tests/`` would otherwise import the installed one)."""
    prefixes = ("PMI_", "PMIX_", "HYDRA_", "MPIR_", "MPICH_", "OMPI_", "MPI_LOCAL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def mpirun(n: int) -> list[str]:
    """The launcher prefix ``[mpirun, "-n", n]`` of the MPI that mpi4py was built with (the one beside the Python).

    A bare ``mpirun`` could be another MPI's (Debian's ParaView pulls in Open MPI, which refuses to run as root and
    cannot start ranks of an MPICH-linked mpi4py).
    """
    launcher = Path(sys.executable).with_name("mpirun")
    return [str(launcher) if launcher.exists() else "mpirun", "-n", str(n)]


def on_root(comm: MPI.Comm, func, /, *args, **kwargs):
    """Run ``func`` on rank 0 only and share its result; a failure there fails the test on every rank.

    Code run on one rank must not leave the other ranks waiting in a barrier when it fails: the exception is
    caught, its message broadcast, and every rank raises. The other ranks wait without spinning (a sleeping
    barrier), so ``func`` may start an MPI job of its own on the same cores.
    """
    result, error = None, None
    if comm.rank == 0:
        try:
            result = func(*args, **kwargs)
        except BaseException as err:  # reported on every rank below
            error = f"{type(err).__name__} on rank 0: {err}"
    wait_for_all(comm, poll_interval=0.05)
    result, error = comm.bcast((result, error), root=0)
    if error is not None:
        pytest.fail(error)
    return result


def paraview_arrays(comm: MPI.Comm, path: Path) -> dict:
    """Open an XDMF file in ParaView (``xvfb-run pvpython``, Xdmf3 reader) on rank 0; its steps and array ranges.

    Returns ``{"times": [...], "arrays": {point array: [[lo, hi] per step]}, "cell_arrays": {...}}`` on every rank.
    """
    return paraview_files(comm, [path])[str(path)]


def paraview_files(comm: MPI.Comm, paths: list[Path]) -> dict[str, dict]:
    """:func:`paraview_arrays` for several files in one ParaView session: ``{str(path): result}``."""
    import json
    import shutil
    import subprocess

    def run() -> dict:
        assert shutil.which("pvpython") and shutil.which("xvfb-run"), "pvpython and xvfb-run are needed"
        script = Path(__file__).with_name("paraview_check.py")
        proc = subprocess.run(
            ["xvfb-run", "-a", "pvpython", str(script), *map(str, paths)], capture_output=True, text=True,
            timeout=300, env=clean_env(),
        )  # fmt: skip
        lines = [line for line in proc.stdout.splitlines() if line.startswith("PARAVIEW_RESULT ")]
        assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
        return json.loads(lines[-1].removeprefix("PARAVIEW_RESULT "))

    return on_root(comm, run)
