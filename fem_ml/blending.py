# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""A blend of a kernel regressor and a network: the weighted mean of their predictions.

A :class:`BlendedRegressor` holds a :class:`~fem_ml.kernels.KernelRegressor` :math:`\hat c_k` and a
:class:`~fem_ml.networks.CoefficientNetwork` :math:`\hat c_n` (possibly an ensemble) fitted to the same
coefficients, and predicts

.. math:: \hat c(\mu) = w \, \hat c_k(\mu) + (1 - w) \, \hat c_n(\mu), \qquad 0 \le w \le 1.

The errors of a kernel fit and of a network are partly independent, so their mean is often more accurate than
either. It is never much worse: by the triangle inequality, at every point

.. math:: \|\hat c(\mu) - c(\mu)\|_2 \le w \, \|\hat c_k(\mu) - c(\mu)\|_2 + (1 - w) \, \|\hat c_n(\mu) - c(\mu)\|_2,

the blend's coefficient error is at most the weighted mean of its members' errors.
:func:`~fem_ml.selection.select_regressor` builds one from its best kernel and its best network candidates, the
weight fitted on their out-of-fold predictions by :func:`fit_weight`.

**Uncertainty.** The blend is read as the mixture of its members with probabilities :math:`w` and :math:`1 - w`;
its covariance is the mixture's (law of total variance),

.. math:: \Sigma = w \, \Sigma_k + (1 - w) \, \Sigma_n + w (1 - w) \, (\hat c_k - \hat c_n)(\hat c_k - \hat c_n)^T,

with a member's :math:`\Sigma` zero where it has none (RBF interpolation, a single network). The last term, the
members' disagreement, is the spread of a two-member ensemble (for :math:`w = 1/2`, exactly the ensemble's of
:meth:`CoefficientNetwork.spread <fem_ml.networks.CoefficientNetwork.spread>`), so a blend has an uncertainty
whenever :math:`0 < w < 1`.

**Inputs.** Both members were fitted on the same parameter box but may scale it differently (log or linear
inputs). The blend's inputs (:meth:`BlendedRegressor.scale_inputs`, where the surrogate measures distances to the
training points) are those of its member with log inputs if one has them, else the kernel's; a member whose inputs
are the same (same transform and scaler) evaluates them directly, the other from the parameters recovered from
them.

**File.** :meth:`BlendedRegressor.to_tree` writes ``weights`` (:math:`w`, :math:`1 - w`) and the members'
entries under ``kernel/`` and ``network/``; :func:`fem_ml.archive.save` stores them under ``blend/``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fem_ml._formats import BLEND_WEIGHT_TOLERANCE
from fem_ml._serialize import prefixed, subtree
from fem_ml.kernels import KernelRegressor
from fem_ml.networks import CoefficientNetwork

__all__ = ["WEIGHT_TOLERANCE", "BlendedRegressor", "fit_weight"]

#: The largest :math:`|w_k + w_n - 1|` of stored weights (a few roundings of :math:`1 - w`), as the file schema checks.
WEIGHT_TOLERANCE = BLEND_WEIGHT_TOLERANCE
#: Relative agreement required of the members' parameter boxes.
_BOX_RTOL = 1e-9

_Member = KernelRegressor | CoefficientNetwork


def _box(member: _Member) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The parameter box ``(lower, upper)`` that a member's input scaler maps onto :math:`[-1, 1]^p`."""
    ends = [member.input_scaler.inverse(np.full(member.n_params, s)) for s in (-1.0, 1.0)]
    if member.input_transform == "log":
        ends = [np.exp(e) for e in ends]
    return ends[0], ends[1]


