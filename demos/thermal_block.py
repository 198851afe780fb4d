# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The thermal block
#
# The classic benchmark of reduced-order modelling. On the unit square $\Omega$, split into four quadrants
# $\Omega_0, \dots, \Omega_3$, find $u$ with
#
# $$
# -\nabla \cdot (\kappa(\mu) \nabla u) = 1 \quad \text{in } \Omega, \qquad u = 0 \quad \text{on } \partial\Omega,
# \qquad \kappa = \mu_i \text{ on } \Omega_i,
# $$
#
# for $\mu \in [0.1, 1]^4$. Quadrant 0 is $[0, \tfrac12]^2$, 1 is $[\tfrac12, 1] \times [0, \tfrac12]$, 2 is
# $[0, \tfrac12] \times [\tfrac12, 1]$ and 3 is $[\tfrac12, 1]^2$. We discretize with P1 elements on a triangulated
# $100 \times 100$ grid, collect 100 Latin-hypercube snapshots, compress them by a POD in the $H^1$ inner product,
# train a network from $\mu$ to the POD coefficients and measure the surrogate on 50 random test parameters.
#
# Run it on any number of ranks:
#
# ```bash
# mpirun -n 2 python demos/thermal_block.py
# ```
#
# It writes `results/thermal_block/summary.json` and, for the first test parameters, truth, prediction and error
# as XDMF (`comparison.xdmf`, open with ParaView's *Xdmf3 Reader*) and VTX (`comparison.bp`).

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

UNIT = "1"  # the unit of the temperature field, as recorded in the output files

# %% [markdown]
# ## The full-order model
# `build_problem` returns the function space and a `solve(mu)` that returns the finite-element solution as a
# `dolfinx.fem.Function`. The conductivity is a piecewise-constant (DG0) function whose cell values are set from
# $\mu$ before each solve; the linear system is solved by a parallel sparse LU factorization, MUMPS by default.
# MUMPS schedules its parallel factorization dynamically, so on several ranks the last bits of a solution depend
# on timing; `lu_solver="superlu_dist"` is slower here (about 3x) but bitwise reproducible, which a snapshot run
# that must resume bit for bit after a crash needs.


# %%
def build_problem(
    comm: MPI.Comm, n_cells: int = 100, *, lu_solver: str = "mumps"
) -> tuple[fem.FunctionSpace, Callable[[np.ndarray], fem.Function]]:
    """Thermal block on an ``n_cells x n_cells`` triangulated unit square; returns ``(V, solve)``.

    Args:
        comm: Communicator of the mesh.
        n_cells: Cells per side (the mesh has ``2 n_cells^2`` triangles).
        lu_solver: PETSc's LU package: ``"mumps"`` (fast) or ``"superlu_dist"`` (bitwise reproducible in parallel).
    """
    domain = mesh.create_unit_square(comm, n_cells, n_cells, mesh.CellType.triangle)
    V = fem.functionspace(domain, ("Lagrange", 1))
    Q = fem.functionspace(domain, ("DG", 0))

    # Quadrant index of each cell (DG0 interpolation evaluates at cell midpoints).
    block = fem.Function(Q)
    block.interpolate(lambda x: (x[0] > 0.5).astype(np.float64) + 2.0 * (x[1] > 0.5))
    block_index = np.rint(block.x.array).astype(np.int64)
    kappa = fem.Function(Q)

    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = ufl.inner(kappa * ufl.grad(u), ufl.grad(v)) * ufl.dx
    L = fem.Constant(domain, 1.0) * v * ufl.dx
    tdim = domain.topology.dim
    domain.topology.create_connectivity(tdim - 1, tdim)
    boundary_dofs = fem.locate_dofs_topological(V, tdim - 1, mesh.exterior_facet_indices(domain.topology))
    bc = fem.dirichletbc(0.0, boundary_dofs, V)
    uh = fem.Function(V, name="u")
    problem = LinearProblem(
        a,
        L,
        bcs=[bc],
        u=uh,
        petsc_options_prefix="thermal_block_",
        petsc_options={"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": lu_solver},
    )

    def solve(mu: np.ndarray) -> fem.Function:
        kappa.x.array[:] = mu[block_index]
        problem.solve()
        return uh

    return V, solve


# %% [markdown]
# ## Snapshots, POD, network, surrogate
# Every stage is one call; every object can be inspected. The POD keeps the fewest modes whose discarded
# energy, relative to the total, is at most `tol`; the network is trained on the relative coefficient error,
# which equals the relative $H^1$ error of the field because the modes are $H^1$-orthonormal.


