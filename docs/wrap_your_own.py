# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Wrap your own DOLFINx problem: from a plain Poisson solver to a saved, reloaded surrogate.

The code of the documentation page "Wrap your own DOLFINx problem"; the docs build runs it (serially, small
mesh), so the page shows code that works. Run it yourself on any number of ranks::

    mpirun -n 4 python docs/wrap_your_own.py --out-dir results/wrap_your_own
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from mpi4py import MPI  # before dolfinx

import numpy as np
import ufl
from dolfinx import fem, io, mesh
from dolfinx.fem.petsc import LinearProblem

import fem_ml


def build_problem(comm: MPI.Comm, n_cells: int = 32) -> tuple[fem.FunctionSpace, Callable[[np.ndarray], fem.Function]]:
    """Poisson problem with an inclusion of conductivity ``mu[0]`` and a source of strength ``mu[1]``.

    Returns the function space ``V`` and ``solve(mu)``, which returns the solution as a Function on ``V``.
    """
    domain = mesh.create_unit_square(comm, n_cells, n_cells)
    V = fem.functionspace(domain, ("Lagrange", 1))

    # The parameters enter through a DG0 coefficient and a Constant, set before each solve.
    Q = fem.functionspace(domain, ("DG", 0))
    inclusion = fem.Function(Q)  # 1 in the disk of radius 0.3 around the centre, 0 elsewhere
    inclusion.interpolate(lambda x: ((x[0] - 0.5) ** 2 + (x[1] - 0.5) ** 2 < 0.3**2).astype(np.float64))
    kappa = fem.Function(Q)
    source = fem.Constant(domain, 1.0)

    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = ufl.inner(kappa * ufl.grad(u), ufl.grad(v)) * ufl.dx
    L = source * v * ufl.dx
    tdim = domain.topology.dim
    domain.topology.create_connectivity(tdim - 1, tdim)
    boundary = fem.locate_dofs_topological(V, tdim - 1, mesh.exterior_facet_indices(domain.topology))
    bc = fem.dirichletbc(0.0, boundary, V)
    uh = fem.Function(V, name="temperature")
    problem = LinearProblem(
        a,
        L,
        bcs=[bc],
        u=uh,
        petsc_options_prefix="wrap_",
        petsc_options={"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    )

    def solve(mu: np.ndarray) -> fem.Function:
        kappa.x.array[:] = 1.0 + (mu[0] - 1.0) * inclusion.x.array
        source.value = mu[1]
        problem.solve()
        fem_ml.check_converged(problem.solver)  # a failed solve becomes a recorded failure, not a bad snapshot
        return uh

    return V, solve


def main(
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    n_cells: int = 32,
    n_train: int = 40,
    n_test: int = 10,
    adam_epochs: int = 2000,
    lbfgs_iterations: int = 200,
    out_dir: str | Path = "results/wrap_your_own",
    progress: bool = True,
) -> dict[str, float | int | str]:
    """Build, check, use, save and reload a surrogate of :func:`build_problem`; returns a summary."""
    out = Path(out_dir)
    V, solve = build_problem(comm, n_cells)

    # [space]
    space = fem_ml.ParameterSpace({"kappa": (0.1, 10.0), "source": (0.5, 2.0)})
    train = space.sample(n_train, method="lhs", seed=0)
    test = space.sample(n_test, method="uniform", seed=1)
    # [space end]

    # [snapshots]
    store = fem_ml.SnapshotStore(out / "snapshots", V, space=space)
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=space, store=store, progress=progress)
    # [snapshots end]

    # [pod]
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=1e-6)
    # [pod end]

    # [train]
    rom = fem_ml.train_surrogate(
        basis,
        snapshots,
        space,
        seed=0,
        input_transform="log",  # kappa spans two decades
        hidden_layers=(32, 32),
        adam_epochs=adam_epochs,
        lbfgs_iterations=lbfgs_iterations,
        progress=progress,
    )
    # [train end]

    # [errors]
    truth = fem_ml.collect_snapshots(solve, test, V, space=space, progress=progress)
    report = rom.errors(test, truth)
    errors = report.summary()
    fem_ml.write_report_plots(out, rom, report, truth.values)  # POD spectrum, training, errors, a QoI (PNG)
    # [errors end]

    # [use]
    u = rom({"kappa": 5.0, "source": 1.0})  # a dolfinx.fem.Function on V, ghosts updated
    mean = fem.form(u * ufl.dx)  # any UFL form can use it; here the integral of the temperature

    def integral() -> float:
        return comm.allreduce(fem.assemble_scalar(mean), op=MPI.SUM)

    predicted = integral()
    qoi_errors = []
    for k in range(len(truth)):
        u.x.array[:] = truth.function(k).x.array  # the true solution, in the same Function
        true_value = integral()
        rom(test[k], out=u)  # refill the Function: no allocation, and `mean` stays valid
        qoi_errors.append(abs(integral() - true_value) / abs(true_value))
    # [use end]

    # [write]
    with io.XDMFFile(comm, out / "prediction.xdmf", "w") as xdmf:
        xdmf.write_mesh(V.mesh)
        xdmf.write_function(rom(test[0], name="temperature"))
    fem_ml.write_comparison(out / "comparison.xdmf", rom, test[:3], truth.subset([0, 1, 2]))
    # [write end]

    # [save]
    path = fem_ml.save(rom, out / "poisson.femml", test_errors=report, metadata={"field": "temperature"})

    loaded = fem_ml.load(path, V)  # onto your function space: checks that element and mesh are the same
    difference = np.abs(loaded(test[0]).x.array - rom(test[0]).x.array).max()
    standalone = fem_ml.load(path, comm=comm)  # or rebuild the mesh and the space from the file
    w = standalone(test[0])  # on the rebuilt mesh: compare a number, not dof arrays
    integral_standalone = comm.allreduce(fem.assemble_scalar(fem.form(w * ufl.dx)), op=MPI.SUM)
    rom(test[0], out=u)
    integral_difference = abs(integral_standalone - integral())
    # [save end]

    summary: dict[str, float | int | str] = {
        "n_ranks": comm.size,
        "n_dofs": snapshots.n_dofs,
        "n_train": len(snapshots),
        "n_failed_solves": len(snapshots.failures) + len(truth.failures),
        "n_modes": basis.n_modes,
        "discarded_energy": 1.0 - basis.retained_energy,
        "rel_error_l2_mean": errors["rel_error_l2_mean"],
        "rel_error_h1_mean": errors["rel_error_h1_mean"],
        "rel_error_h1_max": errors["rel_error_h1_max"],
        "proj_error_h1_mean": errors["proj_error_h1_mean"],
        "integral_prediction": predicted,
        "integral_rel_error_max": max(qoi_errors),
        "loaded_max_difference": comm.allreduce(difference, op=MPI.MAX),
        "standalone_integral_difference": integral_difference,
        "surrogate_file": str(path),
    }
    fem_ml.write_json(out / "summary.json", summary, comm=comm)
    for surrogate in (rom, loaded, standalone):
        surrogate.destroy()
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--out-dir", default="results/wrap_your_own")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if MPI.COMM_WORLD.rank == 0 else logging.WARNING)
    summary = main(n_cells=args.n_cells, n_train=args.n_train, out_dir=args.out_dir)
    if MPI.COMM_WORLD.rank == 0:
        for key, value in summary.items():
            print(f"{key:>30}: {value}")
