# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Reduced dynamics: derivatives, operator inference, simulation, the blow-up guard, save/load, CLI, demo smoke."""

import json
import os
import subprocess
import sys
from pathlib import Path

from mpi4py import MPI

import h5py
import numpy as np
import pytest
import ufl
from conftest import ROOT, clean_env, mpirun, on_root, raises_on_all_ranks
from dolfinx import fem, mesh
from dolfinx.fem.petsc import LinearProblem
from scipy import integrate

import fem_ml
import fem_ml.dynamics as dyn


def known_model(rng, r=4, *, inputs=False, parametric=False):
    """A stable random model dq/dt = c + A q + H q⊗q (+ B u), A affine in [1, mu] if parametric."""
    A0 = -np.diag(np.arange(1.0, r + 1)) + 0.1 * rng.standard_normal((r, r))
    entries = {
        "c": 0.1 * rng.standard_normal((1, r, 1)),
        "A": np.stack([A0, 0.3 * rng.standard_normal((r, r))]) if parametric else A0[None],
        "H": 0.05 * rng.standard_normal((1, r, r * (r + 1) // 2)),
    }
    functions = {"c": ["1"], "A": ["1", "mu"] if parametric else ["1"], "H": ["1"]}
    if inputs:
        entries["B"] = rng.standard_normal((1, r, 1))
        functions["B"] = ["1"]
    names = ["mu"] if parametric else []
    return dyn.ReducedDynamics(entries, functions, parameter_names=names, state_bound=1e3)


def trajectories_of(model, rng, mus, t, *, inputs=None, exact=True):
    """Trajectories of ``model`` from random initial states; with ``exact``, the model's own derivatives."""
    states, derivatives, histories = [], [], []
    for mu in mus:
        u = None if inputs is None else (lambda s: np.array([np.sin(3 * s)]))
        sim = model.simulate(mu, rng.standard_normal(model.n_modes), t, u, rtol=1e-12, atol=1e-14)
        assert sim.completed
        rhs, _ = model.system(mu, u)
        states.append(sim.coefficients)
        derivatives.append(np.column_stack([rhs(s, q) for s, q in zip(t, sim.coefficients.T, strict=True)]))
        if inputs is not None:
            histories.append(np.sin(3 * t)[None, :])
    params = None if mus[0] is None else np.array(mus, dtype=float).reshape(len(mus), -1)
    data = dyn.Trajectories.from_arrays(
        [t] * len(mus), states, parameters=params, inputs=histories or None,
        parameter_names=model.parameter_names,
    )  # fmt: skip
    return data, (derivatives if exact else None)


# --- finite differences --------------------------------------------------------------------------------------------


def test_time_derivative_exact_for_polynomials_on_nonuniform_steps():
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 1, 12))
    q = np.vstack([t**4 - 2 * t**2, 3 * t**3 + t])
    dq = dyn.time_derivative(t, q, order=4)
    np.testing.assert_allclose(dq, np.vstack([4 * t**3 - 4 * t, 9 * t**2 + 1]), atol=1e-9)
    d2 = dyn.time_derivative(t, q, order=4, derivative=2)
    np.testing.assert_allclose(d2, np.vstack([12 * t**2 - 4, 18 * t]), atol=1e-6)


def test_time_derivative_converges_at_fourth_order():
    errors = []
    for n in (21, 41, 81):
        t = np.linspace(0, 1, n) ** 1.3  # non-uniform
        errors.append(np.max(np.abs(dyn.time_derivative(t, np.sin(4 * t)) - 4 * np.cos(4 * t))))
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 3.5), rates


def test_time_derivative_refuses_bad_times():
    with pytest.raises(ValueError, match="strictly increasing"):
        dyn.time_derivative([0.0, 0.1, 0.1, 0.2, 0.3, 0.4], np.zeros(6))
    with pytest.raises(ValueError, match="too few"):
        dyn.time_derivative([0.0, 0.1, 0.2], np.zeros(3))
    with pytest.raises(ValueError, match="order"):
        dyn.time_derivative(np.arange(10.0), np.zeros(10), order=2)


