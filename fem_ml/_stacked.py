# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The one forward pass of a network ensemble, on weights stacked over its members (NumPy or torch arrays).

The member networks of an ensemble share their architecture, so layer :math:`k` of all members is one array
:math:`W_k` of shape ``(members, n_in, n_out)`` with biases ``(members, 1, n_out)``:

.. math:: h_0 = x, \qquad h_{k+1} = \sigma(h_k W_k + b_k), \qquad y = h_L W_L + b_L,

evaluated for every member at once by one batched product per layer. The same pass runs on NumPy arrays (a
trained :class:`~fem_ml.networks.CoefficientNetwork` for a few points, and the ParaView plugin) and on torch
tensors (large batches; :mod:`fem_ml.inverse`, which differentiates it); :mod:`fem_ml.networks` stacks the torch
models into either.

This module imports NumPy only (SciPy when it is there, for :math:`\operatorname{erf}` in GELU) and keeps to Python
3.11 syntax, so that ParaView's Python, which has neither torch nor DOLFINx, runs it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["ACTIVATIONS", "StackedMLP", "scale_inputs"]

try:  # SciPy's functions are vectorized; ParaView's Python may lack SciPy: then math.erf element by element
    from scipy.special import erf as _erf
    from scipy.special import expit as _expit
except ImportError:  # pragma: no cover - exercised in ParaView's Python only
    _erf = np.vectorize(math.erf, otypes=[np.float64])

    def _expit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.exp(-np.logaddexp(0.0, -x))


Array = TypeVar("Array")


def _gelu(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """torch.nn.GELU (exact, with erf)."""
    return 0.5 * x * (1.0 + _erf(x * 0.7071067811865476))


def _softplus(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """torch.nn.Softplus(beta=1, threshold=20)."""
    return np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))


def _silu(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """torch.nn.SiLU: x * sigmoid(x)."""
    return x * _expit(x)


#: NumPy versions of the activations a network may use, by the name stored in its file.
ACTIVATIONS: dict[str, Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]] = {
    "gelu": _gelu,
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": _silu,
    "softplus": _softplus,
    "tanh": np.tanh,
}


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
