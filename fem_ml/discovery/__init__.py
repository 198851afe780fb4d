# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Equation discovery: identify the terms of a PDE from field data on a DOLFINx mesh by weak-form sparse regression.

The workflow::

    library = polynomial_library(("u",), degree=3, derivatives=("x", "y", "Δ"))
    data = FieldData.from_arrays(V, times, values)          # or FieldData.from_snapshots(collect_trajectories(...))
    model = discover(data, library, radius=0.2)
    print(model)                                            # u_t = 0.01 Δu + 1 u - 1 u^3
    for u in model.simulate(u0, times, dt=0.01): ...        # DOLFINx time-steps the discovered model

Modules: :mod:`~fem_ml.discovery.library` (candidate terms), :mod:`~fem_ml.discovery.data` (snapshots, noise),
:mod:`~fem_ml.discovery.weak` (test functions and the assembled regression system),
:mod:`~fem_ml.discovery.sparse` (PySINDy's optimizers on the normalized system),
:mod:`~fem_ml.discovery.selection` (threshold path, cross-validation, Pareto curve,
:func:`~fem_ml.discovery.selection.discover`),
:mod:`~fem_ml.discovery.model` (the result: equation, uncertainty, UFL residual, re-simulation),
:mod:`~fem_ml.discovery.grid` (data on a grid for other tools, e.g. PySINDy).
"""

from fem_ml.discovery.data import FieldData
from fem_ml.discovery.grid import PySINDyPath, pysindy_weak, sample_on_grid
from fem_ml.discovery.library import Library, Term, polynomial_library
from fem_ml.discovery.model import Candidate, DiscoveredModel, format_equation
from fem_ml.discovery.selection import cross_validation_error, discover, fit_system, plot_pareto
from fem_ml.discovery.sparse import METHODS
from fem_ml.discovery.weak import BumpFunctions, TimeWindows, WeakSystem, assemble_system, bump_functions

__all__ = [
    "METHODS",
    "BumpFunctions",
    "Candidate",
    "DiscoveredModel",
    "FieldData",
    "Library",
    "PySINDyPath",
    "Term",
    "TimeWindows",
    "WeakSystem",
    "assemble_system",
    "bump_functions",
    "cross_validation_error",
    "discover",
    "fit_system",
    "format_equation",
    "plot_pareto",
    "polynomial_library",
    "pysindy_weak",
    "sample_on_grid",
]