# --- fit -----------------------------------------------------------------------------------------------------------


def test_fit_recovers_a_known_quadratic_system_exactly():
    rng = np.random.default_rng(1)
    truth = known_model(rng)
    data, exact = trajectories_of(truth, rng, [None] * 3, np.linspace(0, 2, 101))
    fit = dyn.fit_operator_inference(data, regularization=0.0, derivatives=exact)
    for k, E in truth.entries.items():
        np.testing.assert_allclose(fit.entries[k], E, atol=1e-9, err_msg=k)
    # From finite differences of its own trajectories (order 6): the operators to the derivative error.
    fd = dyn.fit_operator_inference(data, regularization=0.0, derivative_order=6)
    for k, E in truth.entries.items():
        np.testing.assert_allclose(fd.entries[k], E, atol=1e-4, err_msg=k)


def test_fit_recovers_inputs_and_affine_parameter_dependence():
    rng = np.random.default_rng(2)
    truth = known_model(rng, inputs=True, parametric=True)
    data, exact = trajectories_of(truth, rng, [0.5, 1.0, 2.0], np.linspace(0, 2, 81), inputs=True)
    fit = dyn.fit_operator_inference(
        data, terms="cAHB", parameter_functions={"A": ["1", "mu"]}, regularization=0.0, derivatives=exact
    )
    for k, E in truth.entries.items():
        np.testing.assert_allclose(fit.entries[k], E, atol=1e-8, err_msg=k)
    # At a parameter between the training ones, the simulated trajectory matches the true model's.
    t = np.linspace(0, 3, 61)
    q0 = np.ones(truth.n_modes)
    u = lambda s: np.array([np.sin(3 * s)])  # noqa: E731
    np.testing.assert_allclose(
        fit.simulate([1.3], q0, t, u, rtol=1e-10, atol=1e-12).coefficients,
        truth.simulate([1.3], q0, t, u, rtol=1e-10, atol=1e-12).coefficients,
        atol=1e-6,
    )


@pytest.mark.parametrize("lam", [(0.0, 0.0), (1e-8, 1e-6), (1e-3, 1e-1), (10.0, 100.0)])
def test_accurate_solve_is_the_regularized_least_squares_solution(lam):
    """The equilibrated SVD solve satisfies the normal equations (G + diag(penalty)) X = Z of the same problem."""
    from fem_ml.dynamics.opinf import _Problem

    rng = np.random.default_rng(3)
    model = known_model(rng, r=4)
    data, derivatives = trajectories_of(model, rng, [None, None], np.linspace(0.0, 2.0, 41))
    problem = _Problem(data, "cAH", {"c": ["1"], "A": ["1"], "H": ["1"]}, derivatives)
    X = problem.solve_accurately(lam)
    normal = problem.G + np.diag(problem.penalty(lam))
    residual = normal @ X - problem.Z
    assert np.linalg.norm(residual) <= 1e-10 * np.linalg.norm(normal) * np.linalg.norm(X)

    # The minimizer: no worse than the normal-equation solve (which squares the condition number) ...
    def objective(Y):
        return np.sum((problem.D @ Y - problem.Y) ** 2) + np.sum(problem.penalty(lam)[:, None] * Y**2)

    fast = problem.solve(lam)
    assert objective(X) <= objective(fast) * (1 + 1e-12)
    if lam[0] >= 1e-3:  # ... and equal to it where that is well conditioned
        np.testing.assert_allclose(X, fast, rtol=0, atol=1e-10 * np.abs(X).max())


