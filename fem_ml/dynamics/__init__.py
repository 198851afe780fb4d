# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Learned reduced dynamics: reduced models that step in time, fitted to trajectories."""

from fem_ml.dynamics.second_order import (
    FitInfo,
    Inputs,
    ModalReport,
    NewmarkIntegrator,
    NewmarkTrajectory,
    SecondOrderModel,
    SecondOrderSimulation,
    finite_difference_derivatives,
    fit_second_order,
    fit_second_order_coefficients,
)

__all__ = [
    "FitInfo",
    "Inputs",
    "ModalReport",
    "NewmarkIntegrator",
    "NewmarkTrajectory",
    "SecondOrderModel",
    "SecondOrderSimulation",
    "finite_difference_derivatives",
    "fit_second_order",
    "fit_second_order_coefficients",
]
