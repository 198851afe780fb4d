# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The trained surrogate :math:`\mu \mapsto \Phi \hat c(\mu)`, returned as ``dolfinx.fem.Function``.

A :class:`Surrogate` is a composition of three parts, each with one job:

* a :class:`~fem_ml.pod.PODBasis` (the modes :math:`\Phi`, distributed like the user's function space);
* a coefficient regressor (replicated on every rank), :math:`\mu \mapsto \hat c`: any object of the
  :class:`CoefficientRegressor` protocol, a :class:`~fem_ml.networks.CoefficientNetwork`, a
  :class:`~fem_ml.kernels.KernelRegressor` or a :class:`~fem_ml.blending.BlendedRegressor` of the two;
* a :class:`~fem_ml.domain.TrainingDomain`: bounds, distance to the training points and the extrapolation policy.

Evaluating it checks the point (and that every rank passed the same one: one ``Allreduce`` of a digest, a few
microseconds; see ``benchmarks/rank_check_cost.py``), runs the regressor (a small network forward pass or a
kernel sum) and one local product :math:`\Phi \hat c`, then a ghost update. Errors against the truth come from
:mod:`fem_ml.evaluation`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Literal, Protocol, runtime_checkable

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._agree import agreed
from fem_ml._fem import function_from_owned, space_mismatch
from fem_ml._records import ErrorReport
from fem_ml.domain import ExtrapolationWarning, TrainingDomain
from fem_ml.evaluation import FieldNorms, checked_truth, relative_errors
from fem_ml.networks import CoefficientNetwork, PhysicsLoss, TrainingHistory, TrainingOptions, train_network
from fem_ml.parameters import ParameterSpace
from fem_ml.pod import InnerProduct, PODBasis
from fem_ml.reduced import ReducedSystems
from fem_ml.snapshots import SnapshotSet

__all__ = ["CoefficientRegressor", "ErrorReport", "ExtrapolationWarning", "Surrogate", "train_surrogate"]

logger = logging.getLogger(__name__)


@runtime_checkable
class CoefficientRegressor(Protocol):
    r"""What a :class:`Surrogate` needs of its map :math:`\mu \mapsto \hat c(\mu)` (replicated on every rank).

    :class:`~fem_ml.networks.CoefficientNetwork` (``kind == "network"``),
    :class:`~fem_ml.kernels.KernelRegressor` (``kind == "kernel"``) and
    :class:`~fem_ml.blending.BlendedRegressor` (``kind == "blend"``) satisfy it. Inputs are the parameters
    transformed by :attr:`input_transform` and scaled from the bounds (:meth:`scale_inputs`); the extrapolation
    checks of :class:`~fem_ml.domain.TrainingDomain` measure distances in those inputs.

    Attributes:
        kind: ``"network"``, ``"kernel"`` or ``"blend"``: the file group it is stored under and the features it has.
        input_transform: ``"linear"`` or ``"log"``.
    """

    kind: str
    input_transform: Literal["linear", "log"]

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        ...

    @property
    def n_coefficients(self) -> int:
        """Number of coefficients."""
        ...

    @property
    def has_spread(self) -> bool:
        """Whether :meth:`spread` gives an uncertainty (an ensemble, a Gaussian process)."""
        ...

    def scale_inputs(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Scaled inputs ``(n, p)`` of parameters ``(n, p)``."""
        ...

    def from_inputs(self, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Coefficients ``(n, r)`` of scaled inputs ``(n, p)``."""
        ...

    def __call__(self, parameters: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Coefficients ``(n, r)`` of parameters ``(n, p)``."""
        ...

    def spread(self, parameters: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        r"""Mean coefficients ``(n, r)`` and factors ``(n, K, r)`` of their covariance :math:`F^T F`."""
        ...

    def to_tree(self) -> dict[str, Any]:
        """The regressor as file entries."""
        ...


class Surrogate:
    """A POD surrogate on the user's function space: a basis and a coefficient regressor.

    Build one with :func:`train_surrogate` (a network), :func:`~fem_ml.selection.fit_kernel_surrogate` (RBF or
    GP) or :func:`~fem_ml.selection.select_regressor` (the best by cross-validation). Calling it returns a
    ``dolfinx.fem.Function`` on ``V``. The calls that take parameter points and return fields or coefficients
    (``rom(mu)``, :meth:`coefficients`, :meth:`predict_values`, :meth:`uncertainty`, :meth:`errors`) are
    collective: every rank must pass the same
    points (checked with one small ``Allreduce``), and a bad point on any rank is a ``ValueError`` on every rank.

    Use it as a context manager, ``with fem_ml.train_surrogate(...) as rom:``, to free on exit the PETSc matrices
    it created (the norms of :meth:`errors`); the basis' inner product only when the surrogate owns the basis.

    Args:
        space: The parameter space (names and bounds).
        basis: The reduced basis.
        regressor: The map from parameters to coefficients (a :class:`CoefficientRegressor`).
        history: Training history of each ensemble member, if known.
        test_errors: Errors measured on a test set, if known (stored by :func:`~fem_ml.archive.save`).
        training_parameters: The parameter points the network was trained on, ``(n, p)``; with them, points far
            from every training point are reported as extrapolation too.
        owns_basis: The surrogate owns ``basis`` (a loaded surrogate does): :meth:`destroy` destroys its inner
            product too. A basis from :func:`~fem_ml.pod.pod` belongs to its caller (default).

    Attributes:
        space: The parameter space.
        basis: The reduced basis.
        regressor: The map from parameters to coefficients.
        domain: The training domain: bounds, training points, extrapolation policy.
        history: Training history of each ensemble member, if known.
        test_errors: Test-set errors, if known.
        metadata: User data saved with the surrogate (JSON-serialisable).
        versions: Package versions of the file the surrogate was loaded from (empty for a trained one).
    """

    def __init__(
        self,
        space: ParameterSpace,
        basis: PODBasis,
        regressor: CoefficientRegressor,
        *,
        history: list[TrainingHistory] | None = None,
        test_errors: ErrorReport | None = None,
        training_parameters: npt.NDArray[np.float64] | None = None,
        owns_basis: bool = False,
    ):
        if regressor.n_params != space.dim or regressor.n_coefficients != basis.n_modes:
            raise ValueError(
                f"The regressor maps {regressor.n_params} -> {regressor.n_coefficients}, but the space has "
                f"{space.dim} parameters and the basis {basis.n_modes} modes."
            )
        self.space = space
        self.basis = basis
        self.regressor = regressor
        self.domain = TrainingDomain(
            space, regressor.scale_inputs, training_parameters, positive=regressor.input_transform == "log"
        )
        self.history = history
        self.test_errors = test_errors
        self.metadata: dict[str, Any] = {}
        self.versions: dict[str, str] = {}
        self._norms = FieldNorms(basis.V, reuse=basis.inner_product)
        self._owns_basis = owns_basis
        self._modes32: npt.NDArray[np.float32] | None = None
        self._buffer32: npt.NDArray[np.float32] | None = None

    @property
    def network(self) -> CoefficientNetwork:
        """The regressor if it is a network, for the features that exist for networks only (inverse problems, ParaView).

        Raises:
            TypeError: for a surrogate with another regressor (a kernel one): the feature is for networks only.
        """
        if not isinstance(self.regressor, CoefficientNetwork):
            hint = ""
            if self.regressor.kind == "blend":
                hint = (" A blend's network alone is Surrogate(rom.space, rom.basis, rom.regressor.network), "
                        "without the kernel's share of the prediction.")  # fmt: skip
            raise TypeError(
                f"This surrogate's regressor is a {self.regressor.kind} regressor, not a network; this feature "
                f"(inverse problems, the ParaView plugin, training histories) needs a network.{hint}"
            )
        return self.regressor

    @property
    def training_parameters(self) -> npt.NDArray[np.float64] | None:
        """The training points ``(n, p)``, if known (see :attr:`domain`)."""
        return self.domain.training_parameters

    def set_training_parameters(self, parameters: npt.ArrayLike) -> None:
        """Record the training points, which define "far from every training point" (local)."""
        self.domain.set_training_parameters(parameters)

    @property
    def extrapolation(self) -> Literal["warn", "raise"]:
        """The extrapolation policy, ``"warn"`` (default) or ``"raise"``.

        What a point outside the parameter bounds, or far from every training point, does: ``"warn"`` (default)
        issues one :class:`~fem_ml.domain.ExtrapolationWarning` per surrogate and kind, with the distance;
        ``"raise"`` (strict mode) raises ``ValueError``. Distances are measured in the network's scaled inputs,
        where the parameter box is :math:`[-1, 1]^p`; "far" means farther from the nearest training point than
        :attr:`far_factor` times the largest nearest-neighbour distance among the training points.
        """
        return self.domain.policy

    @extrapolation.setter
    def extrapolation(self, policy: Literal["warn", "raise"]) -> None:
        self.domain.policy = policy

    @property
    def far_factor(self) -> float:
        """The factor of "far from every training point" (see :attr:`extrapolation`); default 2."""
        return self.domain.far_factor

    @far_factor.setter
    def far_factor(self, factor: float) -> None:
        self.domain.far_factor = factor

    def check_points(self, parameters: npt.ArrayLike | Any, *, expected: int | None = None) -> npt.NDArray[np.float64]:
        """Validate points (shape, names, NaN) and apply the :attr:`extrapolation` policy (local).

        Returns:
            The points ``(n, p)``.

        Raises:
            ValueError: for a wrong shape, count or name, NaN/inf, or, in strict mode, extrapolation.
        """
        return self.domain.check(parameters, expected=expected)[0]

    def _agreed_inputs(self, parameters: npt.ArrayLike | Any, expected: int | None) -> npt.NDArray[np.float64]:
        """Scaled network inputs of points checked on every rank and equal on all (collective, one Allreduce)."""
        return agreed(
            self.V.mesh.comm,
            lambda: self.domain.check(parameters, expected=expected),
            "The parameter points of a surrogate call",
            key=lambda checked: checked[0],
        )[1]

    @property
    def V(self) -> fem.FunctionSpace:
        """The function space of the predictions."""
        return self.basis.V

    @property
    def n_modes(self) -> int:
        """Number of reduced coefficients."""
        return self.basis.n_modes

    def coefficients(self, parameters: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Predicted reduced coefficients, shape ``(n, r)``, for one point or a batch (one forward pass; collective).

        Collective only to check that every rank passed the same points (one small ``Allreduce``); for a purely
        local evaluation call :attr:`network` directly.

        Raises:
            ValueError: on every rank, for a wrong shape or count, NaN/inf, points that differ between ranks, or
                extrapolation in strict mode.
        """
        return self.regressor.from_inputs(self._agreed_inputs(parameters, None))

    def __call__(self, mu: npt.ArrayLike, *, out: fem.Function | None = None, name: str = "prediction") -> fem.Function:
        r"""Predict the field at one parameter point (collective: checks the point on every rank, updates ghosts).

        Args:
            mu: One point, ``(p,)`` array or ``{name: value}``, the same on every rank.
            out: Function on ``V`` to fill instead of allocating a new one.
            name: Name of the returned Function.

        Returns:
            :math:`\Phi \hat c(\mu)` as a Function on ``V``.

        Raises:
            ValueError: on every rank, for a bad point (on any rank), points that differ between ranks, or an
                ``out`` on another space.
        """

        def check() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
            if out is not None and (mismatch := space_mismatch(self.V, out.function_space)) is not None:
                raise ValueError(f"out is not on the surrogate's function space: {mismatch}.")
            return self.domain.check(mu, expected=1)

        inputs = agreed(self.V.mesh.comm, check, "The parameter point of a surrogate call", key=lambda c: c[0])[1]
        c = self.regressor.from_inputs(inputs)[0]
        if self._modes32 is None or self._buffer32 is None:
            return self.basis.function(c, out=out, name=name)
        np.dot(self._modes32, c.astype(np.float32), out=self._buffer32)
        return function_from_owned(self.V, self._buffer32, out=out, name=name)

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
        """Owned dof values of the predictions, shape ``(n_owned, n)`` (collective, see :meth:`coefficients`)."""
        return self.basis.reconstruct(self.coefficients(parameters).T)

    def _no_spread(self) -> str | None:
        """Why this surrogate has no uncertainty, or None when it has one."""
        if self.regressor.has_spread:
            return None
        if self.regressor.kind == "network":
            return "The uncertainty needs an ensemble: train with n_networks >= 2."
        if self.regressor.kind == "blend":
            return "This blend has no uncertainty: its weight leaves one member without one (RBF, a single network)."
        return "This regressor has no uncertainty (RBF interpolation); a Gaussian process (method='gp') has one."

    def deviation(self, parameters: npt.ArrayLike) -> npt.NDArray[np.float64]:
        r"""Relative deviation of the prediction at each point, shape ``(n,)`` (local).

        .. math:: s(\mu) = \Big(\frac{1}{K} \sum_{m=1}^K \|\hat c_m(\mu) - \bar c(\mu)\|_2^2\Big)^{1/2}
            \Big/ \|\bar c(\mu)\|_2

        for an ensemble: the members' spread in the basis' inner product (the modes are orthonormal in it) relative
        to the mean prediction; for a Gaussian process, :math:`\big(\sum_k \sigma_k(\mu)^2\big)^{1/2} / \|\bar
        c(\mu)\|_2` with the predictive deviation :math:`\sigma_k` of each coefficient; for a blend, from the
        mixture's covariance (:mod:`fem_ml.blending`). It needs a regressor with an uncertainty
        (``n_networks >= 2``, a GP, or a blend); it estimates the regressor's share of the error.
        """
        if (reason := self._no_spread()) is not None:
            raise ValueError(reason.replace("uncertainty", "deviation", 1))
        mean, factors = self.regressor.spread(self.check_points(parameters))
        spread = np.sqrt(np.sum(factors**2, axis=(1, 2)))
        return spread / np.maximum(np.linalg.norm(mean, axis=1), 1e-300)

    def uncertainty(self, mu: npt.ArrayLike, *, name: str = "prediction") -> tuple[fem.Function, fem.Function]:
        r"""Mean prediction and its pointwise standard deviation as Functions on ``V`` (collective).

        The deviation field holds, per dof, :math:`\big(\sum_k (\Phi f_k)^2\big)^{1/2}` with the factors
        :math:`f_k` of :meth:`CoefficientRegressor.spread`: for an ensemble
        :math:`\big(\frac1K \sum_m (\Phi (\hat c_m - \bar c))^2\big)^{1/2}`, for a Gaussian process
        :math:`\big(\sum_k (\Phi_k \sigma_k)^2\big)^{1/2}`. It is named ``<name>_std``. Every rank must pass the
        same point (checked).
        """

        def check() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
            if (reason := self._no_spread()) is not None:
                raise ValueError(reason)
            return self.domain.check(mu, expected=1)

        points = agreed(self.V.mesh.comm, check, "The parameter point of uncertainty", key=lambda c: c[0])[0]
        mean, factors = self.regressor.spread(points)
        spread = self.basis.modes @ factors[0].T
        std = np.sqrt(np.sum(spread**2, axis=1))
        return self.basis.function(mean[0], name=name), function_from_owned(self.V, std, name=f"{name}_std")

    def norm(self, kind: str) -> InnerProduct:
        """The inner product used for ``kind`` norms (``"l2"``, ``"h1"``), assembled once and cached."""
        return self._norms.get(kind)

    def errors(self, parameters: npt.ArrayLike, truth: SnapshotSet | npt.NDArray[np.float64]) -> ErrorReport:
        """Relative L2 and H1 errors of the surrogate and of the POD projection (collective).

        Computed by :func:`fem_ml.evaluation.relative_errors`.

        Args:
            parameters: Test points ``(n, p)``, the same on every rank.
            truth: The true solutions at those points: a :class:`~fem_ml.snapshots.SnapshotSet` on ``V`` or owned
                dof values ``(n_owned, n)``.

        Returns:
            Per-sample errors.

        Raises:
            ValueError: on every rank, for bad or rank-dependent points, a truth of the wrong space or shape, or a
                truth that is zero or holds NaN/inf (a relative error is undefined then).
        """
        points, values = checked_truth(self, parameters, truth)
        errors = relative_errors(self.basis, self._norms, values, self.coefficients(points))
        return ErrorReport(parameters=points, **errors)

    def __enter__(self) -> Surrogate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def destroy(self) -> None:
        """Destroy what the surrogate created (collective): the norms of :meth:`errors`.

        The basis' inner product too when the surrogate owns the basis (``owns_basis``); a basis from
        :func:`~fem_ml.pod.pod` is its caller's (:meth:`~fem_ml.pod.PODBasis.destroy`).
        """
        self._norms.destroy()
        if self._owns_basis:
            self.basis.inner_product.destroy()


def train_surrogate(
    basis: PODBasis,
    snapshots: SnapshotSet,
    space: ParameterSpace,
    *,
    options: TrainingOptions | None = None,
    physics: ReducedSystems | None = None,
    physics_weight: float = 1.0,
    **overrides: Any,
) -> Surrogate:
    r"""Train a network from the parameters to the POD coefficients of the snapshots (collective).

    The coefficients :math:`c_i = \Phi^T M u_i` are computed in the basis' own inner product. Rank 0 trains and
    the weights are broadcast; ensemble members train in parallel over the ranks. The training options are a
    :class:`~fem_ml.networks.TrainingOptions` (``options=``), with any of its fields overridden by keyword::

        rom = fem_ml.train_surrogate(basis, snapshots, space, options=TrainingOptions(hidden_layers=(32, 32)), seed=1)

    An unknown keyword is a ``TypeError``; options or points that differ between ranks are a ``ValueError`` on
    every rank.

    Args:
        basis: The reduced basis.
        snapshots: Training snapshots on the basis' space.
        space: The parameter space; its bounds scale the network inputs to :math:`[-1, 1]`.
        options: The training options (default :class:`~fem_ml.networks.TrainingOptions`).
        physics: Reduced systems at parameter points without snapshots (:mod:`fem_ml.reduced`): their relative
            reduced residual joins the training loss (physics-reinforced training).
        physics_weight: Weight of that term against the data loss.
        overrides: Fields of :class:`~fem_ml.networks.TrainingOptions` that replace those of ``options``
            (``seed``, ``hidden_layers``, ``adam_epochs``, ``n_networks``, ``progress``...).

    Returns:
        The surrogate.
    """
    options = dataclasses.replace(options if options is not None else TrainingOptions(), **overrides)
    comm = basis.V.mesh.comm

    def check() -> npt.NDArray[np.float64]:
        mismatch = space_mismatch(basis.V, snapshots.V)
        if mismatch is not None:
            raise ValueError(f"Snapshots and basis differ: {mismatch}.")
        if physics is not None and physics.rhs.shape[1] != basis.n_modes:
            raise ValueError(f"The reduced systems have {physics.rhs.shape[1]} modes, the basis {basis.n_modes}.")
        return space.validate(snapshots.parameters)

    parameters = agreed(
        comm, check, "The training points or options of train_surrogate", key=lambda p: (p, options, physics_weight)
    )
    coefficients = basis.project(snapshots).T
    physics_loss = None
    if physics is not None:
        physics_loss = PhysicsLoss(space.validate(physics.parameters), physics.matrices, physics.rhs, physics_weight)
    network, history = train_network(
        parameters, coefficients, space.lower, space.upper, options=options, comm=comm, physics=physics_loss
    )
    return Surrogate(space, basis, network, history=history, training_parameters=parameters)
