# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The torch module of one network, :class:`MLP` (re-exported by :mod:`fem_ml.networks`).

It lives apart from :mod:`fem_ml.networks` so that torch is imported only where a network is trained or evaluated
in torch: loading and querying a surrogate run in NumPy.
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch

__all__ = ["ACTIVATIONS", "MLP"]

Activation = Literal["tanh", "gelu", "silu", "softplus", "relu"]

#: The torch module of each activation name.
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "gelu": torch.nn.GELU,
    "relu": torch.nn.ReLU,
    "silu": torch.nn.SiLU,
    "softplus": torch.nn.Softplus,
    "tanh": torch.nn.Tanh,
}


class MLP(torch.nn.Module):
    """A fully connected network ``n_in -> hidden_layers... -> n_out`` with one activation between layers.

    Args:
        n_in: Number of inputs.
        n_out: Number of outputs.
        hidden_layers: Widths of the hidden layers.
        activation: Activation function name.
    """

    def __init__(self, n_in: int, n_out: int, *, hidden_layers: tuple[int, ...], activation: Activation):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}.")
        widths = (n_in, *hidden_layers, n_out)
        layers: list[torch.nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            layers.append(torch.nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.layers = torch.nn.Sequential(*layers)
        self.n_in, self.n_out = n_in, n_out
        self.hidden_layers, self.activation = tuple(hidden_layers), activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate the network on a batch ``x`` of shape ``(n, n_in)``."""
        return self.layers(x)
