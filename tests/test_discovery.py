# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Equation discovery: recovery of a known equation, serial-vs-parallel agreement, weak forms, re-simulation."""

import json
import subprocess
import sys
from pathlib import Path

from mpi4py import MPI

import numpy as np
import pytest
import ufl
from conftest import clean_env, on_root
from dolfinx import fem, mesh
from dolfinx.fem.petsc import NonlinearProblem

from fem_ml import discovery

ROOT = Path(__file__).resolve().parents[1]
KAPPA, RATE = 0.05, -0.5
TRUTH = {"u": {"Δu": KAPPA, "u": RATE, "u^2": -1.0}}


def simulate(V, u0, n_steps, dt):
    """Crank-Nicolson steps of u_t = κ Δu + r u - u^2 (natural boundary conditions); owned values per step."""
    u, u_old = fem.Function(V), fem.Function(V)
    u.x.array[:] = u0.x.array
    u_old.x.array[:] = u0.x.array
    v = ufl.TestFunction(V)

    def rhs(w):
        return -KAPPA * ufl.inner(ufl.grad(w), ufl.grad(v)) + (RATE * w - w**2) * v

    F = ((u - u_old) / dt * v - 0.5 * rhs(u) - 0.5 * rhs(u_old)) * ufl.dx
    problem = NonlinearProblem(F, u, petsc_options_prefix="test_discovery_",
                               petsc_options={"snes_rtol": 1e-12, "ksp_type": "preonly", "pc_type": "lu",
                                              "pc_factor_mat_solver_type": "mumps"})  # fmt: skip
    n = V.dofmap.index_map.size_local
    out = [u0.x.array[:n].copy()]
    for _ in range(n_steps):
        problem.solve()
        u_old.x.array[:] = u.x.array
        out.append(u.x.array[:n].copy())
    problem.__del__()
    return np.array(out)


def initial(V, shift=0.0):
    u0 = fem.Function(V)
    u0.interpolate(lambda x: 1.0 + 0.8 * np.cos(np.pi * (x[0] + shift)) * np.cos(2 * np.pi * x[1]) + 0.5 * x[0])
    return u0


def build(comm):
    """Clean data of the known equation on a 12 x 12 unit square: (V, FieldData, library)."""
    domain = mesh.create_unit_square(comm, 12, 12, diagonal=mesh.DiagonalType.crossed)
    V = fem.functionspace(domain, ("Lagrange", 1))
    values = simulate(V, initial(V), 40, 0.01)
    data = discovery.FieldData.from_arrays(V, np.arange(41) * 0.01, values)
    library = discovery.polynomial_library(("u",), degree=2, derivatives=("x", "y", "Δ"), derivative_degree=1)
    return V, data, library


@pytest.fixture(scope="module")
def world():
    return build(MPI.COMM_WORLD)


@pytest.fixture(scope="module")
def world_model(world):
    _, data, library = world
    return discovery.discover(data, library, radius=0.3, windows=discovery.TimeWindows(n_windows=6, width=0.4),
                              n_models=10)  # fmt: skip


def test_recovers_known_equation(world_model):
    recovered, error = world_model.score(TRUTH)
    assert recovered, world_model.equation()
    assert error < 0.01
    assert world_model.inclusion[0, world_model.support[0]].min() > 0.5
    chosen = world_model.candidates[0][world_model.selected[0]]
    assert chosen.n_terms == 3 and all(c.cv_error >= 0 for c in world_model.candidates[0])


def test_serial_and_parallel_agree(world, world_model):
    """The same system and coefficients on COMM_SELF (whole mesh on each rank) and on COMM_WORLD, noise included."""
    _, data, library = world
    V_self, data_self, _ = build(MPI.COMM_SELF)
    windows = discovery.TimeWindows(n_windows=6, width=0.4)
    systems = []
    for V, d in ((data.V, data), (V_self, data_self)):
        bumps = discovery.bump_functions(V.mesh, radius=0.3, spacing=0.15)
        systems.append(discovery.assemble_system(d.with_noise(0.02, seed=3), library, bumps, windows=windows))
    a, b = systems
    assert np.abs(a.theta - b.theta).max() <= 1e-10 * np.abs(b.theta).max()
    assert np.abs(a.lhs - b.lhs).max() <= 1e-10 * np.abs(b.lhs).max()
    serial = discovery.discover(data_self, library, radius=0.3, windows=windows, n_models=10)
    assert np.array_equal(serial.support, world_model.support)
    scale = np.abs(serial.coefficients).max()
    assert np.abs(serial.coefficients - world_model.coefficients).max() <= 1e-10 * scale
    # every rank holds the same model
    gathered = MPI.COMM_WORLD.allgather(world_model.coefficients)
    assert all(np.array_equal(g, gathered[0]) for g in gathered)


