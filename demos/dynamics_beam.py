# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Vibrating cantilever: a second-order reduced model learned from one load history
#
# A steel beam $\Omega = [0, L] \times [0, W] \times [0, W]$ ($L = 1$ m, $W = 0.1$ m) is clamped at $x = 0$ and
# loaded on its free end by a vertical traction of total force $F_0\, s(t)$, where the scalar $s(t)$ is the
# *input*. Linear elastodynamics with Rayleigh damping, discretized with P2 elements,
#
# $$
# M \ddot u + C \dot u + K u = b\, s(t), \qquad C = \alpha M + \beta K,
# $$
#
# is integrated with the Newmark average-acceleration scheme (`fem_ml.dynamics.NewmarkIntegrator`: one MUMPS
# factorization, one solve per step). The reduced model
#
# $$
# \ddot q + C_r \dot q + K_r q = B_r\, s(t), \qquad u \approx \Phi q,\quad q = \Phi^T M u,
# $$
#
# is learned from **one** trajectory, the response to a step $s(t) = 1$: a POD of its displacements in the mass
# inner product ($\Phi^T M \Phi = I$, so the reduced mass is the identity), the coefficients' velocities and
# accelerations (those of the Newmark solver, projected), and a least-squares fit of a symmetric $K_r$, of
# $B_r$ and of the damping (`fem_ml.dynamics.fit_second_order`). The structure has Rayleigh damping, so the
# reduced model does too: $C_r = \alpha I + \beta K_r$ (`damping="rayleigh"`, the exact reduction of
# $C = \alpha M + \beta K$ in a mass-orthonormal basis), with $\alpha, \beta$ fitted; `--damping symmetric`
# fits any symmetric $C_r$ instead. $K_r$ is made positive definite and $C_r$ positive semi-definite, so the
# reduced energy $E = \tfrac12 \dot q^T \dot q + \tfrac12 q^T K_r q$ of free vibration cannot grow. The model
# then predicts the response to inputs it has not seen, over twice the training interval: a sine at a frequency
# between the first two natural frequencies, and a smoothed random sequence.
#
# ```bash
# mpirun -n 2 python demos/dynamics_beam.py
# ```
#
# It writes `results/dynamics_beam/summary.json`, plots of the tip displacement (full against reduced, per
# history) and of the reduced energy in free vibration, the reduced operators as JSON, and the predicted
# displacement of each unseen history as an XDMF time series (ParaView: the time is the physical time).

# %%
from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpi4py import MPI
from petsc4py import PETSc

import numpy as np
import ufl
from dolfinx import fem, mesh
from dolfinx.fem import petsc as fem_petsc

import fem_ml
from fem_ml.dynamics import NewmarkIntegrator, fit_second_order

LENGTH, WIDTH = 1.0, 0.1
YOUNG, POISSON, DENSITY = 210e9, 0.3, 7800.0  # Pa, -, kg/m^3
FORCE = 1.0e3  # N, total tip force at s = 1
DAMPING_RATIO = 0.02  # Rayleigh damping: this ratio at the first two bending frequencies (Euler-Bernoulli)

log = logging.getLogger("dynamics_beam")


# %% [markdown]
# ## The full-order model
# `build_beam` assembles $M$ (density times the $L^2$ product) and $K$ with the clamp (rows and columns of the
# clamped dofs zeroed, 1 on the diagonal), the load vector $b$ of the tip traction and the functional
# $\ell$ of the tip displacement, the mean vertical displacement of the free end:
# $\ell(u) = |\Gamma_L|^{-1} \int_{\Gamma_L} u_z \,\mathrm ds$. The Rayleigh coefficients give the damping
# ratio `DAMPING_RATIO` at the first two Euler-Bernoulli bending frequencies $\omega_{1,2} = (1.875, 4.694)^2
# \sqrt{EI / (\rho A L^4)}$.


# %%
@dataclass
class Beam:
    """The discretized cantilever: space, PETSc matrices and vectors (destroy with :meth:`destroy`, collective)."""

    V: fem.FunctionSpace
    M: PETSc.Mat
    K: PETSc.Mat
    load: PETSc.Vec
    tip: PETSc.Vec
    rayleigh: tuple[float, float]
    bending_hz: tuple[float, float]

    def destroy(self) -> None:
        """Free the PETSc objects (collective)."""
        for obj in (self.M, self.K, self.load, self.tip):
            obj.destroy()


