# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import numpy as np
import pytest
from conftest import SPACE, raises_on_all_ranks
from dolfinx import fem

import fem_ml


def test_snapshot_values_are_the_owned_solution(problem, snapshots):
    V, solve = problem
    n_owned = V.dofmap.index_map.size_local
    assert snapshots.values.shape == (n_owned, 40)
    assert snapshots.parameters.shape == (40, 4)
    assert len(snapshots) == 40
    assert snapshots.n_dofs == 17 * 17
    assert np.all(snapshots.solve_times > 0)
    u = solve(snapshots.parameters[7])
    np.testing.assert_array_equal(snapshots.values[:, 7], u.x.array[:n_owned])
    # Ghosts are filled when a snapshot becomes a Function again.
    f = snapshots.function(7)
    np.testing.assert_allclose(f.x.array, u.x.array, rtol=0, atol=1e-14)


def test_subset(snapshots):
    sub = snapshots.subset([3, 1])
    np.testing.assert_array_equal(sub.parameters, snapshots.parameters[[3, 1]])
    np.testing.assert_array_equal(sub.values[:, 0], snapshots.values[:, 3])


def test_solve_on_other_space_fails_on_all_ranks(comm, problem):
    V, _ = problem
    W = fem.functionspace(V.mesh, ("Lagrange", 2))

    def wrong(mu):
        return fem.Function(W)

    raises_on_all_ranks(comm, ValueError, "another space", fem_ml.collect_snapshots, wrong, [[0.5] * 4], V)


def test_solve_returning_array_fails(comm, problem):
    V, _ = problem
    raises_on_all_ranks(
        comm, ValueError, "not a dolfinx.fem.Function", fem_ml.collect_snapshots, lambda mu: mu, [[0.5] * 4], V
    )


@pytest.mark.parametrize(
    ("points", "match"),
    [([[0.5, 0.5, 0.5]], "shape"), ([[0.5, 0.5, np.nan, 0.5]], "nan"), ([[0.5, 0.5, 2.0, 0.5]], "outside")],
)
def test_bad_parameters_fail_on_all_ranks(comm, problem, points, match):
    V, solve = problem
    raises_on_all_ranks(comm, ValueError, match, fem_ml.collect_snapshots, solve, points, V, space=SPACE)


def test_parameters_must_agree_between_ranks(comm, problem):
    V, solve = problem
    points = np.full((1, 4), 0.5) + 0.1 * comm.rank
    if comm.size > 1:
        raises_on_all_ranks(comm, ValueError, "differ between ranks", fem_ml.collect_snapshots, solve, points, V)
    else:
        assert len(fem_ml.collect_snapshots(solve, points, V, progress=False)) == 1


def test_snapshot_set_checks_shapes(problem):
    V, _ = problem
    with pytest.raises(ValueError, match="values must have shape"):
        fem_ml.SnapshotSet(V, np.zeros((2, 4)), np.zeros((3, 2)), np.zeros(2))


def test_trajectories_add_time_as_last_parameter(comm):
    from problems import HEAT_SPACE as HEAT
    from problems import heat_problem

    V, solve = heat_problem(comm, 8)
    points = HEAT.sample(2, method="lhs", seed=0)
    times = np.array([0.02, 0.05, 0.1])
    result = fem_ml.collect_trajectories(solve, points, V, times=times, space=HEAT, progress=False)
    assert result.parameters.shape == (6, 4) and result.values.shape[1] == 6
    np.testing.assert_array_equal(result.parameters[:3, 3], times)
    np.testing.assert_array_equal(result.parameters[3:, :3], np.repeat(points[1:], 3, axis=0))
    # The column at (mu_1, 0.05) is what a trajectory integrated to t = 0.05 gives.
    *_, last = solve(points[1].copy(), np.array([0.05]))
    np.testing.assert_array_equal(result.values[:, 4], last.x.array[: result.values.shape[0]])
    raises_on_all_ranks(comm, ValueError, "strictly increasing", fem_ml.collect_trajectories, solve, points, V,
                        times=[0.1, 0.05])  # fmt: skip

    def short(mu, times):
        yield from list(solve(mu, times))[:1]

    raises_on_all_ranks(comm, ValueError, "yielded 1 Functions for 3", fem_ml.collect_trajectories, short, points, V,
                        times=times)  # fmt: skip


def test_retry_failed_needs_a_store(comm, problem):
    V, solve = problem
    raises_on_all_ranks(comm, ValueError, "retry_failed=True needs a store", fem_ml.collect_snapshots, solve,
                        [[0.5] * 4], V, retry_failed=True)  # fmt: skip
