# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The training domain of a surrogate: where its predictions are interpolation, and what to do elsewhere.

A surrogate is trusted inside the box of its :class:`~fem_ml.parameters.ParameterSpace` and near the points it was
trained on. :class:`TrainingDomain` checks query points against both, in the network's scaled inputs (where the box
is :math:`[-1, 1]^p`): a point outside the bounds, or farther from the nearest training point than ``far_factor``
times the largest nearest-neighbour distance among the training points, is an extrapolation. The policy decides
what happens then: ``"warn"`` issues one :class:`ExtrapolationWarning` per kind, ``"raise"`` (strict mode) raises
``ValueError``. All checks are local (no MPI): every rank holds the same domain.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import spatial

from fem_ml.parameters import ParameterSpace

__all__ = ["ExtrapolationPolicy", "ExtrapolationWarning", "TrainingDomain"]

#: What an extrapolation does, warn once per kind or raise.
ExtrapolationPolicy = Literal["warn", "raise"]


class ExtrapolationWarning(UserWarning):
    """A surrogate was evaluated outside its parameter bounds or far from every training point."""


class TrainingDomain:
    """Bounds, training points and extrapolation policy of a surrogate (local).

    Args:
        space: The parameter space (names and bounds).
        scale: The network's input scaling, points ``(n, p)`` to scaled inputs ``(n, p)``.
        training_parameters: The training points ``(n, p)``; without them only the bounds are checked.
        policy: ``"warn"`` or ``"raise"`` (see the module docstring).
        far_factor: The factor of "far from every training point".
        positive: The scaling takes the logarithm of the points: every parameter must be positive (an error
            whatever the policy).
    """

    def __init__(
        self,
        space: ParameterSpace,
        scale: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]],
        training_parameters: npt.ArrayLike | None = None,
        *,
        policy: ExtrapolationPolicy = "warn",
        far_factor: float = 2.0,
        positive: bool = False,
    ):
        self.space = space
        self._scale = scale
        self._positive = positive
        self.policy = policy
        self.far_factor = far_factor
        self._warned: set[str] = set()
        self.training_parameters: npt.NDArray[np.float64] | None = None
        self._training_inputs: npt.NDArray[np.float64] | None = None
        self._far: float = np.inf
        self._training_sq = self._training_m2 = np.empty(0)
        if training_parameters is not None:
            self.set_training_parameters(training_parameters)

    @property
    def policy(self) -> ExtrapolationPolicy:
        """``"warn"`` (one :class:`ExtrapolationWarning` per kind) or ``"raise"`` (``ValueError``)."""
        return self._policy

    @policy.setter
    def policy(self, policy: ExtrapolationPolicy) -> None:
        if policy not in ("warn", "raise"):
            raise ValueError(f"extrapolation must be 'warn' or 'raise', got {policy!r}.")
        self._policy: ExtrapolationPolicy = policy

    @property
    def far_factor(self) -> float:
        """Far means farther than this times the training points' largest nearest-neighbour distance."""
        return self._far_factor

    @far_factor.setter
    def far_factor(self, factor: float) -> None:
        if not factor > 0:
            raise ValueError(f"far_factor must be positive, got {factor}.")
        self._far_factor = float(factor)

    @property
    def spacing(self) -> float:
        """Largest nearest-neighbour distance among the training points (scaled inputs; inf if unknown)."""
        return self._far

    def set_training_parameters(self, parameters: npt.ArrayLike) -> None:
        """Record the training points, which define "far from every training point" (local)."""
        points = self.space.validate(parameters)
        inputs = self._scale(points)
        self.training_parameters, self._training_inputs = points, inputs
        if points.shape[0] > 1:
            # Nearest other training point of each (k=2: the first is the point itself); a tree, not n^2 memory.
            self._far = float(spatial.cKDTree(inputs).query(inputs, k=2)[0][:, 1].max())
        else:
            self._far = np.inf
        self._training_sq = np.einsum("ij,ij->i", inputs, inputs)
        self._training_m2 = -2.0 * inputs

    def reset_warnings(self) -> None:
        """Warn again at the next extrapolation of each kind."""
        self._warned.clear()

    def check(
        self, parameters: npt.ArrayLike | Mapping[str, float] | Any, *, expected: int | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Checked points and their scaled inputs, the policy applied (local; a few microseconds for one point).

        Raises:
            ValueError: for a wrong shape, count or name, NaN/inf, a non-positive parameter of a log scaling, or,
                in strict mode, an extrapolation.
        """
        points = self.space.validate(parameters, expected=expected, check_bounds=False)
        if self._positive and (points <= 0).any():
            # Not an extrapolation that a warning could cover: the logarithm of the network's inputs is undefined.
            i, j = np.argwhere(points <= 0)[0]
            raise ValueError(
                f"Parameter {self.space.names[j]!r} of point {i} is {float(points[i, j])}: this surrogate takes the "
                "logarithm of its inputs, so every parameter must be positive."
            )
        inputs = self._scale(points)
        self._check_bounds(points, inputs)
        if self._training_inputs is not None and self._far < np.inf:
            self._check_distance(points, inputs)
        return points, inputs

    def _check_bounds(self, points: npt.NDArray[np.float64], inputs: npt.NDArray[np.float64]) -> None:
        lower, upper = self.space.lower, self.space.upper
        slack = 1e-12 * (upper - lower)  # the tolerance of ParameterSpace.validate
        if ((points < lower - slack) | (points > upper + slack)).any():
            inside = self._scale(np.clip(points, lower, upper))
            outside_by = np.linalg.norm(inputs - inside, axis=1)
            i = int(np.argmax(outside_by))
            self._extrapolating(
                "bounds",
                f"Point {i} {self.space.to_dict(points[i])} lies outside the parameter bounds {self.space.bounds}, "
                f"by {outside_by[i]:.3g} in scaled inputs (the box is [-1, 1]^{self.space.dim}).",
            )

    def _check_distance(self, points: npt.NDArray[np.float64], inputs: npt.NDArray[np.float64]) -> None:
        assert self._training_inputs is not None
        limit_sq = (self._far_factor * self._far) ** 2
        # |x - t|^2 = |t|^2 - 2 t.x + |x|^2: one small product instead of an (n, n_train, p) array; one point
        # (a query) takes the 1D route, a few microseconds.
        if inputs.shape[0] == 1:
            x = inputs[0]
            far = (self._training_sq + self._training_m2 @ x).min() + x @ x > limit_sq
        else:
            d2 = (self._training_sq[:, None] + self._training_m2 @ inputs.T).min(axis=0)
            d2 += (inputs * inputs).sum(axis=1)
            far = (d2 > limit_sq).any()
        if far:
            d2 = ((inputs[:, None, :] - self._training_inputs[None, :, :]) ** 2).sum(axis=2).min(axis=1)
            i = int(np.argmax(d2))
            self._extrapolating(
                "far",
                f"Point {i} {self.space.to_dict(points[i])} is {np.sqrt(max(d2[i], 0.0)):.3g} from the nearest "
                f"training point (scaled inputs); the training points lie within {self._far:.3g} of each other, "
                f"and the limit is {self.far_factor} times that.",
            )

    def _extrapolating(self, kind: str, message: str) -> None:
        if self._policy == "raise":
            raise ValueError(message + " Strict mode (extrapolation='raise') refuses it.")
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message + " The prediction is an extrapolation.", ExtrapolationWarning, stacklevel=6)
