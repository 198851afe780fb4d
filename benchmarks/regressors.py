# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Regressors side by side on the same snapshots, basis and inner product: fem_ml, EZyRB and pyMOR.

Run (serially; it needs EZyRB and pyMOR, ``pip install ".[bench]"``)::

    OMP_NUM_THREADS=1 python benchmarks/regressors.py

Three thermal-block problems (the unit square cut into ``b x b`` blocks of conductivity :math:`\mu_k`, unit load,
zero temperature on the boundary, P1 on an ``--n-cells`` triangulated mesh):

* ``block2x2``: :math:`\mu \in [0.1, 1]^4`, ``--n-train`` LHS training points (100);
* ``block2x2_wide``: the same with :math:`\mu \in [10^{-4}, 10^2]^4` (six decades);
* ``block3x3``: :math:`\mu \in [0.1, 1]^9`, 200 training points.

For each problem the snapshots are solved once, the POD basis (``fem_ml.pod``, :math:`H^1` inner product,
``--tol``) is built once, and every method maps the parameters to the same reduced coefficients
:math:`c = \Phi^T M u`. The inputs of the peers' regressors are the parameters scaled from the bounds to
:math:`[-1, 1]` (after :math:`\log` on the wide problem), which is kinder to them than the raw parameters; fem_ml's
kernel fits choose their own (the power :math:`\mu^\lambda`, :math:`\lambda` from the training data). Methods:

* ``fem_ml default``: ``train_surrogate`` with no options;
* ``fem_ml tuned``: the network options of ``demos/thermal_block.py`` (log inputs, 2 x MLP 128-128-128,
  1500 Adam epochs from the learning rate 1e-2, then the polish chosen from the data: Levenberg-Marquardt up to
  2048 residuals, else 1000 L-BFGS iterations);
* ``fem_ml RBF`` and ``fem_ml GP``: ``fit_kernel_surrogate`` with default options;
* ``fem_ml blend``: the blend (``fem_ml.BlendedRegressor``) of the best kernel and the best network candidates of
  ``select_regressor``, with the weight it fitted on their held-out predictions: built from those two entries'
  surrogates (its training time is the sum of theirs), or the refit of ``select_regressor`` when it picked the
  blend;
* ``EZyRB POD-RBF`` and ``EZyRB POD-GPR``: ``ezyrb.RBF()`` and ``ezyrb.GPR()`` with their defaults;
* ``pyMOR NN``: ``NeuralNetworkRegressor(restarts=3)`` (pyMOR's defaults otherwise: ``FullyConnectedNN([30, 30,
  30])``, 1000 L-BFGS epochs with early stopping; its default of 10 restarts takes minutes per problem here);
* ``pyMOR VKOGA``: ``VKOGARegressor(max_centers=n_train)`` (Gaussian kernel, the greedy may use every point).

``fem_ml.select_regressor`` compares the four fem_ml candidates and their blend by 5-fold cross-validation on the
training snapshots; the entry it picks is marked ``selected``. The test error is the mean relative :math:`H^1` error on
``--n-test`` held-out points whose truths are solved, computed for every method by the same function
(:func:`fem_ml.evaluation.relative_errors`) from its predicted coefficients. The query time is the median time of
one parameter point to a finished ``dolfinx.fem.Function``. It prints a table and writes
``benchmarks/results/regressors.json`` (a list of records: ``problem``, ``method``, ``rel_error_h1_mean``,
``t_train_s``, ``t_query_median_s``, ``selected``) and the selection reports to
``benchmarks/results/regressors_selection.json``.

Options: ``--n-cells`` (36), ``--n-train`` (100), ``--n-train-3x3`` (200), ``--n-test`` (30), ``--tol`` (1e-7),
``--folds`` (5), ``--pymor-restarts`` (3), ``--problems`` (all), ``--output``, ``--verbose``, ``--smoke``
(networks of 50 Adam epochs and 10 L-BFGS iterations, for a quick check of the script only). A smoke run::

    python benchmarks/regressors.py --smoke --n-cells 12 --n-train 30 --n-train-3x3 40 --n-test 5 --folds 2 \
        --output /tmp/regressors_smoke.json
