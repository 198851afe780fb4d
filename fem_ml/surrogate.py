# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The trained surrogate :math:`\mu \mapsto \Phi \hat c(\mu)`, returned as ``dolfinx.fem.Function``.

The surrogate combines a :class:`~fem_ml.pod.PODBasis` (the modes :math:`\Phi`, distributed like the user's
function space) with a :class:`~fem_ml.networks.CoefficientNetwork` (replicated on every rank). Evaluating it
is a small network forward pass and one local product :math:`\Phi \hat c`, then a ghost update.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem
from scipy import spatial

from fem_ml._fem import function_from_owned, n_owned, space_mismatch
from fem_ml._mpi import check_collectively
from fem_ml._serialize import dataclass_kwargs, dataclass_tree
from fem_ml.networks import (
    Activation,
    CoefficientNetwork,
    PhysicsLoss,
    TrainingHistory,
    TrainingOptions,
    train_network,
)
from fem_ml.parameters import ParameterSpace
from fem_ml.pod import InnerProduct, PODBasis, assemble_inner_product
from fem_ml.reduced import ReducedSystems
from fem_ml.snapshots import SnapshotSet

__all__ = ["ErrorReport", "ExtrapolationWarning", "Surrogate", "train_surrogate"]

logger = logging.getLogger(__name__)


class ExtrapolationWarning(UserWarning):
    """A surrogate was evaluated outside its parameter bounds or far from every training point."""


@dataclass(frozen=True)
class ErrorReport:
    r"""Per-sample relative errors of a surrogate on a test set.

    ``rel_error_*`` compare the surrogate with the truth, ``proj_error_*`` the POD projection
    :math:`\Phi \Phi^T M u` with the truth: the best the basis allows, so the gap between the two is the
    network's share. Norms are the :math:`L^2` and the full :math:`H^1` norm.

    Attributes:
        parameters: Test points ``(n, p)``.
        rel_error_l2: :math:`\|u - \hat u\|_{L^2} / \|u\|_{L^2}` per sample.
        rel_error_h1: :math:`\|u - \hat u\|_{H^1} / \|u\|_{H^1}` per sample.
        proj_error_l2: Relative :math:`L^2` error of the POD projection per sample.
        proj_error_h1: Relative :math:`H^1` error of the POD projection per sample.
        network_error: The network's own error, in coefficient space:
            :math:`\|\hat c - \Phi^T M u\|_2 / \|\Phi^T M u\|_2`, which is the relative error of the surrogate
            against the projection in the basis' inner product. A large ``proj_error`` asks for more modes
            (or snapshots), a large ``network_error`` for more training data or a better network.
    """

    parameters: npt.NDArray[np.float64]
    rel_error_l2: npt.NDArray[np.float64]
    rel_error_h1: npt.NDArray[np.float64]
    proj_error_l2: npt.NDArray[np.float64]
    proj_error_h1: npt.NDArray[np.float64]
    network_error: npt.NDArray[np.float64] | None = None

    def summary(self) -> dict[str, float]:
        """Means and maxima of each error, as plain floats."""
        out: dict[str, float] = {}
        names = ("rel_error_l2", "rel_error_h1", "proj_error_l2", "proj_error_h1", "network_error")
        for name in names:
            values = getattr(self, name)
            if values is None:
                continue
            out[f"{name}_mean"] = float(np.mean(values))
            out[f"{name}_max"] = float(np.max(values))
        return out

    def to_tree(self) -> dict[str, Any]:
        """The report as file entries (its dataclass fields; a missing ``network_error`` is left out)."""
        return dataclass_tree(self)

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> ErrorReport:
        """The report stored by :meth:`to_tree`."""
        return cls(**dataclass_kwargs(cls, tree))


