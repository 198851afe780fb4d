# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import dataclasses
import json

from mpi4py import MPI

import numpy as np
import pytest
from conftest import SPACE, by_coordinates, raises_on_all_ranks
from dolfinx import fem, geometry

import fem_ml

TRAIN = {
    "adam_epochs": 400, "lbfgs_iterations": 100, "input_transform": "log", "hidden_layers": (32, 32),
    "progress": False,
}  # fmt: skip
TRUTH = np.array([0.23, 0.71, 0.45, 0.88])


def spread_points(per_quadrant: int = 3, seed: int = 0) -> np.ndarray:
    """Seeded points in all four quadrants of the unit square (so on both ranks' parts under mpirun -n 2)."""
    rng = np.random.default_rng(seed)
    corners = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [0.5, 0.5]])
    return np.vstack([c + 0.05 + 0.4 * rng.random((per_quadrant, 2)) for c in corners])


POINTS = spread_points()


@pytest.fixture(scope="module")
def rom(snapshots):
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=1e-6)
    return fem_ml.train_surrogate(basis, snapshots, SPACE, seed=0, **TRAIN)


@pytest.fixture(scope="module")
def sensors(rom):
    return fem_ml.Sensors(rom, POINTS)


def noisy(values: np.ndarray, level: float, seed: int) -> tuple[np.ndarray, float]:
    """Values plus Gaussian noise of ``level`` times their RMS (the same on every rank); returns (data, sigma)."""
    sigma = level * float(np.sqrt(np.mean(values**2)))
    return values + sigma * np.random.default_rng(seed).standard_normal(values.shape), sigma


def same_on_all_ranks(comm, array) -> bool:
    gathered = comm.allgather(np.asarray(array))
    return all(np.array_equal(g, gathered[0]) for g in gathered)


def point_values(f: fem.Function, points: np.ndarray) -> np.ndarray:
    """DOLFINx's usual point evaluation (all local cells, ghosts included); the first rank that finds a point wins."""
    msh = f.function_space.mesh
    xyz = np.zeros((len(points), 3))
    xyz[:, :2] = points
    tree = geometry.bb_tree(msh, msh.topology.dim)
    cells = geometry.compute_colliding_cells(msh, geometry.compute_collisions_points(tree, xyz), xyz)
    found = [i for i in range(len(points)) if len(cells.links(i))]
    local = f.eval(xyz[found], np.array([cells.links(i)[0] for i in found], dtype=np.int32)) if found else []
    values = np.full(len(points), np.nan)
    for rank_found, rank_values in reversed(msh.comm.allgather((found, np.ravel(local)))):
        values[rank_found] = rank_values
    return values


def test_sensor_matrix_is_the_point_evaluation_of_the_modes(rom, sensors, comm, serial_problem):
    B = sensors.matrix
    assert B.shape == (len(POINTS), rom.n_modes) and sensors.data_shape == (len(POINTS),)
    assert same_on_all_ranks(comm, B) and same_on_all_ranks(comm, sensors.owners)
    if comm.size > 1:
        assert set(sensors.owners.tolist()) == set(range(comm.size)), "the sensors should lie on every rank"
    for k in range(rom.n_modes):
        np.testing.assert_allclose(B[:, k], point_values(rom.basis.mode(k), POINTS), rtol=1e-12, atol=1e-14)
    # The same modes on a one-rank copy of the mesh (matched by dof coordinates) give the same matrix.
    Vs, _ = serial_problem
    n = Vs.dofmap.index_map.size_local
    xs = Vs.tabulate_dof_coordinates()[:n, :2]
    order = np.lexsort((np.round(xs[:, 1], 10), np.round(xs[:, 0], 10)))
    mode = fem.Function(Vs)
    for k in range(rom.n_modes):
        mode.x.array[order] = by_coordinates(rom.V, rom.basis.modes[:, k])[:, 0]
        np.testing.assert_allclose(B[:, k], point_values(mode, POINTS), rtol=1e-11, atol=1e-13)