def test_regularization_selection_picks_the_best_stable_candidate():
    rng = np.random.default_rng(3)
    truth = known_model(rng)
    data, _ = trajectories_of(truth, rng, [None] * 2, np.linspace(0, 1, 41))
    noisy = dyn.Trajectories.from_arrays(
        data.times, [q + 1e-3 * rng.standard_normal(q.shape) for q in data.states]
    )  # noise makes small regularizations overfit
    fit = dyn.fit_operator_inference(noisy)
    report = fit.fit_report
    finite = [e for _, _, e in report["candidates"] if e is not None]
    assert min(finite) <= report["training_error"] <= min(finite) * (1 + 1e-3)
    pairs = [(a, b) for a, b, _ in report["candidates"]]
    # The common grid, then at most 6 new candidates in each of two refinement stages; none tried twice.
    assert 13 + 6 <= len(pairs) <= 13 + 2 * 6 and len(set(pairs)) == len(pairs)
    assert report["n_stable_candidates"] == len(finite)
    assert report["projection_error"] is None and report["selection_bound"] is None
    assert report["regularization"][0] > 0
    # The selected model's training error is a relative error of the re-simulated trajectories.
    sim = fit.simulate(None, noisy.states[0][:, 0], noisy.times[0])
    err = np.linalg.norm(sim.coefficients - noisy.states[0]) / np.linalg.norm(noisy.states[0])
    assert err < 0.05


def test_discrepancy_rule_takes_the_most_regularized_candidate_within_the_bound():
    rng = np.random.default_rng(3)
    truth = known_model(rng)
    data, _ = trajectories_of(truth, rng, [None] * 2, np.linspace(0, 1, 41))
    states = [q + 1e-4 * rng.standard_normal(q.shape) for q in data.states]
    projection = np.array([2e-3, 4e-3])  # as if the basis lost this much of each trajectory
    noisy = dyn.Trajectories.from_arrays(data.times, states, projection_errors=projection)
    report = dyn.fit_operator_inference(noisy, discrepancy=0.5).fit_report
    bound = 0.5 * np.mean(projection)
    assert report["projection_error"] == pytest.approx(np.mean(projection)) and report["selection_bound"] == bound
    within = [(a, b) for a, b, e in report["candidates"] if e is not None and e <= bound]
    assert within and report["training_error"] <= bound
    chosen = tuple(report["regularization"])
    assert chosen in within and all(a * b <= chosen[0] * chosen[1] for a, b in within)  # the same key as the fit
    # More regularized than the smallest-error choice, which ignores the bound.
    smallest = dyn.fit_operator_inference(noisy, discrepancy=None).fit_report
    assert smallest["selection_bound"] is None
    assert smallest["training_error"] <= report["training_error"]
    assert np.prod(smallest["regularization"]) < np.prod(chosen)
    assert report["selection_rtol"] <= 0.01 * bound
    # A bound no candidate meets: the smallest error wins, as without one.
    unmet = dyn.Trajectories.from_arrays(data.times, states, projection_errors=[1e-12, 1e-12])
    fallback = dyn.fit_operator_inference(unmet, discrepancy=0.1).fit_report
    finite = [e for _, _, e in fallback["candidates"] if e is not None]
    assert fallback["selection_bound"] == pytest.approx(1e-13) and min(finite) > 1e-13
    assert min(finite) <= fallback["training_error"] <= min(finite) * (1 + 1e-3)
    for bad in (0.0, -1.0, np.inf, True, "0.1"):
        with pytest.raises(ValueError, match="discrepancy"):
            dyn.fit_operator_inference(noisy, discrepancy=bad)
    with pytest.raises(ValueError, match="regularization='auto'"):
        dyn.fit_operator_inference(noisy, discrepancy=0.1, regularization=1e-3)
    with pytest.raises(ValueError, match="projection errors"):
        dyn.fit_operator_inference(dyn.Trajectories.from_arrays(data.times, states), discrepancy=0.1)
    with pytest.raises(ValueError, match="projection_errors"):
        dyn.Trajectories.from_arrays(data.times, states, projection_errors=[1e-3, -1.0])
    with pytest.raises(ValueError, match="projection_errors"):
        dyn.Trajectories(noisy.times, noisy.states, noisy.parameters, projection_errors=[1e-3, 1e-3])  # not an array


