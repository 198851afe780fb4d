# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Learned reduced dynamics, 1 rank against 2: how far the operators agree, and where the difference comes from.

**Beam** (``mpirun -n 2 python benchmarks/dynamics_rank_agreement.py beam``): the cantilever of
``demos/dynamics_beam.py`` at its full size, trained on the step response, built twice in one job: on
``COMM_SELF`` (rank 0 alone, the serial run) and on ``COMM_WORLD`` (2 ranks). The fits use the demo's default
damping model, ``--damping rayleigh`` (:math:`C_r = \alpha I + \beta K_r`; sections ``beam`` and
``beam_sensitivity``, with the fitted :math:`\alpha, \beta` and their relative differences,
``rayleigh_alpha_beta``), or ``--damping symmetric`` (any symmetric :math:`C_r`; sections ``beam_symmetric`` and
``beam_sensitivity_symmetric``). Recorded:

* *data*: the relative difference of the full-order Newmark trajectories (displacements, velocities, accelerations,
  compared dof by dof in the rank-independent canonical order of the snapshot store, ``fem_ml._layout``), of the
  tip displacement, of the POD singular values and of the reduced coefficients;
* *operators, own data*: the fitted :math:`K_r, C_r, B_r` of each run from its own trajectories (what the demo
  compares);
* *operators, identical data*: each run's trajectories handed to the other rank count (scattered through the same
  canonical order, bit for bit) and fitted there: POD, projection and fit on 1 and on 2 ranks from the same data;
* *refined*: both rank counts again with iterative refinement (three Richardson steps preconditioned by the LU,
  in PETSc): whether the difference of the data is the linear solver's rounding;
* *serial, perturbed matrices*: the serial run again after every entry of the assembled mass and stiffness
  matrices is changed by relative noise of 2e-16 (two seeds), as another summation order of the assembly would;
* *serial, another factorization*: the serial run again with MUMPS' AMD and METIS orderings (ICNTL(7) = 0, 5)
  and with PETSc's own LU instead of MUMPS' automatic choice: the same comparisons, on one rank throughout.

**Beam sensitivity** (``python benchmarks/dynamics_rank_agreement.py beam-sensitivity``): on one rank, the step
response from the assembled matrices and from matrices with rounding-sized noise (as above, two seeds), both
projected onto the same modes (those of the unperturbed run) and fitted at each candidate regularization: how far
each operator moves when only the data change, and whether a larger regularization makes it move less.