# %%
def main(
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    n_cells: int = 100,
    n_train: int = 100,
    n_test: int = 50,
    seed: int = 0,
    tol: float = 1e-7,
    n_networks: int = 2,
    hidden_layers: tuple[int, ...] = (128, 128, 128),
    adam_epochs: int = 1500,
    learning_rate: float = 1e-2,
    lm_iterations: int | None = None,
    out_dir: str | Path = "results/thermal_block",
    n_output: int = 3,
    progress: bool = True,
) -> dict[str, float | int | str]:
    """Run the thermal-block demo; returns the summary written to ``out_dir/summary.json``."""
    out = Path(out_dir)
    V, solve = build_problem(comm, n_cells)
    space = fem_ml.ParameterSpace({f"mu{i}": (0.1, 1.0) for i in range(4)})
    train = space.sample(n_train, method="lhs", seed=seed)
    test = space.sample(n_test, method="uniform", seed=seed + 1)

    start = time.perf_counter()
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=space, progress=progress)
    t_snapshots = time.perf_counter() - start

    start = time.perf_counter()
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=tol)
    t_pod = time.perf_counter() - start

    start = time.perf_counter()
    rom = fem_ml.train_surrogate(
        basis,
        snapshots,
        space,
        seed=seed,
        input_transform="log",
        hidden_layers=hidden_layers,
        n_networks=n_networks,
        adam_epochs=adam_epochs,
        learning_rate=learning_rate,
        **({} if lm_iterations is None else {"lm_iterations": lm_iterations}),
        progress=progress,
    )
    t_train = time.perf_counter() - start

    # %% [markdown]
    # ## Generalization: errors on unseen parameters
    # The test solutions are computed by the full model; `rom.errors` reports the surrogate's relative errors
    # beside those of the POD projection, the best the basis allows.

    # %%
    truth = fem_ml.collect_snapshots(solve, test, V, space=space, progress=progress)
    report = rom.errors(test, truth)

    # %% [markdown]
    # ## Speed: parameter in, finished Function out
    # The full solve is timed by `collect_snapshots` (assembly and LU solve). The surrogate is timed from the
    # parameter point to the finished `Function` with ghosts updated, once per test point after a warm-up.

    # %%
    t_surrogate = rom.time_query(test)

    # %% [markdown]
    # ## Output for ParaView
    # Truth, prediction and error for the first test parameters, one step per parameter point, in XDMF and VTX;
    # the POD modes as a series (one step per mode); and a sweep of $\mu_0$ over its range with the other
    # conductivities at the centre of the box, one step per value, the step's time being the value of $\mu_0$.
    # The temperature is nondimensional here; the unit we name is recorded in each file's `.json` side file.

    # %%
    k = min(n_output, n_test)
    names = ("temperature_truth", "temperature_prediction", "temperature_error")
    for suffix in ("xdmf", "bp"):
        fem_ml.write_comparison(
            out / f"comparison.{suffix}", rom, test[:k], truth.subset(np.arange(k)), names=names, unit=UNIT
        )
    fem_ml.write_modes(out / "modes.xdmf", basis)
    sweep = np.linspace(*space.bounds["mu0"], 10)
    fem_ml.write_sweep(out / "sweep_mu0.xdmf", rom, "mu0", sweep, name="temperature", unit=UNIT)

    # %% [markdown]
    # ## Save the surrogate
    # One file holds the mesh, the element, the basis, the networks and the test errors. It loads on any number of
    # ranks, in a script (`fem_ml.load(path)`) or from the command line:
    #
    # ```bash
    # python -m fem_ml info results/thermal_block/thermal_block.femml
    # mpirun -n 3 python -m fem_ml predict results/thermal_block/thermal_block.femml \
    #     --mu mu0=0.3,mu1=0.5,mu2=0.7,mu3=0.9 -o prediction.xdmf
    # ```

    # %%
    model_path = fem_ml.save(
        rom,
        out / "thermal_block.femml",
        test_errors=report,
        metadata={"field": "temperature", "demo": "thermal_block", "n_cells": n_cells, "seed": seed},
    )

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
    basis.destroy()  # the inner product pod assembled
    return summary


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-cells", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-networks", type=int, default=2, help="ensemble size")
    parser.add_argument("--hidden-layers", type=int, nargs="+", default=[128, 128, 128], metavar="WIDTH")
    parser.add_argument("--adam-epochs", type=int, default=1500)
    parser.add_argument("--learning-rate", type=float, default=1e-2, help="initial Adam learning rate")
    parser.add_argument(
        "--lm-iterations", type=int, default=None,
        help="force the Levenberg-Marquardt polish, at most this many steps (default: the polish chosen from the data)",
    )  # fmt: skip
    parser.add_argument("--n-output", type=int, default=3, help="test points written for ParaView")
    parser.add_argument("--out-dir", default="results/thermal_block")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if MPI.COMM_WORLD.rank == 0 else logging.WARNING)
    main(
        n_cells=args.n_cells, n_train=args.n_train, n_test=args.n_test, seed=args.seed, n_networks=args.n_networks,
        hidden_layers=tuple(args.hidden_layers), adam_epochs=args.adam_epochs, learning_rate=args.learning_rate,
        lm_iterations=args.lm_iterations, out_dir=args.out_dir, n_output=args.n_output, progress=args.progress,
    )  # fmt: skip