def test_sensors_evaluate_a_function_by_its_own_point_evaluation(rom, sensors, comm, problem):
    u = rom(TRUTH)
    np.testing.assert_allclose(sensors.evaluate(u), sensors.matrix @ rom.coefficients(TRUTH)[0], rtol=1e-12)
    _, solve = problem
    truth = solve(TRUTH)
    values = sensors.evaluate(truth)
    assert same_on_all_ranks(comm, values)
    np.testing.assert_allclose(values, point_values(truth, POINTS), rtol=1e-12)


def test_identify_recovers_the_parameters_of_noise_free_surrogate_data(rom, sensors, comm):
    data = sensors.matrix @ rom.coefficients(TRUTH)[0]
    observations = sensors.observe(data, noise_std=1e-3 * np.sqrt(np.mean(data**2)))
    result = fem_ml.identify(rom, observations, n_starts=4, seed=1)
    np.testing.assert_allclose(result.estimate, TRUTH, rtol=1e-6)
    assert result.misfit < 1e-6 and result.objective == pytest.approx(result.misfit)
    assert list(result.estimate_dict) == list(SPACE.names) and result.estimate_dict["mu1"] == result.estimate[1]
    assert result.starts.shape == result.start_estimates.shape == (4, 4) and result.n_iterations.shape == (4,)
    assert result.n_surrogate_calls > int(result.n_iterations.sum()) and result.time_s > 0
    np.testing.assert_allclose(result.predicted, data, rtol=1e-6)
    for value in (result.estimate, result.covariance, result.start_objectives, [result.n_surrogate_calls]):
        assert same_on_all_ranks(comm, value)


def test_identify_from_noisy_finite_element_data(rom, sensors, problem):
    _, solve = problem
    data, sigma = noisy(sensors.evaluate(solve(TRUTH)), 0.01, seed=2)
    result = fem_ml.identify(rom, sensors.observe(data, noise_std=sigma), seed=3, verify=solve)
    assert np.max(np.abs(result.estimate - TRUTH) / TRUTH) < 0.1
    assert result.verification is not None and result.verification.surrogate_misfit == result.misfit
    # The verification solve observes the FE field at the sensors, independently of the basis.
    manual = 0.5 * np.sum(((sensors.evaluate(solve(result.estimate)) - data) / sigma) ** 2)
    assert result.verification.misfit == pytest.approx(manual, rel=1e-10)


def test_bounds_are_respected(rom, sensors, problem):
    _, solve = problem
    outside = np.array([0.05, 0.5, 0.5, 0.5])  # below the lower bound 0.1: the data push the estimate out
    data, sigma = noisy(sensors.evaluate(solve(outside)), 0.001, seed=4)
    observations = sensors.observe(data, noise_std=sigma)
    result = fem_ml.identify(rom, observations, n_starts=3)
    for points in (result.estimate[None], result.start_estimates, result.starts):
        assert np.all(points >= SPACE.lower) and np.all(points <= SPACE.upper)
    assert result.estimate[0] < 0.102
    narrow = {"mu1": (0.6, 0.9), "mu3": (0.1, 0.3)}
    result = fem_ml.identify(rom, observations, n_starts=2, bounds=narrow)
    np.testing.assert_array_equal(result.lower, [0.1, 0.6, 0.1, 0.1])
    np.testing.assert_array_equal(result.upper, [1.0, 0.9, 1.0, 0.3])
    assert np.all(result.estimate >= result.lower) and np.all(result.estimate <= result.upper)
    assert result.estimate[1] == pytest.approx(0.6, abs=2e-3) and result.estimate[3] == pytest.approx(0.3, abs=2e-3)


PRIOR = fem_ml.Gaussian(mean={"mu0": 0.3, "mu1": 0.6, "mu2": 0.5, "mu3": 0.8}, std=0.2)


