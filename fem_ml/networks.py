# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""PyTorch networks from parameters to reduced coefficients, their scaling and their training.

The map :math:`\mu \mapsto c(\mu) \in \mathbb{R}^r` is learned by a multilayer perceptron on scaled data:
inputs are mapped affinely from the parameter bounds to :math:`[-1, 1]`, outputs are standardized per coefficient.
The loss is measured on the unscaled coefficients. Because the POD modes are :math:`M`-orthonormal,
:math:`\|\hat c - c\|_2 = \|\Phi \hat c - \Phi c\|_M`: the default ``"relative"`` loss

.. math:: \frac{1}{n} \sum_i \frac{\|\hat c(\mu_i) - c_i\|_2^2}{\|c_i\|_2^2}

is the mean squared relative field error (network part) in the POD's inner product.
Training runs on one rank (and one device); the weights are broadcast to all ranks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

from fem_ml._lazy import lazy_module
from fem_ml._mpi import run_distributed
from fem_ml._progress import Progress
from fem_ml._serialize import dataclass_kwargs, dataclass_tree, prefixed, subtree
from fem_ml._stacked import ACTIVATIONS as NUMPY_ACTIVATIONS
from fem_ml._stacked import StackedMLP

if TYPE_CHECKING:
    import torch

    from fem_ml._mlp import MLP
else:
    torch = lazy_module("torch")  # imported at its first use: loading and querying a surrogate do not need it

__all__ = [
    "MLP",
    "AffineScaler",
    "CoefficientNetwork",
    "PhysicsLoss",
    "TrainingHistory",
    "TrainingOptions",
    "resolve_device",
    "stack_numpy",
    "stack_torch",
    "train_network",
]

logger = logging.getLogger(__name__)

Activation = Literal["tanh", "gelu", "silu", "softplus", "relu"]
_DTYPES = ("float32", "float64")