def build_beam(comm: MPI.Comm, n_cells: tuple[int, int, int] = (30, 3, 3), *, degree: int = 2) -> Beam:
    """Assemble the cantilever on a box of ``n_cells`` hexahedra split into tetrahedra (collective)."""
    domain = mesh.create_box(
        comm, [np.zeros(3), np.array([LENGTH, WIDTH, WIDTH])], list(n_cells), mesh.CellType.tetrahedron
    )
    V = fem.functionspace(domain, ("Lagrange", degree, (3,)))
    mu, lmbda = YOUNG / (2 * (1 + POISSON)), YOUNG * POISSON / ((1 + POISSON) * (1 - 2 * POISSON))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    eps = ufl.sym(ufl.grad(u))
    stress = 2 * mu * eps + lmbda * ufl.tr(eps) * ufl.Identity(3)
    fdim = domain.topology.dim - 1
    free_end = mesh.locate_entities_boundary(domain, fdim, lambda x: np.isclose(x[0], LENGTH))
    tags = mesh.meshtags(domain, fdim, free_end, np.ones_like(free_end))
    ds = ufl.Measure("ds", domain=domain, subdomain_data=tags)
    clamped = fem.locate_dofs_topological(
        V, fdim, mesh.locate_entities_boundary(domain, fdim, lambda x: np.isclose(x[0], 0.0))
    )
    bc = fem.dirichletbc(np.zeros(3), clamped, V)
    M = fem_petsc.assemble_matrix(fem.form(DENSITY * ufl.inner(u, v) * ufl.dx), bcs=[bc], diag=1.0)
    M.assemble()
    K = fem_petsc.assemble_matrix(fem.form(ufl.inner(stress, ufl.grad(v)) * ufl.dx), bcs=[bc], diag=1.0)
    K.assemble()
    area = WIDTH * WIDTH
    down = ufl.as_vector((0.0, 0.0, -1.0))

    def vector(form: ufl.Form) -> PETSc.Vec:
        b = fem_petsc.assemble_vector(fem.form(form))
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        fem_petsc.set_bc(b, [bc])
        return b

    load = vector(ufl.inner(FORCE / area * down, v) * ds(1))
    tip = vector(ufl.inner(-down / area, v) * ds(1))  # mean u_z on the free end
    # Rayleigh damping with DAMPING_RATIO at the first two Euler-Bernoulli bending frequencies.
    scale = np.sqrt(YOUNG * WIDTH**4 / 12 / (DENSITY * area * LENGTH**4))
    w1, w2 = 1.8751**2 * scale, 4.6941**2 * scale
    alpha, beta = 2 * DAMPING_RATIO * w1 * w2 / (w1 + w2), 2 * DAMPING_RATIO / (w1 + w2)
    return Beam(V, M, K, load, tip, (alpha, beta), (w1 / (2 * np.pi), w2 / (2 * np.pi)))


# %% [markdown]
# ## Load histories
# Training: a step, $s = 1$ from $t = 0$, over $[0, T]$. Prediction, over $[0, 2T]$: a sine
# $s(t) = \sin(2\pi f t)$ at a frequency $f$ between the first two natural frequencies (never seen: the step
# has no frequency of its own), and a random sequence: Gaussian noise smoothed with a Gaussian kernel of width
# `smoothing` and scaled to a peak of 1.


# %%
def histories(times: np.ndarray, *, frequency: float, smoothing: float, seed: int) -> dict[str, np.ndarray]:
    """The unseen input histories at ``times`` (the same on every rank: seeded)."""
    rng = np.random.default_rng(seed)
    h = times[1] - times[0]
    noise = rng.standard_normal(times.size)
    half = int(4 * smoothing / h)
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * h / smoothing) ** 2)
    smooth = np.convolve(noise, kernel / kernel.sum(), mode="same")
    return {"sine": np.sin(2 * np.pi * frequency * times), "random": smooth / np.max(np.abs(smooth))}


# %% [markdown]
# ## Plots
# Drawn on rank 0 (collectively safe: garbage collected on every rank at the same point before and after, and
# an error on rank 0 raised on every rank).


# %%
def plot(comm: MPI.Comm, path: Path, draw: Callable[[Any], None], *, ncols: int = 1) -> Path:
    """Draw with ``draw(axes)`` on rank 0 and write the PNG (collective, through `fem_ml.plots.save_plot`)."""
    return fem_ml.plots.save_plot(comm, path, draw, ncols=ncols, figsize=(5.5 * ncols, 3.8))


