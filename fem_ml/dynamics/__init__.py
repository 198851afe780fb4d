# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Learned reduced dynamics: reduced models that step in time, fitted to trajectories.

First-order models (operator inference, :mod:`~fem_ml.dynamics.opinf`)::

    snapshots = fem_ml.collect_trajectories(solve, train, V, times=times, space=space)
    basis = fem_ml.pod(snapshots, inner_product="l2", tol=1e-8)
    data = fem_ml.dynamics.reduce_trajectories(basis, snapshots, parameter_names=["nu"])
    model = fem_ml.dynamics.fit_operator_inference(data, basis=basis, parameter_functions={"A": ["1", "nu"]})
    result = model.simulate({"nu": 0.02}, model.initial_state({"nu": 0.02}), np.linspace(0, 2, 201))
    result.write_xdmf("prediction.xdmf")
    fem_ml.dynamics.save(model, "model.femml")

Second-order, structure-preserving models of structural dynamics (:mod:`~fem_ml.dynamics.second_order`):
:func:`~fem_ml.dynamics.second_order.fit_second_order`, :class:`~fem_ml.dynamics.second_order.SecondOrderModel`;
their training data from the full-order Newmark solver :class:`~fem_ml.dynamics.newmark.NewmarkIntegrator`.
Both kinds are saved by :func:`~fem_ml.dynamics.archive.save` and loaded by :func:`~fem_ml.dynamics.archive.load`.
"""

from fem_ml.dynamics.archive import describe, is_dynamics_file, load, save
from fem_ml.dynamics.data import Trajectories, finite_difference_weights, reduce_trajectories, time_derivative
from fem_ml.dynamics.model import ParameterFunction, ReducedDynamics, quadratic_features
from fem_ml.dynamics.newmark import NewmarkIntegrator, NewmarkTrajectory
from fem_ml.dynamics.opinf import fit_operator_inference
from fem_ml.dynamics.second_order import (
    FitInfo,
    Inputs,
    ModalReport,
    SecondOrderModel,
    SecondOrderSimulation,
    finite_difference_derivatives,
    fit_second_order,
    fit_second_order_coefficients,
)
from fem_ml.dynamics.simulate import BlowUpError, Simulation, StabilityGuard, integrate_system

__all__ = [
    "BlowUpError",
    "FitInfo",
    "Inputs",
    "ModalReport",
    "NewmarkIntegrator",
    "NewmarkTrajectory",
    "ParameterFunction",
    "ReducedDynamics",
    "SecondOrderModel",
    "SecondOrderSimulation",
    "Simulation",
    "StabilityGuard",
    "Trajectories",
    "describe",
    "finite_difference_derivatives",
    "finite_difference_weights",
    "fit_operator_inference",
    "fit_second_order",
    "fit_second_order_coefficients",
    "integrate_system",
    "is_dynamics_file",
    "load",
    "quadratic_features",
    "reduce_trajectories",
    "save",
    "time_derivative",
]
