# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Plots (matplotlib, PNG) of a surrogate: POD spectrum, training curves, test errors, a quantity of interest.

Every function is collective on the surrogate's communicator (rank 0 draws and writes, atomically) and returns
the path written. :func:`write_report_plots` writes the four standard plots next to a demo's ``summary.json``.

Drawing on one rank allocates many Python objects there and nowhere else, so Python's cyclic garbage collector
would run at different moments on different ranks. Garbage that holds PETSc objects (a ``LinearProblem`` in a
reference cycle, say) is destroyed collectively, so such a collection on one rank alone can hang the job. Each plot
therefore collects garbage on every rank at the same point before and after drawing, and rank 0 draws with the
automatic collector paused.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

from fem_ml._atomic import MARKER, write_file
from fem_ml._lazy import lazy_module
from fem_ml._mpi import collectively
from fem_ml.networks import TrainingHistory
from fem_ml.pod import PODBasis
from fem_ml.surrogate import ErrorReport, Surrogate

if TYPE_CHECKING:
    from scipy import stats
else:
    stats = lazy_module("scipy.stats")  # a second to import: only when a plot needs it

__all__ = [
    "plot_convergence",
    "plot_deviation_vs_error",
    "plot_error_histogram",
    "plot_error_histograms",
    "plot_estimates",
    "plot_posterior",
    "plot_predicted_vs_true",
    "plot_singular_values",
    "plot_training",
    "save_plot",
    "write_report_plots",
]


def save_plot(
    comm: MPI.Comm,
    path: str | os.PathLike,
    draw: Callable[[Any], None],
    *,
    ncols: int = 1,
    figsize: tuple[float, float] | None = None,
) -> Path:
    """Draw on rank 0 with ``draw(ax)`` and write the PNG atomically; errors are raised on every rank (collective).

    Every plot of this module goes through here; other modules and the demos draw their own plots with it too.

    With ``ncols > 1``, ``draw`` gets the row of ``ncols`` axes. ``figsize`` is in inches (default 6 x 4, or
    3.2 per column x 4).
    """
    target = Path(path)
    gc.collect()  # on every rank at the same point: destroys collective garbage together
    try:
        with collectively(comm):
            if comm.rank == 0:
                was_enabled = gc.isenabled()
                gc.disable()
                try:
                    _draw_png(target, draw, ncols, figsize)
                finally:
                    if was_enabled:
                        gc.enable()
    finally:
        # Drawing can leave reference cycles on rank 0 alone (matplotlib's first import catches exceptions whose
        # tracebacks reach, through the frames' f_back, the caller's frame and its PETSc objects). Collected here,
        # on every rank at the same point, they cannot keep a caller's solver alive on rank 0 after the other
        # ranks have destroyed theirs collectively.
        gc.collect()
    return target


