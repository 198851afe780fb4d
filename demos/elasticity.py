# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # A linear-elastic cantilever: a vector-valued surrogate
#
# A beam $\Omega = [0, L] \times [0, W] \times [0, W]$ is clamped at $x = 0$ and loaded by a traction
# $t = g\,(0, \cos\theta, \sin\theta)$ on its free end $x = L$. The displacement $u$ solves
#
# $$
# -\nabla \cdot \sigma(u) = 0, \qquad \sigma(u) = 2\mu\,\varepsilon(u) + \lambda\,\mathrm{tr}\,\varepsilon(u)\,I,
# \qquad \mu = \frac{E}{2(1+\nu)}, \quad \lambda = \frac{E\nu}{(1+\nu)(1-2\nu)},
# $$
#
# with $u = 0$ at $x = 0$ and $\sigma n = t$ at $x = L$. The parameters are Young's modulus $E$, Poisson's ratio
# $\nu \in [0.2, 0.45]$, the angle $\theta$ and the magnitude $g$ of the traction. The field is vector valued
# (P2, block size 3); the POD runs in the energy inner product of the elasticity form at a reference material,
# and the surrogate also gives the von Mises stress, derived from the predicted displacement.
#
# ```bash
# mpirun -n 2 python demos/elasticity.py
# ```
#
# It writes `results/elasticity/summary.json` (the same keys as the thermal block), the surrogate file, and
# truth, prediction and error of the displacement and the von Mises stress as XDMF.

# %%
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

from mpi4py import MPI

import numpy as np
import ufl
from dolfinx import fem, mesh
from dolfinx.fem.petsc import LinearProblem

import fem_ml

LENGTH, WIDTH = 10.0, 1.0
SPACE = fem_ml.ParameterSpace({"E": (50.0, 200.0), "nu": (0.2, 0.45), "theta": (0.0, float(np.pi)), "g": (0.01, 0.1)})
#: Units of the output fields, recorded in the output files: lengths in m and moduli and tractions in GPa.
UNITS = {"u": "m", "stress": "GPa"}


def lame(E: float, nu: float) -> tuple[float, float]:
    r"""Lamé parameters :math:`(\mu, \lambda)` from Young's modulus and Poisson's ratio."""
    return E / (2 * (1 + nu)), E * nu / ((1 + nu) * (1 - 2 * nu))


# %% [markdown]
# ## The full-order model
# `build_problem` returns the vector P2 space, `solve(mu)` and the energy form used as inner product. The material
# and load enter as `fem.Constant`s, so one compiled form serves every parameter.


