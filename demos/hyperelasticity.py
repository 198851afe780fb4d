# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # A Neo-Hookean beam: a surrogate of a nonlinear (Newton) solve
#
# A beam $[0, 1] \times [0, 0.2] \times [0, 0.2]$ is clamped at $x = 0$ and pulled down by a traction
# $t = (0, 0, -g)$ on its free end. The displacement $u$ minimizes the compressible Neo-Hookean energy
#
# $$
# \Psi(u) = \int_\Omega \frac{\mu}{2} (I_C - 3) - \mu \ln J + \frac{\lambda}{2} (\ln J)^2 \,\mathrm{d}x
#   - \int_{x = 1} t \cdot u \,\mathrm{d}s, \qquad F = I + \nabla u,\; C = F^T F,\; I_C = \mathrm{tr}\, C,\;
#   J = \det F,
# $$
#
# with $\lambda = 10$, for the shear modulus $\mu \in [1, 4]$ and the load $g \in [0.01, 0.06]$, large enough for
# tip deflections of up to about a third of the length. DOLFINx's Newton solver (PETSc SNES) solves each sample
# in load steps; a solve whose Newton iteration fails is recorded and left out, not fatal.
#
# ```bash
# mpirun -n 2 python demos/hyperelasticity.py
# ```
#
# It writes `results/hyperelasticity/summary.json` (the thermal block's keys plus `max_tip_deflection` and
# `n_failed_solves`), the surrogate file and truth, prediction and error as XDMF.

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
from dolfinx.fem.petsc import NonlinearProblem

import fem_ml

SPACE = fem_ml.ParameterSpace({"mu": (1.0, 4.0), "g": (0.01, 0.06)})
LAMBDA, LOAD_STEPS = 10.0, 5


def build_problem(
    comm: MPI.Comm, n_cells: tuple[int, int, int] = (20, 4, 4)
) -> tuple[fem.FunctionSpace, Callable[[np.ndarray], fem.Function]]:
    """Neo-Hookean cantilever on a tetrahedral box mesh, P1 vector field; returns ``(V, solve)``."""
    domain = mesh.create_box(comm, [np.zeros(3), np.array([1.0, 0.2, 0.2])], list(n_cells), mesh.CellType.tetrahedron)
    V = fem.functionspace(domain, ("Lagrange", 1, (3,)))
    u, v = fem.Function(V, name="displacement"), ufl.TestFunction(V)
    mu, load = fem.Constant(domain, 1.0), fem.Constant(domain, 0.0)
    F = ufl.variable(ufl.Identity(3) + ufl.grad(u))
    J, I_C = ufl.det(F), ufl.tr(F.T * F)
    psi = (mu / 2) * (I_C - 3) - mu * ufl.ln(J) + (LAMBDA / 2) * ufl.ln(J) ** 2
    P = ufl.diff(psi, F)
    fdim = domain.topology.dim - 1
    end = mesh.locate_entities_boundary(domain, fdim, lambda x: np.isclose(x[0], 1.0))
    ds = ufl.Measure("ds", domain=domain, subdomain_data=mesh.meshtags(domain, fdim, end, np.ones_like(end)))
    residual = ufl.inner(P, ufl.grad(v)) * ufl.dx - ufl.inner(ufl.as_vector((0.0, 0.0, -load)), v) * ds(1)
    clamped = fem.locate_dofs_topological(
        V, fdim, mesh.locate_entities_boundary(domain, fdim, lambda x: np.isclose(x[0], 0.0))
    )
    problem = NonlinearProblem(
        residual, u, bcs=[fem.dirichletbc(np.zeros(3), clamped, V)], petsc_options_prefix="hyperelasticity_",
        petsc_options={"snes_type": "newtonls", "snes_linesearch_type": "basic", "snes_rtol": 1e-9,
                       "snes_atol": 1e-12, "snes_max_it": 30, "ksp_type": "preonly", "pc_type": "lu",
                       "pc_factor_mat_solver_type": "mumps"},
    )  # fmt: skip

    def solve(p: np.ndarray) -> fem.Function:
        mu.value = p[0]
        u.x.array[:] = 0.0  # every sample starts from the undeformed beam: results depend on p only
        for step in range(1, LOAD_STEPS + 1):
            load.value = p[1] * step / LOAD_STEPS
            problem.solve()
            fem_ml.check_converged(problem.solver, what=f"Newton (load step {step})")
        return u

    return V, solve


# %% [markdown]
# ## Snapshots (Newton solves), POD, network, errors and speed


# %%
def main(
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    n_cells: tuple[int, int, int] = (20, 4, 4),
    n_train: int = 60,
    n_test: int = 30,
    seed: int = 0,
    tol: float = 1e-8,
    n_networks: int = 2,
    hidden_layers: tuple[int, ...] = (128, 128, 128),
    adam_epochs: int = 3000,
    lbfgs_iterations: int = 1000,
    out_dir: str | Path = "results/hyperelasticity",
    n_output: int = 3,
    progress: bool = True,
) -> dict[str, float | int | str]:
    """Run the Neo-Hookean demo; returns the summary written to ``out_dir/summary.json``."""
    out = Path(out_dir)
    V, solve = build_problem(comm, n_cells)
    train = SPACE.sample(n_train, method="lhs", seed=seed)
    test = SPACE.sample(n_test, method="uniform", seed=seed + 1)

    start = time.perf_counter()
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=SPACE, progress=progress)
    t_snapshots = time.perf_counter() - start
    start = time.perf_counter()
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=tol)
    t_pod = time.perf_counter() - start
    start = time.perf_counter()
    rom = fem_ml.train_surrogate(
        basis, snapshots, SPACE, seed=seed, input_transform="log", hidden_layers=hidden_layers,
        n_networks=n_networks, adam_epochs=adam_epochs, lbfgs_iterations=lbfgs_iterations, progress=progress,
    )  # fmt: skip
    t_train = time.perf_counter() - start

    truth = fem_ml.collect_snapshots(solve, test, V, space=SPACE, progress=progress)
    report = rom.errors(truth.parameters, truth)
    t_surrogate = rom.time_query(truth.parameters)
    # Largest downward tip displacement over the training set: the response is visibly nonlinear.
    max_tip = float(comm.allreduce(-np.min(snapshots.values[2::3]) if snapshots.values.size else 0.0, op=MPI.MAX))

    k = min(n_output, len(truth))
    fem_ml.write_comparison(
        out / "comparison.xdmf", rom, truth.parameters[:k], truth.subset(np.arange(k)), unit="m",
        names=("displacement_truth", "displacement_prediction", "displacement_error"),
    )  # fmt: skip
    fem_ml.write_modes(out / "modes.xdmf", basis)
    loads = np.linspace(*SPACE.bounds["g"], 6)
    fem_ml.write_sweep(out / "sweep_load.xdmf", rom, "g", loads, name="displacement", unit="m")
    model_path = fem_ml.save(rom, out / "hyperelasticity.femml", test_errors=report, metadata={"field": "displacement"})

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
        extra={"max_tip_deflection": max_tip},
    )
    rom.destroy()
    return summary


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=60)
    parser.add_argument("--n-test", type=int, default=30)
    parser.add_argument("--out-dir", default="results/hyperelasticity")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if MPI.COMM_WORLD.rank == 0 else logging.WARNING)
    main(n_train=args.n_train, n_test=args.n_test, out_dir=args.out_dir)
