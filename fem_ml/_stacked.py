# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The network's forward pass in NumPy, on weights stacked over the ensemble members (no torch).

A trained :class:`~fem_ml.networks.CoefficientNetwork` evaluates small batches here, and so does the ParaView
plugin (:mod:`fem_ml.paraview`), whose Python has NumPy but neither torch nor DOLFINx. The member networks of an
ensemble share their architecture, so layer :math:`k` of all members is one array :math:`W_k` of shape
``(members, n_in, n_out)`` with biases ``(members, 1, n_out)``:

.. math:: h_0 = x, \qquad h_{k+1} = \sigma(h_k W_k + b_k), \qquad y = h_L W_L + b_L,

evaluated for every member at once by batched matrix products. This module imports NumPy only (SciPy when it is
there, for :math:`\operatorname{erf}` in GELU) and keeps to Python 3.11 syntax, so that ParaView's Python can load it
from its file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class StackedMLP:
    """The layers of all ensemble members, stacked: a forward pass is one batched product per layer.

    Args:
        weights: Per layer, ``(members, n_in, n_out)`` float64.
        biases: Per layer, ``(members, 1, n_out)`` float64.
        activation: Name of the activation between layers (a key of :data:`ACTIVATIONS`).

    Raises:
        ValueError: If the layers do not chain, the member counts differ or the activation is unknown.
    """

    weights: Sequence[npt.NDArray[np.float64]]
    biases: Sequence[npt.NDArray[np.float64]]
    activation: str

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if not self.weights or len(self.weights) != len(self.biases):
            raise ValueError(f"{len(self.weights)} weight arrays for {len(self.biases)} bias arrays")
        members = self.weights[0].shape[0]
        width = self.weights[0].shape[1]
        for k, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if W.ndim != 3 or W.shape[0] != members or W.shape[1] != width or b.shape != (members, 1, W.shape[2]):
                raise ValueError(f"layer {k}: weights {W.shape} and biases {b.shape} do not chain")
            width = W.shape[2]

    @classmethod
    def from_members(
        cls, layers: Sequence[Sequence[tuple[npt.ArrayLike, npt.ArrayLike]]], activation: str
    ) -> StackedMLP:
        """Stack members given as lists of ``(weight, bias)`` per layer; weights ``(n_out, n_in)``, as in torch."""
        n_layers = len(layers[0])
        if any(len(member) != n_layers for member in layers):
            raise ValueError("the ensemble members have different numbers of layers")
        weights = [np.stack([np.asarray(m[k][0], dtype=np.float64).T for m in layers]) for k in range(n_layers)]
        biases = [np.stack([np.asarray(m[k][1], dtype=np.float64)[None, :] for m in layers]) for k in range(n_layers)]
        return cls(weights, biases, activation)

    @property
    def n_members(self) -> int:
        """Number of ensemble members."""
        return int(self.weights[0].shape[0])

    @property
    def n_in(self) -> int:
        """Number of inputs."""
        return int(self.weights[0].shape[1])

    @property
    def n_out(self) -> int:
        """Number of outputs."""
        return int(self.weights[-1].shape[2])

    def __call__(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Outputs of every member for inputs ``(n, n_in)``: shape ``(members, n, n_out)``."""
        act = ACTIVATIONS[self.activation]
        h = inputs[None, :, :]
        last = len(self.weights) - 1
        for k, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ W + b
            if k < last:
                h = act(h)
        return h
