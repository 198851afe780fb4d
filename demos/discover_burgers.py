# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Equation discovery: 2-D viscous Burgers, a vector field with nonlinear advection
#
# The classic case of an equation rediscovered from data, here in 2-D and in the finite-element way. The data:
# snapshots of the velocity $\mathbf{u} = (u, v)$ on the unit square from DOLFINx,
#
# $$
# \partial_t \mathbf{u} + (\mathbf{u} \cdot \nabla)\mathbf{u} = \nu\, \Delta \mathbf{u}, \qquad \nu = 0.03,
# \qquad \mathbf{u} = 0 \text{ on } \partial\Omega,
# $$
#
# on an unstructured triangulation, P1 elements, Crank-Nicolson in time, from a smooth random initial velocity.
# Forgetting the equation, `fem_ml.discovery` looks for each component's equation
# $\partial_t u_c = \sum_i \xi_{ci}\theta_i(u, v)$ among 24 candidates: the monomials of $(u, v)$ up to degree 2, and
# $\partial_x, \partial_y, \Delta$ of $u$ and of $v$, each alone or times $u$ or $v$. The true equations are
#
# $$
# u_t = -u\,u_x - v\,u_y + \nu\,\Delta u, \qquad v_t = -u\,v_x - v\,v_y + \nu\,\Delta v .
# $$
#
# The weak form tests every candidate with bumps $\phi_j$ that vanish on the boundary: $u\,u_x$ becomes
# $-\int \frac{u^2}{2}\partial_x\phi$ (no derivative of the data), $v\,u_y$ keeps one derivative of the data, and
# $\Delta u$ becomes $-\int \nabla u\cdot\nabla\phi$. Both components share the tested library (one assembly per
# snapshot); only the tested time derivatives differ. Noise: 0 %, 1 % and 5 % of each component's standard
# deviation. The discovered model, a UFL form, is re-simulated by DOLFINx from a new initial velocity and compared
# with a held-out trajectory; PySINDy's `WeakPDELibrary` gets the same noisy data on a grid.
#
# ```bash
# mpirun -n 2 python demos/discover_burgers.py
# ```
#
# It writes `results/discover_burgers/summary.json`, the Pareto curves, the coefficients with their bootstrap
# spread and, for ParaView, the held-out trajectory and the re-simulation (`resimulation.xdmf`).

# %%
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from mpi4py import MPI

import numpy as np
import ufl
from dolfinx import fem, mesh
from dolfinx.fem.petsc import NonlinearProblem

import fem_ml
from fem_ml import discovery

NU = 0.03
TRUTH = {"u": {"u u_x": -1.0, "v u_y": -1.0, "Δu": NU}, "v": {"u v_x": -1.0, "v v_y": -1.0, "Δv": NU}}
PYSINDY_TRUTH = {
    "u": {"uu_1": -1.0, "vu_2": -1.0, "u_11": NU, "u_22": NU},
    "v": {"uv_1": -1.0, "vv_2": -1.0, "v_11": NU, "v_22": NU},
}


def unstructured_square(comm: MPI.Comm, n: int) -> mesh.Mesh:
    """A crossed ``n x n`` triangulation of the unit square with interior vertices moved by <= 0.15 h.

    No cell inverts.

    The displacement is a hash of the vertex coordinates, so the mesh is the same on any number of ranks.
    """
    domain = mesh.create_unit_square(comm, n, n, cell_type=mesh.CellType.triangle, diagonal=mesh.DiagonalType.crossed)
    x = domain.geometry.x
    inside = (x[:, 0] > 1e-9) & (x[:, 0] < 1 - 1e-9) & (x[:, 1] > 1e-9) & (x[:, 1] < 1 - 1e-9)
    for d, (a, b, c) in enumerate(((12.9898, 78.233, 43758.5453), (39.3468, 11.135, 24634.6345))):
        shift = np.modf(np.abs(np.sin(a * x[:, 0] + b * x[:, 1]) * c))[0] - 0.5
        x[inside, d] += 0.3 / n * shift[inside]
    return domain


def initial_condition(V: fem.FunctionSpace, seed: int) -> fem.Function:
    """A smooth random velocity that vanishes on the boundary: sin(πx) sin(πy) times random low modes."""
    rng = np.random.default_rng(seed)
    amplitude, phase = rng.standard_normal((2, 3, 3)), rng.uniform(0, 2 * np.pi, (2, 3, 3))

    def f(p: np.ndarray) -> np.ndarray:
        out = np.zeros((2, p.shape[1]))
        envelope = np.sin(np.pi * p[0]) * np.sin(np.pi * p[1])
        for c in range(2):
            for i in range(3):
                for j in range(3):
                    out[c] += amplitude[c, i, j] * np.cos(np.pi * (i * p[0] + j * p[1]) + phase[c, i, j])
        return 0.8 * envelope * out / np.sqrt(9)

    u0 = fem.Function(V, name="velocity")
    u0.interpolate(f)
    return u0