@pytest.mark.parametrize("prior", [None, PRIOR])
def test_covariance_is_spd_and_matches_a_finite_difference_gauss_newton(rom, sensors, prior):
    data, sigma = noisy(sensors.matrix @ rom.coefficients(TRUTH)[0], 0.01, seed=5)
    result = fem_ml.identify(rom, sensors.observe(data, noise_std=sigma), n_starts=2, prior=prior)
    cov = result.covariance
    np.testing.assert_array_equal(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    np.testing.assert_allclose(result.std, np.sqrt(np.diag(cov)))
    mu = result.estimate
    J = np.empty((len(POINTS), 4))
    for i in range(4):
        h = 1e-5 * mu[i]
        plus, minus = mu.copy(), mu.copy()
        plus[i] += h
        minus[i] -= h
        J[:, i] = sensors.matrix @ (rom.coefficients(plus)[0] - rom.coefficients(minus)[0]) / (2 * h)
    hessian = J.T @ J / sigma**2 + (0 if prior is None else np.eye(4) / 0.2**2)
    np.testing.assert_allclose(cov, np.linalg.inv(hessian), rtol=1e-5, atol=1e-12)


def test_field_observations(rom, problem, comm):
    _, solve = problem
    c = rom.coefficients([0.4, 0.5, 0.6, 0.7])[0]
    u = solve(TRUTH)
    n = rom.basis.modes.shape[0]
    difference = rom.basis.reconstruct(c) - u.x.array[:n]
    sigma = 1e-3
    values = fem_ml.observe_field(rom, u, noise_std=sigma)
    assert values.n_observations == rom.n_modes
    direct = 0.5 * comm.allreduce(float(difference @ difference), op=MPI.SUM) / sigma**2
    assert values.misfit(c) == pytest.approx(direct, rel=1e-9)
    projection = fem_ml.observe_field(rom, u, noise_std=sigma, norm="projection")
    direct_m = 0.5 * (rom.basis.inner_product.norms(difference)[0] / sigma) ** 2
    assert projection.misfit(c) == pytest.approx(direct_m, rel=1e-9)
    # The misfit of a full field, computed from its own dof values, equals that of its coefficients when it is
    # in the reduced space.
    assert values.field_misfit(rom.basis.function(c)) == pytest.approx(direct, rel=1e-9)
    assert projection.field_misfit(rom.basis.function(c)) == pytest.approx(direct_m, rel=1e-9)
    for observations in (values, projection):
        result = fem_ml.identify(rom, observations, n_starts=2)
        assert np.max(np.abs(result.estimate - TRUTH) / TRUTH) < 0.1


def test_bad_input_raises_on_all_ranks(rom, sensors, problem, comm):
    V, _ = problem
    data = sensors.matrix @ rom.coefficients(TRUTH)[0]
    good = sensors.observe(data, noise_std=0.01)
    raises_on_all_ranks(comm, ValueError, "outside the mesh", fem_ml.Sensors, rom, [[0.5, 0.5], [1.5, 0.5]])
    raises_on_all_ranks(comm, ValueError, "shape", fem_ml.Sensors, rom, np.zeros((3, 4)))
    raises_on_all_ranks(comm, ValueError, "NaN", fem_ml.Sensors, rom, [[np.nan, 0.5]])
    raises_on_all_ranks(comm, ValueError, "NaN", sensors.observe, np.where(np.arange(12) == 3, np.nan, data),
                        noise_std=0.01)  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "shape", sensors.observe, data[:-1], noise_std=0.01)
    raises_on_all_ranks(comm, ValueError, "positive", sensors.observe, data, noise_std=-0.01)
    raises_on_all_ranks(comm, ValueError, "noise_std must be", sensors.observe, data, noise_std=np.ones(3))
    if comm.size > 1:
        raises_on_all_ranks(comm, ValueError, "differ between ranks", sensors.observe, data + comm.rank,
                            noise_std=0.01)  # fmt: skip
    wrong = fem.Function(fem.functionspace(V.mesh, ("Lagrange", 2)))
    raises_on_all_ranks(comm, ValueError, "not on the surrogate's function space", fem_ml.observe_field, rom, wrong,
                        noise_std=0.01)  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "Cannot evaluate", sensors.evaluate, wrong)
    raises_on_all_ranks(comm, ValueError, "positive", fem_ml.observe_field, rom, rom(TRUTH), noise_std=0.0)
    raises_on_all_ranks(comm, ValueError, "No starting point", fem_ml.identify, rom, good, n_starts=0)
    raises_on_all_ranks(comm, ValueError, "shape", fem_ml.identify, rom, good,
                        prior=fem_ml.Gaussian(mean=[0.5] * 3, std=0.1))  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "positive", fem_ml.identify, rom, good,
                        prior=fem_ml.Gaussian(mean=[0.5] * 4, std=-1.0))  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "outside its bounds", fem_ml.identify, rom, good, initial=[2.0] * 4)
    raises_on_all_ranks(comm, ValueError, "outside the surrogate", fem_ml.identify, rom, good,
                        bounds={"mu0": (0.05, 0.5)})  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "unknown", fem_ml.identify, rom, good, bounds={"nu": (0.2, 0.5)})
    other = fem_ml.Surrogate(rom.space, dataclasses.replace(rom.basis), rom.network)
    raises_on_all_ranks(comm, ValueError, "another surrogate", fem_ml.identify, other, good)


