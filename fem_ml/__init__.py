# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""fem_ml: fast, checked surrogates of parametric DOLFINx models.

The workflow follows the data::

    space = fem_ml.ParameterSpace({"k0": (0.1, 1.0), "k1": (0.1, 1.0)})
    train = space.sample(100, method="lhs", seed=0)
    snapshots = fem_ml.collect_snapshots(solve, train, V)      # solve(mu) -> dolfinx.fem.Function on V
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=1e-6)
    rom = fem_ml.train_surrogate(basis, snapshots, space, seed=0)
    u = rom(mu)                                                 # a dolfinx.fem.Function on V
    fem_ml.save(rom, "model.femml")                             # fem_ml.load("model.femml") on any rank count
"""

# mpi4py must initialise MPI (and load libmpi) before DOLFINx and PETSc are imported.
from mpi4py import MPI  # noqa: F401  isort: skip

from importlib.metadata import PackageNotFoundError, version

from fem_ml import discovery, dynamics
from fem_ml._h5 import FileFormatError
from fem_ml.adaptive import AdaptiveResult, adaptive_sampling, ensemble_estimator, residual_estimator
from fem_ml.archive import load, save
from fem_ml.collection import collect_snapshots, collect_trajectories
from fem_ml.constitutive import (
    ConstitutiveSystem,
    DiscoveredLaw,
    EnergyTerm,
    StrainEnergy,
    assemble_system,
    default_library,
    discover_law,
    solve_displacement_controlled,
)
from fem_ml.domain import ExtrapolationWarning, TrainingDomain
from fem_ml.dynamics import NewmarkIntegrator, SecondOrderModel, fit_second_order
from fem_ml.ensemble import Ensemble
from fem_ml.inverse import (
    FieldObservations,
    Gaussian,
    IdentificationResult,
    Observations,
    PosteriorSamples,
    SensorObservations,
    Sensors,
    Verification,
    effective_sample_size,
    identify,
    observe_field,
    sample_posterior,
)
from fem_ml.io import write_comparison, write_fields, write_json, write_modes, write_sweep
from fem_ml.kernels import KernelOptions, KernelRegressor
from fem_ml.networks import CoefficientNetwork, TrainingHistory, TrainingOptions
from fem_ml.parameters import ParameterSpace
from fem_ml.plots import write_report_plots
from fem_ml.pod import InnerProduct, PODBasis, assemble_inner_product, pod
from fem_ml.reduced import AffineReducedOperators, ReducedSystems, assemble_reduced_systems
from fem_ml.report import SUMMARY_KEYS, write_summary
from fem_ml.residual import ResidualCheck, ResidualReport
from fem_ml.selection import CandidateResult, Selection, fit_kernel_surrogate, select_regressor
from fem_ml.snapshots import FailedSolve, SnapshotSet, SnapshotSource, SolveFailed, check_converged
from fem_ml.store import SnapshotStore
from fem_ml.surrogate import CoefficientRegressor, ErrorReport, Surrogate, train_surrogate
from fem_ml.validation import CrossValidation, cross_validate

try:
    __version__ = version("fem-ml")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "SUMMARY_KEYS",
    "AdaptiveResult",
    "AffineReducedOperators",
    "CandidateResult",
    "CoefficientNetwork",
    "CoefficientRegressor",
    "ConstitutiveSystem",
    "CrossValidation",
    "DiscoveredLaw",
    "EnergyTerm",
    "Ensemble",
    "ErrorReport",
    "ExtrapolationWarning",
    "FailedSolve",
    "FieldObservations",
    "FileFormatError",
    "Gaussian",
    "IdentificationResult",
    "InnerProduct",
    "KernelOptions",
    "KernelRegressor",
    "NewmarkIntegrator",
    "Observations",
    "PODBasis",
    "ParameterSpace",
    "PosteriorSamples",
    "ReducedSystems",
    "ResidualCheck",
    "ResidualReport",
    "SecondOrderModel",
    "Selection",
    "SensorObservations",
    "Sensors",
    "SnapshotSet",
    "SnapshotSource",
    "SnapshotStore",
    "SolveFailed",
    "StrainEnergy",
    "Surrogate",
    "TrainingDomain",
    "TrainingHistory",
    "TrainingOptions",
    "Verification",
    "__version__",
    "adaptive_sampling",
    "assemble_inner_product",
    "assemble_reduced_systems",
    "assemble_system",
    "check_converged",
    "collect_snapshots",
    "collect_trajectories",
    "cross_validate",
    "default_library",
    "discover_law",
    "discovery",
    "dynamics",
    "effective_sample_size",
    "ensemble_estimator",
    "fit_kernel_surrogate",
    "fit_second_order",
    "identify",
    "load",
    "observe_field",
    "pod",
    "residual_estimator",
    "sample_posterior",
    "save",
    "select_regressor",
    "solve_displacement_controlled",
    "train_surrogate",
    "write_comparison",
    "write_fields",
    "write_json",
    "write_modes",
    "write_report_plots",
    "write_summary",
    "write_sweep",
]
