# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Trust: how wrong is the surrogate, and does it obey the physics?
#
# The thermal block of `thermal_block.py`, written with the conductivities as `fem.Constant`s on the four
# quadrants, so that the weak form
#
# $$
# F(u; \mu)(v) = \sum_{q=0}^{3} \mu_q \int_{\Omega_q} \nabla u \cdot \nabla v \,\mathrm{d}x - \int_\Omega v
# \,\mathrm{d}x
# $$
#
# is affine in $\mu$. This demo shows everything fem_ml offers to judge a surrogate:
#
# 1. **error decomposition**: surrogate error = POD projection error $\oplus$ network error (exactly, in the
#    $H^1$ product the basis is orthonormal in), and a k-fold cross-validation over the training set;
# 2. **physics residual**: the relative dual norm of $F$ at the truth, the projection and the prediction, and a
#    flag on predictions that violate the physics (an untrained network is flagged);
# 3. **uncertainty**: an ensemble of networks; its deviation ranks the true test error (Spearman correlation);
# 4. **extrapolation**: a warning outside the bounds, an error in strict mode;
# 5. **physics-reinforced training**: with only 20 snapshots, the reduced residual at 1000 extra points joins the
#    loss; the POD-Galerkin model of the same basis is the reference a network should approach;
# 6. **adaptive sampling**: greedy solves where the residual of the prediction is largest, against 100
#    Latin-hypercube samples trained the same way.
#
# ```bash
# mpirun -n 2 python demos/trust_thermal_block.py
# ```
#
# It writes `results/trust_thermal_block/summary.json`, `uncertainty.xdmf` (mean, standard deviation and true
# error for a few test points), `residual.xdmf` (the Riesz representative of the residual of the prediction
# and of an untrained network), and the plots `physics_vs_data.png`, `deviation_vs_error.png` and `adaptive.png`.

# %%
from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mpi4py import MPI

import numpy as np
import ufl
from dolfinx import fem, mesh
from dolfinx.fem.petsc import LinearProblem
from scipy import stats

import fem_ml
from fem_ml import plots
from fem_ml.reduced import AffineReducedOperators

SPACE = fem_ml.ParameterSpace({f"mu{i}": (0.1, 1.0) for i in range(4)})

# %% [markdown]
# ## The model, affine in the parameters
# The quadrants are tagged cells; each conductivity is a `fem.Constant` multiplying the stiffness of its
# quadrant. Besides `solve`, the problem gives the residual form $F(u; \mu)$ written in a Function `u`, and the
# affine terms $(\theta_q, a_q)$, $(\vartheta, f)$ from which fem_ml assembles the reduced operators once.


# %%
@dataclass
class AffineThermalBlock:
    """The thermal block with its weak form exposed: what the trust checks need."""

    V: fem.FunctionSpace
    solve: Callable[[np.ndarray], fem.Function]
    residual: ufl.Form
    u: fem.Function
    constants: list[fem.Constant]
    bcs: list[fem.DirichletBC]
    bilinear: list[tuple[Callable[[np.ndarray], np.ndarray], ufl.Form]]
    linear: list[tuple[Callable[[np.ndarray], np.ndarray], ufl.Form]]