"""

import argparse
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from mpi4py import MPI

import dolfinx.fem.petsc  # noqa: F401  (LinearProblem)
import numpy as np
import numpy.typing as npt
import ufl
from dolfinx import fem, mesh

import fem_ml
from fem_ml.evaluation import FieldNorms, relative_errors
from fem_ml.networks import AffineScaler

ROOT = Path(__file__).resolve().parents[1]
TUNED = fem_ml.TrainingOptions(
    input_transform="log", hidden_layers=(128, 128, 128), n_networks=2, adam_epochs=1500, learning_rate=1e-2,
    progress=False,
)  # fmt: skip
SELECTION_NAMES = {
    "network": "fem_ml default", "network_tuned": "fem_ml tuned", "rbf": "fem_ml RBF", "gp": "fem_ml GP",
    "blend": "fem_ml blend",
}  # fmt: skip


def thermal_block(
    comm: MPI.Comm, n_cells: int, blocks: int
) -> tuple[fem.FunctionSpace, Callable[[np.ndarray], fem.Function]]:
    r"""The ``blocks x blocks`` thermal block on an ``n_cells x n_cells`` triangulated unit square: ``(V, solve)``.

    Block ``i + blocks * j`` is :math:`[i/b, (i+1)/b] \times [j/b, (j+1)/b]`; ``solve(mu)`` sets the conductivity
    of block ``k`` to ``mu[k]`` and solves :math:`-\nabla \cdot (\kappa \nabla u) = 1`, :math:`u = 0` on the
    boundary, with LU.
    """
    domain = mesh.create_unit_square(comm, n_cells, n_cells, mesh.CellType.triangle)
    V = fem.functionspace(domain, ("Lagrange", 1))
    Q = fem.functionspace(domain, ("DG", 0))
    block = fem.Function(Q)
    block.interpolate(
        lambda x: (
            np.minimum(np.floor(x[0] * blocks), blocks - 1) + blocks * np.minimum(np.floor(x[1] * blocks), blocks - 1)
        )
    )
    index = np.rint(block.x.array).astype(np.int64)
    kappa = fem.Function(Q)
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    tdim = domain.topology.dim
    domain.topology.create_connectivity(tdim - 1, tdim)
    dofs = fem.locate_dofs_topological(V, tdim - 1, mesh.exterior_facet_indices(domain.topology))
    uh = fem.Function(V, name="u")
    problem = fem.petsc.LinearProblem(
        ufl.inner(kappa * ufl.grad(u), ufl.grad(v)) * ufl.dx, fem.Constant(domain, 1.0) * v * ufl.dx,
        bcs=[fem.dirichletbc(0.0, dofs, V)], u=uh, petsc_options_prefix=f"regressors_{blocks}_",
        petsc_options={"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    )  # fmt: skip

    def solve(mu: np.ndarray) -> fem.Function:
        kappa.x.array[:] = mu[index]
        problem.solve()
        return uh

    return V, solve


def peers(n_train: int, pymor_restarts: int) -> dict[str, Callable[[], object]]:
    """The peers' regressors (scikit-learn style ``fit``/``predict``), built fresh for each problem."""
    import ezyrb
    from pymor.algorithms.ml.nn import NeuralNetworkRegressor
    from pymor.algorithms.ml.vkoga import VKOGARegressor
    from pymor.core.logger import set_log_levels

    set_log_levels({"pymor": "WARN"})
    return {
        "EZyRB POD-RBF": lambda: ezyrb.RBF(),
        "EZyRB POD-GPR": lambda: ezyrb.GPR(),
        "pyMOR NN": lambda: NeuralNetworkRegressor(restarts=pymor_restarts),
        "pyMOR VKOGA": lambda: VKOGARegressor(max_centers=n_train),
    }