def dirichlet(V: fem.FunctionSpace) -> fem.DirichletBC:
    """U = 0 on the whole boundary."""
    domain = V.mesh
    tdim = domain.topology.dim
    domain.topology.create_connectivity(tdim - 1, tdim)
    dofs = fem.locate_dofs_topological(V, tdim - 1, mesh.exterior_facet_indices(domain.topology))
    return fem.dirichletbc(np.zeros(2), dofs, V)


def true_model(V: fem.FunctionSpace, u0: fem.Function, *, t_end: float, dt: float, every: int) -> tuple:
    """Crank-Nicolson trajectory of viscous Burgers; returns ``(times, owned values (n_times, n))``."""
    u, u_old = fem.Function(V), fem.Function(V)
    u.x.array[:] = u0.x.array
    u_old.x.array[:] = u0.x.array
    v = ufl.TestFunction(V)

    def rhs(w: Any) -> Any:
        return -ufl.inner(ufl.grad(w) * w, v) - NU * ufl.inner(ufl.grad(w), ufl.grad(v))

    F = (ufl.inner(u - u_old, v) / dt - 0.5 * rhs(u) - 0.5 * rhs(u_old)) * ufl.dx
    problem = NonlinearProblem(
        F, u, bcs=[dirichlet(V)], petsc_options_prefix="burgers_",
        petsc_options={"snes_rtol": 1e-10, "snes_atol": 1e-12, "ksp_type": "preonly", "pc_type": "lu",
                       "pc_factor_mat_solver_type": "mumps"},
    )  # fmt: skip
    n = V.dofmap.index_map.size_local * V.dofmap.index_map_bs
    values = [u0.x.array[:n].copy()]
    for step in range(1, round(t_end / dt) + 1):
        problem.solve()
        fem_ml.check_converged(problem.solver, what="Burgers Newton solver")
        u_old.x.array[:] = u.x.array
        if step % every == 0:
            values.append(u.x.array[:n].copy())
    problem.__del__()
    return np.arange(len(values)) * dt * every, np.array(values)


def candidate_library() -> discovery.Library:
    """24 candidates: monomials of (u, v) up to degree 2; ∂x, ∂y, Δ of u and v, alone or times u or v."""
    return discovery.polynomial_library(("u", "v"), degree=2, derivatives=("x", "y", "Δ"), derivative_degree=1)


# %% [markdown]
# ## Data, discovery at each noise level, PySINDy on the same data, re-simulation