def build_problem(comm: MPI.Comm, n_cells: int = 100) -> AffineThermalBlock:
    """Thermal block on an ``n_cells x n_cells`` (even) triangulated unit square, affine in the parameters."""
    if n_cells % 2:
        raise ValueError(f"n_cells must be even (the quadrants are unions of cells), got {n_cells}.")
    domain = mesh.create_unit_square(comm, n_cells, n_cells, mesh.CellType.triangle)
    tdim = domain.topology.dim
    eps = 1e-10
    quadrants = [
        lambda x: (x[0] <= 0.5 + eps) & (x[1] <= 0.5 + eps),
        lambda x: (x[0] >= 0.5 - eps) & (x[1] <= 0.5 + eps),
        lambda x: (x[0] <= 0.5 + eps) & (x[1] >= 0.5 - eps),
        lambda x: (x[0] >= 0.5 - eps) & (x[1] >= 0.5 - eps),
    ]
    cells = [mesh.locate_entities(domain, tdim, marker) for marker in quadrants]
    tags = np.concatenate([np.full(c.size, q, dtype=np.int32) for q, c in enumerate(cells)])
    order = np.argsort(np.concatenate(cells))
    cell_tags = mesh.meshtags(domain, tdim, np.concatenate(cells)[order], tags[order])
    dx = ufl.Measure("dx", domain=domain, subdomain_data=cell_tags)

    V = fem.functionspace(domain, ("Lagrange", 1))
    constants = [fem.Constant(domain, 1.0) for _ in range(4)]
    w, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    stiffness = [ufl.inner(ufl.grad(w), ufl.grad(v)) * dx(q) for q in range(4)]
    load = fem.Constant(domain, 1.0) * v * ufl.dx
    domain.topology.create_connectivity(tdim - 1, tdim)
    boundary = fem.locate_dofs_topological(V, tdim - 1, mesh.exterior_facet_indices(domain.topology))
    bc = fem.dirichletbc(0.0, boundary, V)
    uh = fem.Function(V, name="temperature")
    problem = LinearProblem(
        sum(k * a for k, a in zip(constants, stiffness, strict=True)),
        load,
        bcs=[bc],
        u=uh,
        petsc_options_prefix="trust_block_",
        petsc_options={"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    )

    def solve(mu: np.ndarray) -> fem.Function:
        for constant, value in zip(constants, mu, strict=True):
            constant.value = value
        problem.solve()
        return uh

    u = fem.Function(V, name="u")
    residual = sum(k * ufl.inner(ufl.grad(u), ufl.grad(v)) * dx(q) for q, k in enumerate(constants)) - load
    bilinear = [((lambda mu, q=q: mu[:, q]), a) for q, a in enumerate(stiffness)]
    linear = [((lambda mu: np.ones(mu.shape[0])), load)]
    return AffineThermalBlock(V, solve, residual, u, constants, [bc], bilinear, linear)


# %% [markdown]
# ## Training recipes
# One network recipe for every comparison below; `physics` adds the reduced residual at extra points.


# %%
@dataclass(frozen=True)
class Recipe:
    """Network and training settings shared by every surrogate of the demo."""

    hidden_layers: tuple[int, ...] = (64, 64, 64)
    adam_epochs: int = 3000
    lbfgs_iterations: int = 500
    seed: int = 0

    def train(
        self, basis: fem_ml.PODBasis, snapshots: fem_ml.SnapshotSet, *, n_networks: int = 1, physics=None
    ) -> fem_ml.Surrogate:
        """Train a surrogate on ``snapshots`` (and the reduced residual at ``physics``' points, if given)."""
        return fem_ml.train_surrogate(
            basis, snapshots, SPACE, seed=self.seed, input_transform="log", hidden_layers=self.hidden_layers,
            n_networks=n_networks, adam_epochs=self.adam_epochs, lbfgs_iterations=self.lbfgs_iterations,
            physics=physics, progress=False,
        )  # fmt: skip


def mean_h1_error(rom: fem_ml.Surrogate, truth: fem_ml.SnapshotSet) -> float:
    """Mean relative H1 error of ``rom`` over the test set."""
    return float(np.mean(rom.errors(truth.parameters, truth).rel_error_h1))


# %%
def main(
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    n_cells: int = 100,
    n_small: int = 20,
    n_large: int = 100,
    n_test: int = 50,
    n_physics: int = 1000,
    n_ensemble: int = 5,
    n_initial: int = 10,
    batch_size: int = 5,
    max_solves: int = 60,
    n_folds: int = 5,
    recipe: Recipe = Recipe(),
    tol: float = 1e-8,
    seed: int = 0,
    out_dir: str | Path = "results/trust_thermal_block",
    progress: bool = True,
) -> dict[str, float | int | str]:
    """Run the trust demo; returns the summary written to ``out_dir/summary.json``."""
    out = Path(out_dir)
    start_all = time.perf_counter()
    problem = build_problem(comm, n_cells)
    V = problem.V
    test = SPACE.sample(n_test, method="uniform", seed=seed + 1)
    truth = fem_ml.collect_snapshots(problem.solve, test, V, space=SPACE, progress=progress)
    extra = SPACE.sample(n_physics, method="lhs", seed=seed + 2)
    summary: dict[str, float | int | str] = {"n_ranks": comm.size, "n_dofs": truth.n_dofs, "n_test": n_test}

    def operators(basis: fem_ml.PODBasis) -> AffineReducedOperators:
        return AffineReducedOperators(basis, problem.bilinear, problem.linear, bcs=problem.bcs, dual_norm="h1")

    # %% [markdown]
    # ## Physics-reinforced training with 20 snapshots
    # The same basis (POD of the 20 snapshots) and the same network, trained on the data alone or on the data plus
    # the relative reduced residual $\|f_r - A_r(\mu) \hat c(\mu)\|_2 / \|f_r\|_2$ at 1000 Latin-hypercube points
    # without snapshots. The POD-Galerkin model $A_r(\mu) c = f_r$ of that basis is the reference.

    # %%
    small = fem_ml.collect_snapshots(
        problem.solve, SPACE.sample(n_small, method="lhs", seed=seed), V, space=SPACE, progress=progress
    )
    basis_small = fem_ml.pod(small, inner_product="h1", tol=tol)
    ops_small = operators(basis_small)
    rom_data = recipe.train(basis_small, small)
    rom_physics = recipe.train(basis_small, small, physics=ops_small.systems(extra))
    report_data = rom_data.errors(test, truth)
    report_physics = rom_physics.errors(test, truth)
    galerkin = basis_small.reconstruct(ops_small.galerkin(test).T)
    galerkin_error = rom_data.norm("h1").norms(truth.values - galerkin) / rom_data.norm("h1").norms(truth.values)
    summary |= {
        "n_modes_20": basis_small.n_modes,
        "error_data_only_20": float(np.mean(report_data.rel_error_h1)),
        "error_physics_20": float(np.mean(report_physics.rel_error_h1)),
        "error_galerkin_20": float(np.mean(galerkin_error)),
        "error_projection_20": float(np.mean(report_data.proj_error_h1)),
        "network_error_data_only_20": float(np.mean(report_data.network_error)),
        "network_error_physics_20": float(np.mean(report_physics.network_error)),
    }
    summary["physics_gain_20"] = summary["error_data_only_20"] / summary["error_physics_20"]
    plots.plot_error_histograms(
        {"data only": report_data.rel_error_h1, "physics-reinforced": report_physics.rel_error_h1,
         "POD-Galerkin": galerkin_error}, out / "physics_vs_data.png", comm=comm,
    )  # fmt: skip

    # %% [markdown]
    # ## 100 Latin-hypercube samples: error decomposition, cross-validation, ensemble
    # An ensemble of five networks, data only. `rom.errors` splits the test error into projection and network
    # parts; `cross_validate` estimates the network part from the training set alone.

    # %%
    large = fem_ml.collect_snapshots(
        problem.solve, SPACE.sample(n_large, method="lhs", seed=seed), V, space=SPACE, progress=progress
    )
    basis_large = fem_ml.pod(large, inner_product="h1", tol=tol)
    ensemble = recipe.train(basis_large, large, n_networks=n_ensemble)
    report = ensemble.errors(test, truth)
    deviation = ensemble.deviation(test)
    spearman = float(stats.spearmanr(deviation, report.rel_error_h1).statistic)
    plots.plot_deviation_vs_error(deviation, report.rel_error_h1, out / "deviation_vs_error.png", comm=comm)
    options = fem_ml.TrainingOptions(
        hidden_layers=recipe.hidden_layers, input_transform="log", adam_epochs=recipe.adam_epochs,
        lbfgs_iterations=recipe.lbfgs_iterations, seed=recipe.seed, progress=False,
    )  # fmt: skip
    cv = fem_ml.cross_validate(basis_large, large, SPACE, k=n_folds, seed=seed, options=options)
    summary |= {
        "n_modes_100": basis_large.n_modes,
        "error_lhs100_ensemble": float(np.mean(report.rel_error_h1)),
        "projection_error_lhs100": float(np.mean(report.proj_error_h1)),
        "network_error_lhs100": float(np.mean(report.network_error)),
        "spearman_std_vs_error": spearman,
        **cv.summary(),
    }

    # %% [markdown]
    # ## Uncertainty and residual fields for ParaView
    # For three test points: the ensemble mean, its pointwise standard deviation and the true error; and the
    # Riesz representative of the residual (in $H^1$) of the prediction and of an untrained network.

    # %%
    check = fem_ml.ResidualCheck(problem.residual, problem.u, problem.constants, bcs=problem.bcs)
    steps = []
    for k in range(min(3, n_test)):
        mean, std = ensemble.uncertainty(test[k], name="temperature")
        n = mean.x.index_map.size_local
        steps.append({"temperature_mean": mean.x.array[:n].copy(), "temperature_std": std.x.array[:n].copy(),
                      "temperature_error": mean.x.array[:n] - truth.values[:, k]})  # fmt: skip
    fem_ml.write_fields(out / "uncertainty.xdmf", V, steps, units=dict.fromkeys(steps[0], "1"),
                        metadata={"parameters": test[:3].tolist()})  # fmt: skip

    untrained = Recipe(adam_epochs=1, lbfgs_iterations=0, seed=seed + 7).train(basis_large, large)
    residuals = check.report(ensemble, test, truth)
    bad = check.report(untrained, test, truth)
    fields = [
        {
            "residual_prediction": check.riesz(test[k], ensemble.predict_values(test[k])[:, 0]),
            "residual_untrained": check.riesz(test[k], untrained.predict_values(test[k])[:, 0]),
        }
        for k in range(min(3, n_test))
    ]
    fem_ml.write_fields(out / "residual.xdmf", V, fields, metadata={"parameters": test[:3].tolist()})
    summary |= {
        "residual_truth": float(np.mean(residuals.truth)),
        "residual_truth_max": float(np.max(residuals.truth)),
        "residual_projection_mean": float(np.mean(residuals.projection)),
        "residual_surrogate_mean": float(np.mean(residuals.surrogate)),
        "residual_surrogate_max": float(np.max(residuals.surrogate)),
        "residual_threshold": check.threshold,
        "n_flagged_surrogate": int(np.sum(residuals.flagged)),
        "residual_untrained_mean": float(np.mean(bad.surrogate)),
        "n_flagged_untrained": int(np.sum(bad.flagged)),
    }

    # %% [markdown]
    # ## Extrapolation
    # Outside the bounds the surrogate warns once (with the distance in scaled inputs); in strict mode it refuses.

    # %%
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ensemble([0.5, 0.5, 0.5, 1.5])
        ensemble([0.5, 0.5, 0.5, 1.6])
    ensemble.extrapolation = "raise"
    try:
        ensemble([0.5, 0.5, 0.5, 1.5])
        strict_raised = False
    except ValueError:
        strict_raised = True
    ensemble.extrapolation = "warn"
    summary |= {"extrapolation_warnings": len(caught), "extrapolation_strict_raises": int(strict_raised)}

    # %% [markdown]
    # ## Adaptive sampling against 100 Latin-hypercube samples
    # Both trained with physics reinforcement at the same extra points. The adaptive loop starts from 10
    # Latin-hypercube solves; each round it rebuilds the POD and the reduced operators, retrains, evaluates the
    # dual residual of the prediction at 500 candidates and solves the 5 worst. The test error is measured after
    # each round (for this report only; the loop never sees it).

    # %%
    reference = recipe.train(basis_large, large, physics=operators(basis_large).systems(extra))
    error_lhs100 = mean_h1_error(reference, truth)

    def build(snapshots: fem_ml.SnapshotSet):
        basis = fem_ml.pod(snapshots, inner_product="h1", tol=tol)
        ops = operators(basis)
        rom = recipe.train(basis, snapshots, physics=ops.systems(extra))
        return rom, fem_ml.residual_estimator(rom, ops)

    history: list[tuple[int, float]] = []
    result = fem_ml.adaptive_sampling(
        problem.solve, V, SPACE, build, initial=SPACE.sample(n_initial, method="lhs", seed=seed + 3),
        candidates=SPACE.sample(500, method="lhs", seed=seed + 4), target=1e-4, batch_size=batch_size,
        max_solves=max_solves, progress=progress,
        callback=lambda record, rom: history.append((record.n_solves, mean_h1_error(rom, truth))),
    )  # fmt: skip
    matched = [n for n, error in history if error <= error_lhs100]
    plots.plot_convergence(
        [n for n, _ in history], [error for _, error in history], out / "adaptive.png", comm=comm,
        reference=(error_lhs100, f"{n_large} Latin-hypercube samples, same training"),
    )  # fmt: skip
    summary |= {
        "error_lhs100_physics": error_lhs100,
        "adaptive_solves_to_match_lhs100": matched[0] if matched else -1,
        "adaptive_history": ";".join(f"{n}:{e:.3e}" for n, e in history),
        "adaptive_final_error": history[-1][1],
    }
    summary["t_total_s"] = float(comm.allreduce(time.perf_counter() - start_all, op=MPI.MAX))
    fem_ml.write_json(out / "summary.json", summary, comm=comm)
    if comm.rank == 0:
        for key, value in summary.items():
            print(f"{key:>34}: {value}")
    check.destroy()
    for rom in (rom_data, rom_physics, ensemble, untrained, reference, result.surrogate):
        rom.destroy()
    for basis in (basis_small, basis_large, result.surrogate.basis):
        basis.destroy()  # the inner products pod assembled
    return summary


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-cells", type=int, default=100)
    parser.add_argument("--n-small", type=int, default=20, help="snapshots of the physics-reinforced comparison")
    parser.add_argument("--n-large", type=int, default=100, help="Latin-hypercube snapshots of the reference")
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--n-physics", type=int, default=1000, help="points of the physics loss")
    parser.add_argument("--n-ensemble", type=int, default=5)
    parser.add_argument("--n-initial", type=int, default=10, help="initial solves of the adaptive sampling")
    parser.add_argument("--batch-size", type=int, default=5, help="solves per adaptive round")
    parser.add_argument("--max-solves", type=int, default=60)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--hidden-layers", type=int, nargs="+", default=[64, 64, 64], metavar="WIDTH")
    parser.add_argument("--adam-epochs", type=int, default=3000)
    parser.add_argument("--lbfgs-iterations", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="results/trust_thermal_block")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if MPI.COMM_WORLD.rank == 0 else logging.WARNING)
    main(
        n_cells=args.n_cells, n_small=args.n_small, n_large=args.n_large, n_test=args.n_test,
        n_physics=args.n_physics, n_ensemble=args.n_ensemble, n_initial=args.n_initial, batch_size=args.batch_size,
        max_solves=args.max_solves, n_folds=args.n_folds, seed=args.seed, out_dir=args.out_dir,
        recipe=Recipe(tuple(args.hidden_layers), args.adam_epochs, args.lbfgs_iterations), progress=args.progress,
    )  # fmt: skip
