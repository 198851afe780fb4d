# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
from mpi4py import MPI

import numpy as np
import pytest
import ufl
from conftest import SPACE, by_coordinates, raises_on_all_ranks
from dolfinx import fem

import fem_ml

TRAIN = {"adam_epochs": 400, "lbfgs_iterations": 100, "input_transform": "log", "progress": False}


@pytest.fixture(scope="module")
def rom(snapshots):
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=1e-6)
    return fem_ml.train_surrogate(basis, snapshots, SPACE, seed=0, **TRAIN)


def test_prediction_is_a_function_on_v(rom, problem, test_snapshots):
    V, _ = problem
    mu = test_snapshots.parameters[0]
    u = rom(mu)
    assert isinstance(u, fem.Function) and u.function_space is V and u.name == "prediction"
    # Ghosts are updated: a functional assembled from the prediction is close to the truth's.
    truth = test_snapshots.function(0)
    integral = fem.assemble_scalar(fem.form(u * ufl.dx))
    integral_truth = fem.assemble_scalar(fem.form(truth * ufl.dx))
    total = V.mesh.comm.allreduce(integral, op=MPI.SUM)
    total_truth = V.mesh.comm.allreduce(integral_truth, op=MPI.SUM)
    assert total == pytest.approx(total_truth, rel=0.05)
    # Usable in interpolation into another space.
    W = fem.functionspace(V.mesh, ("Lagrange", 2))
    w = fem.Function(W)
    w.interpolate(u)
    w_integral = V.mesh.comm.allreduce(fem.assemble_scalar(fem.form(w * ufl.dx)), op=MPI.SUM)
    assert w_integral == pytest.approx(total, rel=1e-10)
    # Filling an existing Function gives the same values; mappings are accepted.
    out = fem.Function(V)
    rom(SPACE.to_dict(mu), out=out)
    np.testing.assert_array_equal(out.x.array, u.x.array)


def test_batch_equals_single_calls(rom, test_snapshots):
    points = test_snapshots.parameters
    batch = rom.coefficients(points)
    assert batch.shape == (len(points), rom.n_modes)
    for k in range(3):
        np.testing.assert_allclose(batch[k], rom.coefficients(points[k])[0], rtol=1e-13, atol=1e-15)
    n = rom.basis.modes.shape[0]
    np.testing.assert_allclose(rom.predict_values(points[:2])[:, 1], rom(points[1]).x.array[:n], rtol=1e-12)


def test_errors_report(rom, test_snapshots):
    report = rom.errors(test_snapshots.parameters, test_snapshots)
    for name in ("rel_error_l2", "rel_error_h1", "proj_error_l2", "proj_error_h1"):
        values = getattr(report, name)
        assert values.shape == (len(test_snapshots),) and np.all(np.isfinite(values)) and np.all(values >= 0)
    # The POD projection is the best H1 approximation in the basis (POD in H1): never worse than the surrogate.
    assert np.all(report.proj_error_h1 <= report.rel_error_h1 * (1 + 1e-10))
    summary = report.summary()
    assert summary["rel_error_h1_mean"] == pytest.approx(np.mean(report.rel_error_h1))
    assert summary["rel_error_h1_mean"] < 0.1
    # Errors agree with a direct computation through assembled norms.
    V = rom.V
    diff = fem.Function(V)
    diff.x.array[:] = rom(test_snapshots.parameters[2]).x.array - test_snapshots.function(2).x.array
    truth = test_snapshots.function(2)

    def h1(f):
        local = fem.assemble_scalar(fem.form((f * f + ufl.inner(ufl.grad(f), ufl.grad(f))) * ufl.dx))
        return np.sqrt(V.mesh.comm.allreduce(local, op=MPI.SUM))

    assert report.rel_error_h1[2] == pytest.approx(h1(diff) / h1(truth), rel=1e-8)


@pytest.mark.parametrize("polish", [{}, {"lbfgs_iterations": "auto", "lm_iterations": 20}], ids=["l-bfgs", "lm"])
def test_surrogate_agrees_between_rank_counts(snapshots, serial_problem, test_snapshots, polish):
    """POD + network on COMM_WORLD and on COMM_SELF give the same predicted field, with either polish."""
    V_serial, solve_serial = serial_problem
    serial = fem_ml.collect_snapshots(solve_serial, snapshots.parameters, V_serial, progress=False)
    kwargs = dict(seed=3, **{**TRAIN, **polish})
    rom_world = fem_ml.train_surrogate(fem_ml.pod(snapshots, "h1", tol=1e-6), snapshots, SPACE, **kwargs)
    rom_self = fem_ml.train_surrogate(fem_ml.pod(serial, "h1", tol=1e-6), serial, SPACE, **kwargs)
    mu = test_snapshots.parameters[:4]
    world = by_coordinates(rom_world.V, rom_world.predict_values(mu))
    single = by_coordinates(V_serial, rom_self.predict_values(mu))
    rel = np.linalg.norm(world - single, axis=0) / np.linalg.norm(single, axis=0)
    assert rel.max() <= 1e-8, rel