def test_sparse_fit_prints_short_equations():
    r = 3
    A = -np.eye(r)
    H = np.zeros((r, r * (r + 1) // 2))
    H[0, 1] = 0.5  # dq0/dt = -q0 + 0.5 q0 q1
    truth = dyn.ReducedDynamics({"A": A[None], "H": H[None]}, {"A": ["1"], "H": ["1"]}, state_bound=1e3)
    rng = np.random.default_rng(4)
    data, exact = trajectories_of(truth, rng, [None] * 3, np.linspace(0, 1, 51))
    noisy = [d + 1e-6 * rng.standard_normal(d.shape) for d in exact]
    fit = dyn.fit_operator_inference(data, terms="AH", regularization=1e-8, derivatives=noisy, sparse_threshold=1e-3)
    assert fit.fit_report["n_nonzero"] == 4
    lines = fit.equations(precision=3).splitlines()
    assert lines[0] == "dq0/dt = -1 q0 + 0.5 q0 q1"
    assert lines[1] == "dq1/dt = -1 q1"


# --- simulate and guard --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["bdf", "scipy-bdf"])
def test_simulate_matches_a_scipy_reference(method):
    rng = np.random.default_rng(5)
    model = known_model(rng, parametric=True)
    q0, t = rng.standard_normal(model.n_modes), np.linspace(0, 2, 41)
    rhs, jac = model.system([0.7])
    reference = integrate.solve_ivp(rhs, (0, 2), q0, method="Radau", t_eval=t, jac=jac, rtol=1e-12, atol=1e-14).y
    sim = model.simulate({"mu": 0.7}, q0, t, method=method, rtol=1e-10, atol=1e-12)
    assert sim.completed and sim.blowup_time is None
    np.testing.assert_allclose(sim.coefficients, reference, atol=1e-7)
    assert np.all(np.diff(sim.eigenvalues.real) <= 0)
    values = np.sort_complex(np.linalg.eigvals(model.operators([0.7])["A"]))
    np.testing.assert_allclose(np.sort_complex(sim.eigenvalues), values)


@pytest.mark.parametrize("method", ["bdf", "scipy-bdf"])
def test_guard_stops_and_reports_a_blow_up(method):
    # dq/dt = q^2 from q(0) = 1 blows up at t = 1.
    model = dyn.ReducedDynamics({"H": np.ones((1, 1, 1))}, {"H": ["1"]}, state_bound=100.0)
    t = np.linspace(0, 2, 21)
    sim = model.simulate(None, [1.0], t, method=method)
    assert not sim.completed
    assert sim.blowup_time is not None and 0.9 < sim.blowup_time <= 1.0
    assert np.isfinite(sim.coefficients).all() and sim.coefficients.shape[1] < t.size
    assert np.all(np.abs(sim.coefficients) <= 100.0)
    assert "Blow-up" in sim.message and sim.report()["completed"] is False
    with pytest.raises(dyn.BlowUpError, match="Blow-up"):
        model.simulate(None, [1.0], t, method=method, raise_on_blowup=True)
    # A linearly unstable model with a tight guard is stopped as well, and its positive eigenvalue reported.
    unstable = dyn.ReducedDynamics({"A": np.array([[[1.0]]])}, {"A": ["1"]}, state_bound=10.0)
    sim = unstable.simulate(None, [1.0], np.linspace(0, 5, 51), method=method)
    assert not sim.completed and abs(sim.blowup_time - np.log(10.0)) < 0.1
    assert sim.eigenvalues[0].real == pytest.approx(1.0)


def test_fit_refuses_when_every_candidate_blows_up():
    # Data of exponential growth cannot be fitted by a model that stays within 1.5 x the training states beyond them.
    t = np.linspace(0, 1, 21)
    data = dyn.Trajectories.from_arrays([t], [np.exp(2 * t)[None, :]])
    with pytest.raises(ValueError, match="No regularization"):
        dyn.fit_operator_inference(data, terms="A", stability_factor=1.5, candidates=[1e-8, 1e-4])


# --- DOLFINx: heat equation trajectories, rank agreement, save/load, CLI, validation --------------------------------


def heat_problem(comm, n=8, dt=0.02):
    """u_t = kappa Δu + 1 on the unit square, u = 0 on the boundary; solve(mu, times) yields u at times."""
    domain = mesh.create_unit_square(comm, n, n)
    V = fem.functionspace(domain, ("Lagrange", 1))
    kappa = fem.Constant(domain, 0.1)
    u_old, uh = fem.Function(V), fem.Function(V)
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = (u * v + dt * kappa * ufl.inner(ufl.grad(u), ufl.grad(v))) * ufl.dx
    L = (u_old + dt * 1.0) * v * ufl.dx
    domain.topology.create_connectivity(1, 2)
    bc = fem.dirichletbc(0.0, fem.locate_dofs_topological(V, 1, mesh.exterior_facet_indices(domain.topology)), V)
    problem = LinearProblem(a, L, bcs=[bc], u=uh, petsc_options_prefix="dyn_heat_",
                            petsc_options={"ksp_type": "preonly", "pc_type": "lu"})  # fmt: skip

    def solve(mu, times):
        kappa.value = mu[0]
        u_old.interpolate(lambda x: np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]))
        uh.x.array[:] = u_old.x.array
        steps = np.rint(np.asarray(times) / dt).astype(int)
        if steps[0] == 0:
            yield uh
        for step in range(1, steps[-1] + 1):
            problem.solve()
            u_old.x.array[:] = uh.x.array
            if step in steps:
                yield uh

    return V, solve