class BlendedRegressor:
    r"""The weighted mean :math:`w \hat c_k + (1 - w) \hat c_n` of a kernel regressor and a network.

    Satisfies :class:`~fem_ml.surrogate.CoefficientRegressor` (``kind == "blend"``); see the module docstring for
    the blend, its uncertainty and its inputs. Evaluated in NumPy, like its members.

    Args:
        kernel: The kernel regressor.
        network: The network (one or an ensemble).
        weight: The kernel's weight :math:`w \in [0, 1]`; the network's is :math:`1 - w`.

    Raises:
        ValueError: for a weight outside :math:`[0, 1]` or not finite, members of different sizes, or members fitted
            on different parameter boxes.
    """

    kind = "blend"

    def __init__(self, kernel: KernelRegressor, network: CoefficientNetwork, weight: float):
        if not isinstance(kernel, KernelRegressor) or not isinstance(network, CoefficientNetwork):
            raise TypeError(
                f"A blend holds a KernelRegressor and a CoefficientNetwork, got {type(kernel).__name__} and "
                f"{type(network).__name__}."
            )
        weight = float(weight)
        if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
            raise ValueError(f"The kernel's weight must be within [0, 1], got {weight}.")
        sizes = ((kernel.n_params, kernel.n_coefficients), (network.n_params, network.n_coefficients))
        if sizes[0] != sizes[1]:
            raise ValueError(
                f"The members map different sizes: kernel {sizes[0][0]} -> {sizes[0][1]}, network "
                f"{sizes[1][0]} -> {sizes[1][1]}."
            )
        (klo, khi), (nlo, nhi) = _box(kernel), _box(network)
        if not (np.allclose(klo, nlo, rtol=_BOX_RTOL, atol=0) and np.allclose(khi, nhi, rtol=_BOX_RTOL, atol=0)):
            raise ValueError(
                f"The members were fitted on different parameter boxes: kernel [{klo}, {khi}], network [{nlo}, {nhi}]."
            )
        self.kernel, self.network, self.weight = kernel, network, weight
        self.input_transform: Literal["linear", "log"] = (
            "log" if "log" in (kernel.input_transform, network.input_transform) else "linear"
        )
        self._primary: _Member = kernel if kernel.input_transform == self.input_transform else network
        self._direct = {id(m): self._same_inputs(m) for m in (kernel, network)}

    def _same_inputs(self, member: _Member) -> bool:
        """Whether ``member`` takes the blend's inputs as they are (same transform and scaler as the primary)."""
        primary = self._primary
        return member is primary or (
            member.input_transform == primary.input_transform
            and np.array_equal(member.input_scaler.shift, primary.input_scaler.shift)
            and np.array_equal(member.input_scaler.scale, primary.input_scaler.scale)
        )

    @property
    def weights(self) -> tuple[float, float]:
        r"""The kernel's and the network's weights, :math:`(w, 1 - w)`."""
        return self.weight, 1.0 - self.weight

    @property
    def n_params(self) -> int:
        """Number of inputs."""
        return self.kernel.n_params

    @property
    def n_coefficients(self) -> int:
        """Number of outputs."""
        return self.kernel.n_coefficients

    @property
    def has_spread(self) -> bool:
        r"""Whether :meth:`spread` gives an uncertainty: for :math:`0 < w < 1`, or a sole member that has one."""
        w = self.weight
        return 0.0 < w < 1.0 or (self.kernel.has_spread if w == 1.0 else self.network.has_spread)

    def describe(self) -> str:
        """One line: the weights and the members."""
        net = self.network
        layers = [int(v.shape[2]) for v in net.stacked.weights[:-1]]
        return (
            f"blend {self.weight:.3g} x kernel + {1.0 - self.weight:.3g} x network; kernel: {self.kernel.describe()}; "
            f"network: {net.n_networks} x MLP {layers}, {net.input_transform} inputs"
        )

    def scale_inputs(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The blend's inputs for parameters ``(n, p)``: those of its log-input member, else of the kernel."""
        return self._primary.scale_inputs(parameters)

    def _parameters(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The parameters ``(n, p)`` of the blend's inputs (the inverse of :meth:`scale_inputs`)."""
        x = self._primary.input_scaler.inverse(inputs)
        return np.exp(x) if self._primary.input_transform == "log" else x

    def members(self, inputs: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The kernel's and the network's coefficients ``(n, r)`` at the blend's inputs ``(n, p)``."""
        parameters = None
        outputs = []
        for member in (self.kernel, self.network):
            if self._direct[id(member)]:
                outputs.append(member.from_inputs(inputs))
            else:
                parameters = self._parameters(inputs) if parameters is None else parameters
                outputs.append(member(parameters))
        return outputs[0], outputs[1]

    def from_inputs(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """:meth:`__call__` on inputs already scaled by :meth:`scale_inputs`, shape ``(n, p)``."""
        kernel, network = self.members(inputs)
        return self.weight * kernel + (1.0 - self.weight) * network

    def __call__(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Coefficients ``(n, r)`` of parameters ``(n, p)``."""
        return self.from_inputs(self.scale_inputs(np.atleast_2d(np.asarray(parameters, dtype=np.float64))))

    def spread(self, parameters: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        r"""Mean coefficients ``(n, r)`` and factors ``(n, K, r)`` of the mixture's covariance (module docstring).

        The factors are :math:`\sqrt{w} F_k`, :math:`\sqrt{1 - w} F_n` (of the members that have a spread) and
        :math:`\sqrt{w (1 - w)} (\hat c_k - \hat c_n)`, so that :math:`F^T F = \Sigma`.
        """
        x = np.atleast_2d(np.asarray(parameters, dtype=np.float64))
        w = self.weight
        parts = []
        means = []
        for member, share in ((self.kernel, w), (self.network, 1.0 - w)):
            if member.has_spread:
                mean, factors = member.spread(x)
                if share > 0:
                    parts.append(math.sqrt(share) * factors)
            else:
                mean = member(x)
            means.append(mean)
        parts.append(math.sqrt(w * (1.0 - w)) * (means[0] - means[1])[:, None, :])
        return w * means[0] + (1.0 - w) * means[1], np.concatenate(parts, axis=1)

    def to_tree(self) -> dict[str, Any]:
        """The blend as file entries: ``weights`` (kernel, network) and the members under ``kernel/``, ``network/``."""
        tree: dict[str, Any] = {"weights": np.array([self.weight, 1.0 - self.weight], dtype=np.float64)}
        tree |= prefixed("kernel", self.kernel.to_tree())
        tree |= prefixed("network", self.network.to_tree())
        return tree

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> BlendedRegressor:
        """The blend stored by :meth:`to_tree` (entries validated first, as :func:`~fem_ml.archive.load` does).

        Raises:
            ValueError: for weights that are not two finite values in :math:`[0, 1]` summing to 1 (within
                :data:`WEIGHT_TOLERANCE`), or members that do not fit together (see the class).
        """
        weights = np.asarray(tree["weights"], dtype=np.float64)
        if weights.shape != (2,) or not np.all(np.isfinite(weights)):
            raise ValueError(f"The blend's weights must be 2 finite values, got {weights!r}.")
        if np.any(weights < 0) or np.any(weights > 1) or abs(float(weights.sum()) - 1.0) > WEIGHT_TOLERANCE:
            raise ValueError(f"The blend's weights must be within [0, 1] and sum to 1, got {weights!r}.")
        kernel = KernelRegressor.from_tree(subtree(tree, "kernel"))
        network = CoefficientNetwork.from_tree(subtree(tree, "network"))
        return cls(kernel, network, float(weights[0]))


def fit_weight(
    kernel: npt.NDArray[np.float64],
    network: npt.NDArray[np.float64],
    coefficients: npt.NDArray[np.float64],
    norms: npt.NDArray[np.float64],
    projection_sq: npt.NDArray[np.float64] | None = None,
) -> float:
    r"""The kernel's weight :math:`w \in [0, 1]` of the least mean relative error of the blend on given points.

    With predictions :math:`a_i` (kernel) and :math:`b_i` (network) of the coefficients :math:`c_i` of fields of
    norm :math:`\|u_i\|` whose projection errors are :math:`p_i` (squared), the minimizer over :math:`[0, 1]` of

    .. math:: E(w) = \frac1n \sum_i \frac{\sqrt{p_i + \|w a_i + (1 - w) b_i - c_i\|_2^2}}{\|u_i\|},

    the mean relative error of the fields, which is the measure :func:`~fem_ml.selection.select_regressor`
    compares candidates by (a mean of errors, not of squared errors: a few held-out points where one member is far
    off do not decide the weight alone). :math:`E` is convex (each term is the norm of an affine function of
    :math:`w`); its minimizer is found by bounded Brent iterations to :math:`10^{-8}` and compared with both ends.
    Identical predictions give :math:`w = 1/2`.

    Args:
        kernel: The kernel's predictions ``(n, r)``.
        network: The network's predictions ``(n, r)``.
        coefficients: The true coefficients ``(n, r)``.
        norms: The fields' norms ``(n,)``, positive.
        projection_sq: The squared projection errors ``(n,)`` (default zero).

    Returns:
        The weight.
    """
    from scipy.optimize import minimize_scalar  # only here: keeps it off the import of fem_ml

    p = np.zeros(len(norms)) if projection_sq is None else projection_sq
    d = kernel - network
    if not np.any(d):
        return 0.5
    residual = network - coefficients

    def mean_error(w: float) -> float:
        return float(np.mean(np.sqrt(p + np.sum((residual + w * d) ** 2, axis=1)) / norms))

    found = minimize_scalar(mean_error, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-8})
    candidates = (0.0, 1.0, float(np.clip(found.x, 0.0, 1.0)))
    return min(candidates, key=lambda w: (mean_error(w), w))
