# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Training data of reduced dynamics: trajectories of POD coefficients over time, and their time derivatives.

A trajectory is the reduced state :math:`q(t_k) = \Phi^T M u(t_k) \in \mathbb{R}^r` at increasing times
:math:`t_0 < t_1 < \dots`, for one parameter point :math:`\mu` and, optionally, one input history
:math:`u(t_k) \in \mathbb{R}^m`. :func:`reduce_trajectories` builds them from the snapshots of
:func:`~fem_ml.collection.collect_trajectories` (a :class:`~fem_ml.snapshots.SnapshotSet` whose last parameter is
the time) or
from a :class:`~fem_ml.store.SnapshotStore` holding such samples, written on any number of ranks;
:meth:`Trajectories.from_arrays` takes coefficients computed elsewhere.

Time derivatives come from finite differences on the sample times (:func:`time_derivative`): Fornberg's weights
for the ``order + derivative`` nearest samples (centred inside, one-sided at the ends), exact for polynomials of
degree ``order + derivative - 1``, so of order ``order`` on uniform and non-uniform steps alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

from fem_ml.pod import PODBasis
from fem_ml.snapshots import SnapshotSet
from fem_ml.store import SnapshotStore

__all__ = ["Inputs", "Trajectories", "finite_difference_weights", "reduce_trajectories", "time_derivative"]

#: The input histories, given as values at the output times, ``(n_times,)`` or ``(n_times, n_inputs)``, or as a
#: function of time returning ``n_inputs`` values (None for no input).
Inputs = npt.ArrayLike | Callable[[float], npt.ArrayLike] | None


@dataclass(frozen=True)
class Trajectories:
    r"""Reduced trajectories: coefficients over time, one per parameter point (and input history).

    The arrays are small and replicated: every rank holds all of them.

    Attributes:
        times: Sample times of each trajectory, ``(k_i,)``, strictly increasing.
        states: Reduced coefficients of each trajectory, ``(r, k_i)``.
        parameters: Parameter point of each trajectory, ``(s, p)`` (``p = 0`` for a non-parametric problem).
        inputs: Input values at the sample times, ``(m, k_i)`` per trajectory, or None without inputs.
        parameter_names: Names of the ``p`` parameters.
        projection_errors: Relative projection error of each trajectory's fields onto the basis,
            :math:`\|U_i - \Phi Q_i\| / \|U_i\|` (Frobenius over its times, in the basis's inner product),
            ``(s,)``; None when unknown. :func:`reduce_trajectories` records them; with ``discrepancy=``,
            :func:`~fem_ml.dynamics.opinf.fit_operator_inference` measures its re-simulation error against them.
    """

    times: tuple[npt.NDArray[np.float64], ...]
    states: tuple[npt.NDArray[np.float64], ...]
    parameters: npt.NDArray[np.float64]
    inputs: tuple[npt.NDArray[np.float64], ...] | None = None
    parameter_names: tuple[str, ...] = field(default=())
    projection_errors: npt.NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        s = len(self.times)
        if s == 0 or len(self.states) != s:
            raise ValueError(f"Expected as many state arrays as time arrays (>= 1), got {len(self.states)} and {s}.")
        r = self.states[0].shape[0] if self.states[0].ndim == 2 else -1
        for i, (t, q) in enumerate(zip(self.times, self.states, strict=True)):
            if t.ndim != 1 or t.size < 2 or not np.isfinite(t).all() or np.any(np.diff(t) <= 0):
                raise ValueError(f"Trajectory {i}: times must be finite, strictly increasing, at least 2 of them.")
            if q.ndim != 2 or q.shape != (r, t.size) or r < 1:
                raise ValueError(f"Trajectory {i}: states must have shape (r, {t.size}) with r = {r}, got {q.shape}.")
            if not np.isfinite(q).all():
                raise ValueError(f"Trajectory {i}: states contain NaN or inf.")
        if self.parameters.ndim != 2 or self.parameters.shape[0] != s or not np.isfinite(self.parameters).all():
            raise ValueError(f"parameters must be a finite ({s}, p) array, got shape {self.parameters.shape}.")
        if len(self.parameter_names) != self.parameters.shape[1]:
            raise ValueError(f"{len(self.parameter_names)} parameter names for {self.parameters.shape[1]} parameters.")
        if self.inputs is not None:
            if len(self.inputs) != s:
                raise ValueError(f"{len(self.inputs)} input histories for {s} trajectories.")
            m = self.inputs[0].shape[0] if self.inputs[0].ndim == 2 else -1
            for i, (t, u) in enumerate(zip(self.times, self.inputs, strict=True)):
                if u.ndim != 2 or u.shape != (m, t.size) or m < 1 or not np.isfinite(u).all():
                    raise ValueError(f"Trajectory {i}: inputs must be a finite (m, {t.size}) array, got {u.shape}.")
        e = self.projection_errors
        if e is not None and (
            not isinstance(e, np.ndarray) or e.shape != (s,) or not np.isfinite(e).all() or np.any(e < 0)
        ):
            raise ValueError(f"projection_errors must be a finite, non-negative ({s},) array, got {e!r}.")

    @classmethod
    def from_arrays(
        cls,
        times: Sequence[npt.ArrayLike],
        states: Sequence[npt.ArrayLike],
        *,
        parameters: npt.ArrayLike | None = None,
        inputs: Sequence[npt.ArrayLike] | None = None,
        parameter_names: Sequence[str] | None = None,
        projection_errors: npt.ArrayLike | None = None,
    ) -> Trajectories:
        """Trajectories from arrays (local; give the same arrays on every rank).

        Args:
            times: Sample times of each trajectory.
            states: Coefficients ``(r, k_i)`` of each trajectory.
            parameters: ``(s, p)`` parameter points (default: none, ``p = 0``).
            inputs: ``(m, k_i)`` input values of each trajectory at its sample times (``(k_i,)`` for ``m = 1``).
            parameter_names: Names of the parameters (default ``mu0, mu1, ...``).
            projection_errors: Relative projection error of each trajectory (see the attribute), or None.

        Raises:
            ValueError: for inconsistent shapes, non-increasing times or non-finite values.
        """
        t = tuple(np.array(ti, dtype=np.float64).reshape(-1) for ti in times)
        q = tuple(np.array(qi, dtype=np.float64) for qi in states)
        p = np.zeros((len(t), 0)) if parameters is None else np.array(parameters, dtype=np.float64)
        if p.ndim == 1:
            p = p.reshape(len(t), -1)
        u = None
        if inputs is not None:
            u = tuple(np.atleast_2d(np.array(ui, dtype=np.float64)) for ui in inputs)
        names = tuple(parameter_names) if parameter_names is not None else tuple(f"mu{j}" for j in range(p.shape[1]))
        e = None if projection_errors is None else np.array(projection_errors, dtype=np.float64).reshape(-1)
        return cls(t, q, p, u, names, e)

    @property
    def n_modes(self) -> int:
        """Reduced dimension :math:`r`."""
        return self.states[0].shape[0]

    @property
    def n_inputs(self) -> int:
        """Input dimension :math:`m` (0 without inputs)."""
        return 0 if self.inputs is None else self.inputs[0].shape[0]

    def __len__(self) -> int:
        return len(self.times)


