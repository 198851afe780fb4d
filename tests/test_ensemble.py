# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
from mpi4py import MPI

import numpy as np
import pytest
from conftest import SPACE, by_coordinates, raises_on_all_ranks
from problems import build_problem

import fem_ml


@pytest.fixture
def ensemble(comm):
    groups = fem_ml.Ensemble(comm, group_size=1)
    yield groups
    groups.destroy()


def test_groups_split_the_world(comm):
    groups = fem_ml.Ensemble(comm, group_size=1)
    assert groups.n_groups == comm.size and groups.comm.size == 1 and groups.index == comm.rank
    groups.destroy()
    whole = fem_ml.Ensemble(comm, group_size=comm.size)
    assert whole.n_groups == 1 and whole.comm.size == comm.size
    whole.destroy()
    with pytest.raises(ValueError, match="does not divide"):
        fem_ml.Ensemble(comm, group_size=comm.size + 1)
    with pytest.raises(ValueError, match="sum to"):
        fem_ml.Ensemble(comm, group_size=[comm.size, 1])


def test_ensemble_snapshots_land_in_one_store(comm, tmp_dir, ensemble, problem):
    """Each group solves its share once; every group gets all samples; the POD on COMM_WORLD reads the store."""
    V_group, solve = build_problem(ensemble.comm, 16)
    calls = []

    def counting(mu):
        calls.append(mu)
        return solve(mu)

    points = SPACE.sample(9, method="lhs", seed=11)
    store = fem_ml.SnapshotStore(tmp_dir / "store", V_group, space=SPACE)
    result = fem_ml.collect_snapshots(counting, points, V_group, store=store, ensemble=ensemble, progress=False)
    assert comm.allreduce(len(calls)) == 9  # every sample solved exactly once over all groups
    np.testing.assert_array_equal(result.indices, np.arange(9))
    np.testing.assert_array_equal(result.parameters, points)

    # The same snapshots solved by all ranks together (domain decomposition) agree through dof coordinates.
    V, solve_world = problem
    reference = fem_ml.collect_snapshots(solve_world, points, V, progress=False)
    np.testing.assert_allclose(
        by_coordinates(V_group, result.values), by_coordinates(V, reference.values), rtol=0, atol=1e-12
    )
    # The POD reads the store on another communicator (COMM_WORLD) than the groups that wrote it.
    streamed = fem_ml.pod(fem_ml.SnapshotStore(tmp_dir / "store", V), "h1", tol=1e-8)
    direct = fem_ml.pod(reference, "h1", tol=1e-8)
    assert streamed.n_modes == direct.n_modes
    np.testing.assert_allclose(streamed.singular_values[:5], direct.singular_values[:5], rtol=1e-10)


def test_ensemble_needs_a_store_and_fails_on_all_ranks(comm, tmp_dir, ensemble):
    V_group, solve = build_problem(ensemble.comm, 8)
    points = SPACE.sample(4, method="lhs", seed=12)
    raises_on_all_ranks(
        comm, ValueError, "needs a store", fem_ml.collect_snapshots, solve, points, V_group, ensemble=ensemble
    )

    def failing(mu):
        if mu[0] == points[comm.size - 1, 0]:  # a sample of the last group
            raise fem_ml.SolveFailed("no convergence")
        return solve(mu)

    store = fem_ml.SnapshotStore(tmp_dir / "store", V_group)
    raises_on_all_ranks(
        comm, fem_ml.SolveFailed, "no convergence", fem_ml.collect_snapshots, failing, points, V_group, store=store,
        ensemble=ensemble, on_failure="raise", progress=False,
    )  # fmt: skip
    # Recorded instead of raised: every group lists the failure.
    result = fem_ml.collect_snapshots(
        failing, points, V_group, store=store, ensemble=ensemble, retry_failed=True, progress=False
    )
    assert [f.index for f in result.failures] == [comm.size - 1]
    assert len(result) == 3
    assert MPI.COMM_WORLD.allreduce(1) == comm.size
