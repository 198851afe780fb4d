# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The one forward pass of a network ensemble, on weights stacked over its members (NumPy or torch arrays).

The member networks of an ensemble share their architecture, so layer :math:`k` of all members is one array
:math:`W_k` of shape ``(members, n_in, n_out)`` with biases ``(members, 1, n_out)``:

.. math:: h_0 = x, \qquad h_{k+1} = \sigma(h_k W_k + b_k), \qquad y = h_L W_L + b_L,

evaluated for every member at once by one batched product per layer. The same pass runs on NumPy arrays (a
trained :class:`~fem_ml.networks.CoefficientNetwork` for a few points, and the ParaView plugin) and on torch
tensors (large batches); :mod:`fem_ml.networks` stacks the torch models into either, and :mod:`fem_ml.inverse`
differentiates the NumPy pass.

On NumPy weights, :meth:`StackedMLP.jacobian` also gives the exact derivatives of the outputs with respect to the
inputs (forward mode: one tangent per input carried through the layers, with each activation's derivative), and
:func:`scale_inputs_jacobian` the derivative of the input scaling, so that :mod:`fem_ml.inverse` optimizes with
exact gradients in NumPy, without torch's per-operation overhead on such small networks.

This module imports NumPy only (SciPy when it is there, for the normal CDF in GELU, at its first use)
and keeps to Python 3.11 syntax, so that ParaView's Python, which has neither torch nor DOLFINx, runs it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import numpy as np
import numpy.typing as npt

__all__ = ["ACTIVATIONS", "SLOPES", "StackedMLP", "scale_inputs", "scale_inputs_jacobian"]

_SPECIAL: dict[str, Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]] = {}


def _special(name: str) -> Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]:
    """``scipy.special.<name>`` (ndtr or expit), imported at the first use: it takes half a second to import.

    SciPy's functions are vectorized; ParaView's Python may lack SciPy: then math.erfc element by element.
    """
    function: Any = _SPECIAL.get(name)
    if function is None:
        try:
            import scipy.special

            function = getattr(scipy.special, name)
        except ImportError:  # pragma: no cover - exercised in ParaView's Python only
            fallback = {
                "ndtr": np.vectorize(lambda a: 0.5 * math.erfc(-a * 0.7071067811865476), otypes=[np.float64]),
                "expit": lambda x: np.exp(-np.logaddexp(0.0, -x)),
            }
            function = fallback[name]
        _SPECIAL[name] = function
    return function