def fit_heat(comm, **options):
    V, solve = heat_problem(comm)
    times = np.arange(21) * 0.02
    snapshots = fem_ml.collect_trajectories(solve, [[0.05], [0.1], [0.2]], V, times=times, progress=False)
    basis = fem_ml.pod(snapshots, inner_product="l2", n_modes=4)
    data = dyn.reduce_trajectories(basis, snapshots, parameter_names=["kappa"])
    model = dyn.fit_operator_inference(data, basis=basis, terms="cA", parameter_functions={"A": ["kappa"]},
                                       **options)  # fmt: skip
    return V, solve, basis, data, model


@pytest.fixture(scope="module")
def heat_fit():
    return fit_heat(MPI.COMM_WORLD)


def test_heat_model_predicts_an_unseen_diffusivity(heat_fit):
    V, solve, basis, _, model = heat_fit
    times = np.arange(41) * 0.02  # twice the training window
    truth = fem_ml.collect_trajectories(solve, [[0.14]], V, times=times, progress=False).values
    sim = model.simulate({"kappa": 0.14}, model.initial_state({"kappa": 0.14}), times)
    assert sim.completed
    norms = basis.inner_product.norms
    errors = norms(sim.values() - truth) / norms(truth)
    assert np.max(errors) < 0.02, errors
    assert np.all(sim.eigenvalues.real < 0)
    functions = sim.functions(name="u")
    assert len(functions) == times.size and functions[-1].name == "u"


def test_reduced_trajectories_record_their_projection_errors(heat_fit):
    V, solve, basis, data, model = heat_fit
    snapshots = fem_ml.collect_trajectories(solve, [[0.05], [0.1], [0.2]], V, times=np.arange(21) * 0.02,
                                            progress=False)  # fmt: skip
    norms = basis.inner_product.norms
    for i in range(3):
        U = snapshots.values[:, 21 * i : 21 * (i + 1)]
        residual = U - basis.reconstruct(basis.project(U))
        expected = np.sqrt(np.sum(norms(residual) ** 2) / np.sum(norms(U) ** 2))
        assert data.projection_errors[i] == pytest.approx(expected, rel=1e-8)
    assert np.all(data.projection_errors > 0)
    # The fit reports their mean; by default (no discrepancy) its selection has no bound.
    report = model.fit_report
    assert report["projection_error"] == pytest.approx(np.mean(data.projection_errors), rel=1e-12)
    assert report["selection_bound"] is None