def _draw_png(target: Path, draw: Callable[[Any], None], ncols: int, figsize: tuple[float, float] | None) -> None:
    """Draw and write one PNG through the atomic writer, marked as written by fem_ml (local)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = figsize if figsize is not None else (6 if ncols == 1 else 3.2 * ncols, 4)
    fig, ax = plt.subplots(1, ncols, figsize=size, dpi=120, squeeze=True)
    try:
        draw(ax)
        fig.tight_layout()
        write_file(target, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": MARKER}), overwrite=False)
    finally:
        plt.close(fig)


def plot_singular_values(basis: PODBasis, path: str | os.PathLike) -> Path:
    """Singular values (relative to the first) and retained energy against the number of modes."""
    sigma = np.asarray(basis.singular_values)
    energy = basis.energy_curve

    def draw(ax: Any) -> None:
        k = np.arange(1, sigma.size + 1)
        # Singular values at rounding level and a discarded energy of (numerically) zero are left out: on a log
        # axis they would squash the spectrum into a flat line.
        relative = np.where(sigma / sigma[0] > 1e-15, sigma / sigma[0], np.nan)
        discarded = np.where(1.0 - energy > 1e-15, 1.0 - energy, np.nan)
        ax.semilogy(k, relative, "o-", ms=3, label=r"$\sigma_k / \sigma_1$")
        ax.semilogy(k, discarded, "s-", ms=3, label="discarded energy")
        ax.axvline(basis.n_modes, color="gray", ls="--", label=f"{basis.n_modes} modes kept")
        ax.set_xlabel("k")
        ax.set_title(f"POD spectrum ({basis.inner_product.name} inner product)")
        ax.legend()

    return save_plot(basis.V.mesh.comm, path, draw)


def plot_training(history: Sequence[TrainingHistory], path: str | os.PathLike, *, comm: MPI.Comm) -> Path:
    """Training and validation loss of each ensemble member (Adam epochs, then the polish's iterations)."""

    def draw(ax: Any) -> None:
        for m, h in enumerate(history):
            ax.semilogy(h.train_loss, lw=1, label=f"member {m}: training")
            if h.validation_loss:
                ax.semilogy(h.validation_loss, lw=1, ls="--", label=f"member {m}: validation")
            if h.n_lbfgs_iterations or h.n_lm_iterations:
                ax.axvline(h.n_adam_epochs, color="gray", lw=0.5)
        ax.set_xlabel("Adam epoch, then polish step (L-BFGS or Levenberg-Marquardt)")
        ax.set_ylabel("loss")
        ax.set_title("Training")
        ax.legend(fontsize="small")

    return save_plot(comm, path, draw)


def plot_error_histogram(report: ErrorReport, path: str | os.PathLike, *, comm: MPI.Comm) -> Path:
    """Histogram of the surrogate's and the projection's relative H1 test errors (log scale)."""
    return plot_error_histograms(
        {"surrogate": report.rel_error_h1, "POD projection": report.proj_error_h1}, path, comm=comm
    )


def plot_error_histograms(
    errors: Mapping[str, npt.ArrayLike],
    path: str | os.PathLike,
    *,
    comm: MPI.Comm,
    xlabel: str = "relative H1 error",
) -> Path:
    """Histograms of several sets of errors on common logarithmic bins, each labelled with its mean."""
    sets = {label: np.maximum(np.asarray(values, dtype=np.float64), 1e-300) for label, values in errors.items()}

    def draw(ax: Any) -> None:
        lo = min(float(v.min()) for v in sets.values())
        hi = max(float(v.max()) for v in sets.values())
        bins = np.logspace(np.log10(lo), np.log10(max(hi, lo * 1.01)), 25)
        for label, values in sets.items():
            ax.hist(values, bins=bins, alpha=0.6, label=f"{label} (mean {values.mean():.2e})")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test samples")
        ax.legend(fontsize="small")

    return save_plot(comm, path, draw)


def plot_deviation_vs_error(
    deviation: npt.ArrayLike, error: npt.ArrayLike, path: str | os.PathLike, *, comm: MPI.Comm
) -> Path:
    """The ensemble's predicted deviation against the true error, one point per test sample (log-log).

    The title gives the Spearman rank correlation: how well the deviation orders the samples by their error.
    """
    d, e = np.asarray(deviation, dtype=np.float64), np.asarray(error, dtype=np.float64)
    rho = float(stats.spearmanr(d, e).statistic)

    def draw(ax: Any) -> None:
        ax.loglog(d, e, "o", ms=4)
        ax.set_xlabel("ensemble deviation (relative)")
        ax.set_ylabel("true relative H1 error")
        ax.set_title(f"Spearman correlation {rho:.2f}")

    return save_plot(comm, path, draw)


def plot_convergence(
    n_solves: npt.ArrayLike,
    errors: npt.ArrayLike,
    path: str | os.PathLike,
    *,
    comm: MPI.Comm,
    reference: tuple[float, str] | None = None,
    label: str = "adaptive sampling",
) -> Path:
    """Test error against the number of full solves (e.g. adaptive sampling), with an optional reference level."""
    n, e = np.asarray(n_solves), np.asarray(errors, dtype=np.float64)

    def draw(ax: Any) -> None:
        ax.semilogy(n, e, "o-", ms=4, label=label)
        if reference is not None:
            ax.axhline(reference[0], color="gray", ls="--", label=reference[1])
        ax.set_xlabel("full solves")
        ax.set_ylabel("mean relative H1 test error")
        ax.legend(fontsize="small")

    return save_plot(comm, path, draw)


def plot_estimates(
    truth: npt.ArrayLike,
    estimate: npt.ArrayLike,
    std: npt.ArrayLike,
    names: Sequence[str],
    path: str | os.PathLike,
    *,
    comm: MPI.Comm,
    tolerance: float = 0.05,
) -> Path:
    r"""Relative error of estimated parameters in each trial, with :math:`\pm 2` reported standard deviations.

    Args:
        truth: True parameters ``(n, p)``.
        estimate: Estimates ``(n, p)``.
        std: Reported standard deviations ``(n, p)``.
        names: Parameter names.
        path: PNG path.
        comm: Communicator.
        tolerance: Relative error band drawn as a reference.
    """
    t, m, s = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (truth, estimate, std))

    def draw(ax: Any) -> None:
        n, p = t.shape
        trials = np.arange(n)
        for j in range(p):
            ax.errorbar(trials + (j - (p - 1) / 2) * 0.12, (m[:, j] - t[:, j]) / t[:, j], yerr=2 * s[:, j] / t[:, j],
                        fmt="o", ms=4, capsize=2, label=names[j])  # fmt: skip
        ax.axhspan(-tolerance, tolerance, color="gray", alpha=0.15, label=f"±{tolerance:.0%}")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xticks(trials)
        ax.set_xlabel("trial")
        ax.set_ylabel("(estimate - truth) / truth, ±2 std")
        ax.legend(fontsize="small", ncols=min(p + 1, 5))

    return save_plot(comm, path, draw)


