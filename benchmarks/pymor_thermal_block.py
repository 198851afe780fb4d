# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""fem_ml beside pyMOR's data-driven POD-network reductor on the 2x2 thermal block, on the same data.

Run (on one rank; both methods train on the CPU with the same torch thread count, ``--threads``)::

    python benchmarks/pymor_thermal_block.py

It needs pyMOR (``pip install -e ".[bench]"``). The snapshots are computed once by ``fem_ml.collect_snapshots``
and handed to both methods; both PODs and pyMOR's projection use the same :math:`H^1_0` semi-norm matrix, and
pyMOR keeps as many modes as fem_ml's POD with ``--tol``. Errors are measured for both in one norm, fem_ml's
full :math:`H^1` norm, on full dof vectors. It prints a table and writes
``benchmarks/results/pymor_thermal_block.json`` (``--output``).

Options: ``--n-cells`` (100), ``--n-train`` (100), ``--n-test`` (50), ``--seed`` (0), ``--tol`` (1e-7),
``--hidden-layers`` (128,128,128), ``--n-networks`` (2), ``--adam-epochs`` (3000), ``--lbfgs-iterations`` (1000),
``--pymor-hidden-layers`` (same as ``--hidden-layers``), ``--pymor-epochs`` (1000, pyMOR's default),
``--pymor-restarts`` (10, pyMOR's default), ``--threads`` (1: torch threads of both), ``--output``. A quick smoke run::

    python benchmarks/pymor_thermal_block.py --n-cells 20 --n-train 20 --n-test 5 --adam-epochs 100 \
        --lbfgs-iterations 10 --pymor-epochs 20 --pymor-restarts 1 --output /tmp/pymor_smoke.json
"""

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mpi4py import MPI

import dolfinx
import numpy as np
import numpy.typing as npt
import pymor
import scipy.sparse
import torch
from pymor.algorithms.ml.nn import FullyConnectedNN, NeuralNetworkRegressor
from pymor.core.logger import set_log_levels
from pymor.operators.numpy import NumpyMatrixOperator
from pymor.parameters.base import Parameters
from pymor.reductors.data_driven import DataDrivenPODReductor
from pymor.vectorarrays.numpy import NumpyVectorSpace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demos"))

from thermal_block import build_problem

import fem_ml


def median_time(predict: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]], points: np.ndarray) -> float:
    """Median wall time of ``predict(mu)`` over ``points``, one point at a time, after one warm-up call.

    Args:
        predict: Map from one parameter point ``(p,)`` to a full dof vector.
        points: Parameter points ``(n, p)``.

    Returns:
        The median in seconds.
    """
    predict(points[0])
    times = []
    for mu in points:
        start = time.perf_counter()
        predict(mu)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def parse_widths(text: str) -> tuple[int, ...]:
    """Parse hidden-layer widths such as ``"128,128,128"``.

    Args:
        text: Comma-separated positive integers.

    Returns:
        The widths.
    """
    return tuple(int(w) for w in text.split(","))


def main(args: argparse.Namespace) -> dict[str, object]:
    """Run both methods on the same snapshots and compare errors and timings.

    Args:
        args: The parsed command-line options.

    Returns:
        The results written to ``args.output``.
    """
    comm = MPI.COMM_SELF
    load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    set_log_levels({"pymor": "WARN"})
    hidden = parse_widths(args.hidden_layers)
    pymor_hidden = parse_widths(args.pymor_hidden_layers) if args.pymor_hidden_layers else hidden

    # Shared data: one snapshot set and one set of test truths, used by both methods.
    V, solve = build_problem(comm, args.n_cells)
    space = fem_ml.ParameterSpace({f"mu{i}": (0.1, 1.0) for i in range(4)})
    train = space.sample(args.n_train, method="lhs", seed=args.seed)
    test = space.sample(args.n_test, method="uniform", seed=args.seed + 1)
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=space, progress=False)
    truth = fem_ml.collect_snapshots(solve, test, V, space=space, progress=False)
    if snapshots.failures or truth.failures:
        raise RuntimeError("Full-order solves failed; the comparison needs every snapshot.")
    ip = fem_ml.assemble_inner_product(V, "h1_semi")  # the POD and projection product of both methods
    h1 = fem_ml.assemble_inner_product(V, "h1")  # the one error norm of both methods
    indptr, indices, data = ip.matrix.getValuesCSR()
    n = snapshots.n_dofs
    product_matrix = scipy.sparse.csr_matrix((data, indices, indptr), shape=(n, n))

    # fem_ml: POD (the mode count r is used by pyMOR too), then the network ensemble.
    start = time.perf_counter()
    basis = fem_ml.pod(snapshots, inner_product=ip, tol=args.tol)
    rom = fem_ml.train_surrogate(
        basis,
        snapshots,
        space,
        seed=args.seed,
        input_transform="log",
        hidden_layers=hidden,
        n_networks=args.n_networks,
        adam_epochs=args.adam_epochs,
        lbfgs_iterations=args.lbfgs_iterations,
        device="cpu",
        progress=False,
    )
    femml_offline = time.perf_counter() - start
    r = basis.n_modes

    # pyMOR: DataDrivenPODReductor (POD, projection, regressor fit) on the same snapshots and the same product.
    # The reductor passes `product` to the projection only; the POD gets it through pod_params.
    vector_space = NumpyVectorSpace(n)
    product = NumpyMatrixOperator(product_matrix, name="h1_semi")
    parameters = Parameters({f"mu{i}": 1 for i in range(4)})
    regressor = NeuralNetworkRegressor(
        FullyConnectedNN(list(pymor_hidden)), epochs=args.pymor_epochs, restarts=args.pymor_restarts
    )
    start = time.perf_counter()
    reductor = DataDrivenPODReductor(
        [parameters.parse(mu) for mu in train],
        vector_space.from_numpy(snapshots.values),
        regressor=regressor,
        product=product,
        pod_params={"product": product, "modes": r},
    )
    pymor_rom = reductor.reduce()
    pymor_offline = time.perf_counter() - start
    if len(reductor.reduced_basis) != r:
        raise RuntimeError(f"pyMOR kept {len(reductor.reduced_basis)} modes, fem_ml {r}.")

    def femml_predict(mu: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return rom.predict_values(mu[None])[:, 0]

    def pymor_predict(mu: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return reductor.reconstruct(pymor_rom.solve(parameters.parse(mu))).to_numpy()[:, 0]

    # Errors in one norm (fem_ml's full H1) on full dof vectors; projection errors show the two bases agree.
    U = truth.values
    femml_pred = rom.predict_values(test)
    pymor_pred = np.column_stack([pymor_predict(mu) for mu in test])
    rb = reductor.reduced_basis
    pymor_proj = rb.lincomb(vector_space.from_numpy(U).inner(rb, product=product).T).to_numpy()
    femml_proj = basis.reconstruct(basis.project(U))
    norms = h1.norms(np.hstack([U, U - femml_pred, U - pymor_pred, U - femml_proj, U - pymor_proj]))
    k = args.n_test
    rel = [norms[i * k : (i + 1) * k] / norms[:k] for i in range(1, 5)]

    femml_online = median_time(femml_predict, test)
    pymor_online = median_time(pymor_predict, test)

    result: dict[str, object] = {
        "femml_rel_error_h1_mean": float(rel[0].mean()),
        "pymor_rel_error_h1_mean": float(rel[1].mean()),
        "error_ratio": float(rel[0].mean() / rel[1].mean()),
        "online_time_ratio": femml_online / pymor_online,
        "offline_time_ratio": femml_offline / pymor_offline,
        "femml_rel_error_h1_max": float(rel[0].max()),
        "pymor_rel_error_h1_max": float(rel[1].max()),
        "femml_proj_error_h1_mean": float(rel[2].mean()),
        "pymor_proj_error_h1_mean": float(rel[3].mean()),
        "femml_online_median_s": femml_online,
        "pymor_online_median_s": pymor_online,
        "femml_offline_s": femml_offline,
        "pymor_offline_s": pymor_offline,
        "full_solve_median_s": float(np.median(truth.solve_times)),
        "n_modes": r,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "n_dofs": n,
        "n_cells": args.n_cells,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_start_end": [load_start, os.getloadavg()[0]],
        "versions": {
            "fem_ml": fem_ml.__version__,
            "dolfinx": dolfinx.__version__,
            "torch": torch.__version__,
            "pymor": pymor.__version__,
        },
        "femml_settings": {
            "pod": f"fem_ml.pod(inner_product=h1_semi, tol={args.tol})",
            "train_surrogate": {
                "seed": args.seed,
                "input_transform": "log",
                "hidden_layers": list(hidden),
                "n_networks": args.n_networks,
                "adam_epochs": args.adam_epochs,
                "lbfgs_iterations": args.lbfgs_iterations,
                "device": "cpu",
            },
        },
        "pymor_settings": {
            "reductor": "pymor.reductors.data_driven.DataDrivenPODReductor",
            "reductor_args": {
                "product": "NumpyMatrixOperator(h1_semi CSR)",
                "pod_params": {"product": "NumpyMatrixOperator(h1_semi CSR)", "modes": r},
                "input_scaler": None,
                "output_scaler": None,
            },
            "regressor": "pymor.algorithms.ml.nn.NeuralNetworkRegressor",
            "neural_network": f"pymor.algorithms.ml.nn.FullyConnectedNN({list(pymor_hidden)}), tanh",
            "regressor_args": {
                "validation_ratio": regressor.validation_ratio,
                "tol": regressor.tol,
                "epochs": regressor.training_parameters["epochs"],
                "restarts": regressor.training_parameters["restarts"],
                "optimizer": regressor.training_parameters["optimizer"].__name__,
                "learning_rate": regressor.training_parameters["learning_rate"],
                "early_stopping": regressor.training_parameters["es_scheduler_params"],
            },
            "final_validation_loss": float(regressor.losses["val"]),
        },
    }
    print(f"{'':>28} {'fem_ml':>12} {'pyMOR':>12} {'ratio':>10}")
    rows = [
        ("rel. H1 error, mean", rel[0].mean(), rel[1].mean()),
        ("rel. H1 error, max", rel[0].max(), rel[1].max()),
        ("projection error, mean", rel[2].mean(), rel[3].mean()),
        ("offline (POD + train) [s]", femml_offline, pymor_offline),
        ("online, median [s]", femml_online, pymor_online),
    ]
    for name, a, b in rows:
        print(f"{name:>28} {a:12.3e} {b:12.3e} {a / b:10.3f}")
    print(f"{r} modes, {n} dofs, {args.n_train} training / {args.n_test} test points, {args.threads} torch threads")
    fem_ml.write_json(args.output, result, comm=comm)
    rom.destroy()
    h1.destroy()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-cells", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-7)
    parser.add_argument("--hidden-layers", default="128,128,128")
    parser.add_argument("--n-networks", type=int, default=2)
    parser.add_argument("--adam-epochs", type=int, default=3000)
    parser.add_argument("--lbfgs-iterations", type=int, default=1000)
    parser.add_argument("--pymor-hidden-layers", default=None, help="default: --hidden-layers")
    parser.add_argument("--pymor-epochs", type=int, default=1000)
    parser.add_argument("--pymor-restarts", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both methods")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "pymor_thermal_block.json")
    main(parser.parse_args())
