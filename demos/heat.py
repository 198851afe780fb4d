# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Heat equation: a surrogate that takes time as an input
#
# On the unit square, find $u(x, t)$ with
#
# $$
# \partial_t u - \kappa \Delta u = s\, e^{-|x - x_0|^2 / (2 \cdot 0.1^2)}, \qquad u = 0 \text{ on } \partial\Omega,
# \qquad u(\cdot, 0) = 0,
# $$
#
# for the diffusivity $\kappa \in [0.01, 0.1]$, the source strength $s \in [1, 5]$ and its horizontal position
# $x_0 = (c, 0.5)$, $c \in [0.3, 0.7]$. Backward Euler with $\Delta t = 0.01$ up to $T = 0.5$, P1 elements.
#
# Each training solve integrates a whole trajectory; `fem_ml.collect_trajectories` keeps it at a few output
# times and adds the time as the last parameter, so the network maps $(\kappa, s, c, t) \mapsto$ POD
# coefficients and answers at any time of $[0.05, 0.5]$, also between the output times it was trained on. (The
# alternative, a POD in time per parameter, would need a second interpolation in time; the network does both.)
#
# ```bash
# mpirun -n 2 python demos/heat.py
# ```
#
# It writes `results/heat/summary.json` (the thermal block's keys; `t_full_solve_median_s` is one whole
# trajectory, the cost of one answer at the final time) and, for the first test parameters, truth, prediction and
# error at every time step as an XDMF time series (`trajectory.xdmf`).

# %%
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from mpi4py import MPI

import numpy as np
import ufl
from dolfinx import fem, mesh
from dolfinx.fem.petsc import LinearProblem

import fem_ml

DT, T_END, T_START = 0.01, 0.5, 0.05
SPACE = fem_ml.ParameterSpace({"kappa": (0.01, 0.1), "s": (1.0, 5.0), "c": (0.3, 0.7)})
SPACE_T = fem_ml.ParameterSpace({**SPACE.bounds, "t": (T_START, T_END)})


def build_problem(
    comm: MPI.Comm, n_cells: int = 32
) -> tuple[fem.FunctionSpace, Callable[[np.ndarray, np.ndarray], Iterator[fem.Function]]]:
    """Heat equation on an ``n_cells x n_cells`` unit square; returns ``(V, solve)``.

    ``solve(mu, times)`` integrates from 0 and yields the solution at each of ``times`` (multiples of ``DT``).
    """
    domain = mesh.create_unit_square(comm, n_cells, n_cells)
    V = fem.functionspace(domain, ("Lagrange", 1))
    kappa, strength, centre = fem.Constant(domain, 0.05), fem.Constant(domain, 1.0), fem.Constant(domain, 0.5)
    x = ufl.SpatialCoordinate(domain)
    source = strength * ufl.exp(-((x[0] - centre) ** 2 + (x[1] - 0.5) ** 2) / (2 * 0.1**2))
    u_old, uh = fem.Function(V), fem.Function(V, name="temperature")
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = (u * v + DT * kappa * ufl.inner(ufl.grad(u), ufl.grad(v))) * ufl.dx
    L = (u_old + DT * source) * v * ufl.dx
    tdim = domain.topology.dim
    domain.topology.create_connectivity(tdim - 1, tdim)
    boundary = fem.locate_dofs_topological(V, tdim - 1, mesh.exterior_facet_indices(domain.topology))
    bc = fem.dirichletbc(0.0, boundary, V)
    problem = LinearProblem(
        a, L, bcs=[bc], u=uh, petsc_options_prefix="heat_",
        petsc_options={"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    )  # fmt: skip

    def solve(mu: np.ndarray, times: np.ndarray) -> Iterator[fem.Function]:
        kappa.value, strength.value, centre.value = mu
        u_old.x.array[:] = 0.0
        steps = np.rint(np.asarray(times) / DT).astype(int)
        for step in range(1, steps[-1] + 1):
            problem.solve()
            u_old.x.array[:] = uh.x.array
            if step in steps:
                yield uh

    return V, solve


# %% [markdown]
# ## Trajectories, POD, network with time as input


# %%
def main(
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    n_cells: int = 32,
    n_train: int = 60,
    n_test: int = 10,
    train_every: int = 5,
    seed: int = 0,
    tol: float = 1e-7,
    n_networks: int = 2,
    hidden_layers: tuple[int, ...] = (128, 128, 128),
    adam_epochs: int = 3000,
    lbfgs_iterations: int = 1000,
    out_dir: str | Path = "results/heat",
    progress: bool = True,
) -> dict[str, float | int | str]:
    """Run the heat demo; returns the summary written to ``out_dir/summary.json``."""
    out = Path(out_dir)
    V, solve = build_problem(comm, n_cells)
    all_steps = np.arange(round(T_START / DT), round(T_END / DT) + 1) * DT
    train_times = all_steps[::train_every]
    train = SPACE.sample(n_train, method="lhs", seed=seed)
    test = SPACE.sample(n_test, method="uniform", seed=seed + 1)

    start = time.perf_counter()
    snapshots = fem_ml.collect_trajectories(solve, train, V, times=train_times, space=SPACE, progress=progress)
    t_snapshots = time.perf_counter() - start
    start = time.perf_counter()
    basis = fem_ml.pod(snapshots, inner_product="l2", tol=tol)
    t_pod = time.perf_counter() - start
    start = time.perf_counter()
    rom = fem_ml.train_surrogate(
        basis, snapshots, SPACE_T, seed=seed, input_transform="log", hidden_layers=hidden_layers,
        n_networks=n_networks, adam_epochs=adam_epochs, lbfgs_iterations=lbfgs_iterations, progress=progress,
    )  # fmt: skip
    t_train = time.perf_counter() - start

    # %% [markdown]
    # ## Errors at every time step of unseen trajectories (most of them between the training times)

    # %%
    truth = fem_ml.collect_trajectories(solve, test, V, times=all_steps, space=SPACE, progress=progress)
    report = rom.errors(truth.parameters, truth)
    t_surrogate = rom.time_query(truth.parameters[:: len(all_steps) // 5])

    first = slice(0, len(all_steps))
    fem_ml.write_comparison(
        out / "trajectory.xdmf", rom, truth.parameters[first], truth.subset(np.arange(len(all_steps))),
        names=("temperature_truth", "temperature_prediction", "temperature_error"), times=all_steps, unit="K",
    )  # fmt: skip
    fem_ml.write_modes(out / "modes.xdmf", basis)
    sources = np.linspace(*SPACE_T.bounds["c"], 9)
    at = {**SPACE_T.to_dict(0.5 * (SPACE_T.lower + SPACE_T.upper)), "t": T_END}
    fem_ml.write_sweep(out / "sweep_source_position.xdmf", rom, "c", sources, at=at, name="temperature", unit="K")
    model_path = fem_ml.save(rom, out / "heat.femml", test_errors=report, metadata={"field": "temperature"})

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
        extra={"n_train_times": len(train_times), "n_test_times": len(all_steps)},
    )
    rom.destroy()
    return summary


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=60)
    parser.add_argument("--n-test", type=int, default=10)
    parser.add_argument("--out-dir", default="results/heat")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if MPI.COMM_WORLD.rank == 0 else logging.WARNING)
    main(n_train=args.n_train, n_test=args.n_test, out_dir=args.out_dir)
