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
Each ensemble member trains on its own rank (round-robin) with its weights in one flat vector: Adam, then a
Levenberg-Marquardt or L-BFGS polish on that vector; the weights are broadcast to all ranks. Training runs on one
of two backends (:attr:`TrainingOptions.backend`): NumPy (:mod:`fem_ml._flatnet`, the default for a float64 fit
of the data on the CPU, which does not import torch) or torch (autograd: a physics term, float32, a GPU).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import math
import numbers
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

from fem_ml._formats import NORM_MODEL_BOUND
from fem_ml._lazy import lazy_module
from fem_ml._mpi import run_distributed
from fem_ml._progress import Progress
from fem_ml._serialize import dataclass_kwargs, dataclass_tree, prefixed, subtree
from fem_ml._stacked import ACTIVATIONS as NUMPY_ACTIVATIONS
from fem_ml._stacked import StackedMLP

if TYPE_CHECKING:
    import torch

    from fem_ml._flatnet import FlatNetwork
    from fem_ml._mlp import MLP
else:
    torch = lazy_module("torch")  # imported at its first use: loading and querying a surrogate do not need it

__all__ = [
    "LM_MAX_RESIDUALS",
    "LM_PATIENCE",
    "LOG_RATIO",
    "MLP",
    "NUMPY_LBFGS_HISTORY",
    "AffineScaler",
    "CoefficientNetwork",
    "NormModel",
    "PhysicsLoss",
    "TrainingHistory",
    "TrainingOptions",
    "automatic_fields",
    "resolve_device",
    "resolve_options",
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


@dataclass(frozen=True, eq=False)
class NormModel:
    r"""A log-linear model of the size of the coefficients: :math:`\|c(\mu)\| \approx \exp(w_0 + w^\top x)`.

    :math:`x` are the network's scaled inputs (in :math:`[-1, 1]` over the bounds, after the input transform). The
    network learns :math:`c(\mu) / \exp(w_0 + w^\top x)`, whose size varies far less than that of :math:`c`
    where the solution scales with the parameters over decades (conductivities, moduli, loads); the prediction is
    the network's output times the factor. The weights are the least-squares fit of :math:`\log \|c_i\|` on
    :math:`(1, x_i)`. With the relative loss, dividing a sample by a positive factor leaves its relative error
    unchanged, so the loss is the same function of the prediction.

    Attributes:
        intercept: :math:`w_0`.
        slopes: :math:`w`, ``(p,)``.
    """

    intercept: float
    slopes: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        slopes = np.asarray(self.slopes, dtype=np.float64).reshape(-1)
        object.__setattr__(self, "slopes", slopes)
        object.__setattr__(self, "intercept", float(self.intercept))
        size = abs(self.intercept) + float(np.sum(np.abs(slopes)))
        if not math.isfinite(size) or size > NORM_MODEL_BOUND:
            raise ValueError(f"NormModel weights must be finite with |w_0| + sum |w_j| <= {NORM_MODEL_BOUND}.")

    @classmethod
    def fit(cls, inputs: npt.NDArray[np.float64], coefficients: npt.NDArray[np.float64]) -> NormModel:
        """The least-squares model of the rows' norms ``(n,)`` (all positive) on scaled inputs ``(n, p)``."""
        norms = np.linalg.norm(coefficients, axis=1)
        if not np.all(norms > 0):
            raise ValueError("A norm model needs coefficients of positive norm in every sample.")
        design = np.hstack([np.ones((inputs.shape[0], 1)), inputs])
        weights = np.linalg.lstsq(design, np.log(norms), rcond=None)[0]
        return cls(float(weights[0]), weights[1:])

    def __call__(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        r"""The factor :math:`\exp(w_0 + w^\top x)` at scaled inputs ``(n, p)``, shape ``(n,)``.

        Inside the box the exponent is within :data:`~fem_ml._formats.NORM_MODEL_BOUND`; outside (an extrapolating
        query) it is clipped to that bound, so that the factor stays finite.
        """
        return np.exp(np.clip(self.intercept + inputs @ self.slopes, -NORM_MODEL_BOUND, NORM_MODEL_BOUND))

    def to_tree(self) -> dict[str, Any]:
        """The model as file entries."""
        return {"intercept": self.intercept, "slopes": self.slopes.copy()}

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> NormModel:
        """The model stored by :meth:`to_tree` (validated by the constructor)."""
        return cls(float(tree["intercept"]), np.asarray(tree["slopes"], dtype=np.float64))


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

    The fields that default to ``"auto"`` are chosen from the data by :func:`resolve_options` (the bounds, the
    number of samples and of outputs); every one of them can be set. The resolved options are recorded in each
    member's :attr:`TrainingHistory.options`, saved with the surrogate and shown by ``python -m fem_ml info``.

    Attributes:
        hidden_layers: Widths of the hidden layers (``"auto"``: from the samples and outputs).
        activation: Activation between layers. SiLU (:math:`x / (1 + e^{-x})`) by default: with the default options
            on the NumPy backend (two seeds each, four on the thermal-block demo's data), its test errors were
            those of GELU times 0.77 on the demo's data, 0.86 on the 3x3 thermal block, 0.94 on the wide-range
            block and 1.05 on the reaction-diffusion problem of ``benchmarks/default_training.py``; it also costs
            less to evaluate in NumPy.
        input_transform: ``"linear"`` scales each parameter affinely from its bounds to :math:`[-1, 1]`;
            ``"log"`` does the same with :math:`\log \mu` and the log-bounds (positive parameters only; suited to
            coefficients such as conductivities or moduli that span orders of magnitude); ``"auto"``: ``"log"``
            when the bounds are positive and span a decade or more.
        n_networks: Size of the ensemble (``"auto"``: 2 up to 1000 samples, else 1). Member ``m`` is seeded with
            ``seed + m`` (its own initialization and validation split); the prediction is the mean of the members.
            Members train in parallel over the ranks.
        loss: ``"relative"`` (mean squared relative coefficient error) or ``"mse"`` (squared error relative to
            the mean squared norm of the data).
        output_norm: ``"log-linear"`` divides the coefficients by a log-linear model of their norm
            (:class:`NormModel`) before the network learns them, and multiplies the network's output back;
            ``"none"`` learns the coefficients themselves. ``"auto"``: ``"log-linear"`` with the relative loss, no
            physics term and no zero coefficient vector in the data passed (decided on that data: a
            cross-validation fold without the zero vectors may choose differently), else ``"none"``, and
            ``"none"`` also when the fitted weights exceed :data:`~fem_ml._formats.NORM_MODEL_BOUND`.
        adam_epochs: Maximum number of Adam epochs (``"auto"``: 2000 before the Levenberg-Marquardt polish, 3000
            before L-BFGS).
        learning_rate: Initial Adam learning rate; it decays geometrically to ``learning_rate * final_lr_ratio``
            (``"auto"``: 1e-2 before the Levenberg-Marquardt polish, 3e-3 before L-BFGS).
        final_lr_ratio: Learning-rate ratio reached at the last Adam epoch.
        batch_size: Mini-batch size for Adam; None for full batches.
        weight_decay: L2 weight decay of Adam.
        polish: The second-order polish after Adam: ``"levenberg-marquardt"`` (Gauss-Newton steps on the residuals
            in float64, a few seconds; see :mod:`fem_ml._levenberg`) or ``"l-bfgs"`` (L-BFGS with a strong Wolfe
            line search: :class:`fem_ml._flatnet.LBFGS` on the NumPy backend, torch's on torch's); ``"auto"``: the
            polish whose iteration count is set, else Levenberg-Marquardt when the training set has at most
            :data:`LM_MAX_RESIDUALS` residuals (samples times outputs), there is no physics term and ``dtype`` is
            float64, else L-BFGS.
        lbfgs_iterations: Maximum number of L-BFGS iterations of the ``"l-bfgs"`` polish (0 to skip it;
            ``"auto"``: 1000).
        lm_iterations: Maximum number of Levenberg-Marquardt iterations of the ``"levenberg-marquardt"`` polish (0
            to skip it; ``"auto"``: 50). It stops after more than :data:`LM_PATIENCE` iterations without improvement
            of the validation loss, or when a member's loss cannot decrease (a minimum, to rounding). Only the
            chosen polish's iteration count may be set.
        validation_fraction: Fraction of the samples held out for validation and early stopping (0 disables
            both: the last weights are kept).
        patience: Adam epochs (and L-BFGS iterations) without improvement of the validation loss before stopping
            (``"auto"``: 1000).
        seed: Seed of the weight initialization, the validation split and the batch order (of member 0).
        dtype: ``"float64"`` or ``"float32"``: the precision of the trained network and of the L-BFGS polish.
        adam_dtype: The precision of the Adam phase (None: ``dtype``); ``"float32"`` runs it about twice as fast,
            and the polish then continues in ``dtype`` from the best Adam weights (``"auto"``: ``dtype``, see
            :func:`resolve_options`).
        backend: What trains the network: ``"numpy"`` (:mod:`fem_ml._flatnet`: the float64 pass and Adam in NumPy,
            without torch's per-operation overhead or its import; data loss only, on the CPU) or ``"torch"``
            (autograd, any ``dtype`` and ``device``, a physics term); ``"auto"``: ``"numpy"`` when it can train
            these options (no physics term, float64 throughout, ``device`` ``"auto"`` or ``"cpu"``), else
            ``"torch"``. The two backends draw the initial weights and
            the batch order from different generators, so they train different (equally good) networks.
        device: ``"auto"`` (CUDA where present), ``"cpu"`` or ``"cuda[:i]"``; used by the torch backend only: with
            ``backend="auto"``, a float64 fit of the data trains on the NumPy backend, on the CPU, even where CUDA
            is present (these networks are too small for a GPU to pay; set ``device="cuda"`` or
            ``backend="torch"`` to train on one).
        threads: torch (or NumPy's BLAS) threads while training; None for the usable cores divided by the ranks
            on the node (so that ranks never oversubscribe it). The previous thread count is restored after
            training. The default depends on the rank count; for networks identical to the last digit on any rank
            count, fix it (or ``OMP_NUM_THREADS``): products need not round alike on different thread counts.
        progress: Show a progress bar on rank 0.
    """

    hidden_layers: tuple[int, ...] | Literal["auto"] = "auto"
    activation: Activation = "silu"
    input_transform: Literal["linear", "log", "auto"] = "auto"
    n_networks: int | Literal["auto"] = "auto"
    loss: Literal["relative", "mse"] = "relative"
    output_norm: Literal["log-linear", "none", "auto"] = "auto"
    adam_epochs: int | Literal["auto"] = "auto"
    learning_rate: float | Literal["auto"] = "auto"
    final_lr_ratio: float = 1e-2
    batch_size: int | None = None
    weight_decay: float = 0.0
    polish: Literal["levenberg-marquardt", "l-bfgs", "auto"] = "auto"
    lbfgs_iterations: int | Literal["auto"] = "auto"
    lm_iterations: int | Literal["auto"] = "auto"
    validation_fraction: float = 0.2
    patience: int | Literal["auto"] = "auto"
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float64"
    adam_dtype: Literal["float32", "float64", "auto"] | None = "auto"
    backend: Literal["numpy", "torch", "auto"] = "auto"
    device: str = "auto"
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.hidden_layers != "auto":
            hidden = tuple(self.hidden_layers)
            if not hidden or any(not isinstance(w, int | np.integer) or w < 1 for w in hidden):
                raise ValueError(f"hidden_layers must be positive ints or 'auto', got {self.hidden_layers!r}.")
            object.__setattr__(self, "hidden_layers", tuple(int(w) for w in hidden))
        if self.activation not in NUMPY_ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; choose one of {sorted(NUMPY_ACTIVATIONS)}.")
        if self.input_transform not in ("linear", "log", "auto"):
            raise ValueError(f"Unknown input_transform {self.input_transform!r}; choose 'linear', 'log' or 'auto'.")
        if self.polish not in ("levenberg-marquardt", "l-bfgs", "auto"):
            raise ValueError(f"Unknown polish {self.polish!r}; choose 'levenberg-marquardt', 'l-bfgs' or 'auto'.")
        for name in ("n_networks", "adam_epochs", "lbfgs_iterations", "lm_iterations", "patience"):
            value = getattr(self, name)
            if value != "auto" and (not isinstance(value, int | np.integer) or value < (name == "n_networks")):
                low = 1 if name == "n_networks" else 0
                raise ValueError(f"{name} must be an int >= {low} or 'auto', got {value!r}.")
        if self.backend not in ("numpy", "torch", "auto"):
            raise ValueError(f"Unknown backend {self.backend!r}; choose 'numpy', 'torch' or 'auto'.")
        if self.backend == "numpy":
            float32 = [name for name in ("dtype", "adam_dtype") if getattr(self, name) == "float32"]
            if float32 or self.device not in ("auto", "cpu"):
                what = f"{float32[0]}='float32'" if float32 else f"device={self.device!r}"
                raise ValueError(f"backend='numpy' trains in float64 on the CPU, not with {what}: use backend='torch'.")
        if self.loss not in ("relative", "mse"):
            raise ValueError(f"Unknown loss {self.loss!r}; choose 'relative' or 'mse'.")
        if self.output_norm not in ("log-linear", "none", "auto"):
            raise ValueError(f"Unknown output_norm {self.output_norm!r}; choose 'log-linear', 'none' or 'auto'.")
        for name in ("dtype", "adam_dtype"):
            value = getattr(self, name)
            if value not in _DTYPES and not (name == "adam_dtype" and value in (None, "auto")):
                raise ValueError(f"Unknown {name} {value!r}; choose one of {sorted(_DTYPES)}.")
        rate = self.learning_rate
        if rate != "auto" and not (
            isinstance(rate, numbers.Real) and not isinstance(rate, bool) and rate > 0 and math.isfinite(rate)
        ):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if not 0 < self.final_lr_ratio <= 1:
            raise ValueError(f"final_lr_ratio must be in (0, 1], got {self.final_lr_ratio}.")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}.")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}.")
        # A count of 0 for the polish that does not run ignores nothing (the resolved options hold one).
        counts = _polish_counts(self)
        active = [polish for polish, count in counts.items() if count not in ("auto", 0)]
        if len(active) == 2:
            raise ValueError("lbfgs_iterations and lm_iterations are both set, but one polish runs: set one of them.")
        for name, polish in (("lbfgs_iterations", "l-bfgs"), ("lm_iterations", "levenberg-marquardt")):
            if polish in active and self.polish not in ("auto", polish):
                raise ValueError(f"{name} is set but polish={self.polish!r}: it would be ignored.")
        chosen = _given_polish(self)
        if self.adam_epochs == 0 and chosen is not None and counts[chosen] == 0:
            raise ValueError("adam_epochs and the polish's iterations are all 0: nothing would be trained.")


def _polish_counts(options: TrainingOptions) -> dict[Literal["levenberg-marquardt", "l-bfgs"], int | Literal["auto"]]:
    """The iteration count of each polish, by its name."""
    return {"l-bfgs": options.lbfgs_iterations, "levenberg-marquardt": options.lm_iterations}


def _given_polish(options: TrainingOptions) -> Literal["levenberg-marquardt", "l-bfgs"] | None:
    """The polish the options name: ``polish``, else the one whose iteration count is set (non-zero first)."""
    if options.polish != "auto":
        return options.polish
    counts = _polish_counts(options)
    for polish, count in counts.items():
        if count not in ("auto", 0):
            return polish
    return next((polish for polish, count in counts.items() if count == 0), None)


#: Bound ratio ``upper / lower`` from which ``input_transform="auto"`` scales :math:`\log \mu` (one decade).
LOG_RATIO = 10.0

#: The most residuals (training samples times outputs) for which ``polish="auto"`` picks Levenberg-Marquardt, whose
#: step assembles and factors a matrix of this order: measured here on one core, a step of a 3 x 128 network takes
#: 0.1 to 0.2 s with 1040 residuals, 0.9 s with 2080, 2.8 s with 3072 and 7.5 s with 4560.
LM_MAX_RESIDUALS = 2048

#: Pairs kept by the NumPy backend's L-BFGS polish, as many as torch's. Its two-loop recursion reads every pair twice
#: per iteration, so with tens of thousands of weights an iteration costs about as much as the pairs' memory traffic
#: (about 15 ms with 100 pairs, 4 ms with 20). 20 pairs gave the same test errors on the reaction-diffusion and 3x3
#: problems of ``benchmarks/default_training.py``, but the surrogates trained from 1-rank and 2-rank snapshots in
#: ``tests/test_surrogate.py`` then differed by 7e-8 (3e-7 with 50 pairs) where 100 pairs keep them within 2e-9.
NUMPY_LBFGS_HISTORY = 100

#: Levenberg-Marquardt iterations without improvement of the validation loss after which the polish stops (its steps
#: are large: on the benchmarks the validation loss was lowest after 5 to 15 iterations, and rose after).
LM_PATIENCE = 5


def resolve_options(
    options: TrainingOptions,
    *,
    n_samples: int,
    n_outputs: int,
    lower: npt.ArrayLike,
    upper: npt.ArrayLike,
    physics: bool = False,
    zero_norms: bool = False,
) -> TrainingOptions:
    r"""The options with every ``"auto"`` value replaced by the choice for this data (local, deterministic).

    The rules, from the number of samples :math:`n`, the number of outputs (modes) :math:`r` and the bounds:

    * ``input_transform``: ``"log"`` when every lower bound is positive and some ratio ``upper / lower`` is at
      least :data:`LOG_RATIO` (a decade: diffusion-like solutions depend smoothly on :math:`\log \mu` over
      decades), else ``"linear"``.
    * ``hidden_layers``: three layers of width :math:`w = 32` for :math:`n < 40`, 64 for :math:`n < 80`, 128
      beyond, and at least the power of two above :math:`2r` (at most 256). On the benchmarks of 100 samples,
      width 128 was the more accurate on each of three problems (up to 1.4x); with fewer samples the smaller
      network is the safer.
    * ``n_networks``: 2 for :math:`n \le 1000` (averaging two members trained on different validation splits
      removes part of the variance that dominates with little data; on two or more ranks the members train in
      parallel), else 1.
    * ``polish``: the one whose iteration count is set; else ``"levenberg-marquardt"`` when the training samples
      times :math:`r` are at most :data:`LM_MAX_RESIDUALS`, there is no physics term and ``dtype`` is float64,
      else ``"l-bfgs"``.
    * ``adam_epochs`` and ``learning_rate``: 2000 and 1e-2 before the Levenberg-Marquardt polish, 3000 and 3e-3
      before L-BFGS or without a polish. Before the Levenberg-Marquardt polish, the shorter and faster Adam phase
      was more accurate on three of four problems (the thermal-block demo's data, mean of four seeds; the
      wide-range block of ``benchmarks/regressors.py`` and of ``benchmarks/default_training.py``) and 1 % less on
      the fourth (the 2x2 block of ``benchmarks/regressors.py``).
    * ``lbfgs_iterations``: 1000; ``lm_iterations``: 50 (0 for the polish that does not run); ``patience``: 1000.
      Training stops earlier on a plateau of the validation loss (no improvement for more than ``patience`` epochs
      or L-BFGS iterations, or more than :data:`LM_PATIENCE` Levenberg-Marquardt iterations; a shorter patience
      stopped the L-BFGS polish on the validation noise of small data sets, at a higher error).
    * ``output_norm``: ``"log-linear"`` (:class:`NormModel`) with the relative loss, without a physics term and
      when no sample's coefficients are zero, else ``"none"``. With the default options on the NumPy backend
      (one member, seeds 0 and 1, four on the wide-range block), the test errors were those without it times 0.63
      on the reaction-diffusion problem, 0.82 on the 3x3 block and 0.62 on the wide-range block of
      ``benchmarks/default_training.py``, and 0.71 on the thermal-block demo's data.
    * ``backend``: ``"numpy"`` when it can train the resolved options (no physics term, float64, ``device``
      ``"auto"`` or ``"cpu"``), else ``"torch"``.
    * ``adam_dtype``: ``dtype``. A float32 Adam phase is about twice as fast and, after the float64 polish, as
      accurate, but float32 rounding turns the last-digit differences between data assembled on different rank
      counts into differences of about 1e-7 in the trained network; in float64 they stay below 1e-8.

    (Over 80 lines because the rules are documented here, next to the code that applies them.)

    Args:
        options: Options, possibly with ``"auto"`` values.
        n_samples: Number of training samples (before the validation split).
        n_outputs: Number of network outputs.
        lower: Lower parameter bounds.
        upper: Upper parameter bounds.
        physics: Whether the training loss has a physics term (:class:`PhysicsLoss`).
        zero_norms: Whether some sample's coefficient vector is zero (no :class:`NormModel` then).

    Returns:
        Options without ``"auto"``: the same object when nothing was automatic.
    """
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    choices: dict[str, Any] = {}
    if options.input_transform == "auto":
        wide = bool(np.all(lo > 0) and np.max(hi / np.where(lo > 0, lo, 1.0)) >= LOG_RATIO)
        choices["input_transform"] = "log" if wide else "linear"
    if options.hidden_layers == "auto":
        width = 32 if n_samples < 40 else 64 if n_samples < 80 else 128
        width = max(width, min(256, 1 << math.ceil(math.log2(max(2 * n_outputs, 1)))))
        choices["hidden_layers"] = (width,) * 3
    if options.n_networks == "auto":
        choices["n_networks"] = 2 if n_samples <= 1000 else 1
    given = _given_polish(options)
    if options.polish == "auto" and given is not None:
        choices["polish"] = given
    elif options.polish == "auto":
        n_train = n_samples - round(options.validation_fraction * n_samples)
        small = n_train * n_outputs <= LM_MAX_RESIDUALS
        lm = small and not physics and options.dtype == "float64"
        choices["polish"] = "levenberg-marquardt" if lm else "l-bfgs"
    polish = choices.get("polish", options.polish)
    if polish == "levenberg-marquardt" and physics:
        raise ValueError("The Levenberg-Marquardt polish fits the data only: with a physics term, use polish='l-bfgs'.")
    lm = polish == "levenberg-marquardt" and options.lm_iterations != 0  # Adam tuned for the polish that runs
    fixed = {"adam_epochs": 2000 if lm else 3000, "learning_rate": 1e-2 if lm else 3e-3}
    fixed |= {"lbfgs_iterations": 1000, "lm_iterations": 50, "patience": 1000}
    choices |= {name: value for name, value in fixed.items() if getattr(options, name) == "auto"}
    unused = "lm_iterations" if polish == "l-bfgs" else "lbfgs_iterations"
    if getattr(options, unused) == "auto":
        choices[unused] = 0  # the polish that does not run
    if options.adam_dtype == "auto":
        choices["adam_dtype"] = options.dtype
    if options.output_norm == "log-linear" and (physics or zero_norms or options.loss != "relative"):
        why = "a physics term" if physics else "a zero coefficient vector" if zero_norms else "loss='mse'"
        raise ValueError(f"output_norm='log-linear' cannot be used with {why}: use output_norm='none'.")
    if options.output_norm == "auto":
        log_linear = options.loss == "relative" and not physics and not zero_norms
        choices["output_norm"] = "log-linear" if log_linear else "none"
    if options.backend == "numpy" and physics:
        raise ValueError("backend='numpy' fits the data only: with a physics term, use backend='torch'.")
    if options.backend == "auto":
        float64 = options.dtype == "float64" and choices.get("adam_dtype", options.adam_dtype) in ("float64", None)
        numpy = float64 and not physics and options.device in ("auto", "cpu")
        choices["backend"] = "numpy" if numpy else "torch"
    return dataclasses.replace(options, **choices) if choices else options


def automatic_fields(options: TrainingOptions) -> list[str]:
    """The names of the fields of ``options`` whose value is ``"auto"`` (resolved by :func:`resolve_options`)."""
    return [f.name for f in dataclasses.fields(options) if getattr(options, f.name) == "auto" and f.name != "device"]


@dataclass
class TrainingHistory:
    """What happened during training.

    Attributes:
        train_loss: Training loss after each Adam epoch, then after each chunk of 10 L-BFGS iterations or each
            Levenberg-Marquardt iteration.
        validation_loss: Validation loss at the same points (empty without a validation split).
        n_adam_epochs: Adam epochs run (before early stopping).
        n_lbfgs_iterations: L-BFGS iterations run.
        n_lm_iterations: Levenberg-Marquardt iterations run.
        best_index: Index into the loss lists of the restored weights.
        train_indices: Samples used for training.
        validation_indices: Samples held out.
        time_s: Training wall-clock seconds.
        device: Device used.
        options: The training options as resolved for the data (JSON: every field of
            :class:`TrainingOptions`, and ``"automatic"``, the fields that were ``"auto"``; see
            :func:`resolve_options`); None when not recorded (files written before it was).
    """

    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    n_adam_epochs: int = 0
    n_lbfgs_iterations: int = 0
    n_lm_iterations: int = 0
    best_index: int = -1
    train_indices: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    validation_indices: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    time_s: float = 0.0
    device: str = "cpu"
    options: str | None = None

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
    member network, averaged over the ensemble and unscaled (and multiplied by the :class:`NormModel`'s factor,
    if there is one). Evaluation runs in NumPy (float64) on weights
    stacked over the ensemble (:class:`~fem_ml._stacked.StackedMLP`): for one parameter point it costs a few
    microseconds, far below a torch call, and agrees with the torch models to rounding (:meth:`torch_forward`
    evaluates in torch).

    Args:
        models: The member networks, all with the same architecture.
        input_scaler: Maps transformed parameters to :math:`[-1, 1]`.
        output_scaler: Maps coefficients to standardized network outputs.
        input_transform: ``"linear"`` or ``"log"``.
        norm_model: The model of the coefficients' size the members' outputs are multiplied by, or None.
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
        norm_model: NormModel | None = None,
    ):
        if not models:
            raise ValueError("CoefficientNetwork needs at least one model.")
        self._models: list[MLP] | None = [m.cpu().eval() for m in models]
        self._stored: dict[str, Any] = {}  # the file entries of a loaded network, until it is built in torch
        self.input_scaler = input_scaler
        self.output_scaler = output_scaler
        self.input_transform = input_transform
        self.norm_model = norm_model
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

        The evaluation runs in NumPy in float64 (no torch call overhead). Batches of at least
        :attr:`torch_batch_threshold` points run through the torch models in their own dtype, whose vectorized
        activations are several times faster there, but only once torch is imported: a query never imports it
        (about 3 s). For float64 networks both paths agree to rounding (float32 networks: to about 1e-7). torch
        uses its own thread pool; under ``mpirun`` set ``OMP_NUM_THREADS`` (or ``torch.set_num_threads``) so the
        ranks do not oversubscribe the cores.
        """
        return self.from_inputs(self.scale_inputs(parameters))

    def from_inputs(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """:meth:`__call__` on inputs already scaled by :meth:`scale_inputs`, shape ``(n, p)``."""
        if inputs.shape[0] >= self.torch_batch_threshold and "torch" in sys.modules:
            return self._torch_outputs(inputs)
        h = self._scaled_outputs(inputs)
        return self._unscale(h.mean(axis=0) if h.shape[0] > 1 else h[0], inputs)

    def _unscale(self, outputs: npt.NDArray[np.float64], inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Coefficients ``(..., n, r)`` of scaled outputs at scaled inputs ``(n, p)``: unscaled, times the factor."""
        coefficients = self.output_scaler.inverse(outputs)
        return coefficients if self.norm_model is None else coefficients * self.norm_model(inputs)[:, None]

    def members(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Coefficients of each ensemble member for parameters ``(n, p)``, shape ``(n_networks, n, r)``."""
        inputs = self.scale_inputs(parameters)
        return self._unscale(self._scaled_outputs(inputs), inputs)

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

    def _scaled_outputs(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return self._stacked(inputs)

    def torch_forward(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The same map evaluated in torch, by the stacked pass of large batches in :meth:`__call__`."""
        return self._torch_outputs(self.scale_inputs(parameters))

    def _torch_outputs(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x = torch.from_numpy(np.ascontiguousarray(inputs)).to(self._stacked_torch.weights[0].dtype)
        with torch.inference_mode():
            outputs = self._stacked_torch(x).double().numpy()
        return self._unscale(np.mean(outputs, axis=0), inputs)

    def to_tree(self) -> dict[str, Any]:
        """The networks as file entries: architecture, scalers and each member's weights (``member_m/...``)."""
        if self._models is None:  # built from NumPy weights, and never in torch: the entries it was built from
            return dict(self._stored)
        first = self.models[0]
        members = [{k: t.detach().cpu().numpy().copy() for k, t in model.state_dict().items()} for model in self.models]
        return _network_tree(
            members, hidden_layers=first.hidden_layers, activation=first.activation,
            dtype=str(next(first.parameters()).dtype).removeprefix("torch."), input_transform=self.input_transform,
            input_scaler=self.input_scaler, output_scaler=self.output_scaler, norm_model=self.norm_model,
        )  # fmt: skip

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
        norm = subtree(tree, "norm_model")
        network.norm_model = NormModel.from_tree(norm) if norm else None
        network._stacked = StackedMLP.from_members(members, str(tree["activation"]))
        network._torch_stack = None
        return network


def _network_tree(
    members: list[dict[str, npt.NDArray[Any]]],
    *,
    hidden_layers: tuple[int, ...],
    activation: str,
    dtype: str,
    input_transform: str,
    input_scaler: AffineScaler,
    output_scaler: AffineScaler,
    norm_model: NormModel | None,
) -> dict[str, Any]:
    """The file entries of a network (:meth:`CoefficientNetwork.to_tree`) from its members' ``state_dict``s."""
    first = members[0]
    tree: dict[str, Any] = {
        "hidden_layers": np.asarray(hidden_layers, dtype=np.int64).reshape(-1),
        "n_hidden": len(hidden_layers),
        "activation": activation,
        "input_transform": input_transform,
        "n_in": int(first["layers.0.weight"].shape[1]),
        "n_out": int(first[f"layers.{2 * len(hidden_layers)}.weight"].shape[0]),
        "n_networks": len(members),
        "dtype": dtype,
    }
    tree |= prefixed("input_scaler", input_scaler.to_tree())
    tree |= prefixed("output_scaler", output_scaler.to_tree())
    if norm_model is not None:
        tree |= prefixed("norm_model", norm_model.to_tree())
    for m, state in enumerate(members):
        tree |= {f"member_{m}/{name}": np.asarray(value) for name, value in state.items()}
    return tree


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


def _check_shapes(
    parameters: npt.NDArray[np.float64], coefficients: npt.NDArray[np.float64], physics: PhysicsLoss | None
) -> None:
    """The data and the physics term agree in sizes (a ``ValueError`` otherwise)."""
    if parameters.shape[0] != coefficients.shape[0]:
        raise ValueError(f"{parameters.shape[0]} parameter points but {coefficients.shape[0]} coefficient vectors.")
    if physics is not None and (
        physics.parameters.shape[1] != parameters.shape[1] or physics.rhs.shape[1] != coefficients.shape[1]
    ):
        raise ValueError(
            f"The physics loss has {physics.parameters.shape[1]} parameters and {physics.rhs.shape[1]} "
            f"coefficients, the data {parameters.shape[1]} and {coefficients.shape[1]}."
        )


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

    Member ``m`` trains alone on rank ``m % comm.size`` (the other ranks wait without spinning) and its weights
    travel to every rank as NumPy arrays, so it is the same on any rank count (trained in one batch, members would
    share one L-BFGS over their joint weights, and each would depend on its batch).

    (Over 80 lines: the checks, the scaling and the distribution of the members over the ranks read in order; the
    training itself is in ``_train_numpy`` and ``_train``.)

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
    _check_shapes(parameters, coefficients, physics)
    n_samples = parameters.shape[0]
    automatic = automatic_fields(options)
    options = resolve_options(
        options, n_samples=n_samples, n_outputs=coefficients.shape[1], lower=lower, upper=upper,
        physics=physics is not None, zero_norms=bool(np.any(np.linalg.norm(coefficients, axis=1) == 0)),
    )  # fmt: skip
    plan = _Plan.of(options)
    n_val = round(options.validation_fraction * n_samples)
    if options.validation_fraction > 0 and (n_val < 1 or n_samples - n_val < 1):
        raise ValueError(
            f"validation_fraction={options.validation_fraction} leaves no training or validation sample "
            f"out of {n_samples}."
        )
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if plan.input_transform == "log":
        if np.any(lo <= 0):
            raise ValueError("input_transform='log' needs positive lower bounds for every parameter.")
        lo, hi = np.log(lo), np.log(hi)
    input_scaler = AffineScaler.from_bounds(lo, hi)
    x = _scale_inputs(parameters, plan.input_transform, input_scaler)
    norm_model = None
    if plan.output_norm == "log-linear":
        try:
            norm_model = NormModel.fit(x, coefficients)
        except ValueError:
            if "output_norm" not in automatic:
                raise
            options = dataclasses.replace(options, output_norm="none")  # sizes beyond the bound: none, as chosen
            plan = _Plan.of(options)
    targets = coefficients if norm_model is None else coefficients / norm_model(x)[:, None]
    output_scaler = AffineScaler.standardize(targets)
    show = options.progress and comm.rank == 0
    scaled_physics = None
    if physics is not None:
        x_physics = _scale_inputs(physics.parameters, plan.input_transform, input_scaler)
        scaled_physics = PhysicsLoss(x_physics, physics.matrices, physics.rhs, physics.weight)
    threads = options.threads if options.threads is not None else _default_threads(comm)

    def member_task(m: int) -> Callable[[], tuple[list[dict[str, npt.NDArray[np.float64]]], list[TrainingHistory]]]:
        alone, seeded = dataclasses.replace(plan, n_networks=1), dataclasses.replace(options, seed=options.seed + m)

        def task() -> tuple[list[dict[str, npt.NDArray[np.float64]]], list[TrainingHistory]]:
            if plan.backend == "numpy":
                from threadpoolctl import threadpool_limits

                with threadpool_limits(limits=threads, user_api="blas"):
                    return _train_numpy(x, targets, output_scaler, plan=alone, options=seeded, show_progress=show)
            with _torch_threads(threads):
                return _train(
                    x, targets, output_scaler, plan=alone, options=seeded, show_progress=show,
                    physics=scaled_physics,
                )  # fmt: skip

        return task

    results = run_distributed(comm, [member_task(m) for m in range(plan.n_networks)])
    weights = [w for member_weights, _ in results for w in member_weights]
    histories = [h for _, member_histories in results for h in member_histories]
    record = json.dumps({**dataclasses.asdict(options), "automatic": automatic})
    for history in histories:
        history.options = record
    tree = _network_tree(
        weights, hidden_layers=plan.hidden_layers, activation=options.activation, dtype=options.dtype,
        input_transform=plan.input_transform, input_scaler=input_scaler, output_scaler=output_scaler,
        norm_model=norm_model,
    )  # fmt: skip
    return CoefficientNetwork.from_tree(tree), histories


def _default_threads(comm: MPI.Comm) -> int:
    """The torch threads for training that do not oversubscribe the node: usable cores over ranks on the node.

    The usable cores are this process' CPU affinity (``os.sched_getaffinity``, or ``os.cpu_count``); the ranks on
    the node are the size of ``comm.Split_type(MPI.COMM_TYPE_SHARED)`` (collective). A positive
    ``OMP_NUM_THREADS`` caps the count: whoever set it knows what else runs on the cores.
    """
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_ranks = node.size
    node.Free()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // local_ranks)
    cap = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(cap)) if cap.isdigit() and int(cap) > 0 else threads


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run a block with torch's intra-op thread count set to ``n``, restored afterwards (local)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class _Plan:
    """The options of one training run that may be ``"auto"``, resolved (see :func:`resolve_options`)."""

    hidden_layers: tuple[int, ...]
    input_transform: Literal["linear", "log"]
    n_networks: int
    adam_epochs: int
    learning_rate: float
    polish: Literal["levenberg-marquardt", "l-bfgs"]
    lbfgs_iterations: int
    lm_iterations: int
    patience: int
    output_norm: Literal["log-linear", "none"]
    backend: Literal["numpy", "torch"]
    adam_dtype: Literal["float32", "float64"]

    @classmethod
    def of(cls, options: TrainingOptions) -> _Plan:
        """The plan of resolved options (a ``ValueError`` if one is still ``"auto"``)."""
        values = {f.name: getattr(options, f.name) for f in dataclasses.fields(cls) if f.name != "adam_dtype"}
        if "auto" in values.values() or options.adam_dtype == "auto":
            raise ValueError("Training options must be resolved (resolve_options) before training.")
        return cls(**values, adam_dtype=options.adam_dtype or options.dtype)


def _new_model(n_in: int, n_out: int, plan: _Plan, options: TrainingOptions) -> MLP:
    from fem_ml._mlp import MLP

    model = MLP(n_in, n_out, hidden_layers=plan.hidden_layers, activation=options.activation)
    return model.to(getattr(torch, options.dtype))


class _Stacked:
    """The ensemble's members as one trainable model whose weights are one flat vector.

    Per layer, the weights ``(m, in, out)`` and biases ``(m, 1, out)`` of the ``m`` members live in one flat
    tensor :attr:`flat`, and their gradients in one flat tensor :attr:`grad`, so the optimizers and the
    best-weights copy work on single vectors. The autograd leaves (:attr:`params`) are views of :attr:`flat`
    whose ``.grad`` are views of :attr:`grad` (autograd accumulates into them in place); a leaf per layer keeps
    the backward pass free of the slicing of one big leaf, which cost as much as the products themselves here.
    The forward pass takes one batch per member, ``(m, n, in)``, and runs one ``baddbmm`` per layer (one
    ``addmm`` for a single member). The gradient of a sum of per-member losses is each member's own gradient, so
    the members train independently, side by side.

    Args:
        models: The members (their initial weights), all with the same architecture.
        device: Where to train.
    """

    def __init__(self, models: list[MLP], device: torch.device):
        chunks: list[torch.Tensor] = []
        self.shapes: list[tuple[int, ...]] = []
        for k in _linear_layers(models):
            W = torch.stack([lin.weight.detach().T for lin in k])
            b = torch.stack([lin.bias.detach()[None, :] for lin in k])
            chunks += [W.reshape(-1), b.reshape(-1)]
            self.shapes += [tuple(W.shape), tuple(b.shape)]
        self.n_members = len(models)
        self.offsets = [0, *itertools.accumulate(math.prod(shape) for shape in self.shapes)]
        #: The member of each entry of :attr:`flat`.
        self.member_of = torch.cat(
            [torch.arange(self.n_members).repeat_interleave(math.prod(shape[1:])) for shape in self.shapes]
        ).to(device)
        from fem_ml._mlp import ACTIVATIONS as TORCH_ACTIVATIONS

        self.activation = TORCH_ACTIVATIONS[models[0].activation]()
        self._bind(torch.cat(chunks).to(device))

    def _bind(self, flat: torch.Tensor) -> None:
        """Make ``flat`` the weights: leaves that view it, with gradients that view :attr:`grad`."""
        self.flat = flat
        self.grad = torch.zeros_like(flat)
        # One member: 2-D leaves and ``addmm``; several: the stacked 3-D leaves and ``baddbmm``.
        shapes = self.shapes
        if self.n_members == 1:
            shapes = [s[1:] if i % 2 == 0 else s[2:] for i, s in enumerate(self.shapes)]
        self.params: list[torch.Tensor] = []
        for a, b, shape in zip(self.offsets, self.offsets[1:], shapes, strict=False):
            leaf = flat[a:b].view(shape).detach().requires_grad_()
            leaf.grad = self.grad[a:b].view(shape)
            self.params.append(leaf)

    def zero_grad(self) -> None:
        """Zero :attr:`grad` (and point the leaves' gradients at it again if an optimizer replaced them)."""
        for leaf, a, b in zip(self.params, self.offsets, self.offsets[1:], strict=False):
            if leaf.grad is None or leaf.grad.data_ptr() != self.grad[a:].data_ptr():
                leaf.grad = self.grad[a:b].view(leaf.shape)
        self.grad.zero_()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(m, n, out)`` of inputs ``(m, n, in)``."""
        n_layers = len(self.params) // 2
        single = self.n_members == 1
        h = x[0] if single else x
        for k in range(n_layers):
            W, B = self.params[2 * k], self.params[2 * k + 1]
            h = torch.addmm(B, h, W) if single else torch.baddbmm(B, h, W)
            if k < n_layers - 1:
                h = self.activation(h)
        return h[None] if single else h

    def converted(self, dtype: torch.dtype) -> _Stacked:
        """The same model (same layout) with its weights copied to ``dtype``."""
        other = copy.copy(self)
        other._bind(self.flat.detach().to(dtype))
        return other

    def member_layers(self, m: int) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
        """Member ``m``'s weights ``(n_in, n_out)`` and biases ``(n_out,)`` of each layer: float64 NumPy copies."""
        flat = self.flat.detach().to(device="cpu", dtype=torch.float64)
        parts = [
            flat[a:b].view(shape)[m] for a, b, shape in zip(self.offsets, self.offsets[1:], self.shapes, strict=False)
        ]
        return [(parts[k].numpy().copy(), parts[k + 1][0].numpy().copy()) for k in range(0, len(parts), 2)]

    def set_member_layers(self, m: int, layers: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]) -> None:
        """Set member ``m``'s weights from :meth:`member_layers`' layout (rounded to the model's precision)."""
        with torch.no_grad():
            for k, (W, b) in enumerate(layers):
                a, mid, end = self.offsets[2 * k], self.offsets[2 * k + 1], self.offsets[2 * k + 2]
                self.flat[a:mid].view(self.shapes[2 * k])[m] = torch.from_numpy(W)
                self.flat[mid:end].view(self.shapes[2 * k + 1])[m, 0] = torch.from_numpy(b)

    def member_weights(self, dtype: torch.dtype) -> list[dict[str, npt.NDArray[np.float64]]]:
        """Each member's weights as the ``state_dict`` of an :class:`MLP` (NumPy arrays in ``dtype``)."""
        flat = self.flat.detach().to(device="cpu", dtype=dtype)
        parts = [
            flat[a:b].view(shape) for a, b, shape in zip(self.offsets, self.offsets[1:], self.shapes, strict=False)
        ]
        out: list[dict[str, npt.NDArray[np.float64]]] = []
        for m in range(self.n_members):
            state = {}
            for k in range(len(parts) // 2):
                state[f"layers.{2 * k}.weight"] = parts[2 * k][m].T.contiguous().numpy().copy()
                state[f"layers.{2 * k}.bias"] = parts[2 * k + 1][m, 0].contiguous().numpy().copy()
            out.append(state)
        return out


#: Relative decrease of the validation loss that counts as an improvement. Late in training the losses of
#: consecutive steps can tie to rounding; without a margin, last-digit differences between data assembled on
#: different rank counts then pick different best steps (measured: 1.8e-7 apart in the prediction).
_IMPROVEMENT = 1e-6


class _EarlyStopping:
    """Records each member's losses and keeps its best weights seen so far, with their monitored loss.

    The monitored loss is the validation loss, or the training loss without a validation split (then every step
    counts as an improvement and the last weights are kept). The best weights live in one preallocated flat copy,
    overwritten (for the members that improved) only when a monitored loss improves; :meth:`restore` copies them
    back. A member whose patience is exhausted stops recording: its history and best weights stay as they were
    when it stopped, as if it had trained alone.

    Args:
        flat: The flat weights being trained (a torch tensor, or a NumPy array for the NumPy backend).
        member_of: The member of each weight (of the same array kind).
        histories: One history per member; receives the losses.
        validation: The validation loss of each member for the current weights, or None without a validation split.
        patience: Steps without improvement after which a member is exhausted (with validation only).
    """

    def __init__(
        self,
        flat: torch.Tensor | npt.NDArray[np.float64],
        member_of: torch.Tensor | npt.NDArray[np.int64],
        histories: list[TrainingHistory],
        validation: Callable[[], npt.NDArray[np.float64]] | None,
        *,
        patience: int,
    ):
        self.flat = flat
        self.member_of = member_of
        self.histories = histories
        self.validation = validation
        self.patience = patience
        m = len(histories)
        self.loss = np.full(m, math.inf)
        self.index = np.full(m, -1, dtype=np.int64)
        self.since_best = np.zeros(m, dtype=np.int64)
        self.active = np.ones(m, dtype=bool)
        self.best = _copy(flat)

    def record(self, train_loss: npt.NDArray[np.float64], *, steps: int = 1) -> npt.NDArray[np.bool_]:
        """Record one point of the active members' loss curves; returns which members improved."""
        validation = self.validation() if self.validation is not None else None
        monitored = train_loss if validation is None else validation
        improved = np.zeros(len(self.histories), dtype=bool)
        for m in np.flatnonzero(self.active):
            history = self.histories[m]
            history.train_loss.append(float(train_loss[m]))
            if validation is not None:
                history.validation_loss.append(float(validation[m]))
            if validation is not None and not monitored[m] < self.loss[m] * (1.0 - _IMPROVEMENT):
                self.since_best[m] += steps
                if self.since_best[m] > self.patience:
                    self.active[m] = False
                continue
            self.loss[m], self.index[m], self.since_best[m] = monitored[m], len(history.train_loss) - 1, 0
            improved[m] = True
        if isinstance(self.flat, np.ndarray):
            if improved.any():
                np.copyto(self.best, self.flat, where=True if improved.all() else improved[self.member_of])
            return improved
        with torch.no_grad():
            if improved.all():
                self.best.copy_(self.flat)
            elif improved.any():
                mask = torch.from_numpy(improved).to(self.member_of.device)[self.member_of]
                torch.where(mask, self.flat, self.best, out=self.best)
        return improved

    @property
    def exhausted(self) -> bool:
        """True when no member is still improving (each ran out of patience)."""
        return not self.active.any()

    def rebind(self, flat: torch.Tensor, validation: Callable[[], npt.NDArray[np.float64]] | None) -> None:
        """Follow other weights of the same layout (another precision), starting from their current values."""
        self.flat, self.validation = flat, validation
        self.best = _copy(flat)

    def restart(self) -> None:
        """Make every member active again with fresh patience (for the next optimizer)."""
        self.active[:] = True
        self.since_best[:] = 0

    def restore(self) -> None:
        """Copy the best weights back."""
        if isinstance(self.flat, np.ndarray):
            self.flat[...] = self.best
            return
        with torch.no_grad():
            self.flat.copy_(self.best)


def _copy(flat: Any) -> Any:
    """A copy of flat weights: a NumPy array or a detached torch tensor."""
    return flat.copy() if isinstance(flat, np.ndarray) else flat.detach().clone()


@dataclass(frozen=True)
class _TrainingData:
    """The stacked tensors of one training run, ``(m, n, .)``, and its per-member loss functions.

    The physics term joins the training loss only.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    data_loss: Callable[[_Stacked, torch.Tensor, torch.Tensor], torch.Tensor]
    physics_loss: Callable[[_Stacked], torch.Tensor] | None

    def train_loss(self, model: _Stacked, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The training loss of each member on its batch, ``(m,)``."""
        loss = self.data_loss(model, xb, yb)
        return loss if self.physics_loss is None else loss + self.physics_loss(model)

    def full_train_loss(self, model: _Stacked) -> torch.Tensor:
        """The training loss of each member on its whole training set, ``(m,)``."""
        return self.train_loss(model, self.x_train, self.y_train)

    def validation_loss(self, model: _Stacked) -> npt.NDArray[np.float64]:
        """The data loss of each member on its validation set (no graph)."""
        with torch.no_grad():
            return self.data_loss(model, self.x_val, self.y_val).double().cpu().numpy()


def _train(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    output_scaler: AffineScaler,
    *,
    plan: _Plan,
    options: TrainingOptions,
    show_progress: bool,
    physics: PhysicsLoss | None = None,
) -> tuple[list[dict[str, npt.NDArray[np.float64]]], list[TrainingHistory]]:
    """Train every member at once on the torch backend: Adam with early stopping, then a polish; the best weights.

    Member ``m`` has the seed ``options.seed + m``: its initialization, validation split and batch order are
    those it would have trained with alone. ``physics``, if given, holds scaled inputs; its term joins the
    training loss, not the validation loss.

    (Over 80 lines: the phases, Adam, the change of precision and the polish, share the early stopping and the
    histories; each phase is its own function.)
    """
    start = time.perf_counter()
    device = resolve_device(options.device)
    dtype = getattr(torch, options.dtype)
    n = x.shape[0]
    n_val = round(options.validation_fraction * n)
    seeds = [options.seed + m for m in range(plan.n_networks)]
    splits = []
    for seed in seeds:
        permutation = np.random.default_rng(seed).permutation(n)
        splits.append((np.sort(permutation[n_val:]), np.sort(permutation[:n_val])))

    def training_data(precision: torch.dtype) -> _TrainingData:
        return _training_data(x, y, splits, output_scaler, options.loss, physics, precision, device)

    members = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            members.append(_new_model(x.shape[1], y.shape[1], plan, options))
    model = _Stacked(members, device)
    adam_dtype = getattr(torch, plan.adam_dtype)
    adam_model = model if adam_dtype == dtype else model.converted(adam_dtype)
    data = training_data(dtype)
    adam_data = data if adam_dtype == dtype else training_data(adam_dtype)

    histories = [
        TrainingHistory(train_indices=train_idx, validation_indices=val_idx, device=str(device))
        for train_idx, val_idx in splits
    ]
    validation = (lambda: adam_data.validation_loss(adam_model)) if n_val > 0 else None
    stopping = _EarlyStopping(adam_model.flat, adam_model.member_of, histories, validation, patience=plan.patience)
    polish_iterations = plan.lm_iterations if plan.polish == "levenberg-marquardt" else plan.lbfgs_iterations
    total = plan.adam_epochs + polish_iterations
    label = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    bar = Progress(total, f"training ({label})", enabled=show_progress)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    _adam(adam_model, adam_data, stopping, plan, options, generators, bar)
    stopping.restore()
    if adam_model is not model:
        with torch.no_grad():
            model.flat.copy_(adam_model.flat)
        stopping.rebind(model.flat, (lambda: data.validation_loss(model)) if n_val > 0 else None)
    if polish_iterations > 0:
        stopping.restart()
        if plan.polish == "levenberg-marquardt":
            from threadpoolctl import threadpool_limits

            # NumPy's BLAS runs the polish: as many threads as torch had, so that ranks never oversubscribe the node.
            with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
                _levenberg_marquardt(model, x, y, splits, output_scaler, stopping, options, plan, bar)
        else:
            _lbfgs(model, data, stopping, plan.lbfgs_iterations, bar)
        stopping.restore()
    kind = "validation" if n_val > 0 else "training"
    bar.update(total, f"best {kind} loss {', '.join(f'{v:.3e}' for v in stopping.loss)}")

    elapsed = time.perf_counter() - start
    for history, index in zip(histories, stopping.index, strict=True):
        history.best_index = int(index)
        history.time_s = elapsed
    logger.info(
        "Training %d member(s): %s Adam epochs, %s %s iterations, best %s loss %s, %.1f s",
        len(seeds),
        [h.n_adam_epochs for h in histories],
        [h.n_lm_iterations if plan.polish == "levenberg-marquardt" else h.n_lbfgs_iterations for h in histories],
        plan.polish,
        kind,
        ", ".join(f"{v:.3e}" for v in stopping.loss),
        elapsed,
    )
    return model.member_weights(dtype), histories


def _training_data(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    splits: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]],
    output_scaler: AffineScaler,
    loss: Literal["relative", "mse"],
    physics: PhysicsLoss | None,
    precision: torch.dtype,
    device: torch.device,
) -> _TrainingData:
    """The members' training and validation sets ``(m, n, .)`` (from their ``(train, validation)`` splits)."""

    def tensor(a: npt.NDArray[np.float64]) -> torch.Tensor:
        return torch.as_tensor(a, dtype=precision, device=device)

    def stacked(a: npt.NDArray[np.float64], part: int) -> torch.Tensor:
        return tensor(np.stack([a[split[part]] for split in splits]))

    data_loss = _data_loss(tensor(output_scaler.shift), tensor(output_scaler.scale), loss, y)
    physics_loss = None if physics is None else _physics_loss(physics, output_scaler, tensor)
    return _TrainingData(stacked(x, 0), stacked(y, 0), stacked(x, 1), stacked(y, 1), data_loss, physics_loss)


def _data_loss(
    shift: torch.Tensor, scale: torch.Tensor, kind: Literal["relative", "mse"], y: npt.NDArray[np.float64]
) -> Callable[[_Stacked, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-member data loss on unscaled coefficients: mean squared relative error, or squared error over the data's."""
    mean_sq = float(np.mean(np.sum(y**2, axis=1)))

    def loss(model: _Stacked, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        pred = model(xb) * scale + shift
        sq_err = torch.sum((pred - yb) ** 2, dim=2)
        if kind == "relative":
            return torch.mean(sq_err / torch.clamp(torch.sum(yb**2, dim=2), min=1e-300), dim=1)
        return torch.mean(sq_err, dim=1) / mean_sq

    return loss


def _physics_loss(
    physics: PhysicsLoss, output_scaler: AffineScaler, tensor: Callable[[npt.NDArray[np.float64]], torch.Tensor]
) -> Callable[[_Stacked], torch.Tensor]:
    """The physics term of :class:`PhysicsLoss` (with scaled inputs) of each member of a stacked model, ``(m,)``."""
    x_phys, A_phys, f_phys = tensor(physics.parameters), tensor(physics.matrices), tensor(physics.rhs)
    shift, scale = tensor(output_scaler.shift), tensor(output_scaler.scale)
    f_sq = torch.clamp(torch.sum(f_phys**2, dim=1), min=1e-300)
    weight = physics.weight

    def loss(model: _Stacked) -> torch.Tensor:
        c = model(x_phys.expand(model.n_members, -1, -1)) * scale + shift
        residual = f_phys - torch.einsum("nij,knj->kni", A_phys, c)
        return weight * torch.mean(torch.sum(residual**2, dim=2) / f_sq, dim=1)

    return loss


def _adam(
    model: _Stacked,
    data: _TrainingData,
    stopping: _EarlyStopping,
    plan: _Plan,
    options: TrainingOptions,
    generators: list[torch.Generator],
    bar: Progress,
) -> None:
    r"""Adam with a geometrically decaying learning rate, by mini-batches, until every member stops early.

    The update of :func:`torch.optim.Adam` (:math:`\beta = (0.9, 0.999)`, :math:`\epsilon = 10^{-8}`, L2
    ``weight_decay`` added to the gradient) on the flat weight vector, a handful of tensor operations per step.
    Adam updates each weight from its own gradient history, so minimizing the sum of the members' losses trains
    each member as alone. Each member draws its batch order from its own generator.
    """
    m, n_train = data.x_train.shape[:2]
    flat = model.flat
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    first, second = torch.zeros_like(flat), torch.zeros_like(flat)
    gamma = options.final_lr_ratio ** (1.0 / max(plan.adam_epochs, 1))
    batch = options.batch_size or n_train
    report_every = max((plan.adam_epochs + max(plan.lbfgs_iterations, plan.lm_iterations)) // 100, 1)
    device = data.x_train.device
    rows = torch.arange(m, device=device)[:, None]
    step = 0
    for epoch in range(plan.adam_epochs):
        lr = plan.learning_rate * gamma**epoch
        order = None
        if batch < n_train:
            order = torch.stack([torch.randperm(n_train, generator=g) for g in generators]).to(device)
        epoch_loss = torch.zeros(m, dtype=torch.float64, device=device)
        for b in range(0, n_train, batch):
            if order is None:
                xb, yb = data.x_train, data.y_train
            else:
                idx = order[:, b : b + batch]
                xb, yb = data.x_train[rows, idx], data.y_train[rows, idx]
            model.zero_grad()
            loss = data.train_loss(model, xb, yb)
            loss.sum().backward()  # type: ignore[no-untyped-call]
            step += 1
            with torch.no_grad():
                grad = model.grad
                if options.weight_decay:
                    grad = grad.add(flat, alpha=options.weight_decay)
                first.mul_(beta1).add_(grad, alpha=1 - beta1)
                second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = second.sqrt().div_(math.sqrt(1 - beta2**step)).add_(eps)
                flat.addcdiv_(first, denom, value=-lr / (1 - beta1**step))
            epoch_loss += loss.detach().double() * (xb.shape[1] / n_train)
        for k in np.flatnonzero(stopping.active):
            stopping.histories[k].n_adam_epochs = epoch + 1
        losses = epoch_loss.cpu().numpy()
        stopping.record(losses)
        if (epoch + 1) % report_every == 0:
            bar.update(epoch + 1, f"adam loss {float(losses.mean()):.3e}")
        if stopping.exhausted:
            logger.info("Adam stopped early after %d epochs", epoch + 1)
            break


def _lbfgs(model: _Stacked, data: _TrainingData, stopping: _EarlyStopping, iterations: int, bar: Progress) -> None:
    """L-BFGS of torch (strong Wolfe line search, 100 pairs) on the per-layer leaves, in chunks of 10 iterations.

    The members' losses are recorded after each chunk (the iteration count comes from the optimizer's public
    state, ``state[parameter]["n_iter"]``). The run stops after ``iterations`` iterations, when a chunk makes no
    iteration, when a loss is not finite, or when every member has stopped improving.

    (SciPy's L-BFGS-B, and an L-BFGS with a backtracking line search in NumPy, were both measured here: each step
    is cheaper, but their paths amplify last-digit differences in the data (between rank counts) to 1e-7 and more
    in the trained network, where this one stays below 1e-8; and they need about twice the iterations.)
    """
    chunk = 10
    lbfgs = torch.optim.LBFGS(
        model.params, lr=1.0, max_iter=chunk, max_eval=chunk * 5, history_size=100, line_search_fn="strong_wolfe",
        tolerance_grad=1e-14, tolerance_change=1e-16,
    )  # fmt: skip

    def closure() -> torch.Tensor:
        model.zero_grad()
        value = data.full_train_loss(model).sum()
        value.backward()  # type: ignore[no-untyped-call]
        return value

    counts = np.array([h.n_lbfgs_iterations for h in stopping.histories])
    done = 0
    while done < iterations:
        lbfgs.param_groups[0]["max_iter"] = min(chunk, iterations - done)  # never beyond ``iterations``
        lbfgs.step(closure)  # type: ignore[no-untyped-call]
        count = min(int(lbfgs.state[model.params[0]].get("n_iter", done + chunk)), iterations)
        steps, done = count - done, count
        with torch.no_grad():
            losses = data.full_train_loss(model).double().cpu().numpy()
        if steps == 0 or not np.all(np.isfinite(losses)):
            break
        counts[stopping.active] += steps
        for history, n in zip(stopping.histories, counts, strict=True):
            history.n_lbfgs_iterations = int(n)
        stopping.record(losses, steps=steps)
        bar.update(stopping.histories[0].n_adam_epochs + done, f"l-bfgs loss {float(losses.mean()):.3e}")
        if stopping.exhausted:
            break


def _residual_weights(
    y: npt.NDArray[np.float64], output_scaler: AffineScaler, loss: Literal["relative", "mse"], mean_sq: float
) -> npt.NDArray[np.float64]:
    r"""The weights :math:`s_k / \|y_n\|` (``"relative"``) or :math:`s_k / \sqrt{\overline{\|y\|^2}}` (``"mse"``).

    Divided by the square root of the number of rows, they turn the residuals of the standardized outputs into
    those of the data loss (:func:`_data_loss`): :math:`\sum r^2` is the loss.
    """
    squares = np.sum(y**2, axis=1) if loss == "relative" else np.full(len(y), mean_sq)
    return output_scaler.scale[None, :] / np.sqrt(np.maximum(squares, 1e-300))[:, None]  # clamped as in _data_loss


def _train_numpy(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    output_scaler: AffineScaler,
    *,
    plan: _Plan,
    options: TrainingOptions,
    show_progress: bool,
) -> tuple[list[dict[str, npt.NDArray[np.float64]]], list[TrainingHistory]]:
    """Train one member with the NumPy backend (:mod:`fem_ml._flatnet`): Adam, then the polish.

    The validation split is the torch backend's (drawn from ``options.seed``); the initial weights and the batch
    order come from NumPy's generator seeded with ``(options.seed, 1)``. Early stopping, histories and the best
    weights are those of :func:`_train`.
    """
    from fem_ml._flatnet import FlatNetwork

    if plan.n_networks != 1:
        raise ValueError(f"The NumPy backend trains one member at a time, not {plan.n_networks}.")
    start = time.perf_counter()
    n = x.shape[0]
    n_val = round(options.validation_fraction * n)
    permutation = np.random.default_rng(options.seed).permutation(n)
    train, val = np.sort(permutation[n_val:]), np.sort(permutation[:n_val])
    rng = np.random.default_rng([options.seed, 1])
    model = FlatNetwork((x.shape[1], *plan.hidden_layers, y.shape[1]), options.activation, rng)
    targets = output_scaler.transform(y)
    mean_sq = float(np.mean(np.sum(y**2, axis=1)))
    history = TrainingHistory(train_indices=train, validation_indices=val, device="cpu")
    validation = None
    if n_val > 0:
        x_val, t_val = x[val], targets[val]
        c_val = _residual_weights(y[val], output_scaler, options.loss, mean_sq) / math.sqrt(n_val)

        def validation() -> npt.NDArray[np.float64]:
            return np.array([model.loss(x_val, t_val, c_val)])

    stopping = _EarlyStopping(model.flat, model.member_of, [history], validation, patience=plan.patience)
    total = plan.adam_epochs + plan.lm_iterations + plan.lbfgs_iterations
    bar = Progress(total, f"training (seed {options.seed})", enabled=show_progress)
    scales = _residual_weights(y[train], output_scaler, options.loss, mean_sq)
    _numpy_adam(model, x[train], targets[train], scales, stopping, plan, options, rng, bar)
    stopping.restore()
    if plan.lm_iterations > 0 or plan.lbfgs_iterations > 0:
        stopping.restart()
        if plan.polish == "levenberg-marquardt":
            _levenberg_marquardt(model, x, y, [(train, val)], output_scaler, stopping, options, plan, bar)
        else:
            _numpy_lbfgs(model, x[train], targets[train], scales / math.sqrt(len(train)), stopping, plan, bar)
        stopping.restore()
    kind = "validation" if n_val > 0 else "training"
    bar.update(total, f"best {kind} loss {stopping.loss[0]:.3e}")
    history.best_index = int(stopping.index[0])
    history.time_s = time.perf_counter() - start
    logger.info(
        "Training seed %d (NumPy): %d Adam epochs, %d %s iterations, best %s loss %.3e, %.1f s", options.seed,
        history.n_adam_epochs, max(history.n_lm_iterations, history.n_lbfgs_iterations), plan.polish, kind,
        stopping.loss[0], history.time_s,
    )  # fmt: skip
    return [model.state_dict()], [history]


def _numpy_adam(
    model: FlatNetwork,
    x: npt.NDArray[np.float64],
    targets: npt.NDArray[np.float64],
    scales: npt.NDArray[np.float64],
    stopping: _EarlyStopping,
    plan: _Plan,
    options: TrainingOptions,
    rng: np.random.Generator,
    bar: Progress,
) -> None:
    r"""Adam on the NumPy backend: the schedule, batches and early stopping of :func:`_adam`, for one member.

    ``scales`` are the residual weights of the training rows (:func:`_residual_weights`); a batch of :math:`b`
    rows divides them by :math:`\sqrt b`, so that each batch's loss is the data loss on its rows.
    """
    from fem_ml._flatnet import Adam

    n_train = x.shape[0]
    adam = Adam(model.flat, weight_decay=options.weight_decay)
    gamma = options.final_lr_ratio ** (1.0 / max(plan.adam_epochs, 1))
    batch = options.batch_size or n_train
    full = scales / math.sqrt(n_train)
    report_every = max((plan.adam_epochs + plan.lm_iterations + plan.lbfgs_iterations) // 100, 1)
    history = stopping.histories[0]
    for epoch in range(plan.adam_epochs):
        lr = plan.learning_rate * gamma**epoch
        if batch >= n_train:
            loss = model.loss_and_gradient(x, targets, full)
            adam.step(model.grad, lr)
        else:
            order = rng.permutation(n_train)
            loss = 0.0
            for b in range(0, n_train, batch):
                rows = order[b : b + batch]
                loss += model.loss_and_gradient(x[rows], targets[rows], scales[rows] / math.sqrt(len(rows))) * (
                    len(rows) / n_train
                )
                adam.step(model.grad, lr)
        history.n_adam_epochs = epoch + 1
        stopping.record(np.array([loss]))
        if (epoch + 1) % report_every == 0:
            bar.update(epoch + 1, f"adam loss {loss:.3e}")
        if stopping.exhausted:
            logger.info("Adam stopped early after %d epochs", epoch + 1)
            break


def _numpy_lbfgs(
    model: FlatNetwork,
    x: npt.NDArray[np.float64],
    targets: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    stopping: _EarlyStopping,
    plan: _Plan,
    bar: Progress,
) -> None:
    """The L-BFGS polish on the NumPy backend (:class:`fem_ml._flatnet.LBFGS`), recorded as :func:`_lbfgs` does.

    The settings are those of the torch backend (:data:`NUMPY_LBFGS_HISTORY` pairs, a strong Wolfe line search, the
    same tolerances). The losses are recorded after each chunk of 10 iterations, and the run
    stops after ``plan.lbfgs_iterations`` iterations, when it converges, when a loss is not finite, or when the
    member has stopped improving.
    """
    from fem_ml._flatnet import LBFGS

    def objective(flat: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        return model.loss_and_gradient(x, targets, weights), model.grad

    lbfgs = LBFGS(model.flat, objective, history=NUMPY_LBFGS_HISTORY)
    history = stopping.histories[0]
    chunk = 10
    while history.n_lbfgs_iterations < plan.lbfgs_iterations:
        steps = lbfgs.run(min(chunk, plan.lbfgs_iterations - history.n_lbfgs_iterations))
        if steps == 0 or not math.isfinite(lbfgs.loss):
            break
        history.n_lbfgs_iterations += steps
        stopping.record(np.array([lbfgs.loss]), steps=steps)
        bar.update(history.n_adam_epochs + history.n_lbfgs_iterations, f"l-bfgs loss {lbfgs.loss:.3e}")
        if stopping.exhausted or lbfgs.converged is not None:
            break


def _levenberg_marquardt(
    model: _Stacked | FlatNetwork,
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    splits: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]],
    output_scaler: AffineScaler,
    stopping: _EarlyStopping,
    options: TrainingOptions,
    plan: _Plan,
    bar: Progress,
) -> None:
    r"""The Levenberg-Marquardt polish (:class:`fem_ml._levenberg.LevenbergMarquardt`), each member on its own set.

    The residuals are those of the data loss: :math:`r_{nk} = c_{nk} (o_{nk} - t_{nk})` with the standardized
    targets :math:`t` and :math:`c_{nk} = s_k / (\|y_n\| \sqrt{n})` (``"relative"``) or :math:`s_k / \sqrt{n\,
    \overline{\|y\|^2}}` (``"mse"``), :math:`s` the output scales, so that :math:`\sum r^2` is the loss Adam
    minimized. The members step in turn; after each round the losses are recorded (validation, best weights and
    patience as in the other phases, with :data:`LM_PATIENCE`). The run stops after ``plan.lm_iterations``
    rounds, when no member can decrease its loss, or when every member has stopped improving.
    """
    from fem_ml._levenberg import LevenbergMarquardt

    mean_sq = float(np.mean(np.sum(y**2, axis=1)))
    n_residuals = len(splits[0][0]) * y.shape[1]
    if n_residuals > LM_MAX_RESIDUALS:
        logger.warning(
            "Levenberg-Marquardt polish on %d residuals (more than LM_MAX_RESIDUALS = %d): each step factors a "
            "matrix of that order; polish='l-bfgs' costs less per step", n_residuals, LM_MAX_RESIDUALS,
        )  # fmt: skip
    solvers = []
    for m, (train, _) in enumerate(splits):
        y_m = y[train]
        weights = _residual_weights(y_m, output_scaler, options.loss, mean_sq) / math.sqrt(len(train))
        layers = model.member_layers(m)
        solvers.append(
            LevenbergMarquardt(layers, x[train], output_scaler.transform(y_m), weights, activation=options.activation)
        )
    stopping.patience = min(stopping.patience, LM_PATIENCE)
    counts = np.array([h.n_lm_iterations for h in stopping.histories])
    for iteration in range(plan.lm_iterations):
        moved = np.zeros(len(solvers), dtype=bool)
        for m in np.flatnonzero(stopping.active).tolist():
            moved[m] = solvers[m].step()
            if moved[m]:
                model.set_member_layers(m, solvers[m].layers)
            else:  # at a minimum, to rounding: nothing more to record for this member
                stopping.active[m] = False
        if not moved.any():
            break
        counts[moved] += 1
        for history, count in zip(stopping.histories, counts, strict=True):
            history.n_lm_iterations = int(count)
        losses = np.array([solver.loss for solver in solvers])
        stopping.record(losses)
        bar.update(stopping.histories[0].n_adam_epochs + iteration + 1, f"levenberg-marquardt loss {losses.mean():.3e}")
        if stopping.exhausted:
            break