def plot_posterior(
    samples: npt.ArrayLike,
    mean: npt.ArrayLike,
    std: npt.ArrayLike,
    names: Sequence[str],
    path: str | os.PathLike,
    *,
    comm: MPI.Comm,
    truth: npt.ArrayLike | None = None,
) -> Path:
    """Marginal histograms of posterior samples, with the Gaussian (Laplace) approximation and the truth."""
    x = np.asarray(samples, dtype=np.float64)
    mu, sigma = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    p = x.shape[1]

    def draw(axes: Any) -> None:
        for j, ax in enumerate(np.atleast_1d(axes)):
            ax.hist(x[:, j], bins=40, density=True, alpha=0.6, label="MCMC")
            grid = np.linspace(mu[j] - 4 * sigma[j], mu[j] + 4 * sigma[j], 200)
            ax.plot(grid, stats.norm.pdf(grid, mu[j], sigma[j]), label="Laplace")
            if truth is not None:
                ax.axvline(float(np.asarray(truth)[j]), color="k", ls="--", label="truth")
            ax.set_xlabel(names[j])
            ax.set_yticks([])
        np.atleast_1d(axes)[0].legend(fontsize="small")

    return save_plot(comm, path, draw, ncols=p)


def plot_predicted_vs_true(
    predicted: npt.ArrayLike, true: npt.ArrayLike, path: str | os.PathLike, *, label: str, comm: MPI.Comm
) -> Path:
    """Predicted against true values of a scalar quantity of interest, one point per test sample."""
    p, t = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)

    def draw(ax: Any) -> None:
        lo, hi = float(min(p.min(), t.min())), float(max(p.max(), t.max()))
        ax.plot([lo, hi], [lo, hi], color="gray", lw=1)
        ax.plot(t, p, "o", ms=4)
        ax.set_xlabel(f"true {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_aspect("equal")

    return save_plot(comm, path, draw)


def write_report_plots(
    out_dir: str | os.PathLike, rom: Surrogate, report: ErrorReport, truth_values: npt.NDArray[np.float64]
) -> list[Path]:
    """Write ``pod_spectrum.png``, ``training_loss.png``, ``test_errors.png`` and ``qoi.png`` (collective).

    The quantity of interest is the largest absolute dof value of each test field (e.g. the largest temperature
    or displacement component), true against predicted.

    Args:
        out_dir: Folder of the plots.
        rom: The surrogate.
        report: Its test-set errors.
        truth_values: Owned dof values of the test truths ``(n_owned, n)``, in the order of ``report``.
    """
    comm = rom.V.mesh.comm
    out = Path(out_dir)
    predicted = rom.predict_values(report.parameters)

    def largest(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        local = np.max(np.abs(values), axis=0) if values.shape[0] else np.zeros(values.shape[1])
        result = np.empty_like(local)
        comm.Allreduce(np.ascontiguousarray(local), result, op=MPI.MAX)
        return result

    paths = [plot_singular_values(rom.basis, out / "pod_spectrum.png")]
    if rom.history:
        paths.append(plot_training(rom.history, out / "training_loss.png", comm=comm))
    paths.append(plot_error_histogram(report, out / "test_errors.png", comm=comm))
    paths.append(
        plot_predicted_vs_true(largest(predicted), largest(truth_values), out / "qoi.png", label="max |u|", comm=comm)
    )
    return paths
