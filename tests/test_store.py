# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SPACE, by_coordinates, clean_env, mpirun, raises_on_all_ranks
from dolfinx import fem
from problems import build_problem

import fem_ml
from fem_ml.store import SnapshotStore

WORKER = Path(__file__).with_name("store_worker.py")


def launch(n_ranks: int, store: Path, n: int, delay: float) -> subprocess.Popen:
    command = [sys.executable, str(WORKER), str(store), str(n), str(delay)]
    if n_ranks > 1:
        command = [*mpirun(n_ranks), *command]
    return subprocess.Popen(
        command, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def finished(store: Path) -> int:
    return len(list((store / "samples").glob("[0-9]*.h5")))


def read_all(store: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    import h5py

    out = {}
    for file in sorted((store / "samples").glob("*.h5")):
        with h5py.File(file, "r") as f:
            out[int(f.attrs["index"])] = (f["parameters"][()], f["values"][()])
    return out


def kill_and_resume(tmp: Path, n_ranks: int) -> None:
    n = 12
    reference = tmp / f"reference{n_ranks}"
    proc = launch(n_ranks, reference, n, 0.0)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err

    interrupted = tmp / f"interrupted{n_ranks}"
    proc = launch(n_ranks, interrupted, n, 0.3)
    deadline = time.monotonic() + 300
    while finished(interrupted) < 4:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: mpirun and its ranks
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done_before = finished(interrupted)
    assert 4 <= done_before < n

    proc = launch(n_ranks, interrupted, n, 0.0)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"SOLVES {n - done_before}" in out  # only the missing samples were solved

    got, want = read_all(interrupted), read_all(reference)
    assert sorted(got) == list(range(n)) == sorted(want)
    assert len(list((interrupted / "samples").iterdir())) == n  # no leftover temporary or duplicate files
    for i in range(n):
        np.testing.assert_array_equal(got[i][0], want[i][0])
        np.testing.assert_array_equal(got[i][1], want[i][1])  # bit-identical values


@pytest.mark.processes
@pytest.mark.parametrize("n_ranks", [1, 2])
def test_killed_run_resumes_without_gap_or_duplicate(comm, tmp_dir, n_ranks):
    """A real SIGKILL to a real snapshot run, then a rerun: every sample once, bit-identical to a clean run."""
    error = None
    if comm.rank == 0:
        try:
            kill_and_resume(tmp_dir, n_ranks)
        except BaseException as err:  # reported on every rank below
            error = f"{type(err).__name__}: {err}"
    error = comm.bcast(error, root=0)
    assert error is None, error


def test_store_roundtrip_and_resume_in_process(comm, tmp_dir, problem):
    V, solve = problem
    store = SnapshotStore(tmp_dir / "store", V, space=SPACE)
    points = SPACE.sample(6, method="lhs", seed=5)
    first = fem_ml.collect_snapshots(solve, points[:4], V, space=SPACE, store=store, progress=False)
    calls = []

    def counting(mu):
        calls.append(mu)
        return solve(mu)

    again = fem_ml.collect_snapshots(counting, points, V, space=SPACE, store=store, progress=False)
    assert len(calls) == 2
    np.testing.assert_array_equal(again.values[:, :4], first.values)
    np.testing.assert_array_equal(again.indices, np.arange(6))
    reread = SnapshotStore(tmp_dir / "store", V).snapshots()
    np.testing.assert_array_equal(reread.values, again.values)
    np.testing.assert_array_equal(reread.parameters, points)
    assert reread.failures == ()


def test_store_written_on_one_layout_reads_on_another(comm, tmp_dir, problem, serial_problem):
    """Written on COMM_WORLD, read on COMM_SELF, and the reverse: the same fields through dof coordinates."""
    V, solve = problem
    Vs, solve_s = serial_problem
    points = SPACE.sample(3, method="lhs", seed=6)
    world = fem_ml.collect_snapshots(solve, points, V, store=SnapshotStore(tmp_dir / "world", V), progress=False)
    self_path = comm.bcast(tmp_dir / f"self{comm.rank}" if comm.rank == 0 else None, root=0)
    if comm.rank == 0:
        fem_ml.collect_snapshots(solve_s, points, Vs, store=SnapshotStore(self_path, Vs), progress=False)
    comm.barrier()
    # Every rank reads the world store alone; all ranks read rank 0's serial store together.
    alone = SnapshotStore(tmp_dir / "world", Vs).snapshots()
    together = SnapshotStore(self_path, V).snapshots()
    reference = by_coordinates(V, world.values)
    np.testing.assert_array_equal(by_coordinates(Vs, alone.values), reference)
    np.testing.assert_allclose(by_coordinates(V, together.values), reference, rtol=0, atol=1e-12)


def test_failed_solves_are_recorded_and_skipped(comm, tmp_dir, problem):
    V, solve = problem
    points = SPACE.sample(5, method="lhs", seed=7)

    def flaky(mu):
        if mu[0] == points[1, 0]:
            raise fem_ml.SolveFailed("diverged on purpose")
        if mu[0] == points[3, 0]:
            u = solve(mu)
            u.x.array[:] = np.nan
            return u
        return solve(mu)

    store = SnapshotStore(tmp_dir / "store", V)
    result = fem_ml.collect_snapshots(flaky, points, V, store=store, progress=False)
    np.testing.assert_array_equal(result.indices, [0, 2, 4])
    assert [f.index for f in result.failures] == [1, 3]
    assert "diverged on purpose" in result.failures[0].message
    assert "NaN" in result.failures[1].message
    # The failures are in the store, are not retried by default, and are excluded from what the store returns.
    calls = []
    again = fem_ml.collect_snapshots(lambda mu: calls.append(1) or solve(mu), points, V, store=store, progress=False)
    assert calls == [] and [f.index for f in again.failures] == [1, 3]
    assert [f.index for f in store.snapshots().failures] == [1, 3]
    retried = fem_ml.collect_snapshots(solve, points, V, store=store, retry_failed=True, progress=False)
    np.testing.assert_array_equal(retried.indices, np.arange(5))
    # POD and training use what the SnapshotSet holds: only successful solves.
    basis = fem_ml.pod(result, "h1", n_modes=2)
    assert np.isfinite(basis.modes).all()


def test_diverged_ksp_is_a_failure(comm, problem):
    V, _ = problem
    import ufl
    from dolfinx.fem.petsc import LinearProblem

    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = (ufl.inner(ufl.grad(u), ufl.grad(v)) + u * v) * ufl.dx
    options = {"ksp_type": "cg", "pc_type": "none", "ksp_max_it": 1, "ksp_rtol": 1e-14}
    lp = LinearProblem(a, v * ufl.dx, petsc_options_prefix="fem_ml_diverge_", petsc_options=options)

    def solve(mu):
        uh = lp.solve()
        fem_ml.check_converged(lp.solver, what="CG")
        return uh

    raises_on_all_ranks(
        comm, fem_ml.SolveFailed, "DIVERGED_MAX_IT", fem_ml.collect_snapshots, solve, [[0.5] * 4], V, on_failure="raise"
    )
    raises_on_all_ranks(
        comm,
        fem_ml.SolveFailed,
        "All 2 solves failed.*DIVERGED_MAX_IT",
        fem_ml.collect_snapshots,
        solve,
        [[0.5] * 4, [0.6] * 4],
        V,
    )


def test_store_refuses_other_plan_space_and_element(comm, tmp_dir, problem):
    V, solve = problem
    store = SnapshotStore(tmp_dir / "store", V, space=SPACE)
    points = SPACE.sample(2, method="lhs", seed=8)
    fem_ml.collect_snapshots(solve, points, V, store=store, progress=False)
    raises_on_all_ranks(
        comm,
        ValueError,
        "another sampling plan",
        fem_ml.collect_snapshots,
        solve,
        points[::-1],
        V,
        store=store,
        progress=False,
    )
    other = fem_ml.ParameterSpace({f"mu{i}": (0.1, 2.0) for i in range(4)})
    raises_on_all_ranks(comm, fem_ml.FileFormatError, "made for", SnapshotStore, tmp_dir / "store", V, space=other)
    W = fem.functionspace(V.mesh, ("Lagrange", 2))
    raises_on_all_ranks(comm, fem_ml.FileFormatError, "not on", SnapshotStore, tmp_dir / "store", W)
    V2, _ = build_problem(comm, 8)
    raises_on_all_ranks(comm, fem_ml.FileFormatError, "does not match", SnapshotStore, tmp_dir / "store", V2)
    if comm.rank == 0:
        (tmp_dir / "junk").mkdir()
        (tmp_dir / "junk" / "store.h5").write_bytes(b"not hdf5 at all")
    comm.barrier()
    raises_on_all_ranks(
        comm, fem_ml.FileFormatError, "junk.*truncated or corrupted", SnapshotStore, tmp_dir / "junk", V
    )


def test_damaged_entry_is_solved_again(comm, tmp_dir, problem):
    V, solve = problem
    store = SnapshotStore(tmp_dir / "store", V)
    points = SPACE.sample(3, method="lhs", seed=9)
    clean = fem_ml.collect_snapshots(solve, points, V, store=store, progress=False)
    if comm.rank == 0:
        entry = tmp_dir / "store" / "samples" / "000001.h5"
        data = bytearray(entry.read_bytes())
        data[-200] ^= 0xFF  # flip bits inside the values
        entry.write_bytes(bytes(data))
    comm.barrier()
    calls = []
    again = fem_ml.collect_snapshots(lambda mu: calls.append(1) or solve(mu), points, V, store=store, progress=False)
    assert len(calls) == 1
    # Solved again with MUMPS, whose parallel factorization is reproducible to rounding only (see the README);
    # bit-identical resumption is tested with SuperLU_DIST in the SIGKILL test.
    np.testing.assert_allclose(again.values, clean.values, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(again.values[:, [0, 2]], clean.values[:, [0, 2]])  # the intact entries, as stored
    assert (tmp_dir / "store" / "samples" / "000001.corrupt").exists()