def reduce_trajectories(
    basis: PODBasis,
    snapshots: SnapshotSet | SnapshotStore,
    *,
    parameter_names: Sequence[str] | None = None,
) -> Trajectories:
    r"""Project trajectories onto a POD basis: :math:`q(t_k) = \Phi^T M u(t_k)` (collective).

    Each trajectory's relative projection error :math:`\|U_i - \Phi Q_i\|_M / \|U_i\|_M` is recorded too
    (``Trajectories.projection_errors``): the floor of any reduced model's error on its fields, reported by
    :func:`~fem_ml.dynamics.opinf.fit_operator_inference`, whose ``discrepancy`` option chooses the regularization
    against it.

    The snapshots are those of :func:`~fem_ml.collection.collect_trajectories`: each column's parameter point ends
    with its
    time. Columns with the same leading parameters form one trajectory, sorted by time. A store (written on any
    number of ranks) is read through :meth:`~fem_ml.store.SnapshotStore.snapshots`.

    Args:
        basis: The POD basis (on the snapshots' function space).
        snapshots: The trajectories' snapshots.
        parameter_names: Names of the parameters without the time (default: the store's parameter space minus its
            last name, else ``mu0, mu1, ...``).

    Returns:
        The reduced trajectories, the same on every rank.

    Raises:
        ValueError: on every rank, if a trajectory has fewer than 2 times or repeats a time.
    """
    names: Sequence[str] | None = parameter_names
    if isinstance(snapshots, SnapshotStore):
        if names is None and snapshots.space is not None:
            names = tuple(snapshots.space.names)[:-1]
        snapshots = snapshots.snapshots()
    coefficients = basis.project(snapshots)
    comm: MPI.Comm = basis.V.mesh.comm
    coefficients = comm.bcast(coefficients, root=0)  # bit-identical data on every rank
    norms, residuals = basis.projection_norms(snapshots.values, coefficients)
    norms_sq, residuals_sq = comm.bcast((norms**2, residuals**2), root=0)  # the same on every rank
    points = np.asarray(snapshots.parameters, dtype=np.float64)
    if points.shape[1] < 1:
        raise ValueError("The snapshots have no parameters; the last parameter must be the time.")
    mu, t = points[:, :-1], points[:, -1]
    keys, which = np.unique(mu, axis=0, return_inverse=True)
    which = np.asarray(which).reshape(-1)
    times, states, errors = [], [], np.zeros(keys.shape[0])
    for g in range(keys.shape[0]):
        columns = np.flatnonzero(which == g)
        order = columns[np.argsort(t[columns], kind="stable")]
        times.append(t[order])
        states.append(np.ascontiguousarray(coefficients[:, order]))
        total = float(np.sum(norms_sq[columns]))
        errors[g] = np.sqrt(np.sum(residuals_sq[columns]) / total) if total > 0 else 0.0
    if names is None:
        names = tuple(f"mu{j}" for j in range(mu.shape[1]))
    return Trajectories(tuple(times), tuple(states), keys, None, tuple(names), errors)