# %% [markdown]
# ## Train on the step, predict the unseen histories, check the energy
# The reduced model is fitted with the Newmark velocities and accelerations (projected); for comparison, also
# with fourth-order finite differences of the coefficients alone, and with the other damping model. For the
# energy check, the reduced model starts from the final state of each history and vibrates freely for
# `free_periods` periods of its first mode; so does a model fitted to coefficients perturbed by 1 % random noise
# (its least-squares operators need not be those of a structure: the projections onto the cones guard it).
#
# The POD keeps the modes down to a discarded energy of `pod_tol = 1e-10` (8 modes at full size). One step
# excites the directions beyond that too weakly to determine their stiffness: with `pod_tol = 1e-12` (13 modes)
# the general least squares gives two negative stiffness eigenvalues, which the projection raises to the floor.
# That model is still stable and accurate at the tip (about 1e-4 of the peak), but it has two spurious soft modes
# (below 2 Hz) in its modal report. With 8 modes the general fit's eigenvalues are all physical; the Rayleigh fit's
# selected regularization softens one direction the step hardly excites (a third frequency near 145 Hz).
#
# **Which damping.** Rayleigh damping, two numbers, is far better determined by one trajectory than a general
# symmetric $C_r$ ($r(r+1)/2 = 36$ numbers for a small term of the equation). The full model's trajectories on 1
# and on 2 ranks differ by about 1e-10 (the rounding of the assembly differs); the Rayleigh operators fitted from
# them agree to about 7e-11, the general $C_r$ only to about 4e-10 (`benchmarks/dynamics_rank_agreement.py`).
# The general $C_r$ is more accurate, though: a third of it is not of Rayleigh form
# (`symmetric_damping_non_rayleigh_part`), a correction for the modes the basis leaves out, and its tip errors
# are about 1e-5 of the peak against about 7e-3 with Rayleigh damping (both in the summary). The fitted
# $\alpha, \beta$ are effective values for the same reason: they differ from the full model's
# (`rayleigh_full_model`), while the damping ratio of the first bending mode, the one the step excites, comes out
# within a few percent of `DAMPING_RATIO`.