@pytest.mark.parametrize("discrepancy", [None, 1.0])
def test_operators_agree_between_serial_and_parallel(heat_fit, discrepancy):
    comm = MPI.COMM_WORLD
    *_, model = heat_fit if discrepancy is None else fit_heat(comm, discrepancy=discrepancy)
    *_, serial = fit_heat(MPI.COMM_SELF, discrepancy=discrepancy)  # the whole mesh on every rank
    assert model.fit_report["regularization"] == serial.fit_report["regularization"]
    for k, E in model.entries.items():
        relative = np.linalg.norm(E - serial.entries[k]) / np.linalg.norm(serial.entries[k])
        assert relative <= 1e-10, (k, relative)
    # Bit-identical on every rank of the parallel fit.
    gathered = comm.allgather(model.entries["A"])
    assert all(np.array_equal(g, gathered[0]) for g in gathered)


def test_model_without_basis_is_saved_once(tmp_dir):
    """A model without a basis is saved collectively on COMM_WORLD (rank 0 writes once) and loads on any ranks."""
    comm = MPI.COMM_WORLD
    model = dyn.ReducedDynamics({"A": np.array([[[-1.0, 0.2], [0.0, -2.0]]])}, {"A": ["1"]}, state_bound=10.0)
    path = dyn.save(model, tmp_dir / "plain.femml")
    assert dyn.describe(path)["saved_on_ranks"] == comm.size
    times = np.linspace(0, 1, 5)
    for c in (comm, MPI.COMM_SELF):
        same = dyn.load(path, comm=c)
        assert same.basis is None
        np.testing.assert_array_equal(same.entries["A"], model.entries["A"])
        sim = same.simulate(None, [1.0, 1.0], times)
        np.testing.assert_allclose(sim.coefficients, model.simulate(None, [1.0, 1.0], times).coefficients)


def test_save_load_round_trip_on_other_rank_counts(heat_fit, tmp_dir):
    comm = MPI.COMM_WORLD
    V, _, basis, _, model = heat_fit
    path = dyn.save(model, tmp_dir / "heat.femml", metadata={"field": "u"})
    with pytest.raises(ValueError, match="comm differs"):  # a model with a basis is saved on its mesh's
        dyn.save(model, tmp_dir / "other.femml", comm=MPI.COMM_SELF)
    times = np.linspace(0, 0.6, 7)
    expected = model.simulate({"kappa": 0.1}, model.initial_state({"kappa": 0.1}), times)
    same = dyn.load(path, V)
    for k, E in model.entries.items():
        np.testing.assert_array_equal(same.entries[k], E)
    np.testing.assert_allclose(same.basis.modes, basis.modes, atol=1e-14)
    assert same.metadata == {"field": "u"} and same.fit_report["regularization"] == model.fit_report["regularization"]
    # Loaded on one rank (COMM_SELF, mesh rebuilt from the file), whatever the number that saved it.
    alone = dyn.load(path, comm=MPI.COMM_SELF)
    sim = alone.simulate({"kappa": 0.1}, alone.initial_state({"kappa": 0.1}), times)
    np.testing.assert_allclose(sim.coefficients, expected.coefficients, rtol=1e-10, atol=1e-12)
    # The same field: compare the fields' L2 norms at the last time.
    own = basis.inner_product.norms(expected.values()[:, -1:])[0]
    other = alone.basis.inner_product.norms(sim.values()[:, -1:])[0]
    assert other == pytest.approx(own, rel=1e-10)
    info = on_root(comm, dyn.describe, path)
    assert info["n_modes"] == model.n_modes and info["parameters"] == ["kappa"] and info["has_basis"]