# %%
def build_problem(
    comm: MPI.Comm, n_cells: tuple[int, int, int] = (20, 3, 3), *, degree: int = 2
) -> tuple[fem.FunctionSpace, Callable[[np.ndarray], fem.Function], ufl.Form]:
    """Cantilever on a box mesh of ``n_cells`` hexahedra split into tetrahedra; returns ``(V, solve, energy)``."""
    domain = mesh.create_box(
        comm, [np.zeros(3), np.array([LENGTH, WIDTH, WIDTH])], list(n_cells), mesh.CellType.tetrahedron
    )
    V = fem.functionspace(domain, ("Lagrange", degree, (3,)))
    mu_c, lambda_c = fem.Constant(domain, 1.0), fem.Constant(domain, 1.0)
    traction = fem.Constant(domain, np.zeros(3))

    def sigma(w: ufl.core.expr.Expr, mu_: ufl.core.expr.Expr, lambda_: ufl.core.expr.Expr) -> ufl.core.expr.Expr:
        eps = ufl.sym(ufl.grad(w))
        return 2 * mu_ * eps + lambda_ * ufl.tr(eps) * ufl.Identity(3)

    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    fdim = domain.topology.dim - 1
    free_end = mesh.locate_entities_boundary(domain, fdim, lambda x: np.isclose(x[0], LENGTH))
    tags = mesh.meshtags(domain, fdim, free_end, np.ones_like(free_end))
    ds = ufl.Measure("ds", domain=domain, subdomain_data=tags)
    a = ufl.inner(sigma(u, mu_c, lambda_c), ufl.grad(v)) * ufl.dx
    L = ufl.inner(traction, v) * ds(1)
    clamped = fem.locate_dofs_topological(
        V, fdim, mesh.locate_entities_boundary(domain, fdim, lambda x: np.isclose(x[0], 0.0))
    )
    bc = fem.dirichletbc(np.zeros(3), clamped, V)
    uh = fem.Function(V, name="displacement")
    problem = LinearProblem(
        a, L, bcs=[bc], u=uh, petsc_options_prefix="elasticity_",
        petsc_options={"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    )  # fmt: skip

    def solve(p: np.ndarray) -> fem.Function:
        E, nu, theta, g = p
        mu_c.value, lambda_c.value = lame(E, nu)
        traction.value[:] = (0.0, g * np.cos(theta), g * np.sin(theta))
        problem.solve()
        fem_ml.check_converged(problem.solver, what="elasticity LU")
        return uh

    # Energy inner product at a reference material (E = 1, nu = 0.3): an H1-equivalent norm on the clamped space.
    mu_ref, lambda_ref = lame(1.0, 0.3)
    energy = ufl.inner(sigma(u, mu_ref, lambda_ref), ufl.grad(v)) * ufl.dx + ufl.inner(u, v) * ufl.dx
    return V, solve, energy


def von_mises(u: fem.Function, E: float, nu: float, Q: fem.FunctionSpace, out: fem.Function | None = None):
    r"""Von Mises stress :math:`\sqrt{3 s : s / 2}` with :math:`s = \sigma - \mathrm{tr}(\sigma) I / 3`, in ``Q``."""
    mu_, lambda_ = lame(E, nu)
    eps = ufl.sym(ufl.grad(u))
    stress = 2 * mu_ * eps + lambda_ * ufl.tr(eps) * ufl.Identity(3)
    dev = stress - ufl.tr(stress) / 3 * ufl.Identity(3)
    expression = fem.Expression(ufl.sqrt(1.5 * ufl.inner(dev, dev)), Q.element.interpolation_points)
    result = fem.Function(Q, name="von_mises") if out is None else out
    result.interpolate(expression)
    return result


# %% [markdown]
# ## Snapshots, POD in the energy product, network, errors and speed


# %%
def main(
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    n_cells: tuple[int, int, int] = (20, 3, 3),
    n_train: int = 100,
    n_test: int = 50,
    seed: int = 0,
    tol: float = 1e-7,
    n_networks: int = 2,
    hidden_layers: tuple[int, ...] = (128, 128, 128),
    adam_epochs: int = 3000,
    lbfgs_iterations: int = 1000,
    out_dir: str | Path = "results/elasticity",
    n_output: int = 3,
    progress: bool = True,
) -> dict[str, float | int | str]:
    """Run the cantilever demo; returns the summary written to ``out_dir/summary.json``."""
    out = Path(out_dir)
    V, solve, energy = build_problem(comm, n_cells)
    train = SPACE.sample(n_train, method="lhs", seed=seed)
    test = SPACE.sample(n_test, method="uniform", seed=seed + 1)

    start = time.perf_counter()
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=SPACE, progress=progress)
    t_snapshots = time.perf_counter() - start
    start = time.perf_counter()
    basis = fem_ml.pod(snapshots, inner_product=energy, tol=tol)
    t_pod = time.perf_counter() - start
    start = time.perf_counter()
    rom = fem_ml.train_surrogate(
        basis, snapshots, SPACE, seed=seed, input_transform="linear", hidden_layers=hidden_layers,
        n_networks=n_networks, adam_epochs=adam_epochs, lbfgs_iterations=lbfgs_iterations, progress=progress,
    )  # fmt: skip
    t_train = time.perf_counter() - start

    truth = fem_ml.collect_snapshots(solve, test, V, space=SPACE, progress=progress)
    report = rom.errors(test, truth)
    t_surrogate = rom.time_query(test)

    # %% [markdown]
    # ## Output: displacement and von Mises stress, truth next to prediction

    # %%
    k = min(n_output, n_test)
    Q = fem.functionspace(V.mesh, ("DG", 0))
    steps = []
    for i in range(k):
        u_true, u_rom = truth.function(i, name="u"), rom(test[i], name="u_rom")
        s_true = von_mises(u_true, test[i, 0], test[i, 1], Q).x.array.copy()
        s_rom = von_mises(u_rom, test[i, 0], test[i, 1], Q).x.array.copy()
        n_q = Q.dofmap.index_map.size_local
        steps.append({"von_mises_truth": s_true[:n_q], "von_mises_prediction": s_rom[:n_q],
                      "von_mises_error": (s_rom - s_true)[:n_q]})  # fmt: skip
    fem_ml.write_comparison(out / "displacement.xdmf", rom, test[:k], truth.subset(np.arange(k)), unit=UNITS["u"])
    fem_ml.write_fields(
        out / "von_mises.xdmf", Q, steps, metadata={"parameters": test[:k].tolist()},
        units=dict.fromkeys(steps[0], UNITS["stress"]),
    )  # fmt: skip
    fem_ml.write_modes(out / "modes.xdmf", basis)
    angles = np.linspace(*SPACE.bounds["theta"], 9)
    fem_ml.write_sweep(out / "sweep_theta.xdmf", rom, "theta", angles, name="displacement", unit=UNITS["u"])
    model_path = fem_ml.save(rom, out / "elasticity.femml", test_errors=report, metadata={"field": "displacement"})

    summary = fem_ml.write_summary(
        out,
        rom,
        report,
        training=snapshots,
        truth=truth,
        model_path=model_path,
        t_surrogate=t_surrogate,
        timings={"snapshots": t_snapshots, "pod": t_pod, "train": t_train},
        n_train=n_train,
        n_test=n_test,
    )
    rom.destroy()
    return summary


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--out-dir", default="results/elasticity")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if MPI.COMM_WORLD.rank == 0 else logging.WARNING)
    main(n_train=args.n_train, n_test=args.n_test, out_dir=args.out_dir)