def test_fd_time_derivative(world):
    _, data, library = world
    model = discovery.discover(data, library, radius=0.3, time_derivative="fd", n_models=5,
                               windows=discovery.TimeWindows(n_windows=6))  # fmt: skip
    recovered, error = model.score(TRUTH)
    assert recovered and error < 0.02


def test_sr3_recovers_known_equation(world, comm):
    _, data, library = world
    bumps = discovery.bump_functions(data.V.mesh, radius=0.3, spacing=0.15)
    system = discovery.assemble_system(data, library, bumps, windows=discovery.TimeWindows(n_windows=6, width=0.4))
    model = discovery.fit_system(system, comm, method="sr3", n_models=5, n_thresholds=20)
    recovered, error = model.score(TRUTH)
    assert recovered and error < 0.01, model.equation()


def test_equation_string():
    text = discovery.format_equation("u", ["Δu", "u", "u^2", "u^3", "1"], [0.01, 1.002, 0.0, -0.998, -2.0])
    assert text == "u_t = 0.01 Δu + 1.002 u - 0.998 u^3 - 2"
    assert discovery.format_equation("v", ["u"], [-0.5]) == "v_t = -0.5 u"
    assert discovery.format_equation("v", ["u"], [0.0]) == "v_t = 0"


def test_library_names_and_weak_forms(world):
    """Each term's weak form (derivatives moved) equals its model form against a test function that vanishes on ∂Ω."""
    V = world[0]
    domain = V.mesh
    W = fem.functionspace(domain, ("Lagrange", 1, (2,)))
    u = fem.Function(W)
    u.interpolate(lambda x: np.stack([np.sin(2 * x[0]) + x[1] ** 2, np.cos(3 * x[1]) * x[0] + 0.5]))
    library = discovery.polynomial_library(("u", "v"), degree=2, derivatives=("x", "y", "Δ", "xy"),
                                           derivative_degree=1)  # fmt: skip
    assert len(library) == 6 + 4 * 2 * 3
    assert {"u u_x", "v u_y", "Δu", "u v_xy", "1", "u v"} <= set(library.names)
    phi = fem.Function(fem.functionspace(domain, ("Lagrange", 2)))
    phi.interpolate(lambda x: (x[0] * (1 - x[0]) * x[1] * (1 - x[1])) ** 2)
    for term in library.terms:
        weak = fem.assemble_scalar(fem.form(term.weak(u, phi) * ufl.dx))
        model = fem.assemble_scalar(fem.form(term.model_integrand(u, phi) * ufl.dx))
        weak, model = domain.comm.allreduce(weak), domain.comm.allreduce(model)
        assert abs(weak - model) <= 1e-3 * max(abs(model), 1e-3), term.name  # P1 data: exact up to quadrature


def test_resimulation_matches_truth(world, world_model):
    V = world[0]
    u0 = initial(V, shift=0.3)
    truth = simulate(V, u0, 20, 0.01)[-1]
    final = None
    for u in world_model.simulate(u0, [0.2], dt=0.01):
        final = u.x.array[: V.dofmap.index_map.size_local].copy()
    comm = V.mesh.comm
    error = np.sqrt(comm.allreduce(float((final - truth) @ (final - truth))) / comm.allreduce(float(truth @ truth)))
    assert error < 0.01