# %%
def main(
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    n_cells: tuple[int, int, int] = (30, 3, 3),
    degree: int = 2,
    dt: float = 1e-4,
    t_train: float = 0.05,
    n_modes: int | None = None,
    pod_tol: float = 1e-10,
    frequency: float = 150.0,
    smoothing: float = 1.5e-3,
    free_periods: float = 30.0,
    seed: int = 0,
    damping: str = "rayleigh",
    output_stride: int = 10,
    progress_every: int = 250,
    out_dir: str | Path = "results/dynamics_beam",
) -> dict[str, Any]:
    """Run the demo; returns the summary written to ``out_dir/summary.json``."""
    out = Path(out_dir)
    beam = build_beam(comm, n_cells, degree=degree)
    n_dofs = beam.V.dofmap.index_map.size_global * beam.V.dofmap.index_map_bs
    log.info("Cantilever: %d dofs, Euler-Bernoulli f1, f2 = %.1f, %.1f Hz", n_dofs, *beam.bending_hz)
    newmark = NewmarkIntegrator(beam.M, beam.K, beam.load, damping=beam.rayleigh)
    t_fit_window = np.arange(round(t_train / dt) + 1) * dt
    t_test = np.arange(2 * (t_fit_window.size - 1) + 1) * dt

    start = time.perf_counter()
    train = newmark.run(
        t_fit_window, np.ones(t_fit_window.size), functionals={"tip": beam.tip}, progress_every=progress_every
    )
    t_train_run = time.perf_counter() - start
    basis = fem_ml.pod(train.displacements, inner_product=beam.M, V=beam.V, tol=pod_tol, n_modes=n_modes)
    start = time.perf_counter()
    model = fit_second_order(
        basis, train.displacements, t_fit_window, train.inputs,
        velocities=train.velocities, accelerations=train.accelerations, damping=damping,
    )  # fmt: skip
    t_fit = time.perf_counter() - start
    model_fd = fit_second_order(basis, train.displacements, t_fit_window, train.inputs, damping=damping)
    other = "symmetric" if damping == "rayleigh" else "rayleigh"  # the other damping model, for comparison
    model_other = fit_second_order(
        basis, train.displacements, t_fit_window, train.inputs,
        velocities=train.velocities, accelerations=train.accelerations, damping=other,
    )  # fmt: skip
    q_train = basis.project(train.displacements).T
    v_train = basis.project(train.velocities).T
    rng = np.random.default_rng(seed + 1)
    noisy = q_train + 0.01 * np.std(q_train, axis=0) * rng.standard_normal(q_train.shape)
    model_noisy = fem_ml.dynamics.fit_second_order_coefficients(noisy, t_fit_window, train.inputs, damping=damping)
    train = dataclasses.replace(train, displacements=None, velocities=None, accelerations=None)  # free memory
    # The tip functional on the modes: tip(t) = (l^T Phi) q(t).
    ell = comm.allreduce(beam.tip.getArray(readonly=True) @ basis.modes, op=MPI.SUM)

    # %% [markdown]
    # ### Unseen histories: full Newmark run against the reduced simulation over [0, 2T]

    # %%
    inputs = histories(t_test, frequency=frequency, smoothing=smoothing, seed=seed)
    results: dict[str, dict[str, Any]] = {}
    for name, s in inputs.items():
        start = time.perf_counter()
        full = newmark.run(t_test, s, store=(), functionals={"tip": beam.tip}, progress_every=progress_every)
        t_full = time.perf_counter() - start
        start = time.perf_counter()
        reduced = model.simulate(None, t_test, s)
        t_reduced = time.perf_counter() - start
        reduced_fd = model_fd.simulate(None, t_test, s)
        reduced_other = model_other.simulate(None, t_test, s)
        model.simulate(None, t_test, s, xdmf=out / f"displacement_{name}.xdmf", output_stride=output_stride)
        tip_full = full.functionals["tip"]
        peak = float(np.max(np.abs(tip_full)))
        results[name] = {
            "tip_full": tip_full, "tip_reduced": reduced.coefficients @ ell,
            "tip_reduced_fd": reduced_fd.coefficients @ ell, "tip_reduced_other": reduced_other.coefficients @ ell,
            "peak": peak, "t_full": t_full,
            "t_reduced": t_reduced, "final": (reduced.coefficients[-1], reduced.velocities[-1]),
            "completed": reduced.completed and reduced_fd.completed and reduced_other.completed,
        }  # fmt: skip
        for key in ("", "_fd", "_other"):
            err = np.max(np.abs(tip_full - results[name][f"tip_reduced{key}"])) / peak
            results[name][f"error{key}"] = float(err)
        log.info("%s: tip error %.2e (fd fit %.2e, %s damping %.2e) of the peak %.3e m; full %.2f s, reduced %.4f s",
                 name, results[name]["error"], results[name]["error_fd"], other, results[name]["error_other"], peak,
                 t_full, t_reduced)  # fmt: skip
    tip_train_reduced = model.simulate(None, t_fit_window, train.inputs).coefficients @ ell
    train_error = float(
        np.max(np.abs(train.functionals["tip"] - tip_train_reduced)) / np.max(np.abs(train.functionals["tip"]))
    )

    # %% [markdown]
    # ### Free vibration: the reduced energy never grows

    # %%
    omega1 = 2 * np.pi * beam.bending_hz[0]  # free vibration over free_periods periods of the first mode
    t_free = np.arange(int(free_periods * 2 * np.pi / omega1 / dt) + 1) * dt
    energy_curves: dict[str, np.ndarray] = {}
    starts = {"train": (q_train[-1], v_train[-1])} | {name: r["final"] for name, r in results.items()}
    for label, fitted in (("", model), ("noisy fit, ", model_noisy)):
        for name, state in starts.items():
            free = fitted.simulate(state, t_free)
            energy_curves[f"{label}from {name}"] = free.energy / free.energy[0]
    growth = max(float(np.max(np.diff(e))) for e in energy_curves.values())
    growth_noisy = max(float(np.max(np.diff(e))) for k, e in energy_curves.items() if k.startswith("noisy"))
    noisy_info = model_noisy.fit_info

    # %% [markdown]
    # ### Output: plots, operators, summary

    # %%
    def draw_tips(axes: Any) -> None:
        for ax, (name, r) in zip(np.atleast_1d(axes), [("step (training)", {"tip_full": train.functionals["tip"],
                "tip_reduced": tip_train_reduced, "error": train_error}), *results.items()], strict=True):  # fmt: skip
            t = t_fit_window if name.startswith("step") else t_test
            ax.plot(t * 1e3, r["tip_full"] * 1e3, lw=1.5, label="full (Newmark)")
            ax.plot(t * 1e3, r["tip_reduced"] * 1e3, "--", lw=1.2, label=f"reduced, r = {model.n_modes}")
            ax.set_xlabel("t [ms]")
            ax.set_title(f"{name}: max error {r['error']:.1e} of the peak", fontsize="medium")
        np.atleast_1d(axes)[0].set_ylabel("tip displacement [mm]")
        np.atleast_1d(axes)[0].legend(fontsize="small")

    def draw_energy(ax: Any) -> None:
        for label, e in energy_curves.items():
            ax.plot(t_free * 1e3, e, lw=1, ls="--" if label.startswith("noisy") else "-", label=label)
        ax.set_xlabel("t [ms]")
        ax.set_ylabel("E(t) / E(0)")
        ax.set_title(f"Reduced free vibration: max (E[k+1] - E[k]) / E[0] = {growth:.1e}", fontsize="medium")
        ax.legend(fontsize="x-small")

    plot(comm, out / "tip_displacement.png", draw_tips, ncols=1 + len(results))
    plot(comm, out / "free_energy.png", draw_energy)
    operators = {"stiffness": model.stiffness.tolist(), "damping": model.damping.tolist(),
                 "input_matrix": model.input_matrix.tolist(), "report": model.report()}  # fmt: skip
    fem_ml.write_json(out / "reduced_operators.json", operators, comm=comm)
    modal = model.modal_analysis()
    # How far the general symmetric damping is from Rayleigh form: min over (a, b) of |C - a I - b K| / |C|.
    symmetric = model_other if damping == "rayleigh" else model
    basis_ab = np.column_stack([np.eye(model.n_modes).ravel(), symmetric.stiffness.ravel()])
    ab = np.linalg.lstsq(basis_ab, symmetric.damping.ravel(), rcond=None)[0]
    non_rayleigh = float(np.linalg.norm(symmetric.damping.ravel() - basis_ab @ ab) / np.linalg.norm(symmetric.damping))
    summary: dict[str, Any] = {
        "n_ranks": comm.size,
        "n_dofs": n_dofs,
        "n_modes": model.n_modes,
        "n_steps_train": int(t_fit_window.size - 1),
        "n_steps_test": int(t_test.size - 1),
        "n_histories": len(results),
        "tip_error_rel_peak_max": max(r["error"] for r in results.values()),
        **{f"tip_error_rel_peak_{name}": r["error"] for name, r in results.items()},
        "tip_error_rel_peak_train": train_error,
        "tip_error_rel_peak_max_fd_fit": max(r["error_fd"] for r in results.values()),
        f"tip_error_rel_peak_max_{other}_damping": max(r["error_other"] for r in results.values()),
        "n_blowups": sum(not r["completed"] for r in results.values()),
        "free_energy_growth_max": growth,
        "free_energy_growth_max_noisy_fit": growth_noisy,
        "noisy_fit_clipped_eigenvalues": noisy_info.n_clipped_stiffness + noisy_info.n_clipped_damping,
        "regularization": model.fit_info.regularization,
        "damping": damping,
        "rayleigh_fitted": None if model.fit_info.rayleigh is None else list(model.fit_info.rayleigh),
        "rayleigh_full_model": list(beam.rayleigh),
        "damping_ratio_full_model": DAMPING_RATIO,
        "symmetric_damping_non_rayleigh_part": non_rayleigh,
        "fit_residual": model.fit_info.residual,
        "frequencies_hz": (modal.natural_frequencies[:4] / (2 * np.pi)).tolist(),
        "damping_ratios": modal.damping_ratios[:4].tolist(),
        "euler_bernoulli_hz": list(beam.bending_hz),
        "t_full_train_s": t_train_run,
        "t_fit_s": t_fit,
        "t_full_median_s": float(np.median([r["t_full"] for r in results.values()])),
        "t_reduced_median_s": float(np.median([r["t_reduced"] for r in results.values()])),
        "speedup_median": float(np.median([r["t_full"] / r["t_reduced"] for r in results.values()])),
    }
    fem_ml.write_json(out / "summary.json", summary, comm=comm)
    newmark.destroy()
    basis.inner_product.destroy()
    beam.destroy()
    return summary


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Second-order reduced dynamics of a vibrating cantilever.")
    parser.add_argument("--small", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out-dir", default="results/dynamics_beam")
    parser.add_argument(
        "--damping",
        choices=["rayleigh", "symmetric"],
        default="rayleigh",
        help="the reduced damping: alpha I + beta K_r (default), or any symmetric C_r",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if MPI.COMM_WORLD.rank == 0 else logging.WARNING)
    sizes: dict[str, Any] = {}
    if args.small:
        sizes = {"n_cells": (8, 2, 2), "degree": 1, "dt": 1e-4, "t_train": 0.02, "n_modes": 6, "free_periods": 5.0}
    main(out_dir=args.out_dir, damping=args.damping, **sizes)
