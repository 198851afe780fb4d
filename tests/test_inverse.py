# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import dataclasses
import itertools

from mpi4py import MPI

import numpy as np
import pytest
from conftest import SPACE, by_coordinates, raises_on_all_ranks
from dolfinx import fem, geometry

import fem_ml
from fem_ml._stacked import StackedMLP
from fem_ml.inverse import estimation

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
def plain_rom(snapshots):
    """The same surrogate without the norm model (the path of physics-trained and older surrogates)."""
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=1e-6)
    return fem_ml.train_surrogate(basis, snapshots, SPACE, seed=0, output_norm="none", **TRAIN)


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


@pytest.mark.parametrize("activation", ["gelu", "relu", "silu", "softplus", "tanh"])
def test_stacked_jacobian_and_pullback_match_finite_differences(activation):
    """The NumPy derivatives of the ensemble's forward pass, against central differences, for every activation."""
    rng = np.random.default_rng(2)
    widths = (3, 9, 7, 5)
    layers = list(itertools.pairwise(widths))
    members = [[(rng.standard_normal((b, a)), rng.standard_normal(b)) for a, b in layers] for _ in range(2)]
    network = StackedMLP.from_members(members, activation)
    x = rng.standard_normal((4, 3))
    outputs, jacobian = network.jacobian(x)
    np.testing.assert_allclose(outputs, network(x), rtol=1e-14, atol=1e-14)
    h = 1e-6
    steps = h * np.eye(3)
    central = np.stack([(network(x + steps[j]) - network(x - steps[j])) / (2 * h) for j in range(3)], axis=-1)
    np.testing.assert_allclose(jacobian, central, rtol=1e-6, atol=1e-7)
    hidden, pullback = network.hidden_pullback(x)
    np.testing.assert_allclose(hidden, network.hidden(x), rtol=1e-14, atol=1e-14)
    cotangent = rng.standard_normal(hidden.shape)
    _, tangent = network.hidden_jacobian(x)
    np.testing.assert_allclose(pullback(cotangent), np.einsum("mnjw,mnw->mnj", tangent, cotangent), rtol=1e-12)


@pytest.mark.parametrize("norm", [True, False], ids=["norm-model", "no-norm-model"])
def test_objective_gradient_is_exact(request, norm):
    """identify's objective in z and its NumPy gradient: central differences and torch's automatic differentiation."""
    import torch

    rom = request.getfixturevalue("rom" if norm else "plain_rom")
    sensors = fem_ml.Sensors(rom, POINTS)

    data, sigma = noisy(sensors.matrix @ rom.coefficients(TRUTH)[0], 0.01, seed=9)
    observations = sensors.observe(data, noise_std=sigma)
    prior = PRIOR.arrays(rom.space)
    posterior = estimation._Posterior(rom, observations, rom.space, prior)
    z = np.array([0.3, -1.2, 0.8, 2.0])
    value, gradient = posterior.objective_z(z)
    assert value == pytest.approx(posterior.objective(posterior.to_parameters(z)), rel=1e-12)
    h = 1e-6
    central = [(posterior.objective_z(z + h * e)[0] - posterior.objective_z(z - h * e)[0]) / (2 * h) for e in np.eye(4)]
    np.testing.assert_allclose(gradient, central, rtol=1e-6, atol=1e-8)
    # The coefficients' Jacobian of the Laplace covariance (the unfolded path, with the norm model's factor).
    mu0, step = posterior.to_parameters(z), 1e-7
    columns = [(posterior.coefficients((mu0 + step * e)[None]) - posterior.coefficients((mu0 - step * e)[None]))[0]
               / (2 * step) for e in np.eye(4)]  # fmt: skip
    np.testing.assert_allclose(posterior.coefficient_jacobian(mu0), np.stack(columns, axis=1), rtol=1e-5, atol=1e-7)
    # The same objective written in torch on the network's own torch models (log inputs, geometric box map).
    network = rom.network
    zt = torch.tensor(z, requires_grad=True)
    lo, hi = np.log(rom.space.lower), np.log(rom.space.upper)
    mu = torch.exp(torch.as_tensor(lo) + torch.as_tensor(hi - lo) * torch.sigmoid(zt))
    x = (torch.log(mu) - torch.as_tensor(network.input_scaler.shift)) / torch.as_tensor(network.input_scaler.scale)
    outputs = torch.stack([m.double()(x[None])[0] for m in network.models]).mean(dim=0)
    c = outputs * torch.as_tensor(network.output_scaler.scale) + torch.as_tensor(network.output_scaler.shift)
    assert (network.norm_model is not None) == norm  # the default output_norm has one: the factor's gradient too
    if norm:
        c = c * torch.exp(network.norm_model.intercept + x @ torch.as_tensor(network.norm_model.slopes))
    weighted = (torch.as_tensor(observations.matrix) @ c - torch.as_tensor(observations.data)) / torch.as_tensor(
        observations.noise_std
    )
    prior_term = (mu - torch.as_tensor(prior[0])) / torch.as_tensor(prior[1])
    objective = 0.5 * (weighted @ weighted) + 0.5 * (prior_term @ prior_term)
    objective.backward()
    assert value == pytest.approx(float(objective.detach()), rel=1e-12)
    np.testing.assert_allclose(gradient, zt.grad.numpy(), rtol=1e-10, atol=1e-12)


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


def test_inputs_that_differ_between_ranks_raise_on_all_ranks(rom, sensors, comm):
    """Each collective entry point refuses per-rank-divergent input on every rank (serially: the calls succeed)."""
    data = sensors.matrix @ rom.coefficients(TRUTH)[0]
    good = sensors.observe(data, noise_std=0.01)
    result = fem_ml.identify(rom, good, n_starts=1)
    shift = 0.01 * comm.rank  # zero on rank 0
    calls = [
        (fem_ml.Sensors, (rom, POINTS + shift), {}),
        (sensors.observe, (data,), {"noise_std": 0.01 + shift}),
        (fem_ml.observe_field, (rom, rom(TRUTH)), {"noise_std": 0.01 + shift}),
        (fem_ml.identify, (rom, good), {"n_starts": 1, "seed": comm.rank}),
        (fem_ml.identify, (rom, good), {"n_starts": 0, "initial": TRUTH + shift}),
        (fem_ml.identify, (rom, dataclasses.replace(good, data=data + shift)), {"n_starts": 1}),
        (fem_ml.identify, (rom, good), {"n_starts": 1, "prior": fem_ml.Gaussian(mean=TRUTH, std=0.1 + shift)}),
        (fem_ml.sample_posterior, (rom, good, result), {"n_samples": 10, "burn_in": 0, "seed": comm.rank}),
        (fem_ml.sample_posterior, (rom, good, dataclasses.replace(result, estimate=result.estimate * (1 - shift))),
         {"n_samples": 10, "burn_in": 0}),
    ]  # fmt: skip
    for func, args, kwargs in calls:
        if comm.size > 1:
            raises_on_all_ranks(comm, ValueError, "differ between ranks", func, *args, **kwargs)
        else:
            func(*args, **kwargs)


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