def query_time(coefficients: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]], basis, points) -> float:
    r"""Median time of one point to a Function: the coefficients, then :math:`\Phi c` with ghosts updated."""
    out = fem.Function(basis.V)
    basis.function(coefficients(points[:1])[0], out=out)
    times = []
    for mu in points:
        start = time.perf_counter()
        basis.function(coefficients(mu[None, :])[0], out=out)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_problem(name: str, blocks: int, bounds: tuple[float, float], n_train: int, args) -> tuple[list, dict]:
    """All methods on one problem; returns the records and the selection report."""
    comm = MPI.COMM_WORLD
    space = fem_ml.ParameterSpace({f"mu{k}": bounds for k in range(blocks * blocks)})
    V, solve = thermal_block(comm, args.n_cells, blocks)
    train = space.sample(n_train, method="lhs", seed=0)
    test = space.sample(args.n_test, method="uniform", seed=1)
    start = time.perf_counter()
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=space, progress=False)
    truth = fem_ml.collect_snapshots(solve, test, V, space=space, progress=False)
    t_solve = time.perf_counter() - start
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=args.tol)
    coefficients = basis.project(snapshots).T
    norms = FieldNorms(V, reuse=basis.inner_product)
    log = bounds[1] / bounds[0] > 100
    scaler = AffineScaler.from_bounds(*(np.log(b) if log else b for b in (space.lower, space.upper)))

    def scale(mu: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return scaler.transform(np.log(mu) if log else mu)

    print(f"\n{name}: {blocks * blocks} parameters in [{bounds[0]:g}, {bounds[1]:g}], {n_train} training and "
          f"{args.n_test} test solves in {t_solve:.1f} s, {basis.n_modes} modes, "
          f"{V.dofmap.index_map.size_global} dofs")  # fmt: skip
    records = []

    def record(method: str, predict: Callable, t_train: float, t_query: float) -> None:
        errors = relative_errors(basis, norms, truth.values, predict(test))
        records.append({
            "problem": name, "method": method, "rel_error_h1_mean": float(np.mean(errors["rel_error_h1"])),
            "t_train_s": t_train, "t_query_median_s": t_query, "selected": False,
        })  # fmt: skip
        print(f"  {method:<16} rel. H1 error {records[-1]['rel_error_h1_mean']:.3e}  train {t_train:8.2f} s  "
              f"query {t_query * 1e6:8.1f} us", flush=True)  # fmt: skip

    start = time.perf_counter()
    default = fem_ml.TrainingOptions(progress=False, **args.smoke)
    tuned = dataclasses.replace(TUNED, **args.smoke)
    candidates = {"network": default, "rbf": fem_ml.KernelOptions(method="rbf"), "gp": fem_ml.KernelOptions()}
    rom, selection = fem_ml.select_regressor(
        basis, snapshots, space, candidates=candidates, tuned=tuned, folds=args.folds, seed=0
    )
    t_select = time.perf_counter() - start
    picked = SELECTION_NAMES[selection.selected]
    builders: dict[str, Callable[[], fem_ml.Surrogate]] = {
        "fem_ml default": lambda: fem_ml.train_surrogate(basis, snapshots, space, options=default),
        "fem_ml tuned": lambda: fem_ml.train_surrogate(basis, snapshots, space, options=tuned),
        "fem_ml RBF": lambda: fem_ml.fit_kernel_surrogate(basis, snapshots, space, method="rbf"),
        "fem_ml GP": lambda: fem_ml.fit_kernel_surrogate(basis, snapshots, space, method="gp"),
    }
    fitted: dict[str, tuple[fem_ml.CoefficientRegressor, float]] = {}
    for method, build in builders.items():
        if method == picked:  # the refit of select_regressor is this method's surrogate (same options, seeds)
            surrogate, t_train = rom, selection.refit_time_s
        else:
            start = time.perf_counter()
            surrogate = build()
            t_train = time.perf_counter() - start
        record(method, surrogate.coefficients, t_train, surrogate.time_query(test))
        fitted[method] = (surrogate.regressor, t_train)
        if method == picked:
            records[-1]["selected"] = True
        surrogate.destroy()
    if selection.blend_members is not None and selection.blend_weight is not None:
        if picked == "fem_ml blend":
            surrogate, t_train = rom, selection.refit_time_s
        else:  # the blend of the two entries above, with the weight select_regressor fitted: no other fit
            (kernel, t_kernel), (network, t_network) = (fitted[SELECTION_NAMES[n]] for n in selection.blend_members)
            blended = fem_ml.BlendedRegressor(kernel, network, selection.blend_weight)  # type: ignore[arg-type]
            surrogate, t_train = fem_ml.Surrogate(space, basis, blended), t_kernel + t_network
        record("fem_ml blend", surrogate.coefficients, t_train, surrogate.time_query(test))
        records[-1]["selected"] = picked == "fem_ml blend"
        surrogate.destroy()
    for method, make in peers(n_train, args.pymor_restarts).items():
        regressor = make()
        start = time.perf_counter()
        regressor.fit(scale(train), coefficients)
        t_train = time.perf_counter() - start

        def predict(mu, regressor=regressor):
            return np.asarray(regressor.predict(scale(np.atleast_2d(mu))), dtype=np.float64).reshape(len(mu), -1)

        record(method, predict, t_train, query_time(predict, basis, test))
    print(selection.table())
    print(f"  picked: {selection.reason} (selection {t_select:.1f} s)")
    norms.destroy()
    report = {"problem": name, "t_select_s": t_select, "n_modes": basis.n_modes, **selection.summary()}
    basis.destroy()
    return records, report


def main(args: argparse.Namespace) -> list[dict]:
    """Run every problem; write the records and the selection reports."""
    load_start = os.getloadavg()
    problems = {
        "block2x2": (2, (0.1, 1.0), args.n_train),
        "block2x2_wide": (2, (1e-4, 1e2), args.n_train),
        "block3x3": (3, (0.1, 1.0), args.n_train_3x3),
    }
    records, reports = [], []
    for name in args.problems:
        blocks, bounds, n_train = problems[name]
        r, s = run_problem(name, blocks, bounds, n_train, args)
        records += r
        reports.append(s)
    print(f"\n{'problem':<14} {'method':<16} {'rel. H1 error':>13} {'train [s]':>10} {'query [us]':>11}  best")
    for name in args.problems:
        rows = [r for r in records if r["problem"] == name]
        best = min(r["rel_error_h1_mean"] for r in rows)
        for r in rows:
            mark = ("selected " if r["selected"] else "") + (
                "<- most accurate" if r["rel_error_h1_mean"] == best else ""
            )
            print(f"{name:<14} {r['method']:<16} {r['rel_error_h1_mean']:>13.3e} {r['t_train_s']:>10.2f} "
                  f"{r['t_query_median_s'] * 1e6:>11.1f}  {mark}")  # fmt: skip
    load_end = os.getloadavg()
    print(f"load average (1, 5, 15 min) at start {load_start}, at end {load_end}")
    for name in args.problems:
        rows = [r for r in records if r["problem"] == name]
        best, selected = min(rows, key=lambda r: r["rel_error_h1_mean"]), next(r for r in rows if r["selected"])
        default = next(r for r in rows if r["method"] == "fem_ml default")
        print(
            f"{name}: selected {selected['method']} is {'' if selected is best else 'NOT '}the most accurate "
            f"(best {best['method']}); default / best = {default['rel_error_h1_mean'] / best['rel_error_h1_mean']:.2f}"
        )
    if MPI.COMM_WORLD.rank == 0:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(records, indent=1) + "\n")
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        details = {"load_average_start": load_start, "load_average_end": load_end, "args": settings}
        details["selection"] = reports
        args.output.with_name(args.output.stem + "_selection.json").write_text(json.dumps(details, indent=1) + "\n")
    return records


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, default=36)
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--n-train-3x3", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=30)
    parser.add_argument("--tol", type=float, default=1e-7)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--pymor-restarts", type=int, default=3, help="restarts of pyMOR's network training")
    parser.add_argument("--problems", nargs="+", default=["block2x2", "block2x2_wide", "block3x3"])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "regressors.json")
    parser.add_argument("--verbose", action="store_true", help="log fem_ml's progress (INFO)")
    parser.add_argument("--smoke", action="store_true", help="a smoke run: networks of 50 Adam + 10 L-BFGS steps")
    arguments = parser.parse_args()
    arguments.smoke = {"adam_epochs": 50, "lbfgs_iterations": 10} if arguments.smoke else {}
    logging.basicConfig(level=logging.INFO if arguments.verbose else logging.WARNING)
    main(arguments)