**Burgers** (``python benchmarks/dynamics_rank_agreement.py burgers --serial DIR1 --parallel DIR2``): the models
``burgers.femml`` saved by ``demos/dynamics_burgers.py`` run on 1 rank (``--out-dir DIR1``) and on 2 ranks
(``DIR2``), loaded serially: the relative Frobenius difference of each operator, of the POD singular values and of
the modes (matched through the dof coordinates), and of the full-order solution and the prediction the demos wrote
for their first test viscosity (``trajectory.h5``, the largest over time). The section is ``burgers`` for the
demo's default selection (the discrepancy principle, ``discrepancy=1.0``), ``burgers_smallest_error`` for runs
with ``--discrepancy none`` (the library's default) and ``burgers_discrepancy_<d>`` for any other ``d``.

**Burgers data** (``mpirun -n 2 python benchmarks/dynamics_rank_agreement.py burgers-data``): the demo's training
trajectories (5 viscosities, 101 times, 48 x 48 cells) on ``COMM_SELF`` and ``COMM_WORLD``, compared like the
beam's: the snapshots, and the POD, reduced trajectories and operator-inference fit from own data, from identical
data, and from identical data and modes; with the library's default selection (the smallest error) and with the
demo's, ``discrepancy=1.0`` (keys ``*_discrepancy``).

**Burgers sensitivity** (``python benchmarks/dynamics_rank_agreement.py burgers-sensitivity``): on one rank, how
far the operators of the Burgers fit move when the reduced states change by relative noise of 2e-16, at the
regularization of the discrepancy principle (``discrepancy=1.0``) and at the default, smallest-error one and 10,
100 and 1000 times it (with each one's mean relative error of the re-simulated training trajectories): the
conditioning of the least-squares problem, which bounds the agreement of any two runs whose reduced data differ by
rounding; and, at the smallest-error one, the same noise in the time derivatives alone and in the states alone.

Each part prints its figures and updates its section of ``benchmarks/results/dynamics_rank_agreement.json``
(with the date and the load average). A quick check: ``mpirun -n 2 python benchmarks/dynamics_rank_agreement.py
beam --n-cells 8 2 2 --degree 1 --t-train 0.01 --out /tmp/agreement.json``.
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mpi4py import MPI

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demos"))

from dynamics_beam import build_beam
from dynamics_burgers import NU_RANGE, build_problem

import fem_ml
from fem_ml._layout import DofLayout
from fem_ml.dynamics import NewmarkIntegrator, fit_second_order

FIELDS = ("displacements", "velocities", "accelerations")
#: The Burgers demo's training viscosities (its defaults: five, geometric over its range).
BURGERS_NU = np.geomspace(*NU_RANGE, 5)
OPERATORS = ("stiffness", "damping", "input_matrix")
#: The discrepancy of ``fit_operator_inference(discrepancy=...)`` in the Burgers demo (its default), compared with
#: the library's default selection (the smallest error).
DISCREPANCY = 1.0
#: The LU solve and two steps of iterative refinement, in PETSc (Richardson preconditioned by the MUMPS LU, three
#: iterations, no convergence test), so that it works alike on any rank count.
REFINED = {"ksp_type": "richardson", "ksp_norm_type": "none", "ksp_max_it": 3, "pc_type": "lu",
           "pc_factor_mat_solver_type": "mumps"}  # fmt: skip
#: The factorizations of the serial reruns (the default is MUMPS with its automatic ordering).
LU = {"ksp_type": "preonly", "pc_type": "lu"}
OTHER_LU = {
    "mumps_amd": LU | {"pc_factor_mat_solver_type": "mumps", "mat_mumps_icntl_7": 0},
    "mumps_metis": LU | {"pc_factor_mat_solver_type": "mumps", "mat_mumps_icntl_7": 5},
    "petsc_lu": LU | {"pc_factor_mat_solver_type": "petsc"},
}


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Relative Frobenius difference ``|a - b| / |b|``."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def newmark_data(
    comm: MPI.Comm, args: argparse.Namespace, petsc_options: dict | None = None, perturb: int | None = None
) -> dict:
    """The step-response training run of the demo's beam on ``comm`` (collective).

    With ``perturb`` (a seed; serial runs only), every entry of the assembled mass and stiffness matrices is first
    multiplied by 1 + 2e-16 x with x standard normal: a rounding-sized change of the
    assembly, such as another summation order makes.

    Returns the beam, its dof layout, the times and inputs, the owned fields, the fields gathered in canonical
    order (rank 0; None elsewhere) and the tip displacement over time.
    """
    beam = build_beam(comm, tuple(args.n_cells), degree=args.degree)
    if perturb is not None:
        rng = np.random.default_rng(perturb)
        for A in (beam.M, beam.K):
            rows, columns, values = A.getValuesCSR()
            values = values * (1.0 + 2e-16 * rng.standard_normal(values.size))
            A.zeroEntries()
            A.setValuesCSR(rows, columns, values)
            A.assemble()
    newmark = NewmarkIntegrator(beam.M, beam.K, beam.load, damping=beam.rayleigh, petsc_options=petsc_options)
    t = np.arange(round(args.t_train / args.dt) + 1) * args.dt
    run = newmark.run(t, np.ones(t.size), functionals={"tip": beam.tip})
    newmark.destroy()
    layout = DofLayout(beam.V)
    owned = {key: getattr(run, key) for key in FIELDS}
    canonical = {key: layout.gather(owned[key]) for key in FIELDS}
    return {"beam": beam, "layout": layout, "t": t, "s": run.inputs, "owned": owned, "canonical": canonical,
            "tip": run.functionals["tip"]}  # fmt: skip


def fit(data: dict, owned: dict, args: argparse.Namespace, modes: np.ndarray | None = None) -> dict:
    """POD in the mass product, projection and second-order fit of ``owned`` fields, as in the demo (collective).

    With ``modes`` (owned values, ``(n_owned, r)``) the POD is skipped and those modes are the basis.
    """
    beam = data["beam"]
    u = owned["displacements"]
    if modes is None:
        basis = fem_ml.pod(u, inner_product=beam.M, V=beam.V, tol=args.pod_tol)
    else:
        ip = fem_ml.assemble_inner_product(beam.V, beam.M)
        basis = fem_ml.PODBasis(beam.V, modes, np.ones(modes.shape[1]), ip, 0.0)
    model = fit_second_order(basis, u, data["t"], data["s"], velocities=owned["velocities"],
                             accelerations=owned["accelerations"], damping=args.damping)  # fmt: skip
    out = {key: getattr(model, key) for key in OPERATORS}
    out["regularization"] = model.fit_info.regularization
    out["rayleigh"] = model.fit_info.rayleigh
    out["singular_values"] = basis.singular_values[: basis.n_modes]
    out["coefficients"] = basis.project(u)
    out["modes"] = data["layout"].gather(basis.modes)
    basis.inner_product.destroy()
    return out


def compare_fits(a: dict, b: dict) -> dict:
    """Relative differences of two fits' operators (``b`` the reference) and their regularizations."""
    out = {key: rel(a[key], b[key]) for key in OPERATORS}
    out["regularizations"] = [a["regularization"], b["regularization"]]
    if a["rayleigh"] is not None and b["rayleigh"] is not None:
        out["rayleigh"] = [list(a["rayleigh"]), list(b["rayleigh"])]
        out["rayleigh_alpha_beta"] = [abs(x / y - 1.0) if y else abs(x) for x, y in zip(*out["rayleigh"], strict=True)]
    return out


def compare_data(a: dict, b: dict, fit_a: dict, fit_b: dict) -> dict:
    """Relative differences of two runs' trajectories (canonical order, rank 0), tips, singular values, coefficients."""
    out = {key: rel(a["canonical"][key], b["canonical"][key]) for key in FIELDS}
    u_a, u_b = a["canonical"]["displacements"][:, 1:], b["canonical"]["displacements"][:, 1:]
    out["displacements_max_per_step"] = float(np.max(np.linalg.norm(u_a - u_b, axis=0) / np.linalg.norm(u_b, axis=0)))
    out["tip_max_over_peak"] = float(np.max(np.abs(a["tip"] - b["tip"])) / np.max(np.abs(b["tip"])))
    n = min(fit_a["singular_values"].size, fit_b["singular_values"].size)
    out["n_modes"] = [int(fit_a["singular_values"].size), int(fit_b["singular_values"].size)]
    out["singular_values_max"] = float(
        np.max(np.abs(fit_a["singular_values"][:n] / fit_b["singular_values"][:n] - 1.0))
    )
    q_a, q_b = fit_a["coefficients"][:n], fit_b["coefficients"][:n]
    signs = np.sign(np.sum(q_a * q_b, axis=1))[:, None]  # POD modes are defined up to their sign
    out["coefficients"] = rel(signs * q_a, q_b)
    return out


def compare_bases(a: dict, b: dict) -> dict:
    """Largest relative difference of two fits' modes (sign-aligned) and of their coefficients (rank 0)."""
    n = min(a["modes"].shape[1], b["modes"].shape[1])
    signs = np.sign(np.sum(a["modes"][:, :n] * b["modes"][:, :n], axis=0))
    phi_a, phi_b = a["modes"][:, :n] * signs, b["modes"][:, :n]
    diff = np.linalg.norm(phi_a - phi_b, axis=0) / np.linalg.norm(phi_b, axis=0)
    q_a, q_b = a["coefficients"][:n] * signs[:, None], b["coefficients"][:n]
    return {
        "modes_max": float(np.max(diff)),
        "modes_per_mode": diff.tolist(),
        "coefficients": rel(q_a, q_b),
        "coefficients_per_mode": (np.linalg.norm(q_a - q_b, axis=1) / np.linalg.norm(q_b, axis=1)).tolist(),
    }


def common_basis(data: dict, a: dict, b: dict) -> dict:
    r"""Two fits' operators compared independently of their bases (collective; figures on rank 0).

    Entry by entry, operators in two bases also differ by how the bases differ: modes of nearly equal singular
    values turn into each other. Here :math:`G = \Phi_a^T M \Phi_b` and :math:`E = \Phi_b - \Phi_a G` (the part
    of :math:`b`'s modes outside :math:`a`'s span, :math:`H = E^T M E`). *Aligned*: :math:`\|X_a - G X_b
    G^T\|_F / \|X_b\|_F` (:math:`\|B_a - G B_b\|` for the input matrix), ``b``'s operators written in ``a``'s
    modes. *Lifted*: the full-space operators :math:`\Phi X \Phi^T M` (and :math:`\Phi B`) compared in the
    Hilbert-Schmidt norm of the mass product, which no choice of basis within a span changes:

    .. math:: \|X_a - G X_b G^T\|_F^2 + \mathrm{tr}(G X_b H X_b^T G^T) + \mathrm{tr}(G X_b^T H X_b G^T)
              + \mathrm{tr}(X_b^T H X_b H).
    """
    layout, beam = data["layout"], data["beam"]
    comm = beam.V.mesh.comm
    r, r_b = comm.bcast((a["modes"].shape[1], b["modes"].shape[1]) if comm.rank == 0 else None, root=0)
    if r != r_b:  # operators of different sizes: nothing to compare
        return {"n_modes": [r, r_b]}
    phi_a = layout.scatter(a["modes"] if comm.rank == 0 else None, width=r)
    phi_b = layout.scatter(b["modes"] if comm.rank == 0 else None, width=r)
    product = fem_ml.assemble_inner_product(beam.V, beam.M)
    G = product.gram(phi_a, phi_b)
    E = phi_b - phi_a @ G
    H = product.gram(E, E)
    product.destroy()
    out: dict = {"rotation_max": float(np.max(np.abs(G - np.diag(np.diag(G))))),
                 "outside_span": float(np.sqrt(max(np.trace(H), 0.0)))}  # fmt: skip
    if comm.rank != 0:
        return out
    for key in OPERATORS:
        Xa, Xb = a[key], b[key]
        if key == "input_matrix":
            aligned = Xa - G @ Xb
            squares = np.linalg.norm(aligned) ** 2 + np.trace(Xb.T @ H @ Xb)
        else:
            aligned = Xa - G @ Xb @ G.T
            GX, XG = G @ Xb, Xb @ G.T
            squares = (np.linalg.norm(aligned) ** 2 + np.trace(GX @ H @ GX.T) + np.trace(XG.T @ H @ XG)
                       + np.trace(Xb.T @ H @ Xb @ H))  # fmt: skip
        scale = np.linalg.norm(Xb)
        out[key] = {"entrywise": rel(Xa, Xb), "aligned": float(np.linalg.norm(aligned) / scale),
                    "lifted": float(np.sqrt(max(squares, 0.0)) / scale)}  # fmt: skip
    return out


def scattered(layout: DofLayout, canonical: dict | None, width: int) -> dict:
    """Canonical-order fields (rank 0) distributed to the owners of ``layout`` (collective)."""
    return {key: layout.scatter(None if canonical is None else canonical[key], width=width) for key in FIELDS}


def serial_rerun(
    args: argparse.Namespace, serial: dict, fit_serial: dict, petsc_options: dict | None = None,
    perturb: int | None = None,
) -> dict:  # fmt: skip
    """The serial run again with other solver options or perturbed matrices, compared with ``serial`` (local)."""
    other = newmark_data(MPI.COMM_SELF, args, petsc_options, perturb)
    fit_other = fit(other, other["owned"], args)
    out = {"data": compare_data(other, serial, fit_other, fit_serial), "operators": compare_fits(fit_other, fit_serial)}
    other["beam"].destroy()
    return out


def refined_comparison(args: argparse.Namespace) -> dict:
    """The step response on 1 and on 2 ranks, each with iterative refinement of every solve (collective).

    Returns the comparison of data and operators (rank 0; empty elsewhere).
    """
    comm = MPI.COMM_WORLD
    serial = newmark_data(MPI.COMM_SELF, args, REFINED) if comm.rank == 0 else None
    fit_serial = fit(serial, serial["owned"], args) if serial is not None else None
    world = newmark_data(comm, args, REFINED)
    fit_world = fit(world, world["owned"], args)
    out: dict = {}
    if serial is not None and fit_serial is not None:
        out = {"petsc_options": REFINED, "data": compare_data(world, serial, fit_world, fit_serial),
               "operators": compare_fits(fit_world, fit_serial)}  # fmt: skip
        serial["beam"].destroy()
    world["beam"].destroy()
    return out


def beam_part(args: argparse.Namespace) -> dict:
    """The beam comparisons (collective on COMM_WORLD; the serial runs on rank 0)."""
    comm = MPI.COMM_WORLD
    root = comm.rank == 0
    start = time.perf_counter()
    serial = newmark_data(MPI.COMM_SELF, args) if root else None
    fit_serial = fit(serial, serial["owned"], args) if root else None
    world = newmark_data(comm, args)
    fit_world = fit(world, world["owned"], args)
    width = world["t"].size
    # Identical data: the serial trajectories fitted on 2 ranks, the 2-rank trajectories fitted on 1 rank.
    fit_world_serial_data = fit(world, scattered(world["layout"], serial["canonical"] if root else None, width), args)
    # Identical data and identical modes: only the projection q = Phi^T M u runs on 2 ranks.
    r = comm.bcast(fit_serial["modes"].shape[1] if root else None, root=0)
    modes = world["layout"].scatter(fit_serial["modes"] if root else None, width=r)
    fit_world_serial_basis = fit(world, scattered(world["layout"], serial["canonical"] if root else None, width),
                                 args, modes=modes)  # fmt: skip
    in_common_basis = common_basis(world, fit_world, fit_serial)
    refined = refined_comparison(args)
    result: dict = {}
    if root:
        assert serial is not None and fit_serial is not None
        fit_serial_world_data = fit(serial, scattered(serial["layout"], world["canonical"], width), args)
        result = {
            "n_dofs": int(world["layout"].n_global),
            "n_steps": int(width - 1),
            "full_model_rayleigh": list(world["beam"].rayleigh),
            "data_2_ranks_vs_1": compare_data(world, serial, fit_world, fit_serial),
            "operators_own_data_2_ranks_vs_1": compare_fits(fit_world, fit_serial),
            "operators_own_data_2_ranks_vs_1_common_basis": in_common_basis,
            "operators_identical_data_2_ranks_vs_1": {
                "serial_trajectories": compare_fits(fit_world_serial_data, fit_serial),
                "2_rank_trajectories": compare_fits(fit_world, fit_serial_world_data),
                "serial_trajectories_bases": compare_bases(fit_world_serial_data, fit_serial),
                "serial_trajectories_and_modes": compare_fits(fit_world_serial_basis, fit_serial),
                "serial_trajectories_and_modes_coefficients": compare_bases(fit_world_serial_basis, fit_serial),
            },
        }
        # Both rank counts with iterative refinement: is the difference the solver's rounding?
        result["refined_2_ranks_vs_1"] = refined
        # The serial run again from matrices changed by rounding-sized noise: how much the assembly's rounding matters.
        result["serial_perturbed_matrices_vs_default"] = {
            f"seed_{seed}": serial_rerun(args, serial, fit_serial, perturb=seed) for seed in (1, 2)
        }
        # The serial run again with other factorizations: no change in the number of ranks.
        result["serial_other_factorization_vs_default"] = {
            name: {"petsc_options": options, **serial_rerun(args, serial, fit_serial, options)}
            for name, options in OTHER_LU.items()
        }
        serial["beam"].destroy()
    world["beam"].destroy()
    result["wall_s"] = time.perf_counter() - start
    return comm.bcast(result, root=0)


def beam_sensitivity_part(args: argparse.Namespace) -> dict:
    """Operators of the beam from data of unperturbed and perturbed matrices on the same modes (local, one rank)."""
    reference = newmark_data(MPI.COMM_SELF, args)
    beam = reference["beam"]
    basis = fem_ml.pod(reference["owned"]["displacements"], inner_product=beam.M, V=beam.V, tol=args.pod_tol)

    def reduced(data: dict) -> list[np.ndarray]:
        return [basis.project(data["owned"][key]).T for key in FIELDS]

    def fitted(q: list[np.ndarray], lam: float | str) -> fem_ml.dynamics.SecondOrderModel:
        return fem_ml.dynamics.fit_second_order_coefficients(
            q[0],
            reference["t"],
            reference["s"],
            velocities=q[1],
            accelerations=q[2],
            regularization=lam,
            damping=args.damping,
        )

    q_ref = reduced(reference)
    chosen = fitted(q_ref, "auto").fit_info.regularization
    references = {lam: fitted(q_ref, lam) for lam in fem_ml.dynamics.second_order.DEFAULT_CANDIDATES[1:]}
    out: dict = {"n_modes": basis.n_modes, "automatic_regularization": chosen, "by_seed": {}}
    for seed in (1, 2):
        other = newmark_data(MPI.COMM_SELF, args, perturb=seed)
        q_other = reduced(other)
        other["beam"].destroy()
        rows = []
        for lam, a in references.items():
            b = fitted(q_other, lam)
            rows.append({"regularization": lam, "training_error": a.fit_info.training_error,
                         **{f"{key}_moved": rel(getattr(b, key), getattr(a, key)) for key in OPERATORS}})  # fmt: skip
        out["by_seed"][f"seed_{seed}"] = {
            "coefficients": {key: rel(x, y) for key, x, y in zip(FIELDS, q_other, q_ref, strict=True)},
            "by_regularization": rows,
        }
    basis.inner_product.destroy()
    beam.destroy()
    return out


def field_difference(first: Path, second: Path, name: str = "velocity_truth") -> float:
    """Largest relative difference over time of one field in two demo outputs.

    The demo writes the full DOLFINx solution (``velocity_truth``) and the reduced model's prediction
    (``velocity_prediction``) of its first test viscosity over [0, 2T] to ``trajectory.h5`` (a read-only look with
    h5py; nodes matched through the mesh geometry).
    """
    fields = []
    for path in (first, second):
        with h5py.File(path, "r") as f:
            x = np.asarray(f["Mesh/mesh/geometry"])
            order = np.lexsort((np.round(x[:, 1], 10), np.round(x[:, 0], 10)))
            group = f[f"Function/{name}"]
            steps = sorted(group, key=lambda step: float(step.replace("_", ".")))
            fields.append(np.stack([np.asarray(group[step])[order] for step in steps]))
    a, b = fields
    norms = np.linalg.norm(a.reshape(a.shape[0], -1), axis=1)
    return float(np.max(np.linalg.norm((b - a).reshape(a.shape[0], -1), axis=1) / norms))


def burgers_part(serial_dir: Path, parallel_dir: Path) -> dict:
    """Compare the Burgers models saved on 1 and on 2 ranks (local: both loaded on COMM_SELF)."""
    models = [fem_ml.dynamics.load(d / "burgers.femml", comm=MPI.COMM_SELF) for d in (serial_dir, parallel_dir)]
    one, two = models
    out: dict = {"terms": sorted(one.entries)}
    for key in sorted(one.entries):
        out[f"operator_{key}"] = rel(two.entries[key], one.entries[key])
    out["regularizations"] = [str(m.fit_report.get("regularization")) for m in models]
    b1, b2 = one.basis, two.basis
    assert b1 is not None and b2 is not None
    n = min(b1.n_modes, b2.n_modes)
    out["n_modes"] = [b1.n_modes, b2.n_modes]
    out["singular_values_max"] = float(np.max(np.abs(b2.singular_values[:n] / b1.singular_values[:n] - 1.0)))
    # Modes through the dof coordinates (the two files may number the dofs differently).
    modes = []
    for b in (b1, b2):
        x = b.V.tabulate_dof_coordinates()[: b.V.dofmap.index_map.size_local]
        bs = b.V.dofmap.index_map_bs
        order = np.lexsort((np.round(x[:, 1], 10), np.round(x[:, 0], 10)))
        modes.append(b.modes.reshape(-1, bs, b.n_modes)[order].reshape(-1, b.n_modes)[:, :n])
    signs = np.sign(np.sum(modes[0] * modes[1], axis=0))
    diff = np.linalg.norm(modes[1] * signs - modes[0], axis=0) / np.linalg.norm(modes[0], axis=0)
    out["modes_max"] = float(np.max(diff))
    files = (serial_dir / "trajectory.h5", parallel_dir / "trajectory.h5")
    out["truth_rel_max"] = field_difference(*files)
    out["prediction_rel_max"] = field_difference(*files, "velocity_prediction")
    summaries = [json.loads((d / "summary.json").read_text()) for d in (serial_dir, parallel_dir)]
    out["n_ranks"] = [s["n_ranks"] for s in summaries]
    for key in ("rel_l2_error_mean_train_window", "rel_l2_error_mean_extrapolation"):
        out[key] = [s[key] for s in summaries]
    return out


def burgers_trajectories(comm: MPI.Comm) -> tuple:
    """The Burgers demo's training trajectories on ``comm`` at its defaults: ``(V, snapshots)`` (collective).

    Five viscosities, 101 times (dt 0.005, T = 0.5), 48 x 48 cells.
    """
    V, solve = build_problem(comm, 48, 0.005)
    S = fem_ml.collect_trajectories(solve, BURGERS_NU[:, None], V, times=np.arange(101) * 0.005,
                                    space=fem_ml.ParameterSpace({"nu": NU_RANGE}), progress=False)  # fmt: skip
    return V, S


def burgers_fit_options() -> dict:
    """The demo's options of ``fit_operator_inference`` (``nu A q + H q⊗q``, stable between the viscosities)."""
    mids = np.sqrt(BURGERS_NU[:-1] * BURGERS_NU[1:])
    return {"terms": "AH", "parameter_functions": {"A": ["nu"]}, "test_time_length": 0.5,
            "stability_parameters": mids[:, None]}  # fmt: skip


def burgers_data_part() -> dict:
    """The Burgers demo's training data and fit on 1 rank (rank 0) and on 2 ranks, from own and identical data."""
    comm = MPI.COMM_WORLD
    root = comm.rank == 0
    start = time.perf_counter()

    def collect(c: MPI.Comm) -> tuple:
        V, S = burgers_trajectories(c)
        layout = DofLayout(V)
        return V, S, layout, layout.gather(S.values)

    def fit_burgers(V: object, S: fem_ml.SnapshotSet, layout: DofLayout, modes: np.ndarray | None = None) -> dict:
        if modes is None:
            basis = fem_ml.pod(S, inner_product="l2", n_modes=24)
        else:
            basis = fem_ml.PODBasis(V, modes, np.ones(modes.shape[1]), fem_ml.assemble_inner_product(V, "l2"), 0.0)
        data = fem_ml.dynamics.reduce_trajectories(basis, S, parameter_names=["nu"])
        model = fem_ml.dynamics.fit_operator_inference(data, basis=basis, **burgers_fit_options())
        balanced = fem_ml.dynamics.fit_operator_inference(data, basis=basis, discrepancy=DISCREPANCY,
                                                          **burgers_fit_options())  # fmt: skip
        return {"entries": model.entries, "entries_discrepancy": balanced.entries,
                "regularization_discrepancy": balanced.fit_report["regularization"],
                "modes": layout.gather(basis.modes), "states": np.hstack(data.states)}  # fmt: skip

    serial = collect(MPI.COMM_SELF) if root else None
    fit_serial = fit_burgers(*serial[:3]) if root else None
    V, S, layout, canonical = collect(comm)
    fit_world = fit_burgers(V, S, layout)
    n = S.values.shape[1]
    same = fem_ml.SnapshotSet(V, S.parameters, layout.scatter(serial[3] if root else None, width=n), S.solve_times)
    fit_same = fit_burgers(V, same, layout)
    modes = layout.scatter(fit_serial["modes"] if root else None, width=24)
    fit_same_modes = fit_burgers(V, same, layout, modes)
    result: dict = {}
    if root:
        assert serial is not None and fit_serial is not None

        def against_serial(fitted: dict) -> dict:
            signs = np.sign(np.sum(fitted["modes"] * fit_serial["modes"], axis=0))
            diff = np.linalg.norm(fitted["modes"] * signs - fit_serial["modes"], axis=0)
            out = {f"operator_{k}": rel(fitted["entries"][k], fit_serial["entries"][k]) for k in fit_serial["entries"]}
            for k in fit_serial["entries"]:  # the fit with the discrepancy principle, from the same data
                out[f"operator_{k}_discrepancy"] = rel(fitted["entries_discrepancy"][k],
                                                       fit_serial["entries_discrepancy"][k])  # fmt: skip
            out["regularizations_discrepancy"] = [fitted["regularization_discrepancy"],
                                                  fit_serial["regularization_discrepancy"]]  # fmt: skip
            out["modes_max"] = float(np.max(diff / np.linalg.norm(fit_serial["modes"], axis=0)))
            out["coefficients"] = rel(fitted["states"] * signs[:, None], fit_serial["states"])
            return out

        columns = np.linalg.norm(canonical - serial[3], axis=0) / np.linalg.norm(serial[3], axis=0)
        result = {
            "n_dofs": int(layout.n_global),
            "n_snapshots": int(n),
            "data_2_ranks_vs_1": {
                "snapshots": rel(canonical, serial[3]),
                "snapshots_max_per_column": float(columns.max()),
            },
            "fit_own_data_2_ranks_vs_1": against_serial(fit_world),
            "fit_identical_data_2_ranks_vs_1": against_serial(fit_same),
            "fit_identical_data_and_modes_2_ranks_vs_1": against_serial(fit_same_modes),
        }
    result["wall_s"] = time.perf_counter() - start
    return comm.bcast(result, root=0)


def burgers_sensitivity_part(scales: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)) -> dict:
    """How far the Burgers fit moves for rounding-sized changes of its data, on one rank (local).

    The demo's training trajectories, POD and fit on ``COMM_SELF``; then, at the regularization of the discrepancy
    principle (``discrepancy=1.0``) and at the default, smallest-error one times
    each of ``scales``, the fit from the same reduced states and from states perturbed by relative noise of
    2e-16 (three seeds; the size of the difference between the reduced states of 1 and 2 ranks). No MPI is
    involved: what this measures is the conditioning of the least-squares problem itself.
    """
    _, S = burgers_trajectories(MPI.COMM_SELF)
    basis = fem_ml.pod(S, inner_product="l2", n_modes=24)
    data = fem_ml.dynamics.reduce_trajectories(basis, S, parameter_names=["nu"])
    options = burgers_fit_options()
    balanced = fem_ml.dynamics.fit_operator_inference(data, discrepancy=DISCREPANCY, **options)
    chosen = balanced.fit_report["regularization"]
    smallest = fem_ml.dynamics.fit_operator_inference(data, **options).fit_report["regularization"]

    def resimulated(model: fem_ml.dynamics.ReducedDynamics) -> float:
        """Mean relative error of the training trajectories simulated from their first states."""
        errors = []
        for nu, t, q in zip(data.parameters, data.times, data.states, strict=True):
            run = model.simulate(nu, q[:, 0], t, rtol=1e-10, atol=1e-14)
            errors.append(np.linalg.norm(run.coefficients - q) / np.linalg.norm(q))
        return float(np.mean(errors))

    out: dict = {"selected_regularization": chosen, "smallest_error_regularization": smallest,
                 "projection_error_mean": float(np.mean(data.projection_errors)), "perturbation": 2e-16,
                 "by_regularization": []}  # fmt: skip
    for lam in [tuple(chosen)] + [(smallest[0] * scale, smallest[1] * scale) for scale in scales]:
        reference = fem_ml.dynamics.fit_operator_inference(data, regularization=lam, **options)
        moved: dict[str, float] = {}
        for seed in range(3):
            rng = np.random.default_rng(seed)
            states = tuple(q * (1.0 + 2e-16 * rng.standard_normal(q.shape)) for q in data.states)
            perturbed = fem_ml.dynamics.fit_operator_inference(dataclasses.replace(data, states=states),
                                                               regularization=lam, **options)  # fmt: skip
            for key in reference.entries:
                moved[key] = max(moved.get(key, 0.0), rel(perturbed.entries[key], reference.entries[key]))
        out["by_regularization"].append({
            "regularization": list(lam),
            "training_error": resimulated(reference),
            **{f"operator_{key}_moved_max": value for key, value in moved.items()},
        })  # fmt: skip
    out["by_source_at_smallest_error"] = sources(data, tuple(smallest), options)
    return out


