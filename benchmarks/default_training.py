# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Default training options on three problems no demo tunes for, against the demo's tuned options.

Run (serially or under ``mpirun``; training runs on rank 0 either way)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/default_training.py

The problems (small-to-moderate meshes, P1, ``u = 0`` on the boundary):

* ``reaction_diffusion``: :math:`-\nabla\cdot(\kappa \nabla u) + \sigma u = f` with a Gaussian source
  :math:`f = \exp(-|x - x_0|^2 / (2 \cdot 0.08^2))` at :math:`x_0 = (a, b)`; parameters
  :math:`\kappa \in [0.05, 0.5]`, :math:`\sigma \in [1, 10]`, :math:`a, b \in [0.25, 0.75]`; 100 samples.
* ``thermal_block_3x3``: :math:`-\nabla\cdot(\kappa \nabla u) = 1` with :math:`\kappa = \mu_i` on the nine
  blocks of a 3x3 partition, :math:`\mu \in [0.1, 1]^9`; 200 samples.
* ``thermal_block_wide``: the 2x2 thermal block with :math:`\mu \in [10^{-4}, 10^2]^4` (six decades); 100 samples.

Each problem trains twice on the same snapshots and basis (H1 POD, ``--tol``): with no options (``default``:
every choice from :func:`fem_ml.networks.resolve_options`) and with the thermal-block demo's tuned options
(``tuned``: log inputs, 2 x MLP (128, 128, 128), 1500 Adam epochs from the learning rate 1e-2 in float64, the
polish chosen from the data, patience 1000). It reports the mean relative H1 error on unseen LHS points, the POD
projection's, the training time and the options chosen, and writes ``benchmarks/results/default_training.json``
(``--output``). Options: ``--n-cells`` (48), ``--n-test`` (40), ``--tol`` (1e-6), ``--problems`` (all),
``--skip-tuned``.
"""

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from mpi4py import MPI

import numpy as np
import ufl
from dolfinx import fem, mesh
from dolfinx.fem.petsc import LinearProblem

import fem_ml

ROOT = Path(__file__).resolve().parents[1]

TUNED = {
    "input_transform": "log",
    "hidden_layers": (128, 128, 128),
    "n_networks": 2,
    "adam_epochs": 1500,
    "learning_rate": 1e-2,
    "polish": "auto",
    "patience": 1000,
    "adam_dtype": "float64",
}


def _problem(comm: MPI.Comm, n_cells: int):
    """The unit square's triangle mesh, its P1 space and the condition ``u = 0`` on the boundary."""
    domain = mesh.create_unit_square(comm, n_cells, n_cells, mesh.CellType.triangle)
    V = fem.functionspace(domain, ("Lagrange", 1))
    tdim = domain.topology.dim
    domain.topology.create_connectivity(tdim - 1, tdim)
    dofs = fem.locate_dofs_topological(V, tdim - 1, mesh.exterior_facet_indices(domain.topology))
    return domain, V, fem.dirichletbc(0.0, dofs, V)