def test_load_rejects_bad_files_on_every_rank(heat_fit, tmp_dir):
    comm = MPI.COMM_WORLD
    *_, model = heat_fit
    path = dyn.save(model, tmp_dir / "good.femml")
    if comm.rank == 0:
        (tmp_dir / "garbage.femml").write_bytes(b"not hdf5")
        from fem_ml._h5 import read_tree, write_tree

        version = dyn.archive.VERSION
        tree = read_tree(path, kind=dyn.archive.FORMAT, version=version, what="x")
        bad = dict(tree)
        bad["model/entries/A"] = np.full_like(tree["model/entries/A"], np.nan)
        write_tree(tmp_dir / "nan.femml", bad, kind=dyn.archive.FORMAT, version=version)
        shape = dict(tree)
        shape["model/entries/A"] = tree["model/entries/A"][:, :2]
        write_tree(tmp_dir / "shape.femml", shape, kind=dyn.archive.FORMAT, version=version)
        code = dict(tree)
        code["model/functions/A"] = json.dumps(["__import__('os').system('true')"])
        write_tree(tmp_dir / "code.femml", code, kind=dyn.archive.FORMAT, version=version)
        write_tree(tmp_dir / "newer.femml", tree, kind=dyn.archive.FORMAT, version=version + 1)
        with h5py.File(tmp_dir / "tampered.femml", "w") as f:  # a valid-looking tag, no checksum
            f.attrs["format"] = dyn.archive.FORMAT
            f.attrs["format_version"] = 1
    comm.barrier()
    for name, match in [
        ("missing.femml", "no such file"), ("garbage.femml", "not a readable"), ("nan.femml", "NaN"),
        ("shape.femml", "shape"), ("code.femml", "only numbers"), ("tampered.femml", "checksum"),
        ("newer.femml", "newer than"),
    ]:  # fmt: skip
        raises_on_all_ranks(comm, fem_ml.FileFormatError, match, dyn.load, tmp_dir / name)
    # A surrogate file is not a dynamics file.
    assert not dyn.is_dynamics_file(tmp_dir / "garbage.femml") and dyn.is_dynamics_file(path)


def test_loads_a_version_1_file(tmp_dir):
    """A file saved by fem_ml before second-order models could be saved (format version 1, no ``model/kind``;
    tests/data) loads on any rank count and simulates as when it was saved; saved again, it is version 2."""
    comm = MPI.COMM_WORLD
    old = ROOT / "tests" / "data" / "heat_dynamics_v1.femml"
    with h5py.File(old, "r") as f:
        assert f.attrs["format_version"] == 1 and "kind" not in f["model"].attrs
    assert on_root(comm, dyn.describe, old)["kind"] == "first_order"
    for c in (MPI.COMM_SELF, comm):
        model = dyn.load(old, comm=c)
        assert isinstance(model, dyn.ReducedDynamics) and model.basis is not None and model.metadata["field"] == "u"
        check = model.metadata["check"]
        sim = model.simulate({"kappa": check["kappa"]}, model.initial_state({"kappa": check["kappa"]}), check["times"])
        np.testing.assert_allclose(sim.coefficients, check["coefficients"], rtol=1e-9, atol=1e-12)
    again = dyn.load(dyn.save(model, tmp_dir / "again.femml", metadata=model.metadata), model.basis.V)
    for k, E in model.entries.items():
        np.testing.assert_array_equal(again.entries[k], E)
    np.testing.assert_array_equal(again.basis.modes, model.basis.modes)
    with h5py.File(tmp_dir / "again.femml", "r") as f:
        assert f.attrs["format_version"] == dyn.archive.VERSION == 2 and f["model"].attrs["kind"] == "first_order"


