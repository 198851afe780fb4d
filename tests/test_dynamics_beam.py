# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Second-order reduced dynamics (fem_ml.dynamics.second_order): fit, structure, integrator, guard, MPI, save and
load, command line, demo."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from mpi4py import MPI
from petsc4py import PETSc

import h5py
import numpy as np
import pytest
import ufl
from conftest import clean_env, mpirun, on_root, raises_on_all_ranks
from dolfinx import fem, mesh
from dolfinx.fem import petsc as fem_petsc
from scipy import linalg

import fem_ml
import fem_ml.dynamics as dyn
from fem_ml._h5 import read_tree, write_tree
from fem_ml._layout import DofLayout
from fem_ml.dynamics import (
    NewmarkIntegrator,
    SecondOrderModel,
    finite_difference_derivatives,
    fit_second_order,
    fit_second_order_coefficients,
)
from fem_ml.dynamics.cli import read_inputs

ROOT = Path(__file__).resolve().parents[1]


def random_structure(seed: int, r: int = 4, m: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random SPD stiffness, PSD damping (rank-deficient) and input matrix."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((r, r))
    K = X @ X.T + 0.5 * np.eye(r)
    Y = rng.standard_normal((r, r - 1))
    C = 0.05 * Y @ Y.T
    return K, C, rng.standard_normal((r, m))


def exact_trajectory(K, C, B, q0, v0, s, t):
    """Exact samples of q'' + C q' + K q = B s (constant input s) through the matrix exponential."""
    r, m = B.shape
    A = np.zeros((2 * r + m, 2 * r + m))
    A[:r, r : 2 * r] = np.eye(r)
    A[r : 2 * r, :r], A[r : 2 * r, r : 2 * r], A[r : 2 * r, 2 * r :] = -K, -C, B
    x0 = np.concatenate([q0, v0, s])
    states = np.array([linalg.expm(A * tk) @ x0 for tk in t])
    return states[:, :r], np.tile(s, (t.size, 1))


# ---------------------------------------------------------------------------------------------------------------
# Fit
# ---------------------------------------------------------------------------------------------------------------


def test_exact_recovery_from_own_trajectories():
    """Trajectories of a known structured model, with its Newmark derivatives, give back its operators."""
    K, C, B = random_structure(0)
    truth = SecondOrderModel(K, C, B)
    t = np.linspace(0.0, 15.0, 1501)
    initial = ([1.0, 0, 0, -1.0], [0, 0.5, 0, 0])
    runs = [truth.simulate(None, t, np.column_stack([np.ones(t.size), np.sin(1.7 * t)])),
            truth.simulate(initial, t, np.column_stack([np.cos(0.6 * t), 0 * t]))]  # fmt: skip
    fitted = fit_second_order_coefficients(
        [r.coefficients for r in runs], t, [r.inputs for r in runs],
        velocities=[r.velocities for r in runs], accelerations=[r.accelerations for r in runs],
    )  # fmt: skip
    for got, want in ((fitted.stiffness, K), (fitted.damping, C), (fitted.input_matrix, B)):
        assert np.linalg.norm(got - want) <= 1e-10 * np.linalg.norm(want)
    info = fitted.fit_info
    assert info.derivatives == "given" and info.training_error < 1e-10 and info.residual < 1e-10
    assert info.n_clipped_stiffness == 0 and info.n_clipped_damping == 0
    assert len(info.candidates) > 1 and info.regularization in [c for c, _ in info.candidates]


def test_rayleigh_damping_recovered_exactly():
    """Trajectories of a model with C = alpha I + beta K give back K, B and (alpha, beta) to rounding."""
    K, _, B = random_structure(3)
    alpha, beta = 0.03, 0.02
    truth = SecondOrderModel(K, alpha * np.eye(4) + beta * K, B)
    t = np.linspace(0.0, 15.0, 1501)
    runs = [
        truth.simulate(None, t, np.column_stack([np.ones(t.size), np.sin(1.7 * t)])),
        truth.simulate(([1.0, 0, 0, -1.0], [0, 0.5, 0, 0]), t, np.column_stack([np.cos(0.6 * t), 0 * t])),
    ]
    fitted = fit_second_order_coefficients(
        [r.coefficients for r in runs], t, [r.inputs for r in runs], damping="rayleigh",
        velocities=[r.velocities for r in runs], accelerations=[r.accelerations for r in runs],
    )  # fmt: skip
    for got, want in ((fitted.stiffness, K), (fitted.damping, truth.damping), (fitted.input_matrix, B)):
        assert np.linalg.norm(got - want) <= 1e-10 * np.linalg.norm(want)
    info = fitted.fit_info
    assert info.damping == "rayleigh" and info.rayleigh is not None
    np.testing.assert_allclose(info.rayleigh, (alpha, beta), rtol=1e-10)
    np.testing.assert_allclose(fitted.damping, info.rayleigh[0] * np.eye(4) + info.rayleigh[1] * fitted.stiffness,
                               rtol=0, atol=1e-15 * np.linalg.norm(fitted.damping))  # fmt: skip
    assert info.n_clipped_damping == 0 and info.as_dict()["rayleigh"] == list(info.rayleigh)
    # From samples of q alone (fourth-order differences of trapezoidal-rule samples, whose own error is O(h^2)).
    fd = fit_second_order_coefficients([r.coefficients for r in runs], t, [r.inputs for r in runs],
                                       damping="rayleigh", regularization=0.0)  # fmt: skip
    assert fd.fit_info.derivatives == "fd4" and fd.fit_info.rayleigh is not None
    np.testing.assert_allclose(fd.fit_info.rayleigh, (alpha, beta), rtol=1e-3)


def test_rayleigh_damping_keeps_alpha_nonnegative():
    """A best fit with alpha < 0 is replaced by alpha = 0 and a refitted beta: C_r stays positive semi-definite."""
    K, _, B = random_structure(4, r=3, m=1)
    lam_min = float(np.linalg.eigvalsh(K)[0])
    beta = 0.4 / lam_min  # beta K - 0.2 I is still positive definite: a stable truth with alpha = -0.2
    truth = SecondOrderModel(K, -0.2 * np.eye(3) + beta * K, B)
    t = np.linspace(0.0, 20.0, 2001)
    run = truth.simulate(([1.0, -1.0, 0.5], [0.0, 0.3, 0.0]), t, np.sin(0.9 * t))
    fitted = fit_second_order_coefficients(run.coefficients, t, run.inputs, velocities=run.velocities,
                                           accelerations=run.accelerations, damping="rayleigh")  # fmt: skip
    info = fitted.fit_info
    assert info.rayleigh is not None and info.rayleigh[0] == 0.0 and info.rayleigh[1] > 0.0
    assert info.n_clipped_damping == 1
    np.testing.assert_array_equal(fitted.damping, info.rayleigh[1] * fitted.stiffness)
    assert fitted.structure()["min_eig_damping"] > 0.0 and fitted.modal_analysis().max_real_part < 0.0
    free = fitted.simulate(([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]), t)
    assert np.max(np.diff(free.energy)) <= 1e-12 * free.energy[0]


def test_damping_option_is_checked():
    K, C, B = random_structure(5, r=2, m=1)
    t = np.linspace(0.0, 1.0, 21)
    run = SecondOrderModel(K, C, B).simulate(None, t, np.ones(t.size))
    with pytest.raises(ValueError, match="damping must be"):
        fit_second_order_coefficients(run.coefficients, t, run.inputs, damping="viscous")
    with pytest.raises(ValueError, match="stiffness_floor"):  # below rounding, K_r would not be definite
        fit_second_order_coefficients(run.coefficients, t, run.inputs, stiffness_floor=1e-17)


def test_rayleigh_damping_of_one_mode_is_alpha_alone():
    """With K_r a multiple of I (r = 1), alpha I and beta K_r are one parameter: beta = 0, alpha = C_r."""
    truth = SecondOrderModel([[4.0]], [[0.14]], [[1.0]])
    t = np.linspace(0.0, 10.0, 1001)
    run = truth.simulate(([1.0], [0.0]), t, np.sin(0.7 * t))
    fitted = fit_second_order_coefficients(run.coefficients, t, run.inputs, velocities=run.velocities,
                                           accelerations=run.accelerations, damping="rayleigh")  # fmt: skip
    assert fitted.fit_info.rayleigh is not None and fitted.fit_info.rayleigh[1] == 0.0
    np.testing.assert_allclose(fitted.fit_info.rayleigh[0], 0.14, rtol=1e-10)
    np.testing.assert_allclose(fitted.stiffness, [[4.0]], rtol=1e-10)
    assert fitted.fit_info.n_clipped_damping == 0


def test_recovery_with_fourth_order_differences():
    """From exact samples of q alone, fourth-order differences recover the operators with error O(h^4)."""
    K, C, B = random_structure(1, r=3, m=1)
    rng = np.random.default_rng(2)
    errors = []
    for n in (201, 401):
        t = np.linspace(0.0, 8.0, n)
        data = [exact_trajectory(K, C, B, rng.standard_normal(3), rng.standard_normal(3), np.array([s]), t)
                for s in (1.0, -0.5, 0.0)]  # fmt: skip
        fitted = fit_second_order_coefficients([d[0] for d in data], t, [d[1] for d in data], regularization=0.0)
        assert fitted.fit_info.derivatives == "fd4"
        errors.append(max(np.linalg.norm(fitted.stiffness - K) / np.linalg.norm(K),
                          np.linalg.norm(fitted.input_matrix - B) / np.linalg.norm(B)))  # fmt: skip
    assert errors[1] < 1e-5
    assert errors[0] / errors[1] > 10.0  # about 2**4 = 16


def test_finite_differences_order():
    t = np.sort(np.random.default_rng(0).uniform(0.0, 2.0, 60))
    for n in (60, 120):
        t = np.linspace(0.0, 2.0, n) + 0.3 * (2.0 / n) * np.sin(np.arange(n))  # non-uniform
        first, second = finite_difference_derivatives(np.sin(3 * t), t)
        err = max(np.max(np.abs(first - 3 * np.cos(3 * t))), np.max(np.abs(second + 9 * np.sin(3 * t))) / 3)
        if n == 60:
            coarse = err
    assert err < 1e-4 and coarse / err > 12.0
    with pytest.raises(ValueError, match="even number"):
        finite_difference_derivatives(np.zeros(10), np.arange(10.0), order=3)


@pytest.mark.parametrize("damping", ["symmetric", "rayleigh"])
def test_structure_enforced_and_energy_never_grows(damping):
    """Property over random perturbed fits: K_r SPD, C_r PSD, and the free-vibration energy never grows."""
    clipped = 0
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        K, C, B = random_structure(seed, r=5, m=1)
        t = np.linspace(0.0, 10.0, 401)
        run = SecondOrderModel(K, C, B).simulate(None, t, np.sin((0.5 + seed / 10) * t))
        noise = rng.uniform(0.05, 2.0)
        perturbed = [x + noise * np.std(x) * rng.standard_normal(x.shape)
                     for x in (run.coefficients, run.velocities, run.accelerations)]  # fmt: skip
        model = fit_second_order_coefficients(
            perturbed[0], t, run.inputs, velocities=perturbed[1], accelerations=perturbed[2],
            regularization=float(rng.choice([0.0, 1e-8, 1e-3])), damping=damping,
        )  # fmt: skip
        info = model.fit_info
        clipped += info.n_clipped_stiffness + info.n_clipped_damping
        structure = model.structure()
        assert structure["min_eig_stiffness"] > 0.0
        assert structure["min_eig_damping"] >= -1e-14 * np.linalg.norm(model.damping, 2)
        assert np.array_equal(model.stiffness, model.stiffness.T) and np.array_equal(model.damping, model.damping.T)
        assert model.modal_analysis().max_real_part <= 1e-12 * np.max(np.abs(model.modal_analysis().eigenvalues))
        for dt in (1e-3, 0.1, 10.0):  # small and very large steps: the scheme is unconditionally stable
            # Without a guard: an undamped fit (noise can make alpha = beta = 0) drifts along a mode of K_r at the
            # stiffness floor, and q^T K_r q of a large q is then evaluated with rounding eps |K_r| |q|^2.
            free = model.simulate((rng.standard_normal(5), rng.standard_normal(5)), np.arange(300) * dt,
                                  max_norm=np.inf)  # fmt: skip
            rounding = np.finfo(float).eps * np.linalg.norm(model.stiffness, 2) * np.max(free.coefficients**2) * 5
            assert free.completed
            assert np.max(np.diff(free.energy)) <= 1e-12 * free.energy[0] + rounding
    assert clipped > 0  # the projections onto the cones were exercised


# ---------------------------------------------------------------------------------------------------------------
# Integrator and guard
# ---------------------------------------------------------------------------------------------------------------


def test_integrator_against_damped_oscillator():
    """q'' + 2 zeta w q' + w^2 q = w^2 (a step): second-order convergence to the analytic solution."""
    w, zeta = 3.0, 0.1
    model = SecondOrderModel([[w * w]], [[2 * zeta * w]], [[w * w]])
    wd = w * np.sqrt(1 - zeta**2)
    errors = []
    for n in (401, 801, 1601):
        t = np.linspace(0.0, 10.0, n)
        run = model.simulate(None, t, np.ones(n))
        exact = 1 - np.exp(-zeta * w * t) * (np.cos(wd * t) + zeta * w / wd * np.sin(wd * t))
        errors.append(np.max(np.abs(run.coefficients[:, 0] - exact)))
    assert errors[-1] < 1e-3
    assert 3.5 < errors[0] / errors[1] < 4.5 and 3.5 < errors[1] / errors[2] < 4.5
    report = model.modal_analysis()
    assert report.natural_frequencies == pytest.approx([w], rel=1e-12)
    assert report.damping_ratios == pytest.approx([zeta], rel=1e-12)
    # Undamped and unforced: the discrete energy is conserved.
    free = SecondOrderModel([[w * w]]).simulate(([1.0], [0.0]), np.linspace(0, 100, 2001))
    assert np.max(np.abs(free.energy / free.energy[0] - 1)) < 1e-12


def test_guard_stops_and_reports():
    unstable = SecondOrderModel([[-1.0]], [[0.0]], [[1.0]])  # not a structure: grows like exp(t)
    assert unstable.structure()["min_eig_stiffness"] < 0
    run = unstable.simulate(([1.0], [0.0]), np.linspace(0.0, 1000.0, 10001))
    assert not run.completed and "bound" in run.blowup and "t = " in run.blowup
    assert run.times.size < 10001 and np.isfinite(run.coefficients).all() and np.isfinite(run.energy).all()
    assert np.all(np.abs(run.coefficients) <= 1e3 * 1.0)
    # Undamped resonance grows linearly: an explicit bound stops it.
    resonant = SecondOrderModel([[1.0]], None, [[1.0]])
    t = np.linspace(0.0, 200.0, 4001)
    run = resonant.simulate(None, t, np.sin(t), max_norm=10.0)
    assert not run.completed and np.max(np.abs(run.coefficients)) <= 10.0
    assert resonant.simulate(None, t, np.sin(t)).completed  # the default bound (1e3 x static) is not reached
    # Without a bound, growth towards overflow is caught as a non-finite state; no inf or NaN is returned.
    run = SecondOrderModel([[-1e10]]).simulate(([1.0], [0.0]), np.arange(400) * 1.98e-5, max_norm=np.inf)
    assert not run.completed and "non-finite" in run.blowup and 10 < run.times.size < 400
    assert np.isfinite(run.coefficients).all() and np.isfinite(run.energy).all()


# ---------------------------------------------------------------------------------------------------------------
# Full order: a small clamped beam, serial against parallel
# ---------------------------------------------------------------------------------------------------------------


def beam(comm: MPI.Comm):
    """A small P1 cantilever (clamped at x = 0, vertical load on x = 2): V, M, K, load, tip functional."""
    domain = mesh.create_box(comm, [np.zeros(3), np.array([2.0, 0.4, 0.4])], [8, 2, 2], mesh.CellType.tetrahedron)
    V = fem.functionspace(domain, ("Lagrange", 1, (3,)))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    eps = ufl.sym(ufl.grad(u))
    stress = 2 * 100.0 * eps + 150.0 * ufl.tr(eps) * ufl.Identity(3)
    fdim = 2
    end = mesh.locate_entities_boundary(domain, fdim, lambda x: np.isclose(x[0], 2.0))
    ds = ufl.Measure("ds", domain=domain, subdomain_data=mesh.meshtags(domain, fdim, end, np.ones_like(end)))
    clamped = fem.locate_dofs_topological(
        V, fdim, mesh.locate_entities_boundary(domain, fdim, lambda x: np.isclose(x[0], 0.0))
    )
    bc = fem.dirichletbc(np.zeros(3), clamped, V)
    M = fem_petsc.assemble_matrix(fem.form(ufl.inner(u, v) * ufl.dx), bcs=[bc], diag=1.0)
    K = fem_petsc.assemble_matrix(fem.form(ufl.inner(stress, ufl.grad(v)) * ufl.dx), bcs=[bc], diag=1.0)
    M.assemble()
    K.assemble()

    def vector(form):
        b = fem_petsc.assemble_vector(fem.form(form))
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        fem_petsc.set_bc(b, [bc])
        return b

    down = ufl.as_vector((0.0, 0.0, -1.0))
    return V, M, K, vector(ufl.inner(down, v) * ds(1)), vector(ufl.inner(-down / 0.16, v) * ds(1))


def learn(comm: MPI.Comm, n_modes: int = 8, damping: str = "symmetric"):
    """Step-response training on the beam over COMM ``comm``; the model, a full sine run and the tip on the modes."""
    V, M, K, load, tip = beam(comm)
    newmark = NewmarkIntegrator(M, K, load, damping=(0.05, 1e-4))
    t = np.arange(201) * 0.01
    train = newmark.run(t, np.ones(t.size), functionals={"tip": tip})
    basis = fem_ml.pod(train.displacements, inner_product=M, V=V, n_modes=n_modes)
    model = fit_second_order(basis, train.displacements, t, train.inputs, velocities=train.velocities,
                             accelerations=train.accelerations, damping=damping)  # fmt: skip
    t_test = np.arange(401) * 0.01
    sine = np.sin(2 * np.pi * 0.8 * t_test)
    full = newmark.run(t_test, sine, store=(), functionals={"tip": tip})
    ell = comm.allreduce(tip.getArray(readonly=True) @ basis.modes, op=MPI.SUM)
    newmark.destroy()
    return V, M, K, load, tip, basis, model, full, ell, t_test, sine


def test_beam_serial_and_parallel_agree(tmp_dir):
    """Mesh on COMM_SELF (whole beam on each rank) against COMM_WORLD: operators to 1e-10, tip prediction."""
    comm = MPI.COMM_WORLD
    results = {}
    for name, c in (("self", MPI.COMM_SELF), ("world", comm)):
        V, M, K, load, tip, basis, model, full, ell, t_test, sine = learn(c)
        run = model.simulate(None, t_test, sine)
        tip_reduced = run.coefficients @ ell
        peak = np.max(np.abs(full.functionals["tip"]))
        results[name] = (model, tip_reduced, np.max(np.abs(full.functionals["tip"] - tip_reduced)) / peak)
        structure = model.structure()  # C_r >= 0 up to the rounding of its eigendecomposition
        assert structure["min_eig_stiffness"] > 0
        assert structure["min_eig_damping"] >= -1e-14 * np.linalg.norm(model.damping, 2)
        assert results[name][2] < 0.02  # an unseen input, twice the training interval
        # Functions and an XDMF time series on demand (collective on the basis' communicator).
        if name == "world":
            out = model.simulate(None, t_test[:41], sine[:41], functions=True, xdmf=tmp_dir / "beam.xdmf",
                                 output_stride=10)  # fmt: skip
            assert len(out.functions) == 5 and all(f.function_space is V for f in out.functions)
            np.testing.assert_allclose(out.functions[-1].x.array[: basis.modes.shape[0]],
                                       basis.modes @ out.coefficients[-1], rtol=1e-12, atol=0)  # fmt: skip
            assert (tmp_dir / "beam.xdmf").is_file() and (tmp_dir / "beam.h5").is_file()
            times = on_root(comm, lambda: (tmp_dir / "beam.xdmf").read_text().count("<Time Value="))
            assert times == 5
            # An initial state given as Functions is projected in the mass product.
            again = model.simulate((out.functions[-1], fem.Function(V)), t_test[:3], sine[40:43])
            np.testing.assert_allclose(again.coefficients[0], out.coefficients[-1], rtol=1e-10, atol=1e-14)
        basis.inner_product.destroy()
        for obj in (M, K, load, tip):
            obj.destroy()
    (m_self, tip_self, _), (m_world, tip_world, _) = results["self"], results["world"]
    for a, b in ((m_self.stiffness, m_world.stiffness), (m_self.damping, m_world.damping),
                 (m_self.input_matrix, m_world.input_matrix)):  # fmt: skip
        assert np.linalg.norm(a - b) <= 1e-10 * np.linalg.norm(a)
    assert np.max(np.abs(tip_self - tip_world)) <= 1e-10 * np.max(np.abs(tip_self))
    # Every rank holds the same operators, bit for bit.
    gathered = comm.allgather(m_world.stiffness)
    assert all(np.array_equal(g, gathered[0]) for g in gathered)


def test_beam_rayleigh_fit_serial_and_parallel_agree():
    """Rayleigh damping fitted from each rank count's own trajectories: operators and (alpha, beta) to 1e-10."""
    comm = MPI.COMM_WORLD
    fitted = {}
    for name, c in (("self", MPI.COMM_SELF), ("world", comm)):
        _, M, K, load, tip, basis, model, full, ell, t_test, sine = learn(c, damping="rayleigh")
        tip_reduced = model.simulate(None, t_test, sine).coefficients @ ell
        assert np.max(np.abs(full.functionals["tip"] - tip_reduced)) < 0.02 * np.max(np.abs(full.functionals["tip"]))
        fitted[name] = model
        basis.inner_product.destroy()
        for obj in (M, K, load, tip):
            obj.destroy()
    a, b = fitted["self"], fitted["world"]
    assert a.fit_info.damping == "rayleigh" and a.fit_info.rayleigh is not None and b.fit_info.rayleigh is not None
    assert min(a.fit_info.rayleigh) > 0.0
    np.testing.assert_allclose(b.fit_info.rayleigh, a.fit_info.rayleigh, rtol=1e-10, atol=0)
    for key in ("stiffness", "damping", "input_matrix"):
        x, y = getattr(a, key), getattr(b, key)
        assert np.linalg.norm(x - y) <= 1e-10 * np.linalg.norm(x), key
    alpha, beta = b.fit_info.rayleigh
    np.testing.assert_allclose(b.damping, alpha * np.eye(b.n_modes) + beta * b.stiffness, rtol=0,
                               atol=1e-14 * np.linalg.norm(b.damping))  # fmt: skip


def test_beam_fit_of_the_same_stored_data_on_any_rank_count(tmp_dir):
    """One trajectory written once to a snapshot store, then POD and fit on COMM_SELF and on COMM_WORLD.

    The POD keeps modes down to sigma_r / sigma_1 ~ 1e-4 (tol 1e-8). A basis from the Gram eigenvectors alone moved
    those modes with the summation order, hence the rank count, and the damping by 2.7e-10; with the next directions
    in the Rayleigh-Ritz step the whole pipeline agrees to about 1e-12 on identical data.
    """
    comm = MPI.COMM_WORLD
    V, M, K, load, tip = beam(comm)
    newmark = NewmarkIntegrator(M, K, load, damping=(0.05, 1e-4))
    t = np.arange(101) * 1e-3
    train = newmark.run(t, np.ones(t.size))
    store = fem_ml.SnapshotStore(tmp_dir / "trajectory", V)
    fields = (train.displacements, train.velocities, train.accelerations)
    for j, values in enumerate(fields):  # sample j * n + k: field j (u, v, a) at time t_k
        for k in range(t.size):
            store.write(j * t.size + k, np.array([j, t[k]]), values[:, k], solve_time=0.0)
    newmark.destroy()
    for obj in (M, K, load, tip):
        obj.destroy()
    models = {}
    for name, c in (("self", MPI.COMM_SELF), ("world", comm)):
        Vc, Mc, Kc, load_c, tip_c = beam(c)
        snapshots = fem_ml.SnapshotStore(tmp_dir / "trajectory", Vc).snapshots()
        np.testing.assert_array_equal(snapshots.parameters[: t.size, 1], t)
        u, v, a = (snapshots.values[:, j * t.size : (j + 1) * t.size] for j in range(3))
        basis = fem_ml.pod(u, inner_product=Mc, V=Vc, tol=1e-8)
        assert basis.n_modes >= 10 and basis.singular_values[basis.n_modes - 1] < 1e-3 * basis.singular_values[0]
        models[name] = fit_second_order(basis, u, t, np.ones(t.size), velocities=v, accelerations=a)
        basis.inner_product.destroy()
        for obj in (Mc, Kc, load_c, tip_c):
            obj.destroy()
    for key in ("stiffness", "damping", "input_matrix"):
        x, y = getattr(models["self"], key), getattr(models["world"], key)
        assert np.linalg.norm(x - y) <= 1e-10 * np.linalg.norm(x), key
    assert models["self"].fit_info.regularization == models["world"].fit_info.regularization


# ---------------------------------------------------------------------------------------------------------------
# Input validation (a bad value on one rank only is an error on every rank)
# ---------------------------------------------------------------------------------------------------------------


def test_input_validation_on_all_ranks():
    comm = MPI.COMM_WORLD
    last = comm.rank == comm.size - 1
    V, M, K, load, tip = beam(comm)
    newmark = NewmarkIntegrator(M, K, load, damping=(0.05, 1e-4))
    t = np.arange(41) * 0.01
    train = newmark.run(t, np.ones(t.size))
    basis = fem_ml.pod(train.displacements, inner_product=M, V=V, n_modes=3)
    model = fit_second_order(basis, train.displacements, t, train.inputs, regularization=1e-10)
    good = np.ones(t.size)
    raises_on_all_ranks(comm, ValueError, "inputs must have shape", model.simulate, None, t,
                        good[:-1] if last else good)  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "NaN or inf", model.simulate, None, t,
                        np.where(t > 0.2, np.nan, 1.0) if last else good)  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "strictly increasing", model.simulate, None, t[::-1] if last else t, good)
    raises_on_all_ranks(comm, ValueError, "initial state", model.simulate,
                        (np.zeros(2 if last else 3), np.zeros(3)), t, good)  # fmt: skip
    other = fem.Function(fem.functionspace(V.mesh, ("Lagrange", 2, (3,))))
    raises_on_all_ranks(comm, ValueError, "Initial Function", model.simulate, (other, np.zeros(3)), t, good)
    bad_u = train.displacements[:-1] if last else train.displacements
    raises_on_all_ranks(comm, ValueError, "must have shape", fit_second_order, basis, bad_u, t, train.inputs)
    raises_on_all_ranks(comm, ValueError, "both velocities and accelerations", fit_second_order, basis,
                        train.displacements, t, train.inputs, velocities=train.velocities)  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "Trajectory 0", fit_second_order, basis, train.displacements,
                        t[:-1], train.inputs)  # fmt: skip
    raises_on_all_ranks(comm, TypeError, "unknown option", fit_second_order, basis, train.displacements, t,
                        train.inputs, regularisation=1.0)  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "uniformly spaced", newmark.run,
                        np.concatenate([t[:-1], [t[-1] + (0.5 if last else 0.0)]]), np.ones(t.size))  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "symmetric", SecondOrderModel, [[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(TypeError):
        model.simulate(None, t, good, stride=2)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="symmetric"):
        SecondOrderModel(np.eye(3), np.triu(np.ones((3, 3))))
    newmark.destroy()
    basis.inner_product.destroy()
    for obj in (M, K, load, tip):
        obj.destroy()


# ---------------------------------------------------------------------------------------------------------------
# Save and load (.femml), and python -m fem_ml predict
# ---------------------------------------------------------------------------------------------------------------


def small_beam(comm: MPI.Comm, n_modes: int = 4):
    """The beam's model from a short step response (41 steps): V, its PETSc objects, the basis, the model."""
    V, M, K, load, tip = beam(comm)
    newmark = NewmarkIntegrator(M, K, load, damping=(0.05, 1e-4))
    t = np.arange(41) * 0.01
    train = newmark.run(t, np.ones(t.size))
    newmark.destroy()
    basis = fem_ml.pod(train.displacements, inner_product=M, V=V, n_modes=n_modes)  # a matrix: saved as triplets
    model = fit_second_order(basis, train.displacements, t, train.inputs, velocities=train.velocities,
                             accelerations=train.accelerations)  # fmt: skip
    return V, (M, K, load, tip), basis, model


def release(basis, petsc_objects) -> None:
    basis.inner_product.destroy()
    for obj in petsc_objects:
        obj.destroy()


def test_save_and_load_on_any_rank_count(tmp_dir):
    """Saved on COMM_WORLD, loaded on its V, on COMM_WORLD and on COMM_SELF (mesh rebuilt): the same operators, fit
    report, modes (in the rank-independent order) and mass matrix, and the same simulation, bit for bit."""
    comm = MPI.COMM_WORLD
    V, petsc_objects, basis, model = small_beam(comm)
    path = dyn.save(model, tmp_dir / "beam.femml", metadata={"field": "displacement"})
    t = np.arange(61) * 0.01
    sine = np.sin(2 * np.pi * 0.8 * t)
    expected = model.simulate(None, t, sine)
    modes = comm.bcast(DofLayout(V).gather(basis.modes), root=0)

    def bend(x):  # a field outside the span: its projection needs the stored mass matrix
        return np.vstack([0.1 * x[1], 0 * x[0], -0.2 * x[0] ** 2])

    def projection(space_basis):
        f = fem.Function(space_basis.V)
        f.interpolate(bend)
        return space_basis.project(f.x.array[: space_basis.modes.shape[0]])[:, 0]

    reference = projection(basis)
    for loaded in (dyn.load(path, V), dyn.load(path, comm=comm), dyn.load(path, comm=MPI.COMM_SELF)):
        assert isinstance(loaded, SecondOrderModel) and loaded.metadata == {"field": "displacement"}
        for key in ("stiffness", "damping", "input_matrix"):
            np.testing.assert_array_equal(getattr(loaded, key), getattr(model, key))
        assert loaded.fit_info == model.fit_info and loaded.reference_norm == model.reference_norm
        assert len(loaded.fit_info.candidates) > 1
        here = loaded.basis.V.mesh.comm
        gathered = DofLayout(loaded.basis.V).gather(loaded.basis.modes)
        if here.rank == 0:
            np.testing.assert_array_equal(gathered, modes)
        np.testing.assert_allclose(projection(loaded.basis), reference, rtol=1e-10, atol=1e-14)
        run = loaded.simulate(None, t, sine)
        np.testing.assert_array_equal(run.coefficients, expected.coefficients)
        loaded.basis.inner_product.destroy()
    info = on_root(comm, dyn.describe, path)
    assert info["kind"] == "second_order" and info["has_basis"] and info["saved_on_ranks"] == comm.size
    assert (info["n_modes"], info["n_inputs"]) == (4, 1) and info["min_eig_stiffness"] > 0
    assert info["fit_report"]["regularization"] == model.fit_info.regularization
    release(basis, petsc_objects)


def test_save_and_load_without_basis(tmp_dir):
    """A fitted model and a plain one (no damping, no inputs, no fit report) without a basis: saved once on
    COMM_WORLD, loaded on any rank count; a model without the structure is refused on every rank."""
    comm = MPI.COMM_WORLD
    K, C, B = random_structure(5, r=4, m=2)
    t = np.linspace(0.0, 8.0, 401)
    inputs = np.column_stack([np.ones(t.size), np.sin(t)])
    run = SecondOrderModel(K, C, B).simulate(None, t, inputs)
    fitted = fit_second_order_coefficients(run.coefficients, t, run.inputs, velocities=run.velocities,
                                           accelerations=run.accelerations)  # fmt: skip
    rayleigh = fit_second_order_coefficients(run.coefficients, t, run.inputs, velocities=run.velocities,
                                             accelerations=run.accelerations, damping="rayleigh")  # fmt: skip
    assert rayleigh.fit_info.rayleigh is not None
    plain = SecondOrderModel(K[:3, :3])
    for name, model, s in (("fitted", fitted, inputs), ("rayleigh", rayleigh, inputs), ("plain", plain, None)):
        path = dyn.save(model, tmp_dir / f"{name}.femml")
        assert on_root(comm, dyn.describe, path)["saved_on_ranks"] == comm.size
        initial = (np.ones(model.n_modes), np.zeros(model.n_modes))
        expected = model.simulate(initial, t, s)
        for c in (comm, MPI.COMM_SELF):
            loaded = dyn.load(path, comm=c)
            assert isinstance(loaded, SecondOrderModel) and loaded.basis is None
            for key in ("stiffness", "damping", "input_matrix"):
                np.testing.assert_array_equal(getattr(loaded, key), getattr(model, key))
            assert loaded.fit_info == model.fit_info and loaded.reference_norm == model.reference_norm
            np.testing.assert_array_equal(loaded.simulate(initial, t, s).coefficients, expected.coefficients)
    assert plain.fit_info is None and plain.n_inputs == 0
    for model, match in ((SecondOrderModel([[-1.0]]), "not positive definite"),
                         (SecondOrderModel([[1.0]], [[-0.1]]), "not positive semi-definite")):  # fmt: skip
        raises_on_all_ranks(comm, ValueError, match, dyn.save, model, tmp_dir / "unstable.femml")
    assert not (tmp_dir / "unstable.femml").exists()


def test_load_rejects_bad_second_order_files_on_every_rank(tmp_dir):
    """Files with valid checksums but bad entries: each is refused by the validation, on every rank."""
    comm = MPI.COMM_WORLD
    _, petsc_objects, basis, model = small_beam(comm)
    path = dyn.save(model, tmp_dir / "good.femml")

    def forgeries(tree):
        K, C, B = (tree[f"model/{k}"] for k in ("stiffness", "damping", "input_matrix"))
        r = K.shape[0]
        lam, vecs = np.linalg.eigh(K)
        indefinite = (vecs * np.where(np.arange(r) == 0, -lam, lam)) @ vecs.T
        info = json.loads(tree["model/fit_info"])
        yield "stiffness is not symmetric", {"model/stiffness": K + np.triu(np.full_like(K, 1e-6 * lam[-1]), 1)}
        yield "stiffness is not positive definite", {"model/stiffness": 0.5 * (indefinite + indefinite.T)}
        yield "damping is not positive semi-definite", {"model/damping": -C - np.eye(r)}
        yield "NaN or inf", {"model/stiffness": np.where(np.eye(r, dtype=bool), np.nan, K)}
        yield "NaN or inf", {"model/input_matrix": np.full_like(B, np.inf)}
        yield r"stiffness \(4, 3\)", {"model/stiffness": K[:, :-1]}
        yield r"input matrix \(3, 1\)", {"model/input_matrix": B[:-1]}
        yield "'model/damping' is missing", {"model/damping": None}
        yield "dtype int64", {"model/damping": np.zeros((r, r), dtype=np.int64)}
        yield "unknown model kind 'third_order'", {"model/kind": "third_order"}
        yield "modes .* inconsistent", {"model/n_modes": r - 1, "model/stiffness": K[:-1, :-1],
                                        "model/damping": C[:-1, :-1], "model/input_matrix": B[:-1]}  # fmt: skip
        yield "reference norm", {"model/reference_norm": -1.0}
        yield "'n_samples' = 'many'", {"model/fit_info": json.dumps({**info, "n_samples": "many"})}
        yield "'candidates'", {"model/fit_info": json.dumps({**info, "candidates": [[1e-8]]})}
        del info["residual"]
        yield "'residual' is missing", {"model/fit_info": json.dumps(info)}
        yield "invalid fit report", {"model/fit_info": "{not json"}
        yield "'damping' = 'banana'", {"model/fit_info": json.dumps({**info, "residual": 0.0, "damping": "banana"})}
        yield "'rayleigh'", {"model/fit_info": json.dumps({**info, "residual": 0.0, "rayleigh": [1.0, -1.0]})}
        cells = tree["mesh/cells"]
        yield "'mesh/cells': indices outside", {"mesh/cells": cells + 10**6}
        yield "'mesh/cells': indices outside", {"mesh/cells": cells - 10**6}
        yield "'mesh/cells': shape", {"mesh/cells": cells[:, :-1]}
        yield "'mesh/lagrange_variant'", {"mesh/lagrange_variant": 99}
        yield "LagrangeVariant", {"element/lagrange_variant": 50}
        yield "'element/family'", {"element/family": "N1curl"}
        yield "'basis/orthonormality_error'", {"basis/orthonormality_error": np.inf}
        yield "'basis/singular_values': 0 values", {"basis/singular_values": np.zeros(0)}
        yield "metadata are not valid JSON", {"metadata": "{x"}
        yield "metadata are not a JSON object", {"metadata": "[1]"}
        rows = tree["basis/matrix/rows"] + tree["layout/keys"].size
        yield "'basis/matrix/rows': indices outside", {"basis/matrix/rows": rows}
        yield "not orthonormal", {"basis/modes": 1.1 * tree["basis/modes"]}

    cases = []
    if comm.rank == 0:
        tree = read_tree(path, kind=dyn.archive.FORMAT, version=dyn.archive.VERSION, what="test")
        for k, (match, changes) in enumerate(forgeries(tree)):
            forged = {**tree, **{key: v for key, v in changes.items() if v is not None}}
            for key in [key for key, v in changes.items() if v is None]:
                del forged[key]
            write_tree(tmp_dir / f"bad_{k}.femml", forged, kind=dyn.archive.FORMAT, version=dyn.archive.VERSION)
            cases.append((match, str(tmp_dir / f"bad_{k}.femml")))
    for match, bad in comm.bcast(cases, root=0):
        raises_on_all_ranks(comm, fem_ml.FileFormatError, match, dyn.load, bad)
    release(basis, petsc_objects)


def test_read_inputs_of_the_command_line(tmp_dir):
    """``--input``: constants or a .npy file of floats at the output times; anything else is a clear error."""
    folder = tmp_dir / f"rank{MPI.COMM_WORLD.rank}"
    folder.mkdir()
    values, summary = read_inputs("0.5,-1", 2, 3)
    np.testing.assert_array_equal(values, [[0.5, -1.0]] * 3)
    assert summary == {"n_inputs": 2, "constant": [0.5, -1.0]}
    np.save(folder / "one.npy", np.linspace(0.0, 1.0, 3))
    np.testing.assert_array_equal(read_inputs(str(folder / "one.npy"), 1, 3)[0], [[0.0], [0.5], [1.0]])
    np.save(folder / "objects.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    np.save(folder / "ints.npy", np.ones((3, 1), dtype=np.int64))
    np.save(folder / "nan.npy", np.array([0.0, np.nan, 1.0]))
    for text, m, match in [
        (None, 1, "give --input"), ("1", 0, "no inputs"), ("1,2", 1, "1 input"), ("nan", 1, "finite"),
        ("a", 1, "numbers"), (str(folder / "objects.npy"), 1, "not a readable"), (str(folder / "nan.npy"), 1, "NaN"),
        (str(folder / "ints.npy"), 1, "floats"), (str(folder / "one.npy"), 2, r"shape \(3, 2\)"),
        (str(folder / "missing.npy"), 1, "not a readable"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            read_inputs(text, m, 3)


@pytest.mark.processes
def test_predict_command_line(tmp_dir):
    """``python -m fem_ml predict`` on a saved beam model, on 1 and 2 ranks: the displacement at every --t time, from
    rest, with inputs from a .npy file or constants, equal to the model's own simulation; errors give exit 2."""
    comm = MPI.COMM_WORLD
    _, petsc_objects, basis, model = small_beam(comm)
    path = dyn.save(model, tmp_dir / "beam.femml")
    t = np.linspace(0.0, 0.5, 26)
    history = np.sin(2 * np.pi * 2.0 * t)
    expected = {}
    for label, s in (("file", history), ("constant", np.full(t.size, 0.5))):
        q = model.simulate(None, t, s).coefficients[-1]
        expected[label] = comm.allreduce(float(np.sum(basis.reconstruct(q) ** 2)))  # |u(t_end)|^2 over all dofs
    release(basis, petsc_objects)

    def predict(launcher, *args):
        command = [*launcher, sys.executable, "-m", "fem_ml", "predict", str(path), "--t", "0:0.5:26", *args]
        return subprocess.run(command, capture_output=True, text=True, env=clean_env(), cwd=ROOT, timeout=120)

    def run():
        np.save(tmp_dir / "history.npy", history)
        results = []
        for launcher in ([], mpirun(2)):
            for label, value in (("file", str(tmp_dir / "history.npy")), ("constant", "0.5")):
                out = tmp_dir / f"{label}{len(launcher)}.xdmf"
                done = predict(launcher, "--input", value, "-o", str(out))
                assert done.returncode == 0, done.stderr
                text = out.read_text()
                times = [float(v) for v in re.findall(r'<Time Value="([^"]+)"', text)]
                last = re.findall(r"\.h5:(/Function/displacement/[^<]+)<", text)[-1]
                with h5py.File(out.with_suffix(".h5"), "r") as f:
                    squares = float(np.sum(f[last][...] ** 2))
                meta = json.loads(Path(str(out) + ".json").read_text())
                results.append((label, times, squares, meta))
        errors = [predict([], "-o", str(tmp_dir / "x.xdmf")),
                  predict(mpirun(2), "--input", "1", "--mu", "a=1", "-o", str(tmp_dir / "x.xdmf"))]  # fmt: skip
        return results, [(e.returncode, e.stderr) for e in errors]

    results, errors = on_root(comm, run)
    assert len(results) == 4
    for label, times, squares, meta in results:
        np.testing.assert_allclose(times, t, rtol=1e-15)
        assert squares == pytest.approx(expected[label], rel=1e-10)
        assert meta["model"] == str(path) and meta["kind"] == "second_order"
        assert meta["simulation"]["completed"] and meta["simulation"]["n_times_reached"] == t.size
        assert meta["inputs"]["n_inputs"] == 1 and len(meta["modal"]["natural_frequencies"]) == 4
    assert results[1][3]["inputs"]["constant"] == [0.5] and results[0][3]["inputs"]["max"] == [np.max(history)]
    (code_input, stderr_input), (code_mu, stderr_mu) = errors
    assert code_input == 2 and "give --input" in stderr_input
    assert code_mu == 2 and stderr_mu.count("error: --mu") == 1  # the message once, from rank 0


# ---------------------------------------------------------------------------------------------------------------
# The demo, run as a script
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.processes
def test_demo_runs_as_script(tmp_dir):
    comm = MPI.COMM_WORLD

    def run() -> dict:
        env = clean_env()
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        out = tmp_dir / "demo"
        proc = subprocess.run([sys.executable, str(ROOT / "demos" / "dynamics_beam.py"), "--small", "--out-dir",
                               str(out)], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        for name in ("tip_displacement.png", "free_energy.png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for name in ("displacement_sine.xdmf", "displacement_random.xdmf"):
            assert "<Time Value=" in (out / name).read_text()
        operators = json.loads((out / "reduced_operators.json").read_text())
        assert np.allclose(operators["stiffness"], np.transpose(operators["stiffness"]))
        return json.loads((out / "summary.json").read_text())

    summary = on_root(comm, run)
    assert {"n_histories", "tip_error_rel_peak_max", "free_energy_growth_max", "speedup_median"} <= set(summary)
    assert summary["n_histories"] == 2 and summary["n_blowups"] == 0
    assert summary["tip_error_rel_peak_max"] < 0.02
    assert summary["free_energy_growth_max"] <= 1e-12 and summary["free_energy_growth_max_noisy_fit"] <= 1e-12
    assert summary["speedup_median"] > 0
    # The default damping model is Rayleigh's; the general symmetric one is fitted alongside for comparison.
    assert summary["damping"] == "rayleigh" and len(summary["rayleigh_fitted"]) == 2
    assert min(summary["rayleigh_fitted"]) > 0 and summary["tip_error_rel_peak_max_symmetric_damping"] < 0.02