def finite_difference_weights(nodes: npt.ArrayLike, at: float, derivative: int) -> npt.NDArray[np.float64]:
    r"""Fornberg's finite-difference weights for the ``derivative``-th derivative at ``at`` from values at ``nodes``.

    Exact for polynomials of degree ``len(nodes) - 1`` (B. Fornberg, Math. Comp. 51, 1988).

    Args:
        nodes: Distinct sample points.
        at: Where the derivative is evaluated.
        derivative: Order of the derivative (``< len(nodes)``).

    Returns:
        Weights ``w`` with :math:`f^{(d)}(a) \approx \sum_j w_j f(x_j)`.
    """
    x = np.asarray(nodes, dtype=np.float64)
    n, m = x.size, derivative
    if m >= n:
        raise ValueError(f"A derivative of order {m} needs more than {n} nodes.")
    c = np.zeros((n, m + 1))
    c1, c4 = 1.0, x[0] - at
    c[0, 0] = 1.0
    for i in range(1, n):
        mn = min(i, m)
        c2, c5, c4 = 1.0, c4, x[i] - at
        for j in range(i):
            c3 = x[i] - x[j]
            c2 *= c3
            if j == i - 1:
                for k in range(mn, 0, -1):
                    c[i, k] = c1 * (k * c[i - 1, k - 1] - c5 * c[i - 1, k]) / c2
                c[i, 0] = -c1 * c5 * c[i - 1, 0] / c2
            for k in range(mn, 0, -1):
                c[j, k] = (c4 * c[j, k] - k * c[j, k - 1]) / c3
            c[j, 0] = c4 * c[j, 0] / c3
        c1 = c2
    return c[:, m]


def time_derivative(
    times: npt.ArrayLike, states: npt.ArrayLike, *, order: int = 4, derivative: int = 1
) -> npt.NDArray[np.float64]:
    r"""Finite-difference estimate of :math:`d^k q / dt^k` at every sample time (local).

    Each estimate uses the ``order + derivative`` samples nearest in index (centred where possible, one-sided at
    the ends) with Fornberg's weights, so its error is :math:`O(h^{\text{order}})` for uniform and non-uniform
    steps alike (``h`` the largest step in the stencil).

    Args:
        times: Strictly increasing sample times ``(k,)``.
        states: Values ``(r, k)`` (or ``(k,)``).
        order: Order of accuracy, at least 4 (default).
        derivative: 1 for :math:`\dot q`, 2 for :math:`\ddot q`.

    Returns:
        The derivative estimates, shaped like ``states``.

    Raises:
        ValueError: for fewer than ``order + derivative`` samples, times that are not finite and strictly
            increasing, or ``order < 4``.
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    q = np.asarray(states, dtype=np.float64)
    flat = q.ndim == 1
    q2 = q[None, :] if flat else q
    if not isinstance(order, int | np.integer) or order < 4:
        raise ValueError(f"order must be an integer >= 4, got {order!r}.")
    if derivative not in (1, 2):
        raise ValueError(f"derivative must be 1 or 2, got {derivative!r}.")
    if q2.ndim != 2 or q2.shape[1] != t.size:
        raise ValueError(f"states must have shape (r, {t.size}), got {q.shape}.")
    if not np.isfinite(t).all() or np.any(np.diff(t) <= 0):
        raise ValueError("times must be finite and strictly increasing (repeated times cannot be differentiated).")
    width = order + derivative
    if t.size < width:
        raise ValueError(f"{t.size} samples are too few for an order-{order} estimate: need {width}.")
    out = np.empty_like(q2)
    half = width // 2
    for k in range(t.size):
        start = min(max(k - half, 0), t.size - width)
        stencil = slice(start, start + width)
        # Scale to [-1, 1]-ish so the weights stay well conditioned for tiny steps.
        scale = t[start + width - 1] - t[start]
        w = finite_difference_weights((t[stencil] - t[k]) / scale, 0.0, derivative) / scale**derivative
        out[:, k] = q2[:, stencil] @ w
    return out[0] if flat else out