def test_same_estimate_on_one_rank_and_on_all(rom, sensors, comm, tmp_dir):
    """The surrogate saved here and loaded on COMM_SELF: sensors on either rank give the same estimate there."""
    path = fem_ml.save(rom, tmp_dir / "inverse.femml")
    serial_rom = fem_ml.load(path, comm=MPI.COMM_SELF)
    serial_sensors = fem_ml.Sensors(serial_rom, POINTS)
    np.testing.assert_allclose(serial_sensors.matrix, sensors.matrix, rtol=1e-11, atol=1e-13)
    data, sigma = noisy(sensors.matrix @ rom.coefficients(TRUTH)[0], 0.01, seed=6)
    distributed = fem_ml.identify(rom, sensors.observe(data, noise_std=sigma), n_starts=4, seed=7)
    serial = fem_ml.identify(serial_rom, serial_sensors.observe(data, noise_std=sigma), n_starts=4, seed=7)
    np.testing.assert_allclose(serial.estimate, distributed.estimate, rtol=1e-8)
    np.testing.assert_allclose(serial.covariance, distributed.covariance, rtol=1e-6)
    serial_rom.destroy()


def test_mcmc_acceptance_and_reproducibility(rom, sensors, comm):
    data, sigma = noisy(sensors.matrix @ rom.coefficients(TRUTH)[0], 0.01, seed=8)
    observations = sensors.observe(data, noise_std=sigma)
    result = fem_ml.identify(rom, observations, n_starts=2)
    chain = fem_ml.sample_posterior(rom, observations, result, n_samples=3000, burn_in=500, seed=3)
    assert chain.samples.shape == (3000, 4) and chain.effective_sample_size.shape == (4,)
    assert 0.15 < chain.acceptance_rate < 0.6
    assert np.all(chain.effective_sample_size > 50) and np.all(chain.effective_sample_size <= 3000 * 1.5)
    assert np.all(chain.samples >= SPACE.lower) and np.all(chain.samples <= SPACE.upper)
    # Nearly linear here: the chain's spread matches the Laplace standard deviations.
    np.testing.assert_allclose(chain.std, result.std, rtol=0.3)
    np.testing.assert_allclose(chain.mean, result.estimate, atol=3 * float(result.std.max()))
    assert same_on_all_ranks(comm, chain.samples)
    again = fem_ml.sample_posterior(rom, observations, result, n_samples=3000, burn_in=500, seed=3)
    np.testing.assert_array_equal(again.samples, chain.samples)
    other = fem_ml.sample_posterior(rom, observations, result, n_samples=3000, burn_in=500, seed=4)
    assert not np.array_equal(other.samples, chain.samples)


