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

import sys
import types
from typing import TYPE_CHECKING, Any

from fem_ml._threads import limit_blas_threads

# Under mpirun, each rank's BLAS threads: the node's cores over its ranks (unless the user has set a count).
limit_blas_threads()
del limit_blas_threads

if TYPE_CHECKING:
    from fem_ml import discovery, dynamics
    from fem_ml._h5 import FileFormatError
    from fem_ml.adaptive import AdaptiveResult, adaptive_sampling, ensemble_estimator, residual_estimator
    from fem_ml.archive import load, save
    from fem_ml.blending import BlendedRegressor
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

    __version__: str

# The package imports nothing heavy (DOLFINx, torch, SciPy's statistics): each name below is imported from its module
# at its first use (PEP 562), so that ``import fem_ml`` and ``python -m fem_ml info`` start fast.
_LAZY: dict[str, str] = {
    "FileFormatError": "fem_ml._h5",
    "AdaptiveResult": "fem_ml.adaptive",
    "adaptive_sampling": "fem_ml.adaptive",
    "ensemble_estimator": "fem_ml.adaptive",
    "residual_estimator": "fem_ml.adaptive",
    "load": "fem_ml.archive",
    "save": "fem_ml.archive",
    "BlendedRegressor": "fem_ml.blending",
    "collect_snapshots": "fem_ml.collection",
    "collect_trajectories": "fem_ml.collection",
    "ConstitutiveSystem": "fem_ml.constitutive",
    "DiscoveredLaw": "fem_ml.constitutive",
    "EnergyTerm": "fem_ml.constitutive",
    "StrainEnergy": "fem_ml.constitutive",
    "assemble_system": "fem_ml.constitutive",
    "default_library": "fem_ml.constitutive",
    "discover_law": "fem_ml.constitutive",
    "solve_displacement_controlled": "fem_ml.constitutive",
    "discovery": "fem_ml.discovery",
    "ExtrapolationWarning": "fem_ml.domain",
    "TrainingDomain": "fem_ml.domain",
    "NewmarkIntegrator": "fem_ml.dynamics",
    "SecondOrderModel": "fem_ml.dynamics",
    "dynamics": "fem_ml.dynamics",
    "fit_second_order": "fem_ml.dynamics",
    "Ensemble": "fem_ml.ensemble",
    "FieldObservations": "fem_ml.inverse",
    "Gaussian": "fem_ml.inverse",
    "IdentificationResult": "fem_ml.inverse",
    "Observations": "fem_ml.inverse",
    "PosteriorSamples": "fem_ml.inverse",
    "SensorObservations": "fem_ml.inverse",
    "Sensors": "fem_ml.inverse",
    "Verification": "fem_ml.inverse",
    "effective_sample_size": "fem_ml.inverse",
    "identify": "fem_ml.inverse",
    "observe_field": "fem_ml.inverse",
    "sample_posterior": "fem_ml.inverse",
    "write_comparison": "fem_ml.io",
    "write_fields": "fem_ml.io",
    "write_json": "fem_ml.io",
    "write_modes": "fem_ml.io",
    "write_sweep": "fem_ml.io",
    "KernelOptions": "fem_ml.kernels",
    "KernelRegressor": "fem_ml.kernels",
    "CoefficientNetwork": "fem_ml.networks",
    "TrainingHistory": "fem_ml.networks",
    "TrainingOptions": "fem_ml.networks",
    "ParameterSpace": "fem_ml.parameters",
    "write_report_plots": "fem_ml.plots",
    "InnerProduct": "fem_ml.pod",
    "PODBasis": "fem_ml.pod",
    "assemble_inner_product": "fem_ml.pod",
    "pod": "fem_ml.pod",
    "AffineReducedOperators": "fem_ml.reduced",
    "ReducedSystems": "fem_ml.reduced",
    "assemble_reduced_systems": "fem_ml.reduced",
    "SUMMARY_KEYS": "fem_ml.report",
    "write_summary": "fem_ml.report",
    "ResidualCheck": "fem_ml.residual",
    "ResidualReport": "fem_ml.residual",
    "CandidateResult": "fem_ml.selection",
    "Selection": "fem_ml.selection",
    "fit_kernel_surrogate": "fem_ml.selection",
    "select_regressor": "fem_ml.selection",
    "FailedSolve": "fem_ml.snapshots",
    "SnapshotSet": "fem_ml.snapshots",
    "SnapshotSource": "fem_ml.snapshots",
    "SolveFailed": "fem_ml.snapshots",
    "check_converged": "fem_ml.snapshots",
    "SnapshotStore": "fem_ml.store",
    "CoefficientRegressor": "fem_ml.surrogate",
    "ErrorReport": "fem_ml.surrogate",
    "Surrogate": "fem_ml.surrogate",
    "train_surrogate": "fem_ml.surrogate",
    "CrossValidation": "fem_ml.validation",
    "cross_validate": "fem_ml.validation",
}
#: Subpackages available as attributes (``fem_ml.dynamics``), imported at their first use.
_SUBPACKAGES = ("discovery", "dynamics")


def __getattr__(name: str) -> Any:
    """Import ``name`` (a public name, or a public module such as ``plots``) at its first use and keep it."""
    import importlib
    import importlib.util

    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value: Any = version("fem-ml")
        except PackageNotFoundError:  # running from a source tree that is not installed
            value = "0.0.0+unknown"
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"fem_ml.{name}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"fem_ml.{name}") is not None:
        value = importlib.import_module(f"fem_ml.{name}")  # a public module: fem_ml.plots.save_plot(...)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names (``__all__``), whether imported yet or not."""
    return sorted(set(__all__) | set(globals()))


class _Package(types.ModuleType):
    """The package's module type: importing the submodule :mod:`fem_ml.pod` keeps ``fem_ml.pod`` the function.

    The import system binds a submodule as an attribute of its package; with eager imports the package's own
    ``from fem_ml.pod import pod`` then rebound the name, here a lazy name must not be overwritten by a module.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _LAZY and name not in _SUBPACKAGES:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "SUMMARY_KEYS",
    "AdaptiveResult",
    "AffineReducedOperators",
    "BlendedRegressor",
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