def test_from_snapshots(world):
    V, data, _ = world
    import fem_ml

    def solve(mu, times):
        values = data.values[0]
        u = fem.Function(V)
        for k in range(len(times)):
            u.x.array[: values.shape[1]] = values[k]
            yield u

    snaps = fem_ml.collect_trajectories(solve, np.array([[0.0], [1.0]]), V, times=data.times[0], progress=False)
    both = discovery.FieldData.from_snapshots(snaps)
    assert len(both.values) == 2 and np.array_equal(both.values[1], data.values[0])


def test_input_errors_on_every_rank(world, comm):
    V, data, library = world
    n = V.dofmap.index_map.size_local
    bad = np.zeros((5, n + (1 if comm.rank == comm.size - 1 else 0)))
    with pytest.raises(ValueError, match="values must have shape"):
        discovery.FieldData.from_arrays(V, np.arange(5.0), bad)
    with pytest.raises(ValueError, match="strictly increasing"):
        discovery.FieldData.from_arrays(V, [0.0, 2.0, 1.0], np.zeros((3, n)))
    values = np.zeros((3, n))
    if comm.rank == 0:
        values[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        discovery.FieldData.from_arrays(V, [0.0, 1.0, 2.0], values)
    with pytest.raises(ValueError, match="No bump"):
        discovery.bump_functions(V.mesh, radius=0.6, spacing=0.1)
    vector = discovery.polynomial_library(("u", "v"), degree=1)
    bumps = discovery.bump_functions(V.mesh, radius=0.3, spacing=0.15)
    with pytest.raises(ValueError, match="components"):
        discovery.assemble_system(data, vector, bumps)
    with pytest.raises(ValueError, match="time_derivative"):
        discovery.assemble_system(data, library, bumps, time_derivative="spectral")
    system = discovery.assemble_system(data, library, bumps, windows=discovery.TimeWindows(n_windows=4))
    with pytest.raises(ValueError, match="Unknown method"):
        discovery.fit_system(system, comm, method="lasso")
    with pytest.raises(ValueError, match="n_folds"):
        discovery.fit_system(system, comm, n_folds=100)
    with pytest.raises(TypeError):
        discovery.discover(data, library, radius=0.3, threshold=0.1)  # unknown option
    with pytest.raises(ValueError, match="noise level"):
        data.with_noise(-1.0)
    with pytest.raises(ValueError, match="Unknown derivative"):
        discovery.polynomial_library(("u",), derivatives=("q",))
    with pytest.raises(ValueError, match="unique"):
        discovery.Library([discovery.Term("u", lambda u, v: u * v)] * 2)


def test_pareto_plot(world_model, comm, tmp_dir):
    path = discovery.plot_pareto(world_model, tmp_dir / "pareto.png", comm=comm)
    if comm.rank == 0:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.processes
@pytest.mark.parametrize(
    ("demo", "arguments"),
    [
        (
            "discover_reaction_diffusion",
            ["--n-cells", "8", "--t-end", "1.0", "--grid", "16", "8", "--pysindy-subdomains", "100", "--n-models", "5"],
        ),
        ("discover_burgers", ["--n-cells", "10", "--t-end", "0.3", "--no-pysindy", "--n-models", "5"]),
    ],
)
def test_demo_smoke(demo, arguments, comm, tmp_dir):
    """The demo as a script with tiny sizes: its summary has every key, one entry per noise level."""

    def run():
        out = tmp_dir / demo
        command = [sys.executable, str(ROOT / "demos" / f"{demo}.py"), *arguments, "--out-dir", str(out)]
        env = {**clean_env(), "PYTHONPATH": str(ROOT)}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        keys = ("support_recovered", "coef_rel_error_max", "resimulation_rel_l2_error", "pysindy_support_recovered",
                "pysindy_coef_rel_error_max", "t_identify_s")  # fmt: skip
        for key in keys:
            expected = 0 if key.startswith("pysindy") and "--no-pysindy" in arguments else 3
            assert len(summary[key]) == expected, key
        assert summary["noise_levels"] == [0.0, 0.01, 0.05]
        assert summary["n_candidate_terms"] >= (15 if demo == "discover_reaction_diffusion" else 20)
        assert all(np.isfinite(summary["resimulation_rel_l2_error"]))
        assert (out / "resimulation.xdmf").exists() and (out / "coefficients.png").exists()
        return summary

    on_root(comm, run)
