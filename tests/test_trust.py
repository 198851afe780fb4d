# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Trust: reduced operators and residuals, physics-reinforced training, uncertainty, extrapolation, error
decomposition, cross-validation and adaptive sampling, on the affine thermal block (the problem of the trust demo)."""

import warnings

from mpi4py import MPI

import numpy as np
import pytest
from conftest import raises_on_all_ranks
from dolfinx import fem
from problems import SPACE, Recipe, affine_thermal_block

import fem_ml

SMALL = Recipe(hidden_layers=(16, 16), adam_epochs=300, lbfgs_iterations=20)
GOOD = Recipe(hidden_layers=(16, 16), adam_epochs=600, lbfgs_iterations=50)


@pytest.fixture(scope="module")
def affine():
    return affine_thermal_block(MPI.COMM_WORLD, 16)


@pytest.fixture(scope="module")
def data(affine):
    train = fem_ml.collect_snapshots(affine.solve, SPACE.sample(24, method="lhs", seed=0), affine.V, progress=False)
    test = fem_ml.collect_snapshots(affine.solve, SPACE.sample(8, method="uniform", seed=1), affine.V, progress=False)
    basis = fem_ml.pod(train, inner_product="h1", tol=1e-10)
    return train, test, basis


@pytest.fixture(scope="module")
def operators(affine, data):
    _, _, basis = data
    return fem_ml.AffineReducedOperators(basis, affine.bilinear, affine.linear, bcs=affine.bcs, dual_norm="h1")


@pytest.fixture(scope="module")
def ensemble(data):
    train, _, basis = data
    return GOOD.train(basis, train, n_networks=3)


@pytest.fixture(scope="module")
def check(affine):
    check = fem_ml.ResidualCheck(affine.residual, affine.u, affine.constants, bcs=affine.bcs)
    yield check
    check.destroy()


def test_affine_operators_equal_assembly_and_galerkin_is_accurate(affine, data, operators):
    _, test, basis = data
    points = test.parameters[:3]

    def set_parameters(mu):
        for constant, value in zip(affine.constants, mu, strict=True):
            constant.value = value

    a = sum(k * a_q for k, (_, a_q) in zip(affine.constants, affine.bilinear, strict=True))
    assembled = fem_ml.assemble_reduced_systems(basis, a, affine.linear[0][1], set_parameters, points, bcs=affine.bcs)
    systems = operators.systems(points)
    np.testing.assert_allclose(systems.matrices, assembled.matrices, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(systems.rhs, assembled.rhs, rtol=1e-12, atol=1e-14)
    # With a rich basis, the Galerkin solution is as good as the projection (Cea) and its residual vanishes.
    galerkin = operators.galerkin(points)
    projected = basis.project(test.values[:, :3]).T
    assert np.max(np.abs(galerkin - projected)) <= 1e-3 * np.max(np.abs(projected))
    assert np.max(systems.residual(galerkin)) <= 1e-12


def test_dual_residual_equals_the_assembled_check(data, operators, check):
    """The cheap quadratic form and the full assembly + Riesz solve give the same relative residual."""
    _, test, basis = data
    rng = np.random.default_rng(3)
    c = basis.project(test.values[:, :4]).T * (1 + 0.05 * rng.standard_normal((4, basis.n_modes)))
    cheap = operators.dual_residual(test.parameters[:4], c)
    full = check.residuals(test.parameters[:4], basis.reconstruct(c.T))
    np.testing.assert_allclose(cheap, full, rtol=1e-6)
    assert np.all(full > 1e-4)


def test_residual_of_truth_is_at_solver_tolerance_and_untrained_is_flagged(data, ensemble, check):
    train, test, basis = data
    report = check.report(ensemble, test.parameters, test)
    assert np.max(report.truth) < 1e-10
    assert np.mean(report.projection) < np.mean(report.surrogate)
    np.testing.assert_array_equal(report.flagged, report.surrogate > check.threshold)
    untrained = Recipe(hidden_layers=(8,), adam_epochs=1, lbfgs_iterations=0).train(basis, train)
    bad = check.report(untrained, test.parameters, test)
    assert bad.flagged.all() and bad.summary()["n_flagged"] == len(test)
    assert np.all(bad.surrogate > 10 * report.projection)


def test_residual_agrees_between_serial_and_parallel(affine, data, check):
    """The same field and parameters on COMM_SELF and on COMM_WORLD give the same relative residuals."""
    _, test, _ = data
    serial = affine_thermal_block(MPI.COMM_SELF, 16)
    serial_check = fem_ml.ResidualCheck(serial.residual, serial.u, serial.constants, bcs=serial.bcs)
    # A field with a nontrivial residual: the solution at one point checked at another.
    mu_a, mu_b = test.parameters[0], test.parameters[1]
    parallel_value = check(mu_b, affine.solve(mu_a))
    serial_value = serial_check(mu_b, serial.solve(mu_a))
    l2 = fem_ml.ResidualCheck(affine.residual, affine.u, affine.constants, bcs=affine.bcs, norm="l2")
    l2_serial = fem_ml.ResidualCheck(serial.residual, serial.u, serial.constants, bcs=serial.bcs, norm="l2")
    assert parallel_value > 1e-3
    assert parallel_value == pytest.approx(serial_value, rel=1e-10)
    assert l2(mu_b, affine.solve(mu_a)) == pytest.approx(l2_serial(mu_b, serial.solve(mu_a)), rel=1e-10)
    serial_check.destroy()


def test_residual_check_rejects_bad_fields(comm, affine, check):
    other = fem.functionspace(affine.V.mesh, ("Lagrange", 2))
    raises_on_all_ranks(comm, ValueError, "another function space", check, [0.5] * 4, fem.Function(other))
    values = np.full(affine.V.dofmap.index_map.size_local, np.nan)
    raises_on_all_ranks(comm, ValueError, "NaN", check, [0.5] * 4, values)
    raises_on_all_ranks(comm, ValueError, "shape", check, [0.5] * 4, np.zeros(3))
    raises_on_all_ranks(comm, ValueError, "norm must be", fem_ml.ResidualCheck, affine.residual, affine.u,
                        affine.constants, norm="energy")  # fmt: skip


def test_physics_loss_lowers_the_reduced_residual_at_points_without_data(data, operators):
    train, test, basis = data
    few = train.subset(np.arange(8))
    extra = SPACE.sample(200, method="lhs", seed=5)
    # 60 L-BFGS iterations (in chunks of 10) for the physics term to show.
    recipe = Recipe(hidden_layers=(16, 16), adam_epochs=300, lbfgs_iterations=60)
    data_only = recipe.train(basis, few)
    physics = recipe.train(basis, few, physics=operators.systems(extra))
    systems = operators.systems(test.parameters)
    r_data = systems.residual(data_only.coefficients(test.parameters))
    r_physics = systems.residual(physics.coefficients(test.parameters))
    assert np.mean(r_physics) < 0.5 * np.mean(r_data)
    with pytest.raises(ValueError, match="modes"):
        fem_ml.train_surrogate(basis, few, SPACE, physics=fem_ml.ReducedSystems(
            extra[:2], np.zeros((2, 1, 1)), np.ones((2, 1))), adam_epochs=1, progress=False)  # fmt: skip


def test_error_decomposition_is_exact_in_the_basis_norm(data, ensemble):
    """rel_error^2 = proj_error^2 + network part^2 in the H1 norm the basis is orthonormal in."""
    _, test, basis = data
    report = ensemble.errors(test.parameters, test)
    norms = basis.inner_product.norms(test.values)
    c = basis.project(test.values)
    network_part = report.network_error * np.linalg.norm(c, axis=0) / norms
    np.testing.assert_allclose(report.rel_error_h1**2, report.proj_error_h1**2 + network_part**2, rtol=1e-8)


def test_ensemble_deviation_and_uncertainty_field(comm, data, ensemble):
    _, test, basis = data
    members = ensemble.network.members(test.parameters[:1])[:, 0, :]
    mean, std = ensemble.uncertainty(test.parameters[0], name="T")
    n = basis.modes.shape[0]
    np.testing.assert_allclose(mean.x.array[:n], basis.modes @ members.mean(axis=0), rtol=1e-12, atol=1e-14)
    fields = basis.modes @ members.T
    np.testing.assert_allclose(std.x.array[:n], fields.std(axis=1), rtol=1e-10, atol=1e-14)
    assert std.name == "T_std" and np.all(std.x.array >= 0)
    deviation = ensemble.deviation(test.parameters)
    spread = np.linalg.norm(members - members.mean(axis=0), axis=1)
    assert deviation[0] == pytest.approx(np.sqrt(np.mean(spread**2)) / np.linalg.norm(members.mean(axis=0)))
    single = SMALL.train(basis, data[0])
    raises_on_all_ranks(comm, ValueError, "ensemble", single.deviation, test.parameters)


def test_extrapolation_warns_once_and_strict_mode_raises(comm, ensemble):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ensemble.domain.reset_warnings()
        ensemble([0.5, 0.5, 0.5, 1.5])
        ensemble([0.5, 0.5, 0.5, 2.0])
    messages = [str(w.message) for w in caught if issubclass(w.category, fem_ml.ExtrapolationWarning)]
    assert len(messages) == 1 and "outside the parameter bounds" in messages[0] and "by 0.35" in messages[0]
    ensemble.extrapolation = "raise"
    try:
        raises_on_all_ranks(comm, ValueError, "Strict mode", ensemble, [0.5, 0.5, 0.5, 1.5])
        ensemble([0.5, 0.5, 0.5, 0.5])  # inside: fine
    finally:
        ensemble.extrapolation = "warn"


def test_far_from_training_points_is_extrapolation(comm, data, ensemble):
    """Training points in one corner of the box: the opposite corner is far from all of them."""
    rom = fem_ml.Surrogate(ensemble.space, ensemble.basis, ensemble.network)
    rom.set_training_parameters(np.random.default_rng(0).uniform(0.1, 0.3, (20, 4)))
    rom.extrapolation = "raise"
    rom([0.2, 0.2, 0.2, 0.2])  # among the training points: fine
    raises_on_all_ranks(comm, ValueError, "from the nearest training point", rom, [1.0, 1.0, 1.0, 1.0])


def test_cross_validation_splits_the_error_exactly(data):
    train, _, basis = data
    options = fem_ml.TrainingOptions(hidden_layers=(16,), adam_epochs=100, lbfgs_iterations=5, progress=False)
    cv = fem_ml.cross_validate(basis, train, SPACE, k=3, seed=1, options=options)
    assert sorted(np.bincount(cv.fold)) == [8, 8, 8]
    # Fold 0 again by hand (training is deterministic): the surrogate's field error, computed directly, equals the
    # reported held-out error, and the network error is the held-out coefficient error.
    held = cv.fold == 0
    c = basis.project(train).T
    network, _ = fem_ml.networks.train_network(
        train.parameters[~held], c[~held], SPACE.lower, SPACE.upper, options=options, comm=basis.V.mesh.comm
    )
    predicted = network(train.parameters[held])
    field_error = basis.inner_product.norms(train.values[:, held] - basis.reconstruct(predicted.T))
    norms = basis.inner_product.norms(train.values[:, held])
    np.testing.assert_allclose(cv.error[held], field_error / norms, rtol=1e-8)
    np.testing.assert_allclose(
        cv.network_error[held],
        np.linalg.norm(predicted - c[held], axis=1) / np.linalg.norm(c[held], axis=1),
        rtol=1e-10,
    )
    projection = basis.inner_product.norms(train.values - basis.reconstruct(c.T))
    np.testing.assert_allclose(cv.projection_error, projection / basis.inner_product.norms(train.values), rtol=1e-12)
    assert np.all(cv.error >= cv.projection_error)
    again = fem_ml.cross_validate(basis, train, SPACE, k=3, seed=1, options=options)
    np.testing.assert_array_equal(cv.network_error, again.network_error)
    assert {"cv_error_mean", "cv_network_error_mean", "cv_error_fold_std"} <= set(cv.summary())
    with pytest.raises(ValueError, match="k must be"):
        fem_ml.cross_validate(basis, train, SPACE, k=99)


def test_adaptive_sampling_picks_the_worst_candidates(affine):
    candidates = SPACE.sample(40, method="lhs", seed=9)
    seen = []

    def build(snapshots):
        basis = fem_ml.pod(snapshots, inner_product="h1", tol=1e-10)
        ops = fem_ml.AffineReducedOperators(basis, affine.bilinear, affine.linear, bcs=affine.bcs, dual_norm="h1")
        rom = SMALL.train(basis, snapshots, physics=ops.systems(candidates))
        estimate = fem_ml.residual_estimator(rom, ops)
        seen.append((snapshots.parameters.copy(), estimate(candidates)))
        return rom, estimate

    result = fem_ml.adaptive_sampling(
        affine.solve, affine.V, SPACE, build, initial=SPACE.sample(4, method="lhs", seed=8), candidates=candidates,
        target=1e-12, batch_size=3, max_solves=10, progress=False,
    )  # fmt: skip
    assert result.n_solves == 10 and not result.converged
    assert [r.n_solves for r in result.rounds] == [4, 7, 10]
    # Round 0 added the three candidates with the largest estimates.
    _, estimates = seen[0]
    worst = candidates[np.argsort(estimates)[::-1][:3]]
    np.testing.assert_array_equal(result.rounds[0].added, worst)
    np.testing.assert_array_equal(result.snapshots.parameters[4:7], worst)
    assert result.rounds[-1].added.shape == (0, 4)
    with pytest.raises(ValueError, match="estimator returned"):
        fem_ml.adaptive_sampling(
            affine.solve, affine.V, SPACE, lambda s: (None, lambda p: np.zeros(3)), initial=[[0.5] * 4],
            candidates=candidates, target=1e-3, progress=False,
        )  # fmt: skip


def test_adaptive_sampling_stops_when_the_candidates_run_out(affine):
    candidates = SPACE.sample(3, method="lhs", seed=11)

    def build(snapshots):
        basis = fem_ml.pod(snapshots, inner_product="h1", tol=1e-10)
        rom = SMALL.train(basis, snapshots, n_networks=2)
        return rom, fem_ml.ensemble_estimator(rom)

    result = fem_ml.adaptive_sampling(
        affine.solve, affine.V, SPACE, build, initial=SPACE.sample(4, method="lhs", seed=8), candidates=candidates,
        target=1e-12, batch_size=2, max_solves=20, progress=False,
    )  # fmt: skip
    assert result.n_solves == 7 and not result.converged and len(result.rounds) == 2
    np.testing.assert_array_equal(np.sort(result.snapshots.parameters[4:], axis=0), np.sort(candidates, axis=0))
    assert result.surrogate.deviation(candidates).shape == (3,)  # the last surrogate is usable


def test_extrapolation_policy_and_log_inputs_are_checked(comm, ensemble):
    with pytest.raises(ValueError, match="'warn' or 'raise'"):
        ensemble.extrapolation = "ignore"
    # Log-scaled inputs: a non-positive parameter is an error whatever the policy (its logarithm is undefined).
    raises_on_all_ranks(comm, ValueError, "must be positive", ensemble, [0.5, -0.1, 0.5, 0.5])


def test_options_that_would_be_ignored_are_errors(comm, affine):
    raises_on_all_ranks(comm, ValueError, "norm='l2' uses none", fem_ml.ResidualCheck, affine.residual, affine.u,
                        affine.constants, bcs=affine.bcs, norm="l2", inner_product="h1")  # fmt: skip
    points = {"initial": [[0.5] * 4], "candidates": [[0.4] * 4], "target": 1e-3}
    raises_on_all_ranks(comm, ValueError, "would be ignored", fem_ml.adaptive_sampling, affine.solve, affine.V, SPACE,
                        lambda s: None, adam_epochs=5, **points)  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "n_networks >= 2", fem_ml.adaptive_sampling, affine.solve, affine.V, SPACE,
                        n_networks=1, **points)  # fmt: skip


def test_adaptive_sampling_rejects_unknown_training_options(comm, affine):
    """An unknown training option of the default build is a TypeError, as in train_surrogate and cross_validate."""
    points = {"initial": [[0.5] * 4], "candidates": [[0.4] * 4], "target": 1e-3, "progress": False}
    raises_on_all_ranks(comm, TypeError, "epochs", fem_ml.adaptive_sampling, affine.solve, affine.V, SPACE,
                        epochs=10, **points)  # fmt: skip
    options = fem_ml.TrainingOptions(n_networks=2, progress=False)
    raises_on_all_ranks(comm, TypeError, "epochs", fem_ml.adaptive_sampling, affine.solve, affine.V, SPACE,
                        options=options, epochs=10, **points)  # fmt: skip