def sources(data: fem_ml.dynamics.Trajectories, lam: tuple[float, float], options: dict) -> dict:
    """How far the operators move at ``lam`` when the same 2e-16 noise reaches only the derivatives or only the states.

    The derivatives are the fit's own (fourth-order finite differences), given through ``derivatives=``: of the
    perturbed states with the exact states as features, and of the exact states with the perturbed ones (3 seeds).
    """
    derivative = fem_ml.dynamics.time_derivative
    exact = [derivative(t, q, order=4) for t, q in zip(data.times, data.states, strict=True)]
    reference = fem_ml.dynamics.fit_operator_inference(data, regularization=lam, derivatives=exact, **options)
    moved: dict[str, float] = {}
    for seed in range(3):
        rng = np.random.default_rng(seed)
        noisy = tuple(q * (1.0 + 2e-16 * rng.standard_normal(q.shape)) for q in data.states)
        noisy_derivatives = [derivative(t, q, order=4) for t, q in zip(data.times, noisy, strict=True)]
        for name, states, dq in (("derivatives_only", data.states, noisy_derivatives),
                                 ("states_only", noisy, exact)):  # fmt: skip
            fit = fem_ml.dynamics.fit_operator_inference(dataclasses.replace(data, states=states),
                                                         regularization=lam, derivatives=dq, **options)  # fmt: skip
            for key in reference.entries:
                label = f"{name}_operator_{key}_moved_max"
                moved[label] = max(moved.get(label, 0.0), rel(fit.entries[key], reference.entries[key]))
    return {"regularization": list(lam), **moved}