def _ndtr(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    r"""The standard normal CDF :math:`\Phi(x) = (1 + \operatorname{erf}(x / \sqrt 2)) / 2` (faster than erf)."""
    return _special("ndtr")(x)


def _expit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return _special("expit")(x)


Array = TypeVar("Array")


def _gelu(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    r"""torch.nn.GELU (exact, with erf): :math:`x \Phi(x)`."""
    return x * _ndtr(x)


def _softplus(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """torch.nn.Softplus(beta=1, threshold=20)."""
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def _silu(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """torch.nn.SiLU: x * sigmoid(x)."""
    return x * _expit(x)


def _relu(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.maximum(x, 0.0)


#: NumPy versions of the activations a network may use, by the name stored in its file.
ACTIVATIONS: dict[str, Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]] = {
    "gelu": _gelu,
    "relu": _relu,
    "silu": _silu,
    "softplus": _softplus,
    "tanh": np.tanh,
}


Slope = Callable[[npt.NDArray[np.float64]], tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]


def _gelu_slope(a: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    r""":math:`a \Phi(a)` and its derivative :math:`\Phi(a) + a\,\varphi(a)` (standard normal CDF, density)."""
    cdf = _ndtr(a)
    return a * cdf, cdf + a * np.exp(-0.5 * a * a) * 0.3989422804014327


def _relu_slope(a: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """ReLU and its derivative, 0 at the kink as in torch."""
    return np.maximum(a, 0.0), (a > 0.0).astype(np.float64)


def _silu_slope(a: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    r""":math:`a s` and :math:`s\,(1 + a (1 - s))`, :math:`s = \mathrm{sigmoid}(a)`."""
    s = _expit(a)
    return a * s, s * (1.0 + a * (1.0 - s))


def _softplus_slope(a: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Softplus and sigmoid(a), the identity and 1 above torch's threshold 20."""
    return _softplus(a), np.where(a > 20.0, 1.0, _expit(np.minimum(a, 20.0)))


def _tanh_slope(a: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    h = np.tanh(a)
    return h, 1.0 - h * h


#: Each NumPy activation of :data:`ACTIVATIONS` (the key is the function) with its derivative: the function of the
#: pre-activation :math:`a` that returns :math:`\sigma(a)` and :math:`\sigma'(a)` (sharing their common terms).
SLOPES: dict[Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]], Slope] = {
    _gelu: _gelu_slope,
    _relu: _relu_slope,
    _silu: _silu_slope,
    _softplus: _softplus_slope,
    np.tanh: _tanh_slope,
}


def scale_inputs_jacobian(
    parameters: npt.NDArray[np.float64], transform: str, scale: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    r"""The derivative of :func:`scale_inputs`, which is diagonal: :math:`\partial x_j / \partial \mu_j`, ``(n, p)``.

    :math:`1 / s_j` for ``"linear"``, :math:`1 / (s_j \mu_j)` for ``"log"``.

    Raises:
        ValueError: For an unknown transform.
    """
    if transform == "log":
        return 1.0 / (scale * parameters)
    if transform != "linear":
        raise ValueError(f"unknown input transform {transform!r}; expected 'linear' or 'log'")
    return np.broadcast_to(1.0 / scale, parameters.shape).copy()


def scale_inputs(
    parameters: npt.NDArray[np.float64], transform: str, shift: npt.NDArray[np.float64], scale: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Network inputs for parameters ``(n, p)``: transformed (``"linear"`` or ``"log"``), then ``(x - shift) / scale``.

    Raises:
        ValueError: For an unknown transform.
    """
    if transform == "log":
        parameters = np.log(parameters)
    elif transform != "linear":
        raise ValueError(f"unknown input transform {transform!r}; expected 'linear' or 'log'")
    return (parameters - shift) / scale


def _numpy_affine(h: Any, W: Any, b: Any) -> Any:
    """``h @ W + b`` for every member, by broadcasting."""
    return h @ W + b


@dataclass(frozen=True)
class StackedMLP(Generic[Array]):  # noqa: UP046 (type parameters need Python 3.12; ParaView runs 3.11)
    r"""The members of an ensemble stacked layer by layer: the one forward pass of the ensemble.

    Attributes:
        weights: Per layer, the members' weights ``(members, in, out)`` (transposed from torch's layout).
        biases: Per layer, the members' biases ``(members, 1, out)``.
        activation: The activation between layers, for the array type of the weights.
        affine: ``(h, W, b) -> h @ W + b`` for the array type (NumPy broadcasting by default; one ``baddbmm``
            for torch tensors, see :func:`fem_ml.networks.stack_torch`).
    """

    weights: tuple[Array, ...]
    biases: tuple[Array, ...]
    activation: Callable[[Array], Array]
    affine: Callable[[Array, Array, Array], Array] = _numpy_affine

    @classmethod
    def from_members(
        cls, layers: Sequence[Sequence[tuple[npt.ArrayLike, npt.ArrayLike]]], activation: str
    ) -> StackedMLP[npt.NDArray[np.float64]]:
        """NumPy float64 stack of members given as ``(weight, bias)`` per layer, weights ``(out, in)`` as in torch.

        Raises:
            ValueError: If the members' layers do not match or the activation is unknown.
        """
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        n_layers = len(layers[0])
        if any(len(member) != n_layers for member in layers):
            raise ValueError("the ensemble members have different numbers of layers")
        try:
            weights = tuple(np.stack([np.asarray(m[k][0], np.float64).T for m in layers]) for k in range(n_layers))
            biases = tuple(
                np.stack([np.asarray(m[k][1], np.float64)[None, :] for m in layers]) for k in range(n_layers)
            )
        except ValueError as err:
            raise ValueError(f"the ensemble members' layers differ in shape: {err}") from None
        for k in range(1, n_layers):
            if weights[k].shape[1] != weights[k - 1].shape[2] or biases[k].shape[2] != weights[k].shape[2]:
                raise ValueError(f"layer {k}: weights {weights[k].shape} do not follow {weights[k - 1].shape}")
        return StackedMLP(weights, biases, ACTIVATIONS[activation])

    @property
    def n_members(self) -> int:
        """Number of stacked members."""
        return int(self.weights[0].shape[0])  # type: ignore[attr-defined]

    def hidden(self, inputs: Array) -> Array:
        """The activations of the last hidden layer, ``(members, n, width)``, for inputs ``(n, in)``.

        ``inputs`` may also be ``(members, n, in)``, one batch per member.
        """
        h = inputs if inputs.ndim == 3 else inputs[None]  # type: ignore[attr-defined,index]
        for W, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = self.activation(self.affine(h, W, b))
        return h

    def __call__(self, inputs: Array) -> Array:
        """The outputs of every member, ``(members, n, out)``, for inputs ``(n, in)`` (or ``(members, n, in)``)."""
        return self.affine(self.hidden(inputs), self.weights[-1], self.biases[-1])

    def hidden_jacobian(
        self, inputs: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        r""":meth:`hidden` and its exact derivative with respect to the inputs, on NumPy weights.

        Forward mode: the tangents :math:`T_k = \partial h_k / \partial x` go through the layers as
        :math:`T_{k+1} = \sigma'(a_k) \odot (T_k W_k)`, :math:`a_k = h_k W_k + b_k`, which for the few inputs of
        a parameter-to-coefficient network costs about as much as the pass itself.

        Args:
            inputs: ``(n, in)``.

        Returns:
            The last hidden activations ``(members, n, width)`` and their Jacobian ``(members, n, in, width)``
            (entry ``[m, i, j, w]`` is :math:`\partial h_w / \partial x_j` of member ``m`` at point ``i``).

        Raises:
            ValueError: If the activation is not one of :data:`ACTIVATIONS` (e.g. a torch stack).
        """
        slope, weights, biases = self._numpy("Jacobian")
        h = np.asarray(inputs, dtype=np.float64)[None]
        tangent = np.broadcast_to(np.eye(h.shape[2]), (1, h.shape[1], h.shape[2], h.shape[2]))
        for W, b in zip(weights[:-1], biases[:-1], strict=True):
            h, derivative = slope(h @ W + b)
            tangent = derivative[:, :, None, :] * (tangent @ W[:, None])
        return h, tangent

    def _numpy(
        self, what: str
    ) -> tuple[Slope, tuple[npt.NDArray[np.float64], ...], tuple[npt.NDArray[np.float64], ...]]:
        """The activation with its derivative, the weights and the biases; ValueError if they are not NumPy's."""
        slope = SLOPES.get(cast(Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]], self.activation))
        if slope is None:
            raise ValueError(f"the {what} needs NumPy weights with an activation of ACTIVATIONS")
        return (
            slope,
            cast(tuple[npt.NDArray[np.float64], ...], self.weights),
            cast(tuple[npt.NDArray[np.float64], ...], self.biases),
        )

    def hidden_pullback(
        self, inputs: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]]:
        r""":meth:`hidden` and its exact pullback (reverse mode), on NumPy weights: the gradient of a scalar.

        The pullback maps a cotangent :math:`g = \partial J / \partial h` of the last hidden activations to
        :math:`\partial J / \partial x` by :math:`g_k = (g_{k+1} \odot \sigma'(a_k)) W_k^T`: one vector-matrix
        product per layer, cheaper than the forward-mode :meth:`hidden_jacobian` for a scalar objective.

        Args:
            inputs: ``(n, in)``.

        Returns:
            The last hidden activations ``(members, n, width)`` and the pullback, from ``(members, n, width)`` to
            ``(members, n, in)`` (per member; the caller sums over members what it averaged).

        Raises:
            ValueError: If the activation is not one of :data:`ACTIVATIONS` (e.g. a torch stack).
        """
        slope, weights, biases = self._numpy("gradient")
        h = np.asarray(inputs, dtype=np.float64)[None]
        slopes = []
        for W, b in zip(weights[:-1], biases[:-1], strict=True):
            h, derivative = slope(h @ W + b)
            slopes.append(derivative)

        def pullback(cotangent: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            g = cotangent
            for W, derivative in zip(reversed(weights[:-1]), reversed(slopes), strict=True):
                g = (g * derivative) @ np.swapaxes(W, 1, 2)
            return g

        return h, pullback

    def jacobian(self, inputs: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The outputs of every member and their exact derivative with respect to the inputs, on NumPy weights.

        Args:
            inputs: ``(n, in)``.

        Returns:
            The outputs ``(members, n, out)`` and the Jacobian ``(members, n, out, in)``.
        """
        h, tangent = self.hidden_jacobian(inputs)
        _, weights, biases = self._numpy("Jacobian")
        return h @ weights[-1] + biases[-1], np.swapaxes(tangent @ weights[-1][:, None], 2, 3)