def __getattr__(name: str) -> Any:
    """:class:`MLP` (from :mod:`fem_ml._mlp`), imported with torch at its first use."""
    if name == "MLP":
        from fem_ml._mlp import MLP

        return MLP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_device(device: str) -> torch.device:
    """Return the torch device for ``"auto"`` (CUDA where present, else CPU), ``"cpu"`` or ``"cuda[:i]"``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available.")
    return torch.device(device)


@dataclass(frozen=True)
class AffineScaler:
    r"""The affine map :math:`x \mapsto (x - \mathrm{shift}) / \mathrm{scale}`, per column.

    Attributes:
        shift: Shift, shape ``(d,)``.
        scale: Positive scale, shape ``(d,)``.
    """

    shift: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]

    @classmethod
    def from_bounds(cls, lower: npt.ArrayLike, upper: npt.ArrayLike) -> AffineScaler:
        """Scaler mapping the box ``[lower, upper]`` onto :math:`[-1, 1]^d`."""
        lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        return cls(0.5 * (lo + hi), 0.5 * (hi - lo))

    @classmethod
    def standardize(cls, data: npt.NDArray[np.float64]) -> AffineScaler:
        """Scaler giving each column of ``data`` (rows are samples) zero mean and unit variance."""
        std = data.std(axis=0)
        scale = np.where(std > 1e-300, std, 1.0)
        return cls(data.mean(axis=0), scale)

    def transform(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Apply the map."""
        return (x - self.shift) / self.scale

    def inverse(self, y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Apply the inverse map."""
        return y * self.scale + self.shift

    def to_tree(self) -> dict[str, Any]:
        """The scaler as file entries (its dataclass fields)."""
        return dataclass_tree(self)

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> AffineScaler:
        """The scaler stored by :meth:`to_tree`."""
        return cls(**dataclass_kwargs(cls, tree))


def stack_numpy(models: list[MLP]) -> StackedMLP[npt.NDArray[np.float64]]:
    """The members' weights stacked as float64 NumPy arrays, with the NumPy version of their activation."""
    linears = _linear_layers(models)
    return StackedMLP(
        tuple(np.stack([layer.weight.detach().numpy().T for layer in k]).astype(np.float64) for k in linears),
        tuple(np.stack([layer.bias.detach().numpy()[None, :] for layer in k]).astype(np.float64) for k in linears),
        NUMPY_ACTIVATIONS[models[0].activation],
    )


def stack_torch(models: list[MLP], dtype: torch.dtype | None = None) -> StackedMLP[torch.Tensor]:
    """The members' weights stacked as detached torch tensors (in the models' dtype unless ``dtype`` is given).

    The pass is differentiable in its inputs and runs one ``baddbmm`` per layer.
    """
    from fem_ml._mlp import ACTIVATIONS as TORCH_ACTIVATIONS

    linears = _linear_layers(models)
    dtype = dtype or next(models[0].parameters()).dtype
    return StackedMLP(
        tuple(torch.stack([layer.weight.detach().to(dtype).T for layer in k]) for k in linears),
        tuple(torch.stack([layer.bias.detach().to(dtype)[None, :] for layer in k]) for k in linears),
        TORCH_ACTIVATIONS[models[0].activation](),
        _torch_affine,
    )


def _linear_layers(models: list[MLP]) -> list[list[torch.nn.Linear]]:
    """Per layer, the :class:`torch.nn.Linear` of every member."""
    members = [[layer for layer in m.layers if isinstance(layer, torch.nn.Linear)] for m in models]
    return [list(layers) for layers in zip(*members, strict=True)]


def _torch_affine(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``h @ W + b`` for every member in one ``baddbmm`` (the fewest torch operations)."""
    return torch.baddbmm(b, h.expand(W.shape[0], -1, -1), W)


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    r"""Options of :func:`train_network`; every option is a named field, so an unknown one is an error.

    Attributes:
        hidden_layers: Widths of the hidden layers.
        activation: Activation between layers.
        input_transform: ``"linear"`` scales each parameter affinely from its bounds to :math:`[-1, 1]`;
            ``"log"`` does the same with :math:`\log \mu` and the log-bounds (positive parameters only; suited to
            coefficients such as conductivities or moduli that span orders of magnitude).
        n_networks: Size of the ensemble. Member ``m`` is seeded with ``seed + m`` (its own initialization and
            validation split); the prediction is the mean of the members. Members train in parallel over the
            ranks.
        loss: ``"relative"`` (mean squared relative coefficient error) or ``"mse"`` (squared error relative to
            the mean squared norm of the data).
        adam_epochs: Maximum number of Adam epochs.
        learning_rate: Initial Adam learning rate; it decays geometrically to ``learning_rate * final_lr_ratio``.
        final_lr_ratio: Learning-rate ratio reached at the last Adam epoch.
        batch_size: Mini-batch size for Adam; None for full batches.
        weight_decay: L2 weight decay of Adam.
        lbfgs_iterations: Maximum number of L-BFGS iterations after Adam (0 to skip the polish).
        validation_fraction: Fraction of the samples held out for validation and early stopping (0 disables
            both: the last weights are kept).
        patience: Adam epochs (and L-BFGS iterations) without improvement of the validation loss before stopping.
        seed: Seed of the weight initialization, the validation split and the batch order (of member 0).
        dtype: ``"float64"`` or ``"float32"``.
        device: ``"auto"`` (CUDA where present), ``"cpu"`` or ``"cuda[:i]"``; used for training only.
        progress: Show a progress bar on rank 0.
    """

    hidden_layers: tuple[int, ...] = (64, 64, 64)
    activation: Activation = "gelu"
    input_transform: Literal["linear", "log"] = "linear"
    n_networks: int = 1
    loss: Literal["relative", "mse"] = "relative"
    adam_epochs: int = 3000
    learning_rate: float = 3e-3
    final_lr_ratio: float = 1e-2
    batch_size: int | None = None
    weight_decay: float = 0.0
    lbfgs_iterations: int = 1000
    validation_fraction: float = 0.2
    patience: int = 1000
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float64"
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        hidden = tuple(self.hidden_layers)
        if not hidden or any(not isinstance(w, int | np.integer) or w < 1 for w in hidden):
            raise ValueError(f"hidden_layers must be positive ints, got {self.hidden_layers!r}.")
        object.__setattr__(self, "hidden_layers", tuple(int(w) for w in hidden))
        if self.activation not in NUMPY_ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; choose one of {sorted(NUMPY_ACTIVATIONS)}.")
        if self.input_transform not in ("linear", "log"):
            raise ValueError(f"Unknown input_transform {self.input_transform!r}; choose 'linear' or 'log'.")
        if int(self.n_networks) < 1:
            raise ValueError(f"n_networks must be >= 1, got {self.n_networks}.")
        if self.loss not in ("relative", "mse"):
            raise ValueError(f"Unknown loss {self.loss!r}; choose 'relative' or 'mse'.")
        if self.dtype not in _DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r}; choose one of {sorted(_DTYPES)}.")
        for name in ("adam_epochs", "lbfgs_iterations", "patience"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if not 0 < self.final_lr_ratio <= 1:
            raise ValueError(f"final_lr_ratio must be in (0, 1], got {self.final_lr_ratio}.")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}.")
        if self.adam_epochs + self.lbfgs_iterations == 0:
            raise ValueError("adam_epochs and lbfgs_iterations are both 0: nothing would be trained.")


@dataclass
class TrainingHistory:
    """What happened during training.

    Attributes:
        train_loss: Training loss after each Adam epoch, then after each L-BFGS iteration.
        validation_loss: Validation loss at the same points (empty without a validation split).
        n_adam_epochs: Adam epochs run (before early stopping).
        n_lbfgs_iterations: L-BFGS iterations run.
        best_index: Index into the loss lists of the restored weights.
        train_indices: Samples used for training.
        validation_indices: Samples held out.
        time_s: Training wall-clock seconds.
        device: Device used.
    """

    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    n_adam_epochs: int = 0
    n_lbfgs_iterations: int = 0
    best_index: int = -1
    train_indices: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    validation_indices: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    time_s: float = 0.0
    device: str = "cpu"

    @property
    def best_train_loss(self) -> float:
        """Training loss of the restored weights."""
        return self.train_loss[self.best_index]

    @property
    def best_validation_loss(self) -> float:
        """Validation loss of the restored weights (nan without a validation split)."""
        return self.validation_loss[self.best_index] if self.validation_loss else float("nan")

    def to_tree(self) -> dict[str, Any]:
        """The history as file entries (its dataclass fields)."""
        return dataclass_tree(self)

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> TrainingHistory:
        """The history stored by :meth:`to_tree`."""
        return cls(**dataclass_kwargs(cls, tree))


class CoefficientNetwork:
    """A trained map from parameters to reduced coefficients.

    The parameters are transformed (identity or logarithm), scaled to :math:`[-1, 1]`, passed through each
    member network, averaged over the ensemble and unscaled. Evaluation runs in NumPy (float64) on weights
    stacked over the ensemble (:class:`~fem_ml._stacked.StackedMLP`): for one parameter point it costs a few
    microseconds, far below a torch call, and agrees with the torch models to rounding (:meth:`torch_forward`
    evaluates in torch).

    Args:
        models: The member networks, all with the same architecture.
        input_scaler: Maps transformed parameters to :math:`[-1, 1]`.
        output_scaler: Maps coefficients to standardized network outputs.
        input_transform: ``"linear"`` or ``"log"``.
    """

    #: Batches of at least this many points are evaluated by torch (see :meth:`__call__`).
    torch_batch_threshold: int = 64
    #: The regressor kind (:class:`~fem_ml.surrogate.CoefficientRegressor`): stored under ``network/``.
    kind = "network"

    def __init__(
        self,
        models: list[MLP],
        input_scaler: AffineScaler,
        output_scaler: AffineScaler,
        *,
        input_transform: Literal["linear", "log"] = "linear",
    ):
        if not models:
            raise ValueError("CoefficientNetwork needs at least one model.")
        self._models: list[MLP] | None = [m.cpu().eval() for m in models]
        self._stored: dict[str, Any] = {}  # the file entries of a loaded network, until it is built in torch
        self.input_scaler = input_scaler
        self.output_scaler = output_scaler
        self.input_transform = input_transform
        self._stacked = stack_numpy(self._models)
        self._torch_stack: StackedMLP[torch.Tensor] | None = None

    @property
    def models(self) -> list[MLP]:
        """The member networks in torch; a loaded network builds them (importing torch) at the first access."""
        if self._models is None:
            self._models = _models_from_tree(self._stored)
        return self._models

    @property
    def stacked(self) -> StackedMLP[npt.NDArray[np.float64]]:
        """The members' weights stacked in NumPy float64, the pass of :meth:`from_inputs` (and its Jacobian)."""
        return self._stacked

    @property
    def _stacked_torch(self) -> StackedMLP[torch.Tensor]:
        if self._torch_stack is None:
            self._torch_stack = stack_torch(self.models)
        return self._torch_stack

    @property
    def n_params(self) -> int:
        """Number of inputs."""
        return int(self._stacked.weights[0].shape[1])

    @property
    def n_coefficients(self) -> int:
        """Number of outputs."""
        return int(self._stacked.weights[-1].shape[2])

    @property
    def n_networks(self) -> int:
        """Ensemble size."""
        return self._stacked.n_members

    def scale_inputs(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Network inputs for parameters ``(n, p)``: transformed, then scaled to :math:`[-1, 1]`."""
        return _scale_inputs(parameters, self.input_transform, self.input_scaler)

    def __call__(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Coefficients for a batch of parameters ``(n, p)``, shape ``(n, r)``, all members at once.

        Below :attr:`torch_batch_threshold` points the evaluation runs in NumPy in float64 (no torch call
        overhead); larger batches run through the torch models in their own dtype, whose vectorized activations
        are several times faster there. For float64 networks both paths agree to rounding (float32 networks:
        to about 1e-7). torch uses its own thread pool; under ``mpirun`` set ``OMP_NUM_THREADS`` (or
        ``torch.set_num_threads``) so the ranks do not oversubscribe the cores.
        """
        return self.from_inputs(self.scale_inputs(parameters))

    def from_inputs(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """:meth:`__call__` on inputs already scaled by :meth:`scale_inputs`, shape ``(n, p)``."""
        if inputs.shape[0] >= self.torch_batch_threshold:
            return self._torch_outputs(inputs)
        h = self._scaled_outputs(inputs)
        return self.output_scaler.inverse(h.mean(axis=0) if h.shape[0] > 1 else h[0])

    def members(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Coefficients of each ensemble member for parameters ``(n, p)``, shape ``(n_networks, n, r)``."""
        return self.output_scaler.inverse(self._member_outputs(parameters))

    @property
    def has_spread(self) -> bool:
        """True for an ensemble (``n_networks >= 2``): its members' spread is an uncertainty."""
        return self.n_networks >= 2

    def spread(self, parameters: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        r"""Mean coefficients ``(n, r)`` and the members' scaled deviations ``(n, K, r)``.

        The factors of :meth:`~fem_ml.surrogate.CoefficientRegressor.spread`, :math:`(\hat c_m - \bar c)/\sqrt{K}`:
        the ensemble's covariance is their :math:`F^T F`.
        """
        members = self.members(parameters)
        mean = members.mean(axis=0)
        return mean, np.transpose(members - mean, (1, 0, 2)) / math.sqrt(self.n_networks)

    def _member_outputs(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Scaled outputs of every member, ``(n_networks, n, r)``, in NumPy float64."""
        return self._scaled_outputs(self.scale_inputs(parameters))

    def _scaled_outputs(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return self._stacked(inputs)

    def torch_forward(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The same map evaluated in torch, by the stacked pass of large batches in :meth:`__call__`."""
        return self._torch_outputs(self.scale_inputs(parameters))

    def _torch_outputs(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x = torch.from_numpy(np.ascontiguousarray(inputs)).to(self._stacked_torch.weights[0].dtype)
        with torch.inference_mode():
            outputs = self._stacked_torch(x).double().numpy()
        return self.output_scaler.inverse(np.mean(outputs, axis=0))

    def to_tree(self) -> dict[str, Any]:
        """The networks as file entries: architecture, scalers and each member's weights (``member_m/...``)."""
        if self._models is None:  # loaded and never built in torch: the entries it was loaded from
            return dict(self._stored)
        first = self.models[0]
        tree: dict[str, Any] = {
            "hidden_layers": np.asarray(first.hidden_layers, dtype=np.int64).reshape(-1),
            "n_hidden": len(first.hidden_layers),
            "activation": first.activation,
            "input_transform": self.input_transform,
            "n_in": int(first.n_in),
            "n_out": int(first.n_out),
            "n_networks": self.n_networks,
            "dtype": str(next(first.parameters()).dtype).removeprefix("torch."),
        }
        tree |= prefixed("input_scaler", self.input_scaler.to_tree())
        tree |= prefixed("output_scaler", self.output_scaler.to_tree())
        for m, model in enumerate(self.models):
            for name, tensor in model.state_dict().items():
                tree[f"member_{m}/{name}"] = tensor.detach().cpu().numpy().copy()
        return tree

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> CoefficientNetwork:
        """The networks stored by :meth:`to_tree` (entries validated first, as :func:`~fem_ml.archive.load` does).

        The network evaluates in NumPy at once; its torch models (:attr:`models`) are built at their first use,
        so that loading and querying a surrogate do not import torch.
        """
        if str(tree["dtype"]) not in _DTYPES:
            raise ValueError(f"Unknown dtype {tree['dtype']!r}; choose one of {sorted(_DTYPES)}.")
        n_layers = int(tree["n_hidden"]) + 1
        members = [
            [
                (tree[f"member_{m}/layers.{2 * k}.weight"], tree[f"member_{m}/layers.{2 * k}.bias"])
                for k in range(n_layers)
            ]
            for m in range(int(tree["n_networks"]))
        ]
        network = cls.__new__(cls)
        network._models = None
        network._stored = dict(tree)
        network.input_scaler = AffineScaler.from_tree(subtree(tree, "input_scaler"))
        network.output_scaler = AffineScaler.from_tree(subtree(tree, "output_scaler"))
        network.input_transform = str(tree["input_transform"])  # type: ignore[assignment]
        network._stacked = StackedMLP.from_members(members, str(tree["activation"]))
        network._torch_stack = None
        return network


def _models_from_tree(tree: dict[str, Any]) -> list[MLP]:
    """The torch models of the entries :meth:`CoefficientNetwork.to_tree` wrote."""
    from fem_ml._mlp import MLP

    hidden = tuple(int(w) for w in np.asarray(tree["hidden_layers"])[: int(tree["n_hidden"])])
    models = []
    for m in range(int(tree["n_networks"])):
        activation: Activation = tree["activation"]
        model = MLP(int(tree["n_in"]), int(tree["n_out"]), hidden_layers=hidden, activation=activation)
        model = model.to(getattr(torch, str(tree["dtype"])))
        state = {k: torch.from_numpy(np.array(v)) for k, v in subtree(tree, f"member_{m}").items()}
        model.load_state_dict(state, strict=True)
        models.append(model.cpu().eval())
    return models


def _scale_inputs(
    parameters: npt.NDArray[np.float64], transform: Literal["linear", "log"], scaler: AffineScaler
) -> npt.NDArray[np.float64]:
    return scaler.transform(np.log(parameters) if transform == "log" else parameters)


@dataclass(frozen=True)
class PhysicsLoss:
    r"""A physics term of the training loss: reduced residuals at points that have no snapshot.

    With reduced systems :math:`A_r(\mu_j) c = f_r(\mu_j)` at the points :math:`\mu_j`, the term is

    .. math:: w \, \frac{1}{m} \sum_{j=1}^m \frac{\|f_r(\mu_j) - A_r(\mu_j)\, \hat c(\mu_j)\|_2^2}
        {\|f_r(\mu_j)\|_2^2},

    the mean squared relative reduced residual of the network's coefficients (see :mod:`fem_ml.reduced`).

    Attributes:
        parameters: The points ``(m, p)``.
        matrices: :math:`A_r(\mu_j)`, ``(m, r, r)``.
        rhs: :math:`f_r(\mu_j)`, ``(m, r)``.
        weight: The weight :math:`w` against the data loss.
    """

    parameters: npt.NDArray[np.float64]
    matrices: npt.NDArray[np.float64]
    rhs: npt.NDArray[np.float64]
    weight: float = 1.0

    def __post_init__(self) -> None:
        m, r = self.rhs.shape if self.rhs.ndim == 2 else (-1, -1)
        if self.parameters.shape[0] != m or self.matrices.shape != (m, r, r):
            raise ValueError(
                f"Inconsistent physics loss: parameters {self.parameters.shape}, matrices {self.matrices.shape}, "
                f"rhs {self.rhs.shape}."
            )
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"The physics weight must be positive and finite, got {self.weight}.")


def train_network(
    parameters: npt.NDArray[np.float64],
    coefficients: npt.NDArray[np.float64],
    lower: npt.ArrayLike,
    upper: npt.ArrayLike,
    *,
    options: TrainingOptions,
    comm: MPI.Comm,
    physics: PhysicsLoss | None = None,
) -> tuple[CoefficientNetwork, list[TrainingHistory]]:
    """Train the network(s) from parameters to coefficients and share them with every rank (collective).

    A single network trains on rank 0; ensemble members are spread over the ranks. Weights travel as NumPy
    arrays.

    Args:
        parameters: Parameter points ``(n, p)``, the same on every rank.
        coefficients: Target coefficients ``(n, r)``, the same on every rank.
        lower: Lower parameter bounds, ``(p,)``; the inputs are scaled from the bounds.
        upper: Upper parameter bounds, ``(p,)``.
        options: Training options.
        comm: Communicator.
        physics: A physics term added to the training loss (physics-reinforced training); the validation loss
            stays the data loss.

    Returns:
        The trained network (on every rank) and the training history of each member.
    """
    if parameters.shape[0] != coefficients.shape[0]:
        raise ValueError(f"{parameters.shape[0]} parameter points but {coefficients.shape[0]} coefficient vectors.")
    if physics is not None and (
        physics.parameters.shape[1] != parameters.shape[1] or physics.rhs.shape[1] != coefficients.shape[1]
    ):
        raise ValueError(
            f"The physics loss has {physics.parameters.shape[1]} parameters and {physics.rhs.shape[1]} "
            f"coefficients, the data {parameters.shape[1]} and {coefficients.shape[1]}."
        )
    n_samples = parameters.shape[0]
    n_val = round(options.validation_fraction * n_samples)
    if options.validation_fraction > 0 and (n_val < 1 or n_samples - n_val < 1):
        raise ValueError(
            f"validation_fraction={options.validation_fraction} leaves no training or validation sample "
            f"out of {n_samples}."
        )
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if options.input_transform == "log":
        if np.any(lo <= 0):
            raise ValueError("input_transform='log' needs positive lower bounds for every parameter.")
        lo, hi = np.log(lo), np.log(hi)
    input_scaler = AffineScaler.from_bounds(lo, hi)
    output_scaler = AffineScaler.standardize(coefficients)
    x = _scale_inputs(parameters, options.input_transform, input_scaler)
    show = options.progress and comm.rank == 0
    scaled_physics = None
    if physics is not None:
        x_physics = _scale_inputs(physics.parameters, options.input_transform, input_scaler)
        scaled_physics = PhysicsLoss(x_physics, physics.matrices, physics.rhs, physics.weight)

    def member(m: int) -> Callable[[], tuple[dict[str, npt.NDArray[np.float64]], TrainingHistory]]:
        return lambda: _train(
            x, coefficients, output_scaler, options=options, seed=options.seed + m, show_progress=show,
            physics=scaled_physics,
        )  # fmt: skip

    results = run_distributed(comm, [member(m) for m in range(options.n_networks)])
    models = []
    for weights, _ in results:
        model = _new_model(parameters.shape[1], coefficients.shape[1], options)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        models.append(model)
    network = CoefficientNetwork(models, input_scaler, output_scaler, input_transform=options.input_transform)
    return network, [history for _, history in results]


def _new_model(n_in: int, n_out: int, options: TrainingOptions) -> MLP:
    from fem_ml._mlp import MLP

    model = MLP(n_in, n_out, hidden_layers=options.hidden_layers, activation=options.activation)
    return model.to(getattr(torch, options.dtype))


class _EarlyStopping:
    """Records the losses and keeps the best weights seen so far, with their monitored loss.

    The monitored loss is the validation loss, or the training loss without a validation split (then every step
    counts as an improvement and the last weights are kept). The best weights live in one preallocated flat
    buffer, overwritten only when the monitored loss improves; :meth:`restore` copies them back into the model.

    Args:
        model: The model being trained.
        history: Receives the losses.
        validation: The validation loss of the current weights, or None without a validation split.
        patience: Steps without improvement after which :attr:`exhausted` becomes true (with validation only).
    """

    def __init__(self, model: MLP, history: TrainingHistory, validation: Callable[[], float] | None, *, patience: int):
        self.parameters = list(model.parameters())
        self.history = history
        self.validation = validation
        self.patience = patience
        self.loss = math.inf
        self.index = -1
        self.since_best = 0
        with torch.no_grad():
            self.best = torch.cat([p.detach().reshape(-1) for p in self.parameters])
        self._views = list(torch.split(self.best, [p.numel() for p in self.parameters]))

    def record(self, train_loss: float, *, steps: int = 1) -> bool:
        """Record one point of the loss curves that stands for ``steps`` optimizer steps; True on improvement."""
        self.history.train_loss.append(train_loss)
        monitored = train_loss
        if self.validation is not None:
            monitored = self.validation()
            self.history.validation_loss.append(monitored)
        if self.validation is not None and not monitored < self.loss:
            self.since_best += steps
            return False
        self.loss, self.index, self.since_best = monitored, len(self.history.train_loss) - 1, 0
        with torch.no_grad():
            for view, p in zip(self._views, self.parameters, strict=True):
                view.copy_(p.detach().reshape(-1))
        return True

    @property
    def exhausted(self) -> bool:
        """True when the validation loss has not improved for more than ``patience`` steps."""
        return self.validation is not None and self.since_best > self.patience

    def restore(self) -> None:
        """Copy the best weights back into the model."""
        with torch.no_grad():
            for view, p in zip(self._views, self.parameters, strict=True):
                p.copy_(view.view_as(p))


@dataclass(frozen=True)
class _TrainingData:
    """The tensors of one training run and its loss functions (the physics term joins the training loss only)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    data_loss: Callable[[MLP, torch.Tensor, torch.Tensor], torch.Tensor]
    physics_loss: Callable[[MLP], torch.Tensor] | None

    def train_loss(self, model: MLP, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch."""
        loss = self.data_loss(model, xb, yb)
        return loss if self.physics_loss is None else loss + self.physics_loss(model)

    def full_train_loss(self, model: MLP) -> torch.Tensor:
        """The training loss of the whole training set."""
        return self.train_loss(model, self.x_train, self.y_train)


def _train(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    output_scaler: AffineScaler,
    *,
    options: TrainingOptions,
    seed: int,
    show_progress: bool,
    physics: PhysicsLoss | None = None,
) -> tuple[dict[str, npt.NDArray[np.float64]], TrainingHistory]:
    """The training run of one member: Adam with early stopping, then an L-BFGS polish; returns the best weights.

    ``physics``, if given, holds scaled inputs; its term joins the training loss, not the validation loss.
    """
    start = time.perf_counter()
    device = resolve_device(options.device)
    dtype = getattr(torch, options.dtype)
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    permutation = rng.permutation(n)
    n_val = round(options.validation_fraction * n)
    val_idx, train_idx = np.sort(permutation[:n_val]), np.sort(permutation[n_val:])

    def tensor(a: npt.NDArray[np.float64]) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dtype, device=device)

    x_val, y_val = tensor(x[val_idx]), tensor(y[val_idx])
    data_loss = _data_loss(tensor(output_scaler.shift), tensor(output_scaler.scale), options.loss, y)
    physics_loss = None if physics is None else _physics_loss(physics, output_scaler, tensor)
    data = _TrainingData(tensor(x[train_idx]), tensor(y[train_idx]), data_loss, physics_loss)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = _new_model(x.shape[1], y.shape[1], options).to(device=device)

    history = TrainingHistory(train_indices=train_idx, validation_indices=val_idx, device=str(device))

    def validation() -> float:
        with torch.no_grad():
            return float(data_loss(model, x_val, y_val))

    stopping = _EarlyStopping(model, history, validation if n_val > 0 else None, patience=options.patience)
    total = options.adam_epochs + options.lbfgs_iterations
    bar = Progress(total, f"training (seed {seed})", enabled=show_progress)
    _adam(model, data, stopping, options, torch.Generator().manual_seed(seed), bar)
    stopping.restore()
    if options.lbfgs_iterations > 0:
        _lbfgs(model, data, stopping, options.lbfgs_iterations, bar)
        stopping.restore()
    bar.update(total, f"best {'validation' if n_val > 0 else 'training'} loss {stopping.loss:.3e}")

    history.best_index = stopping.index
    history.time_s = time.perf_counter() - start
    logger.info(
        "Training: %d Adam epochs, %d L-BFGS iterations, best validation loss %.3e, %.1f s",
        history.n_adam_epochs,
        history.n_lbfgs_iterations,
        history.best_validation_loss,
        history.time_s,
    )
    weights = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    return weights, history


def _data_loss(
    shift: torch.Tensor, scale: torch.Tensor, kind: Literal["relative", "mse"], y: npt.NDArray[np.float64]
) -> Callable[[MLP, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The data loss on unscaled coefficients: mean squared relative error, or squared error over the data's."""
    mean_sq = float(np.mean(np.sum(y**2, axis=1)))

    def loss(model: MLP, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        pred = model(xb) * scale + shift
        sq_err = torch.sum((pred - yb) ** 2, dim=1)
        if kind == "relative":
            return torch.mean(sq_err / torch.clamp(torch.sum(yb**2, dim=1), min=1e-300))
        return torch.mean(sq_err) / mean_sq

    return loss


def _physics_loss(
    physics: PhysicsLoss, output_scaler: AffineScaler, tensor: Callable[[npt.NDArray[np.float64]], torch.Tensor]
) -> Callable[[MLP], torch.Tensor]:
    """The physics term of :class:`PhysicsLoss` (with scaled inputs) as a function of the model."""
    x_phys, A_phys, f_phys = tensor(physics.parameters), tensor(physics.matrices), tensor(physics.rhs)
    shift, scale = tensor(output_scaler.shift), tensor(output_scaler.scale)
    f_sq = torch.clamp(torch.sum(f_phys**2, dim=1), min=1e-300)
    weight = physics.weight

    def loss(model: MLP) -> torch.Tensor:
        c = model(x_phys) * scale + shift
        residual = f_phys - torch.einsum("mij,mj->mi", A_phys, c)
        return weight * torch.mean(torch.sum(residual**2, dim=1) / f_sq)

    return loss


def _adam(
    model: MLP,
    data: _TrainingData,
    stopping: _EarlyStopping,
    options: TrainingOptions,
    generator: torch.Generator,
    bar: Progress,
) -> None:
    """Adam with a geometrically decaying learning rate, by mini-batches, until early stopping."""
    n_train = data.x_train.shape[0]
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    gamma = options.final_lr_ratio ** (1.0 / max(options.adam_epochs, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    batch = options.batch_size or n_train
    report_every = max((options.adam_epochs + options.lbfgs_iterations) // 100, 1)
    device = data.x_train.device
    for epoch in range(options.adam_epochs):
        model.train()
        order = torch.randperm(n_train, generator=generator).to(device) if batch < n_train else None
        epoch_loss = 0.0
        for b in range(0, n_train, batch):
            idx = order[b : b + batch] if order is not None else slice(None)
            optimizer.zero_grad()
            loss = data.train_loss(model, data.x_train[idx], data.y_train[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            epoch_loss += float(loss.detach()) * (len(data.x_train[idx]) / n_train)
        scheduler.step()
        stopping.history.n_adam_epochs = epoch + 1
        stopping.record(epoch_loss)
        if (epoch + 1) % report_every == 0:
            bar.update(epoch + 1, f"adam loss {epoch_loss:.3e}")
        if stopping.exhausted:
            logger.info("Adam stopped early after %d epochs", epoch + 1)
            break


def _lbfgs(model: MLP, data: _TrainingData, stopping: _EarlyStopping, iterations: int, bar: Progress) -> None:
    """L-BFGS (strong Wolfe) on the full training set, in chunks of 10 iterations, until early stopping.

    The iteration count comes from the optimizer's public state (``state[parameter]["n_iter"]``); the run stops
    when a chunk makes no iteration, when the loss is not finite, or when the validation loss stops improving.
    """
    chunk = 10
    lbfgs = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=chunk,
        max_eval=chunk * 5,
        history_size=100,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
    )
    first = lbfgs.param_groups[0]["params"][0]  # the optimizer keeps its counters in this parameter's state

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        value = data.full_train_loss(model)
        value.backward()  # type: ignore[no-untyped-call]
        return value

    history = stopping.history
    stopping.since_best = 0
    done = 0
    while done < iterations:
        model.train()
        lbfgs.step(closure)  # type: ignore[no-untyped-call]
        count = int(lbfgs.state[first].get("n_iter", done + chunk))
        stalled = count == history.n_lbfgs_iterations
        done = history.n_lbfgs_iterations = min(count, iterations)
        with torch.no_grad():
            train_loss = float(data.full_train_loss(model))
        if not math.isfinite(train_loss):
            break
        stopping.record(train_loss, steps=chunk)
        bar.update(history.n_adam_epochs + done, f"l-bfgs loss {train_loss:.3e}")
        if stalled or stopping.exhausted:
            break