def main() -> None:
    """Run one part, print it and update its section of the JSON (collective for the beam)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["beam", "beam-sensitivity", "burgers", "burgers-data", "burgers-sensitivity"])
    parser.add_argument("--n-cells", type=int, nargs=3, default=[30, 3, 3])
    parser.add_argument("--degree", type=int, default=2)
    parser.add_argument("--dt", type=float, default=1e-4)
    parser.add_argument("--t-train", type=float, default=0.05)
    parser.add_argument("--pod-tol", type=float, default=1e-10)
    parser.add_argument(
        "--damping",
        choices=["rayleigh", "symmetric"],
        default="rayleigh",
        help="beam parts: the fitted damping model, the demo's default or (section suffix _symmetric) "
        "any symmetric C_r",
    )
    parser.add_argument("--serial", type=Path, help="burgers: the demo's --out-dir of the 1-rank run")
    parser.add_argument("--parallel", type=Path, help="burgers: the demo's --out-dir of the 2-rank run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dynamics_rank_agreement.json")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    load_start = os.getloadavg()
    part = args.part
    if args.part == "beam":
        if comm.size != 2:
            raise SystemExit("Run the beam part on 2 ranks: mpirun -n 2 python benchmarks/dynamics_rank_agreement.py")
        section = beam_part(args)
    elif args.part == "beam-sensitivity":
        section = comm.bcast(beam_sensitivity_part(args) if comm.rank == 0 else None, root=0)
    if part.startswith("beam"):
        section["problem"] = {"n_cells": args.n_cells, "degree": args.degree, "dt": args.dt, "t_train": args.t_train,
                              "pod_tol": args.pod_tol, "damping": args.damping}  # fmt: skip
        if args.damping == "symmetric":
            part += "-symmetric"
    elif args.part == "burgers-sensitivity":
        section = comm.bcast(burgers_sensitivity_part() if comm.rank == 0 else None, root=0)
    elif args.part == "burgers-data":
        if comm.size != 2:
            raise SystemExit("Run the burgers-data part on 2 ranks.")
        section = burgers_data_part()
    else:
        if args.serial is None or args.parallel is None:
            raise SystemExit("The burgers part needs --serial DIR1 --parallel DIR2 (the demo's output folders).")
        section = burgers_part(args.serial, args.parallel) if comm.rank == 0 else {}
        section = comm.bcast(section, root=0)
        section["folders"] = [str(args.serial), str(args.parallel)]
        summaries = [json.loads((d / "summary.json").read_text()) for d in (args.serial, args.parallel)]
        rules = {str(s.get("discrepancy")) for s in summaries}
        if len(rules) != 1:
            raise SystemExit(f"The two runs used different discrepancies: {sorted(rules)}.")
        (rule,) = rules
        if rule == "None":  # the library's default selection
            part = "burgers-smallest-error"
        elif float(rule) != DISCREPANCY:
            part = f"burgers-discrepancy-{rule}"
    section["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    section["load_average_start_end"] = [list(load_start), list(os.getloadavg())]
    if comm.rank == 0:
        print(json.dumps(section, indent=2))
    existing = comm.bcast(json.loads(args.out.read_text()) if comm.rank == 0 and args.out.exists() else {}, root=0)
    existing.update({
        "benchmark": "dynamics_rank_agreement",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"fem_ml": fem_ml.__version__},
        part.replace("-", "_"): section,
    })  # fmt: skip
    fem_ml.write_json(args.out, existing, comm=comm)


if __name__ == "__main__":
    main()