# %%
def main(
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    n_cells: int = 24,
    t_end: float = 0.5,
    dt: float = 0.0025,
    every: int = 2,
    noise_levels: tuple[float, ...] = (0.0, 0.01, 0.05),
    radius: float = 0.15,
    n_windows: int = 12,
    grid: tuple[int, int] = (40, 40),
    pysindy: bool = True,
    pysindy_subdomains: int = 500,
    n_models: int = 50,
    seed: int = 0,
    out_dir: str | Path = "results/discover_burgers",
) -> dict[str, Any]:
    """Run the demo; returns the summary written to ``out_dir/summary.json``."""
    out = Path(out_dir)
    start_all = time.perf_counter()
    domain = unstructured_square(comm, n_cells)
    V = fem.functionspace(domain, ("Lagrange", 1, (2,)))
    start = time.perf_counter()
    times, values = true_model(V, initial_condition(V, seed), t_end=t_end, dt=dt, every=every)
    t_data = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
    clean = discovery.FieldData.from_arrays(V, times, values)
    library = candidate_library()
    windows = discovery.TimeWindows(n_windows=n_windows, width=0.25)
    axes = [np.linspace(0.0, 1.0, grid[0]), np.linspace(0.0, 1.0, grid[1])]

    held_ic = initial_condition(V, seed + 100)
    held_times, held_values = true_model(V, held_ic, t_end=t_end, dt=dt, every=every)
    n = V.dofmap.index_map.size_local * V.dofmap.index_map_bs

    def norm(a: np.ndarray) -> float:
        return float(np.sqrt(comm.allreduce(float(a @ a))))

    summary: dict[str, Any] = {
        "noise_levels": list(noise_levels), "n_candidate_terms": len(library), "n_ranks": comm.size,
        "n_dofs": V.dofmap.index_map.size_global * 2, "n_snapshots": len(times), "t_data_s": t_data,
    }  # fmt: skip
    rows: dict[str, list] = {k: [] for k in ("support_recovered", "coef_rel_error_max", "resimulation_rel_l2_error",
                                             "pysindy_support_recovered", "pysindy_coef_rel_error_max", "t_identify_s",
                                             "t_pysindy_s", "equation", "coefficients", "coefficient_std",
                                             "fd_support_recovered", "fd_coef_rel_error_max")}  # fmt: skip
    models = []
    for level in noise_levels:
        data = clean.with_noise(level, seed=seed + 1)
        start = time.perf_counter()
        model = discovery.discover(data, library, radius=radius, windows=windows, n_models=n_models, seed=seed)
        rows["t_identify_s"].append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
        recovered, error = model.score(TRUTH)
        rows["support_recovered"].append(recovered)
        rows["coef_rel_error_max"].append(error)
        rows["equation"].append(model.equation())
        rows["coefficients"].append({c: {k: model.coefficient(c, k) for k in TRUTH[c]} for c in TRUTH})
        rows["coefficient_std"].append(
            {c: {k: float(model.std[i, library.index(k)]) for k in TRUTH[c]} for i, c in enumerate(TRUTH)}
        )
        discovery.plot_pareto(model, out / f"pareto_noise_{level:g}.png", comm=comm)
        models.append(model)
        fd_model = discovery.discover(
            data, library, radius=radius, windows=windows, time_derivative="fd", n_models=n_models, seed=seed
        )
        fd_recovered, fd_error = fd_model.score(TRUTH)
        rows["fd_support_recovered"].append(fd_recovered)
        rows["fd_coef_rel_error_max"].append(fd_error)

        final = None
        for u in model.simulate(held_ic, [t_end], dt=dt, bcs=[dirichlet(V)]):
            final = u.x.array[:n].copy()
        assert final is not None
        rows["resimulation_rel_l2_error"].append(norm(final - held_values[-1]) / norm(held_values[-1]))
        if level == noise_levels[-1]:
            steps = []
            for u in model.simulate(held_ic, held_times[1:], dt=dt, bcs=[dirichlet(V)]):
                steps.append(u.x.array[:n].copy())
            fem_ml.write_fields(
                out / "resimulation.xdmf", V,
                [{"velocity_heldout": h, "velocity_discovered": s, "velocity_difference": s - h}
                 for h, s in zip(held_values[1:], steps, strict=True)],
                times=list(held_times[1:]),
                metadata={"equation": model.equation(), "noise_level": level},
            )  # fmt: skip

        if pysindy:
            start = time.perf_counter()
            sampled = discovery.sample_on_grid(data, axes)
            result = None
            if comm.rank == 0:
                path = discovery.pysindy_weak(
                    sampled, axes, [times], variables=["u", "v"], degree=2, derivative_order=2,
                    n_subdomains=pysindy_subdomains,
                    half_widths=[radius, radius, 0.125 * t_end], thresholds=np.geomspace(1e-5, 1.0, 41), seed=seed,
                )  # fmt: skip
                result = path.best(PYSINDY_TRUTH, ["u", "v"])
            found, ps_error, _ = comm.bcast(result, root=0)
            rows["pysindy_support_recovered"].append(found)
            rows["pysindy_coef_rel_error_max"].append(ps_error)
            rows["t_pysindy_s"].append(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    summary.update(rows)
    summary["t_total_s"] = comm.allreduce(time.perf_counter() - start_all, op=MPI.MAX)
    _plot_coefficients(comm, out / "coefficients.png", noise_levels, models, library)
    fem_ml.write_json(out / "summary.json", summary, comm=comm)
    if comm.rank == 0:
        for key, value in summary.items():
            print(f"{key:>28}: {value}")
    return summary


def _plot_coefficients(comm: MPI.Comm, path: Path, levels: Any, models: list, library: discovery.Library) -> None:
    """Discovered coefficients relative to the true ones, with two bootstrap standard deviations, per noise level."""

    def draw(ax: Any) -> None:
        k = 0
        for c, (component, terms) in enumerate(TRUTH.items()):
            for term, value in terms.items():
                i = library.index(term)
                ratio = [m.coefficients[c, i] / value for m in models]
                spread = [2 * m.std[c, i] / abs(value) for m in models]
                ax.errorbar(np.array(levels) * 100 + 0.06 * k, ratio, yerr=spread, fmt="o", capsize=3,
                            label=f"{component}_t: {term}")  # fmt: skip
                k += 1
        ax.axhline(1.0, color="gray", ls="--")
        ax.set_xlabel("noise (% of the field's standard deviation)")
        ax.set_ylabel("discovered / true coefficient (± 2 std)")
        ax.legend(fontsize=7)

    fem_ml.plots.save_plot(comm, path, draw)


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Discover 2-D viscous Burgers from noisy velocity data.")
    parser.add_argument("--n-cells", type=int, default=24)
    parser.add_argument("--t-end", type=float, default=0.5)
    parser.add_argument("--grid", type=int, nargs=2, default=(40, 40))
    parser.add_argument("--no-pysindy", action="store_true")
    parser.add_argument("--pysindy-subdomains", type=int, default=500)
    parser.add_argument("--n-models", type=int, default=50, help="bootstrap fits per discovery")
    parser.add_argument("--out-dir", default="results/discover_burgers")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if MPI.COMM_WORLD.rank == 0 else logging.WARNING)
    main(n_cells=args.n_cells, t_end=args.t_end, grid=tuple(args.grid), pysindy=not args.no_pysindy,
         pysindy_subdomains=args.pysindy_subdomains, n_models=args.n_models,
         out_dir=args.out_dir)  # fmt: skip