class Surrogate:
    """A POD-network surrogate on the user's function space.

    Build one with :func:`train_surrogate`. Calling it returns a ``dolfinx.fem.Function`` on ``V``.

    Args:
        space: The parameter space (names and bounds).
        basis: The reduced basis.
        network: The trained map from parameters to coefficients.
        history: Training history of each ensemble member, if known.
        test_errors: Errors measured on a test set, if known (stored by :meth:`save`).
        training_parameters: The parameter points the network was trained on, ``(n, p)``; with them, points far
            from every training point are reported as extrapolation too.

    Attributes:
        space: The parameter space.
        basis: The reduced basis.
        network: The map from parameters to coefficients.
        history: Training history of each ensemble member, if known.
        test_errors: Test-set errors, if known.
        metadata: User data saved with the surrogate (JSON-serialisable).
        versions: Package versions of the file the surrogate was loaded from (empty for a trained one).
    """

    def __init__(
        self,
        space: ParameterSpace,
        basis: PODBasis,
        network: CoefficientNetwork,
        *,
        history: list[TrainingHistory] | None = None,
        test_errors: ErrorReport | None = None,
        training_parameters: npt.NDArray[np.float64] | None = None,
    ):
        if network.n_params != space.dim or network.n_coefficients != basis.n_modes:
            raise ValueError(
                f"Network maps {network.n_params} -> {network.n_coefficients}, but the space has {space.dim} "
                f"parameters and the basis {basis.n_modes} modes."
            )
        self.space = space
        self.basis = basis
        self.network = network
        self.history = history
        self.test_errors = test_errors
        self.metadata: dict[str, Any] = {}
        self.versions: dict[str, str] = {}
        self._norms: dict[str, InnerProduct] = {}
        self._modes32: npt.NDArray[np.float32] | None = None
        self._buffer32: npt.NDArray[np.float32] | None = None
        self._extrapolation: Literal["warn", "raise"] = "warn"
        self._warned: set[str] = set()
        self.training_parameters: npt.NDArray[np.float64] | None = None
        self._training_inputs: npt.NDArray[np.float64] | None = None
        self._far: float = np.inf
        self._far_factor = 2.0
        self._training_sq = self._training_m2 = np.empty(0)
        if training_parameters is not None:
            self.set_training_parameters(training_parameters)

    def set_training_parameters(self, parameters: npt.ArrayLike) -> None:
        """Record the training points, which define "far from every training point" (local)."""
        points = self.space.validate(parameters)
        inputs = self.network.scale_inputs(points)
        self.training_parameters, self._training_inputs = points, inputs
        if points.shape[0] > 1:
            # Nearest other training point of each (k=2: the first is the point itself); a tree, not n^2 memory.
            self._far = float(spatial.cKDTree(inputs).query(inputs, k=2)[0][:, 1].max())
        else:
            self._far = np.inf
        self._training_sq = np.einsum("ij,ij->i", inputs, inputs)
        self._training_m2 = -2.0 * inputs

    @property
    def extrapolation(self) -> Literal["warn", "raise"]:
        """The extrapolation policy, ``"warn"`` (default) or ``"raise"``.

        What a point outside the parameter bounds, or far from every training point, does: ``"warn"`` (default)
        issues one :class:`ExtrapolationWarning` per surrogate and kind, with the distance; ``"raise"`` (strict
        mode) raises ``ValueError``. Distances are measured in the network's scaled inputs, where the parameter
        box is :math:`[-1, 1]^p`; "far" means farther from the nearest training point than :attr:`far_factor`
        times the largest nearest-neighbour distance among the training points.
        """
        return self._extrapolation

    @extrapolation.setter
    def extrapolation(self, policy: Literal["warn", "raise"]) -> None:
        if policy not in ("warn", "raise"):
            raise ValueError(f"extrapolation must be 'warn' or 'raise', got {policy!r}.")
        self._extrapolation = policy

    @property
    def far_factor(self) -> float:
        """The factor of "far from every training point" (see :attr:`extrapolation`); default 2."""
        return self._far_factor

    @far_factor.setter
    def far_factor(self, factor: float) -> None:
        if not factor > 0:
            raise ValueError(f"far_factor must be positive, got {factor}.")
        self._far_factor = float(factor)

    @property
    def _far_limit_sq(self) -> float:
        return (self._far_factor * self._far) ** 2

    def check_points(self, parameters: npt.ArrayLike | Any, *, expected: int | None = None) -> npt.NDArray[np.float64]:
        """Validate points (shape, names, NaN) and apply the :attr:`extrapolation` policy (local).

        Returns:
            The points ``(n, p)``.

        Raises:
            ValueError: for a wrong shape, count or name, NaN/inf, or, in strict mode, extrapolation.
        """
        return self._prepare(parameters, expected)[0]

    def _prepare(
        self, parameters: npt.ArrayLike | Any, expected: int | None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Checked points and their scaled network inputs (the hot path of a query: a few microseconds)."""
        points = self.space.validate(parameters, expected=expected, check_bounds=False)
        lower, upper = self.space.lower, self.space.upper
        if self.network.input_transform == "log" and (points <= 0).any():
            # Not an extrapolation that a warning could cover: the logarithm of the network's inputs is undefined.
            i, j = np.argwhere(points <= 0)[0]
            raise ValueError(
                f"Parameter {self.space.names[j]!r} of point {i} is {float(points[i, j])}: this surrogate takes the "
                "logarithm of its inputs, so every parameter must be positive."
            )
        inputs = self.network.scale_inputs(points)
        slack = 1e-12 * (upper - lower)  # the tolerance of ParameterSpace.validate
        if ((points < lower - slack) | (points > upper + slack)).any():
            inside = self.network.scale_inputs(np.clip(points, lower, upper))
            outside_by = np.linalg.norm(inputs - inside, axis=1)
            i = int(np.argmax(outside_by))
            self._extrapolating(
                "bounds",
                f"Point {i} {self.space.to_dict(points[i])} lies outside the parameter bounds {self.space.bounds}, "
                f"by {outside_by[i]:.3g} in scaled inputs (the box is [-1, 1]^{self.space.dim}).",
            )
        if self._training_inputs is not None and self._far_limit_sq < np.inf:
            # |x - t|^2 = |t|^2 - 2 t.x + |x|^2: one small product instead of an (n, n_train, p) array; one point
            # (a query) takes the 1D route, a few microseconds.
            if inputs.shape[0] == 1:
                x = inputs[0]
                far = (self._training_sq + self._training_m2 @ x).min() + x @ x > self._far_limit_sq
            else:
                d2 = (self._training_sq[:, None] + self._training_m2 @ inputs.T).min(axis=0)
                d2 += (inputs * inputs).sum(axis=1)
                far = (d2 > self._far_limit_sq).any()
            if far:
                d2 = ((inputs[:, None, :] - self._training_inputs[None, :, :]) ** 2).sum(axis=2).min(axis=1)
                i = int(np.argmax(d2))
                self._extrapolating(
                    "far",
                    f"Point {i} {self.space.to_dict(points[i])} is {np.sqrt(max(d2[i], 0.0)):.3g} from the nearest "
                    f"training point (scaled inputs); the training points lie within {self._far:.3g} of each other, "
                    f"and the limit is {self.far_factor} times that.",
                )
        return points, inputs

    def _extrapolating(self, kind: str, message: str) -> None:
        if self._extrapolation == "raise":
            raise ValueError(message + " Strict mode (extrapolation='raise') refuses it.")
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message + " The prediction is an extrapolation.", ExtrapolationWarning, stacklevel=4)

    @property
    def V(self) -> fem.FunctionSpace:
        """The function space of the predictions."""
        return self.basis.V

    @property
    def n_modes(self) -> int:
        """Number of reduced coefficients."""
        return self.basis.n_modes

    def coefficients(self, parameters: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Predicted reduced coefficients, shape ``(n, r)``, for one point or a batch (one forward pass; local).

        Raises:
            ValueError: for a wrong shape or count, NaN/inf, or extrapolation in strict mode.
        """
        return self.network.from_inputs(self._prepare(parameters, None)[1])

    def __call__(self, mu: npt.ArrayLike, *, out: fem.Function | None = None, name: str = "prediction") -> fem.Function:
        r"""Predict the field at one parameter point (collective: updates ghosts).

        Args:
            mu: One point, ``(p,)`` array or ``{name: value}``.
            out: Function on ``V`` to fill instead of allocating a new one.
            name: Name of the returned Function.

        Returns:
            :math:`\Phi \hat c(\mu)` as a Function on ``V``.
        """
        if out is not None and out.function_space is not self.V:
            # Local check: every rank holds the same objects, so every rank raises alike (no collective here).
            mismatch = space_mismatch(self.V, out.function_space)
            if mismatch is not None:
                raise ValueError(f"out is not on the surrogate's function space: {mismatch}.")
        c = self.network.from_inputs(self._prepare(mu, 1)[1])[0]
        if self._modes32 is None or self._buffer32 is None:
            return self.basis.function(c, out=out, name=name)
        u = fem.Function(self.V) if out is None else out
        np.dot(self._modes32, c.astype(np.float32), out=self._buffer32)
        u.x.array[: self._buffer32.shape[0]] = self._buffer32
        u.x.scatter_forward()
        u.name = name
        return u

    @property
    def reconstruction_dtype(self) -> str:
        r"""Precision of :math:`\Phi c` in :meth:`__call__`: ``"float64"`` (default) or ``"float32"``.

        The product with the modes reads every mode at each call, so its time is set by memory bandwidth.
        ``"float32"`` keeps a single-precision copy of the modes and halves that traffic; the field then
        differs from the float64 one by about :math:`10^{-7}` relative, far below a surrogate's error. The
        coefficients, :meth:`predict_values`, projections and error reports stay in float64.
        """
        return "float64" if self._modes32 is None else "float32"

    @reconstruction_dtype.setter
    def reconstruction_dtype(self, dtype: str) -> None:
        if dtype == "float64":
            self._modes32 = self._buffer32 = None
        elif dtype == "float32":
            self._modes32 = np.asfortranarray(self.basis.modes, dtype=np.float32)
            self._buffer32 = np.empty(self.basis.modes.shape[0], dtype=np.float32)
        else:
            raise ValueError(f"reconstruction_dtype must be 'float64' or 'float32', got {dtype!r}.")

    def time_query(self, parameters: npt.ArrayLike, *, warmup: int = 1) -> float:
        """Median wall time of one query, parameter in and finished Function out (collective).

        Each point of ``parameters`` is evaluated once into the same output Function, after ``warmup`` calls;
        the ranks start each call together (barrier) and the slowest rank's median is returned.
        """
        comm = self.V.mesh.comm
        points = self.check_points(parameters)
        out = fem.Function(self.V)
        for k in range(warmup):
            self(points[k % len(points)], out=out)
        times = []
        for mu in points:
            comm.barrier()
            start = time.perf_counter()
            self(mu, out=out)
            times.append(time.perf_counter() - start)
        return float(comm.allreduce(float(np.median(times)), op=MPI.MAX))

    def predict_values(self, parameters: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Owned dof values of the predictions, shape ``(n_owned, n)`` (local)."""
        return self.basis.reconstruct(self.coefficients(parameters).T)

    def deviation(self, parameters: npt.ArrayLike) -> npt.NDArray[np.float64]:
        r"""Relative ensemble deviation of the prediction at each point, shape ``(n,)`` (local).

        .. math:: s(\mu) = \Big(\frac{1}{K} \sum_{m=1}^K \|\hat c_m(\mu) - \bar c(\mu)\|_2^2\Big)^{1/2}
            \Big/ \|\bar c(\mu)\|_2,

        the members' spread in the basis' inner product (the modes are orthonormal in it) relative to the
        mean prediction. It needs an ensemble (``n_networks >= 2``); it estimates the network's share of the error.
        """
        if self.network.n_networks < 2:
            raise ValueError("The deviation needs an ensemble: train with n_networks >= 2.")
        members = self.network.members(self.check_points(parameters))
        mean = members.mean(axis=0)
        spread = np.sqrt(np.mean(np.sum((members - mean) ** 2, axis=2), axis=0))
        return spread / np.maximum(np.linalg.norm(mean, axis=1), 1e-300)

    def uncertainty(self, mu: npt.ArrayLike, *, name: str = "prediction") -> tuple[fem.Function, fem.Function]:
        r"""Mean prediction and the ensemble's pointwise standard deviation as Functions on ``V`` (collective).

        The deviation field holds, per dof, :math:`\big(\frac1K \sum_m (\Phi (\hat c_m - \bar c))^2\big)^{1/2}`;
        it is named ``<name>_std``.
        """
        if self.network.n_networks < 2:
            raise ValueError("The uncertainty needs an ensemble: train with n_networks >= 2.")
        members = self.network.members(self.check_points(mu, expected=1))[:, 0, :]
        mean = members.mean(axis=0)
        spread = self.basis.modes @ (members - mean).T
        std = np.sqrt(np.mean(spread**2, axis=1))
        return self.basis.function(mean, name=name), function_from_owned(self.V, std, name=f"{name}_std")

    def norm(self, kind: str) -> InnerProduct:
        """The inner product used for ``kind`` norms (``"l2"``, ``"h1"``), assembled once and cached."""
        if kind == self.basis.inner_product.name:
            return self.basis.inner_product
        if kind not in self._norms:
            self._norms[kind] = assemble_inner_product(self.V, kind)  # type: ignore[arg-type]
        return self._norms[kind]

    def errors(self, parameters: npt.ArrayLike, truth: SnapshotSet | npt.NDArray[np.float64]) -> ErrorReport:
        """Relative L2 and H1 errors of the surrogate and of the POD projection (collective).

        Args:
            parameters: Test points ``(n, p)``.
            truth: The true solutions at those points: a :class:`~fem_ml.snapshots.SnapshotSet` on ``V`` or owned
                dof values ``(n_owned, n)``.

        Returns:
            Per-sample errors.
        """
        comm = self.V.mesh.comm
        error: str | None = None
        points = np.empty((0, self.space.dim))
        try:
            points = self.check_points(parameters)
            if isinstance(truth, SnapshotSet):
                mismatch = space_mismatch(self.V, truth.V)
                if mismatch is not None:
                    raise ValueError(f"Test snapshots are on another function space: {mismatch}.")
            values = truth.values if isinstance(truth, SnapshotSet) else np.asarray(truth, dtype=np.float64)
            if values.shape != (n_owned(self.V), points.shape[0]):
                raise ValueError(
                    f"Truth must have shape (n_owned, n) = {(n_owned(self.V), points.shape[0])}, got {values.shape}."
                )
        except ValueError as err:
            error = str(err)
        check_collectively(comm, error)
        predicted = self.coefficients(points)
        prediction = self.basis.reconstruct(predicted.T)
        projected = self.basis.project(values)
        projection = self.basis.reconstruct(projected)
        relative: dict[str, npt.NDArray[np.float64]] = {}
        n = points.shape[0]
        # One sparse-times-dense product per norm: truth, surrogate error and projection error side by side.
        block = np.hstack([values, values - prediction, values - projection])
        for kind in ("l2", "h1"):
            norms = self.norm(kind).norms(block)
            reference = np.where(norms[:n] > 0, norms[:n], 1.0)
            relative[f"rel_error_{kind}"] = norms[n : 2 * n] / reference
            relative[f"proj_error_{kind}"] = norms[2 * n :] / reference
        reference = np.linalg.norm(projected, axis=0)
        network = np.linalg.norm(predicted.T - projected, axis=0) / np.where(reference > 0, reference, 1.0)
        return ErrorReport(parameters=points, network_error=network, **relative)

    def destroy(self) -> None:
        """Destroy the PETSc matrices of the cached norms and of the basis' inner product."""
        for ip in self._norms.values():
            ip.destroy()
        self._norms.clear()
        self.basis.inner_product.destroy()


def train_surrogate(
    basis: PODBasis,
    snapshots: SnapshotSet,
    space: ParameterSpace,
    *,
    seed: int = 0,
    hidden_layers: tuple[int, ...] = (64, 64, 64),
    activation: Activation = "gelu",
    input_transform: str = "linear",
    n_networks: int = 1,
    loss: str = "relative",
    adam_epochs: int = 3000,
    learning_rate: float = 3e-3,
    final_lr_ratio: float = 1e-2,
    batch_size: int | None = None,
    weight_decay: float = 0.0,
    lbfgs_iterations: int = 1000,
    validation_fraction: float = 0.2,
    patience: int = 1000,
    dtype: str = "float64",
    device: str = "auto",
    progress: bool = True,
    physics: ReducedSystems | None = None,
    physics_weight: float = 1.0,
) -> Surrogate:
    r"""Train a network from the parameters to the POD coefficients of the snapshots (collective).

    The coefficients :math:`c_i = \Phi^T M u_i` are computed in the basis' own inner product. Rank 0 trains and
    the weights are broadcast; ensemble members train in parallel over the ranks. Every option is a keyword
    argument (see :class:`~fem_ml.networks.TrainingOptions` for their meaning); an unknown one is a ``TypeError``.

    Args:
        basis: The reduced basis.
        snapshots: Training snapshots on the basis' space.
        space: The parameter space; its bounds scale the network inputs to :math:`[-1, 1]`.
        seed: Seed of initialization, validation split and batch order.
        hidden_layers: Widths of the hidden layers.
        activation: Activation function.
        input_transform: ``"linear"`` or ``"log"`` (scale :math:`\log \mu` from the log-bounds).
        n_networks: Ensemble size (members train in parallel over the ranks).
        loss: ``"relative"`` or ``"mse"``.
        adam_epochs: Maximum Adam epochs.
        learning_rate: Initial Adam learning rate.
        final_lr_ratio: Learning-rate decay over the Adam epochs.
        batch_size: Adam mini-batch size (None: full batch).
        weight_decay: Adam weight decay.
        lbfgs_iterations: Maximum L-BFGS iterations (0 skips the polish).
        validation_fraction: Held-out fraction for early stopping.
        patience: Epochs/iterations without validation improvement before stopping.
        dtype: ``"float64"`` or ``"float32"``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``.
        progress: Show progress on rank 0.
        physics: Reduced systems at parameter points without snapshots (:mod:`fem_ml.reduced`): their relative
            reduced residual joins the training loss (physics-reinforced training).
        physics_weight: Weight of that term against the data loss.

    Returns:
        The surrogate.
    """
    options = TrainingOptions(
        hidden_layers=tuple(hidden_layers),
        activation=activation,
        input_transform=input_transform,  # type: ignore[arg-type]
        n_networks=n_networks,
        loss=loss,  # type: ignore[arg-type]
        adam_epochs=adam_epochs,
        learning_rate=learning_rate,
        final_lr_ratio=final_lr_ratio,
        batch_size=batch_size,
        weight_decay=weight_decay,
        lbfgs_iterations=lbfgs_iterations,
        validation_fraction=validation_fraction,
        patience=patience,
        seed=seed,
        dtype=dtype,  # type: ignore[arg-type]
        device=device,
        progress=progress,
    )
    comm = basis.V.mesh.comm
    mismatch = space_mismatch(basis.V, snapshots.V)
    check_collectively(comm, None if mismatch is None else f"Snapshots and basis differ: {mismatch}.")
    parameters = space.validate(snapshots.parameters)
    coefficients = basis.project(snapshots).T
    physics_loss = None
    if physics is not None:
        if physics.rhs.shape[1] != basis.n_modes:
            raise ValueError(f"The reduced systems have {physics.rhs.shape[1]} modes, the basis {basis.n_modes}.")
        physics_loss = PhysicsLoss(space.validate(physics.parameters), physics.matrices, physics.rhs, physics_weight)
    network, history = train_network(
        parameters, coefficients, space.lower, space.upper, options=options, comm=comm, physics=physics_loss
    )
    return Surrogate(space, basis, network, history=history, training_parameters=parameters)
