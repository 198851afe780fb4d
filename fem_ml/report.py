# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The run summary of a surrogate: ``summary.json`` with sizes, test errors and timings, plus the standard plots.

Every demo ends with :func:`write_summary`, so every demo reports the same keys; a user's own script can do the
same.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from mpi4py import MPI

import numpy as np

from fem_ml.io import write_json
from fem_ml.plots import write_report_plots
from fem_ml.snapshots import SnapshotSet
from fem_ml.surrogate import ErrorReport, Surrogate

__all__ = ["SUMMARY_KEYS", "write_summary"]

#: Keys every summary holds (a demo may add its own).
SUMMARY_KEYS: tuple[str, ...] = (
    "n_ranks",
    "n_dofs",
    "n_train",
    "n_test",
    "n_modes",
    "rel_error_l2_mean",
    "rel_error_l2_max",
    "rel_error_h1_mean",
    "rel_error_h1_max",
    "proj_error_h1_mean",
    "t_snapshots_s",
    "t_pod_s",
    "t_train_s",
    "t_full_solve_median_s",
    "t_surrogate_median_s",
    "speedup_median",
    "n_failed_solves",
    "surrogate_file",
)


def write_summary(
    out_dir: str | os.PathLike[str],
    rom: Surrogate,
    report: ErrorReport,
    *,
    training: SnapshotSet,
    truth: SnapshotSet,
    timings: Mapping[str, float],
    t_surrogate: float,
    model_path: str | os.PathLike[str],
    n_train: int | None = None,
    n_test: int | None = None,
    extra: Mapping[str, float | int | str] | None = None,
    plots: bool = True,
) -> dict[str, float | int | str]:
    r"""Write ``out_dir/summary.json`` (keys :data:`SUMMARY_KEYS` plus ``extra``) and the plots (collective).

    The full-solve time is the median of ``truth.solve_times`` (slowest rank); the speedup is that time over
    ``t_surrogate``. Stage timings are reduced to the slowest rank. The plots are those of
    :func:`~fem_ml.plots.write_report_plots`. Rank 0 also prints the summary.

    Args:
        out_dir: Output folder.
        rom: The surrogate.
        report: Its errors on the test set (:meth:`Surrogate.errors` of ``truth``).
        training: The training snapshots.
        truth: The test snapshots, in the order of ``report``.
        timings: This rank's seconds of ``"snapshots"``, ``"pod"`` and ``"train"``.
        t_surrogate: Median seconds of one surrogate query (:meth:`Surrogate.time_query`).
        model_path: Where the surrogate was saved.
        n_train: Number of training parameter points (default ``len(training)``; a trajectory counts once).
        n_test: Number of test parameter points (default ``len(truth)``).
        extra: More entries for the summary.
        plots: Also write the PNG plots.

    Returns:
        The summary, the same on every rank.
    """
    comm = rom.V.mesh.comm
    missing = {"snapshots", "pod", "train"} - set(timings)
    if missing:
        raise ValueError(f"timings lacks {sorted(missing)}.")

    def slowest(seconds: float) -> float:
        return float(comm.allreduce(float(seconds), op=MPI.MAX))

    errors = report.summary()
    t_full = slowest(float(np.median(truth.solve_times)))
    summary: dict[str, float | int | str] = {
        "n_ranks": comm.size,
        "n_dofs": training.n_dofs,
        "n_train": len(training) if n_train is None else n_train,
        "n_test": len(truth) if n_test is None else n_test,
        "n_modes": rom.n_modes,
        **{key: errors[key] for key in SUMMARY_KEYS if key in errors},
        "t_snapshots_s": slowest(timings["snapshots"]),
        "t_pod_s": slowest(timings["pod"]),
        "t_train_s": slowest(timings["train"]),
        "t_full_solve_median_s": t_full,
        "t_surrogate_median_s": t_surrogate,
        "speedup_median": t_full / t_surrogate,
        "n_failed_solves": len(training.failures) + len(truth.failures),
        "surrogate_file": str(model_path),
        **(extra or {}),
    }
    out = Path(out_dir)
    if plots:
        write_report_plots(out, rom, report, truth.values)
    write_json(out / "summary.json", summary, comm=comm)
    if comm.rank == 0:
        for key, value in summary.items():
            print(f"{key:>24}: {value}")
    return summary
