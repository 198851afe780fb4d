# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Per-rank-divergent input to every public collective function is a clear error on every rank, never a silent mix.

Each test passes input that differs between ranks (a point, an option). On one rank the same call is valid and must
succeed, so the serial run checks that the agreement check lets valid input through; under ``mpirun -n 2`` every
rank must raise the same ``ValueError`` (``raises_on_all_ranks`` also checks that all ranks got there).
"""

from mpi4py import MPI

import numpy as np
import pytest
import ufl
from conftest import SPACE, raises_on_all_ranks
from dolfinx import fem, mesh

import fem_ml

TINY = {"hidden_layers": (8,), "adam_epochs": 20, "lbfgs_iterations": 0, "progress": False}
DIFFER = "differ between ranks"


def _per_rank(value, step):
    """``value`` on rank 0, shifted by ``step`` on the other ranks."""
    return value + (step if MPI.COMM_WORLD.rank > 0 else 0)


def _expect_divergence_error(comm, func, /, *args, **kwargs):
    """Under MPI: ValueError naming the divergence on every rank; serially: the call succeeds (and is returned)."""
    if comm.size > 1:
        raises_on_all_ranks(comm, ValueError, DIFFER, func, *args, **kwargs)
        return None
    return func(*args, **kwargs)


@pytest.fixture(scope="module")
def basis(snapshots):
    return fem_ml.pod(snapshots, "h1", n_modes=6)


@pytest.fixture(scope="module")
def rom(basis, snapshots):
    return fem_ml.train_surrogate(basis, snapshots, SPACE, n_networks=2, **TINY)


def test_collect_snapshots(comm, problem):
    V, solve = problem
    points = np.full((1, 4), _per_rank(0.5, 0.1))
    _expect_divergence_error(comm, fem_ml.collect_snapshots, solve, points, V, progress=False)
    on_failure = "record" if comm.rank == 0 else "raise"
    _expect_divergence_error(comm, fem_ml.collect_snapshots, solve, [[0.5] * 4], V, on_failure=on_failure,
                             progress=False)  # fmt: skip


def test_collect_trajectories(comm, problem):
    V, solve = problem

    def trajectory(mu, times):
        for _ in times:
            yield solve(mu)

    times = [0.1, _per_rank(0.2, 0.05)]
    result = _expect_divergence_error(comm, fem_ml.collect_trajectories, trajectory, [[0.5] * 4], V, times=times,
                                      progress=False)  # fmt: skip
    assert result is None or len(result) == 2


def test_pod(comm, snapshots):
    basis = _expect_divergence_error(comm, fem_ml.pod, snapshots, "h1", n_modes=_per_rank(4, 1))
    assert basis is None or basis.n_modes == 4
    _expect_divergence_error(comm, fem_ml.pod, snapshots, "h1", tol=_per_rank(1e-4, 1e-5))
    # A different number of local snapshot columns would otherwise reach a collective with other shapes.
    columns = snapshots.values[:, : _per_rank(10, 1)]
    _expect_divergence_error(comm, fem_ml.pod, columns, "h1", V=snapshots.V, n_modes=3)


def test_train_surrogate(comm, basis, snapshots):
    _expect_divergence_error(comm, fem_ml.train_surrogate, basis, snapshots, SPACE, seed=_per_rank(0, 1), **TINY)
    options = fem_ml.TrainingOptions(**(TINY | {"adam_epochs": _per_rank(20, 1)}))
    _expect_divergence_error(comm, fem_ml.train_surrogate, basis, snapshots, SPACE, options=options)


def test_surrogate_calls(comm, rom, test_snapshots):
    mu = np.full(4, _per_rank(0.5, 0.01))
    _expect_divergence_error(comm, rom, mu)
    _expect_divergence_error(comm, rom.coefficients, mu)
    _expect_divergence_error(comm, rom.predict_values, mu)
    _expect_divergence_error(comm, rom.uncertainty, mu)
    points = test_snapshots.parameters.copy()
    points[0, 0] = _per_rank(points[0, 0], 1e-9)
    _expect_divergence_error(comm, rom.errors, points, test_snapshots)


def test_bad_point_on_one_rank_fails_everywhere(comm, rom, test_snapshots):
    """A NaN or a wrong shape on the last rank only: the same clear error on every rank (not a hang)."""
    last = comm.rank == comm.size - 1
    nan = [0.5, np.nan if last else 0.5, 0.5, 0.5]
    raises_on_all_ranks(comm, ValueError, "NaN and inf are not allowed", rom, nan)
    raises_on_all_ranks(comm, ValueError, "NaN and inf are not allowed", rom.coefficients, nan)
    raises_on_all_ranks(comm, ValueError, "NaN and inf are not allowed", rom.uncertainty, nan)
    short = [0.5, 0.5, 0.5] if last else [0.5] * 4
    raises_on_all_ranks(comm, ValueError, r"shape \(n, 4\)", rom, short)
    truth = test_snapshots.values.copy()
    if last:
        truth[0, 3] = np.nan
    raises_on_all_ranks(comm, ValueError, "sample 3 holds NaN", rom.errors, test_snapshots.parameters, truth)


def _poisson(V):
    """A residual form -div(k grad u) = 1, u = 0 on the boundary, on V's mesh: (F, u, [k], bcs)."""
    msh = V.mesh
    u, v = fem.Function(V), ufl.TestFunction(V)
    k = fem.Constant(msh, 1.0)
    F = k * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - v * ufl.dx
    msh.topology.create_connectivity(msh.topology.dim - 1, msh.topology.dim)
    facets = mesh.exterior_facet_indices(msh.topology)
    dofs = fem.locate_dofs_topological(V, msh.topology.dim - 1, facets)
    return F, u, [k], [fem.dirichletbc(0.0, dofs, V)]