def test_input_validation_on_every_rank(heat_fit):
    comm = MPI.COMM_WORLD
    _, _, basis, data, model = heat_fit
    q0 = model.initial_state([0.1])
    raises_on_all_ranks(comm, ValueError, "terms", dyn.fit_operator_inference, data, basis=basis, terms="cAX")
    raises_on_all_ranks(comm, ValueError, "only numbers", dyn.fit_operator_inference, data, basis=basis,
                        parameter_functions={"A": ["open('x')"]})  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "not a parameter", dyn.fit_operator_inference, data, basis=basis,
                        parameter_functions={"A": ["nu"]})  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "inputs", dyn.fit_operator_inference, data, basis=basis, terms="AB")
    with pytest.raises(TypeError):
        dyn.fit_operator_inference(data, basis=basis, regularisation=1.0)  # unknown option
    raises_on_all_ranks(comm, ValueError, "exactly", model.simulate, {"nu": 0.1}, q0, [0, 1])
    raises_on_all_ranks(comm, ValueError, "strictly increasing", model.simulate, [0.1], q0, [0, 1, 1])
    # Bad on one rank only: every rank raises instead of hanging.
    initial = q0[:-1] if comm.rank == comm.size - 1 else q0
    raises_on_all_ranks(comm, ValueError, "finite coefficients", model.simulate, [0.1], initial, [0, 1])
    # A Function as the initial state is projected (collective).
    u0 = basis.function(q0)
    np.testing.assert_allclose(model.simulate([0.1], u0, [0.0, 0.1]).coefficients[:, 0], q0, atol=1e-12)


@pytest.mark.processes
def test_predict_command_line(heat_fit, tmp_dir):
    comm = MPI.COMM_WORLD
    *_, model = heat_fit
    path = dyn.save(model, tmp_dir / "cli.femml")

    def run():
        results = []
        for launcher in ([], mpirun(2)):
            out = tmp_dir / f"pred{len(launcher)}.xdmf"
            done = subprocess.run(
                [*launcher, sys.executable, "-m", "fem_ml", "predict", str(path), "--t", "0:0.4:5", "--mu",
                 "kappa=0.12", "-o", str(out)],
                capture_output=True, text=True, env=clean_env(), cwd=ROOT, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            meta = json.loads(Path(str(out) + ".json").read_text())
            results.append((out.exists(), meta["simulation"]["n_times_reached"], meta["parameters"]))
        bad = subprocess.run([sys.executable, "-m", "fem_ml", "predict", str(path), "--t", "1,0", "-o", "x.xdmf"],
                             capture_output=True, text=True, env=clean_env(), cwd=ROOT, timeout=120)  # fmt: skip
        return results, bad.returncode, bad.stderr

    results, code, stderr = on_root(comm, run)
    assert results == [(True, 5, {"kappa": 0.12})] * 2
    assert code == 2 and "increasing" in stderr


@pytest.mark.processes
def test_demo_smoke(tmp_dir):
    """The Burgers demo as a script at tiny sizes; its summary has every key, finite."""
    comm = MPI.COMM_WORLD

    def run():
        env = {**clean_env(), "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        out = tmp_dir / "burgers"
        done = subprocess.run(
            [sys.executable, str(ROOT / "demos" / "dynamics_burgers.py"), "--n-cells", "6", "--n-train", "3",
             "--n-test", "2", "--n-modes", "5", "--t-end", "0.05", "--adam-epochs", "10", "--lbfgs-iterations", "2",
             "--out-dir", str(out)],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        png = (out / "errors.png").read_bytes()[:8]
        return json.loads((out / "summary.json").read_text()), png, (out / "trajectory.xdmf").exists()

    summary, png, xdmf = on_root(comm, run)
    keys = {
        "rel_l2_error_mean_train_window", "rel_l2_error_mean_extrapolation", "n_test", "n_blowups", "speedup_median",
        "t_fit_s", "opinf_rel_l2_error_mean_extrapolation", "opinf_t_fit_s",
        "time_input_net_rel_l2_error_mean_extrapolation",
    }  # fmt: skip
    assert keys <= set(summary)
    assert summary["n_test"] == 2 and summary["n_blowups"] == 0
    assert all(np.isfinite(summary[k]) for k in keys)
    assert png == b"\x89PNG\r\n\x1a\n" and xdmf