def test_bad_inputs_fail_on_all_ranks(comm, rom, problem, test_snapshots):
    V, _ = problem
    raises_on_all_ranks(comm, ValueError, r"shape \(n, 4\)", rom, [0.5, 0.5, 0.5])
    raises_on_all_ranks(comm, ValueError, "nan", rom, [0.5, np.nan, 0.5, 0.5])
    rom.extrapolation = "raise"  # strict mode; the default warns (tests/test_trust.py)
    try:
        raises_on_all_ranks(comm, ValueError, "outside the parameter bounds", rom, [0.5, 0.5, 0.5, 1.5])
    finally:
        rom.extrapolation = "warn"
    raises_on_all_ranks(comm, ValueError, "Expected 1 parameter points", rom, np.full((2, 4), 0.5))
    W = fem.functionspace(V.mesh, ("Lagrange", 2))
    raises_on_all_ranks(comm, ValueError, "element", rom, [0.5] * 4, out=fem.Function(W))
    raises_on_all_ranks(comm, ValueError, "Truth must have shape", rom.errors, [[0.5] * 4], test_snapshots.values)
    other = fem_ml.SnapshotSet(W, test_snapshots.parameters, np.zeros((_owned(W), 8)), test_snapshots.solve_times)
    raises_on_all_ranks(comm, ValueError, "another function space", rom.errors, test_snapshots.parameters, other)


def test_train_surrogate_rejects_unknown_option(rom, snapshots):
    with pytest.raises(TypeError):
        fem_ml.train_surrogate(rom.basis, snapshots, SPACE, epochs=10)


def _owned(V):
    return V.dofmap.index_map.size_local * V.dofmap.index_map_bs


def test_float32_reconstruction(comm, snapshots):
    basis = fem_ml.pod(snapshots, "h1", n_modes=6)
    rom = fem_ml.train_surrogate(basis, snapshots, SPACE, adam_epochs=20, lbfgs_iterations=0, progress=False)
    mu = snapshots.parameters[3]
    reference = rom(mu).x.array.copy()
    rom.reconstruction_dtype = "float32"
    assert rom.reconstruction_dtype == "float32"
    single = rom(mu).x.array
    scale = comm.allreduce(np.max(np.abs(reference)), op=MPI.MAX)
    assert 0 < comm.allreduce(np.max(np.abs(single - reference)), op=MPI.MAX) <= 1e-6 * scale
    rom.reconstruction_dtype = "float64"
    np.testing.assert_array_equal(rom(mu).x.array, reference)
    with pytest.raises(ValueError, match="float64' or 'float32"):
        rom.reconstruction_dtype = "float16"


def test_errors_refuse_zero_and_nan_truth(comm, rom, test_snapshots):
    points = test_snapshots.parameters[:3]
    zero = test_snapshots.values[:, :3].copy()
    zero[:, 1] = 0.0
    raises_on_all_ranks(comm, ValueError, "truth of sample 1 is zero", rom.errors, points, zero)
    nan = test_snapshots.values[:, :3].copy()
    if comm.rank == 0:
        nan[0, 2] = np.nan
    raises_on_all_ranks(comm, ValueError, "truth of sample 2 holds NaN", rom.errors, points, nan)


SHORT = {"hidden_layers": (8,), "adam_epochs": 30, "lbfgs_iterations": 5, "progress": False}


def test_options_and_overrides(comm, rom, snapshots):
    """options= and keyword overrides give the same training; an unknown name is a TypeError everywhere."""
    options = fem_ml.TrainingOptions(**SHORT, seed=4)
    a = fem_ml.train_surrogate(rom.basis, snapshots, SPACE, options=options)
    b = fem_ml.train_surrogate(rom.basis, snapshots, SPACE, **SHORT, seed=4)
    c = fem_ml.train_surrogate(rom.basis, snapshots, SPACE, options=fem_ml.TrainingOptions(**SHORT), seed=4)
    mu = snapshots.parameters[:3]
    np.testing.assert_array_equal(a.coefficients(mu), b.coefficients(mu))
    np.testing.assert_array_equal(a.coefficients(mu), c.coefficients(mu))
    with pytest.raises(TypeError, match="epochs"):
        fem_ml.train_surrogate(rom.basis, snapshots, SPACE, options=options, epochs=10)
    with pytest.raises(TypeError, match="epochs"):
        fem_ml.cross_validate(rom.basis, snapshots, SPACE, k=2, epochs=10)


def test_context_manager_destroys_only_what_the_surrogate_created(snapshots, test_snapshots):
    basis = fem_ml.pod(snapshots, "h1", n_modes=4)
    with fem_ml.train_surrogate(basis, snapshots, SPACE, **SHORT) as trained:
        trained.errors(test_snapshots.parameters, test_snapshots)
        l2 = trained.norm("l2")
        assert trained.norm("h1") is basis.inner_product  # the basis' own product is reused, not copied
    assert l2.destroyed and not basis.inner_product.destroyed
    assert basis.project(test_snapshots).shape == (4, len(test_snapshots))  # the caller's basis still works
    owner = fem_ml.Surrogate(SPACE, basis, trained.network, owns_basis=True)
    owner.destroy()
    assert basis.inner_product.destroyed