def test_residual_check(comm, problem):
    V, _ = problem
    F, u, constants, bcs = _poisson(V)
    check = _expect_divergence_error(comm, fem_ml.ResidualCheck, F, u, constants, bcs=bcs,
                                     threshold=_per_rank(0.05, 0.01))  # fmt: skip
    if check is None:
        check = fem_ml.ResidualCheck(F, u, constants, bcs=bcs)
    zero = np.zeros(V.dofmap.index_map.size_local)
    value = _expect_divergence_error(comm, check, [_per_rank(1.0, 0.5)], zero)
    assert value is None or value == pytest.approx(1.0)
    check.destroy()


def test_reduced_systems(comm, problem, basis):
    V, _ = problem
    k = fem.Constant(V.mesh, 1.0)
    uh, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = k * ufl.inner(ufl.grad(uh), ufl.grad(v)) * ufl.dx

    def set_parameters(mu):
        k.value = mu[0]

    points = [[_per_rank(1.0, 0.5)]]
    systems = _expect_divergence_error(comm, fem_ml.assemble_reduced_systems, basis, a, v * ufl.dx, set_parameters,
                                       points)  # fmt: skip
    assert systems is None or systems.matrices.shape == (1, 6, 6)


def test_cross_validate(comm, basis, snapshots):
    _expect_divergence_error(comm, fem_ml.cross_validate, basis, snapshots, SPACE, k=_per_rank(2, 1), **TINY)


def test_adaptive_sampling(comm, problem):
    V, solve = problem
    training = {name: value for name, value in TINY.items() if name != "progress"}  # progress: adaptive's own
    kwargs = dict(initial=SPACE.sample(3, seed=0), candidates=SPACE.sample(4, seed=1), batch_size=1, max_solves=4,
                  progress=False, n_networks=2, **training)  # fmt: skip
    result = _expect_divergence_error(comm, fem_ml.adaptive_sampling, solve, V, SPACE, target=_per_rank(1e-9, 1e-9),
                                      **kwargs)  # fmt: skip
    assert result is None or result.n_solves == 4


def test_ensemble(comm):
    groups = _expect_divergence_error(comm, fem_ml.Ensemble, comm, group_size=_per_rank(1, 1))
    if groups is not None:
        assert groups.n_groups == comm.size
        groups.destroy()
    bad = 3 if comm.rank == comm.size - 1 else 1  # 3 never divides 1 or 2 ranks: an error on the last rank only
    raises_on_all_ranks(comm, ValueError, "does not divide", fem_ml.Ensemble, comm, group_size=bad)