def _solver(V, a, L, bc, update: Callable[[np.ndarray], None]):
    uh = fem.Function(V, name="u")
    problem = LinearProblem(
        a, L, bcs=[bc], u=uh, petsc_options_prefix="default_training_",
        petsc_options={"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    )  # fmt: skip

    def solve(mu: np.ndarray) -> fem.Function:
        update(mu)
        problem.solve()
        return uh

    return solve


def reaction_diffusion(comm: MPI.Comm, n_cells: int):
    """Reaction-diffusion with a Gaussian source at a parametrized position: ``(V, solve, space, n_train)``."""
    domain, V, bc = _problem(comm, n_cells)
    kappa, sigma, a0, b0 = (fem.Constant(domain, 1.0) for _ in range(4))
    x = ufl.SpatialCoordinate(domain)
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    source = ufl.exp(-((x[0] - a0) ** 2 + (x[1] - b0) ** 2) / (2 * 0.08**2))
    a = (kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) + sigma * u * v) * ufl.dx
    L = source * v * ufl.dx

    def update(mu: np.ndarray) -> None:
        for constant, value in zip((kappa, sigma, a0, b0), mu, strict=True):
            constant.value = value

    space = fem_ml.ParameterSpace({"kappa": (0.05, 0.5), "sigma": (1.0, 10.0), "a": (0.25, 0.75), "b": (0.25, 0.75)})
    return V, _solver(V, a, L, bc, update), space, 100


def thermal_block(comm: MPI.Comm, n_cells: int, blocks: int, bounds: tuple[float, float]):
    """The thermal block with ``blocks x blocks`` conductivities in ``bounds``: ``(V, solve, space)``."""
    domain, V, bc = _problem(comm, n_cells)
    Q = fem.functionspace(domain, ("DG", 0))
    index = fem.Function(Q)
    index.interpolate(
        lambda x: (
            np.minimum(np.floor(x[0] * blocks), blocks - 1) + blocks * np.minimum(np.floor(x[1] * blocks), blocks - 1)
        )
    )
    block = np.rint(index.x.array).astype(np.int64)
    kappa = fem.Function(Q)
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    a = ufl.inner(kappa * ufl.grad(u), ufl.grad(v)) * ufl.dx
    L = fem.Constant(domain, 1.0) * v * ufl.dx

    def update(mu: np.ndarray) -> None:
        kappa.x.array[:] = mu[block]

    space = fem_ml.ParameterSpace({f"mu{i}": bounds for i in range(blocks * blocks)})
    return V, _solver(V, a, L, bc, update), space


PROBLEMS = {
    "reaction_diffusion": reaction_diffusion,
    "thermal_block_3x3": lambda comm, n: (*thermal_block(comm, n, 3, (0.1, 1.0)), 200),
    "thermal_block_wide": lambda comm, n: (*thermal_block(comm, n, 2, (1e-4, 1e2)), 100),
}


def run(name: str, comm: MPI.Comm, args: argparse.Namespace) -> list[dict]:
    """Both trainings of one problem on the same snapshots and basis; one record per training."""
    V, solve, space, n_train = PROBLEMS[name](comm, args.n_cells)
    train = space.sample(n_train, method="lhs", seed=0)
    test = space.sample(args.n_test, method="lhs", seed=1)
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=space, progress=False)
    truth = fem_ml.collect_snapshots(solve, test, V, space=space, progress=False)
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=args.tol)
    records = []
    variants = {"default": {}} if args.skip_tuned else {"default": {}, "tuned": TUNED}
    for variant, options in variants.items():
        comm.barrier()
        start = time.perf_counter()
        rom = fem_ml.train_surrogate(basis, snapshots, space, seed=0, progress=False, **options)
        t_train = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        errors = rom.errors(test, truth).summary()
        assert rom.history is not None and rom.history[0].options is not None
        resolved = json.loads(rom.history[0].options)
        records.append(
            {
                "problem": name,
                "variant": variant,
                "n_params": space.dim,
                "n_train": n_train,
                "n_test": args.n_test,
                "n_dofs": snapshots.n_dofs,
                "n_modes": basis.n_modes,
                "rel_error_h1_mean": errors["rel_error_h1_mean"],
                "proj_error_h1_mean": errors["proj_error_h1_mean"],
                "t_train_s": t_train,
                "options": {k: resolved[k] for k in (*TUNED, "lbfgs_iterations", "lm_iterations", "automatic")},
            }
        )
        if comm.rank == 0:
            r = records[-1]
            print(
                f"{name:>20} {variant:>8}: H1 error {r['rel_error_h1_mean']:.3e} (projection "
                f"{r['proj_error_h1_mean']:.3e}), {r['n_modes']} modes, training {t_train:.1f} s",
                flush=True,
            )
        rom.destroy()
    basis.destroy()
    return records


def main() -> None:
    """Run the chosen problems and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, default=48)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--skip-tuned", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "default_training.json"))
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    records: list[dict] = []
    for name in args.problems:
        records += run(name, comm, args)
        if comm.rank == 0:  # after each problem, so that a long run leaves its finished part
            result = {
                "machine": {"cores": os.cpu_count(), "ranks": comm.size, "python": platform.python_version(),
                            "load_average": os.getloadavg()},
                "versions": {"fem_ml": fem_ml.__version__, "torch": __import__("torch").__version__},
                "records": records,
            }  # fmt: skip
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {args.output}", flush=True)


if __name__ == "__main__":
    main()