def test_effective_sample_size():
    rng = np.random.default_rng(0)
    n = 20000
    iid = rng.standard_normal(n)
    assert fem_ml.effective_sample_size(iid)[0] == pytest.approx(n, rel=0.15)
    phi = 0.9  # AR(1): integrated autocorrelation time (1 + phi) / (1 - phi) = 19
    ar = np.empty(n)
    ar[0] = 0.0
    for i in range(1, n):
        ar[i] = phi * ar[i - 1] + rng.standard_normal()
    assert fem_ml.effective_sample_size(ar)[0] == pytest.approx(n / 19, rel=0.3)
    np.testing.assert_array_equal(fem_ml.effective_sample_size(np.ones((10, 2))), [1.0, 1.0])


def test_inverse_demo_small(comm, tmp_dir):
    from inverse_thermal_block import main

    summary = main(
        comm, n_cells=12, n_train=24, n_test=4, n_trials=2, n_sensors=8, n_starts=2, mcmc_samples=500,
        n_networks=1, hidden_layers=(16, 16), adam_epochs=100, lbfgs_iterations=10, out_dir=tmp_dir, n_output=2,
        progress=False,
    )  # fmt: skip
    written = json.loads((tmp_dir / "summary.json").read_text())
    keys = {"n_trials", "n_success", "rel_param_error_median", "rel_param_error_max", "t_identify_median_s",
            "fe_over_surrogate_time_ratio"}  # fmt: skip
    assert keys <= set(written) and written == json.loads(json.dumps(summary))
    assert written["n_trials"] == len(written["trials"]) == 2 and 0 <= written["n_success"] <= 2
    assert written["fe_over_surrogate_time_ratio"] > 0 and written["rel_param_error_max"] >= 0
    (same,) = written["fe_same_starts_identification"]  # full solves from the surrogate's own 2 starts
    assert same["n_starts"] == 2 and same["ratio"] == written["fe_over_surrogate_same_starts_time_ratio"] > 0
    assert sum(written["sensors_per_rank"]) == 8 and written["estimate_one_rank_vs_n_ranks_max_rel_diff"] < 1e-8
    for name in ("fields.xdmf", "fields.h5", "fields.xdmf.json", "surrogate.femml"):
        assert (tmp_dir / name).exists()
    for name in ("estimates.png", "posterior.png"):
        assert (tmp_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.paraview
def test_inverse_fields_open_in_paraview(comm, tmp_dir):
    """The observed field, the prediction at the estimate and their difference open in ParaView."""
    from conftest import paraview_arrays
    from inverse_thermal_block import main

    main(
        comm, n_cells=12, n_train=24, n_test=4, n_trials=2, n_sensors=8, n_starts=2, mcmc_samples=200,
        n_networks=1, hidden_layers=(16, 16), adam_epochs=100, lbfgs_iterations=10, out_dir=tmp_dir, n_output=2,
        n_fe_trials=0, progress=False,
    )  # fmt: skip
    result = paraview_arrays(comm, tmp_dir / "fields.xdmf")
    assert sorted(result["arrays"]) == ["difference", "observed", "prediction"] and len(result["times"]) == 2
    for (o_lo, o_hi), (d_lo, d_hi) in zip(result["arrays"]["observed"], result["arrays"]["difference"], strict=True):
        assert o_lo >= -1e-12 and o_hi > 0  # a temperature with f = 1 > 0 and u = 0 on the boundary
        assert max(abs(d_lo), abs(d_hi)) < o_hi
