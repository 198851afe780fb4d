# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Time integration of small reduced systems :math:`\dot y = f(t, y)`, with a guard that stops a blow-up.

Reduced models of diffusion-dominated problems are stiff (eigenvalues of the linear part spread over decades), so
the integrators are implicit and use the analytic Jacobian: ``"bdf"`` is VODE's variable-order BDF (Brown,
Byrne and Hindmarsh, SIAM J. Sci. Stat. Comput. 10, 1989; through :class:`scipy.integrate.ode`, the stepping loop
in Fortran), ``"scipy-bdf"`` is :func:`scipy.integrate.solve_ivp`'s BDF (pure Python, slower, same accuracy).

A learned model can be unstable. The :class:`~fem_ml.dynamics.simulate.StabilityGuard` watches every evaluation of
:math:`f`: once the
state leaves the ball :math:`\|y\|_2 \le` ``bound`` or stops being finite, the integration stops and the
:class:`~fem_ml.dynamics.simulate.Simulation` says so (``completed`` False, ``blowup_time``), holding only the finite
states reached before;
no inf or NaN is ever returned. :meth:`Simulation.raise_if_blowup` turns that into a :class:`BlowUpError`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import integrate

if TYPE_CHECKING:
    from pathlib import Path

    from dolfinx import fem

    from fem_ml.pod import PODBasis

__all__ = ["BlowUpError", "Integrator", "Simulation", "StabilityGuard", "integrate_system"]

Integrator = Literal["bdf", "scipy-bdf"]
Rhs = Callable[[float, npt.NDArray[np.float64]], npt.NDArray[np.float64]]


class BlowUpError(RuntimeError):
    """A reduced simulation left the region its guard allows (it grew without bound or became non-finite)."""


@dataclass(frozen=True)
class StabilityGuard:
    r"""The region a reduced state may visit: :math:`\|y\|_2 \le` ``bound``, finite.

    Attributes:
        bound: Largest allowed Euclidean norm of the state.
    """

    bound: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.bound) or self.bound <= 0:
            raise ValueError(f"The guard's bound must be positive and finite, got {self.bound!r}.")
        object.__setattr__(self, "_bound_squared", float(self.bound) ** 2)  # inf for bounds above 1.3e154

    @classmethod
    def from_states(cls, states: npt.ArrayLike | list[npt.ArrayLike], *, factor: float = 10.0) -> StabilityGuard:
        """A guard allowing ``factor`` times the largest state norm of the given (training) states.

        Args:
            states: ``(r, k)`` arrays (one or a list).
            factor: Margin over the largest training norm (> 1).
        """
        arrays = states if isinstance(states, list) else [states]
        largest = max(
            float(np.max(np.linalg.norm(np.atleast_2d(np.asarray(q, dtype=np.float64)), axis=0))) for q in arrays
        )
        if factor <= 1 or not np.isfinite(factor):
            raise ValueError(f"factor must be finite and > 1, got {factor!r}.")
        return cls(factor * max(largest, np.finfo(np.float64).tiny))

    def allows(self, y: npt.NDArray[np.float64]) -> bool:
        """True if ``y`` is finite and inside the bound."""
        # The squared norm against the squared bound, without numpy.linalg.norm's overhead: the guard is called at
        # every right-hand side evaluation of a fit's re-simulations. NaN fails the comparison; inf (also a finite
        # state whose squared norm overflows, as its norm did before) is refused explicitly.
        v = y if isinstance(y, np.ndarray) and y.ndim == 1 else np.ravel(y)
        squared = float(v.dot(v))
        return squared <= self._bound_squared and squared != math.inf  # type: ignore[attr-defined]


@dataclass
class Simulation:
    """The result of a reduced simulation.

    Attributes:
        times: The requested output times ``(k,)``.
        coefficients: States at the output times reached, ``(r, k_reached)``: all finite; ``k_reached = k`` when
            ``completed``.
        completed: True if every requested time was reached inside the guard.
        blowup_time: Time at which the guard stopped the integration (None when completed or stopped for another
            reason).
        message: What happened, in words.
        eigenvalues: Eigenvalues of the linear part of the model at the simulated parameter (empty when not
            known), sorted by real part, largest first.
        wall_time_s: Seconds spent integrating.
        n_rhs: Number of right-hand side evaluations.
        basis: The POD basis that turns coefficients into fields (None: coefficients only).
    """

    times: npt.NDArray[np.float64]
    coefficients: npt.NDArray[np.float64]
    completed: bool
    blowup_time: float | None
    message: str
    eigenvalues: npt.NDArray[np.complex128] = field(default_factory=lambda: np.empty(0, dtype=np.complex128))
    wall_time_s: float = 0.0
    n_rhs: int = 0
    basis: PODBasis | None = field(default=None, repr=False)

    @property
    def t(self) -> npt.NDArray[np.float64]:
        """The output times reached, ``(k_reached,)``."""
        return self.times[: self.coefficients.shape[1]]

    def raise_if_blowup(self) -> Simulation:
        """Return self if the simulation completed, else raise :class:`BlowUpError` with its message."""
        if not self.completed:
            raise BlowUpError(self.message)
        return self

    def report(self) -> dict[str, object]:
        """A JSON-serialisable summary: status, times reached, timing and the linear part's eigenvalues."""
        return {
            "completed": self.completed,
            "blowup_time": self.blowup_time,
            "message": self.message,
            "n_times_requested": int(self.times.size),
            "n_times_reached": int(self.coefficients.shape[1]),
            "wall_time_s": self.wall_time_s,
            "n_rhs": self.n_rhs,
            "eigenvalues_real": [float(v.real) for v in self.eigenvalues],
            "eigenvalues_imag": [float(v.imag) for v in self.eigenvalues],
            "max_real_eigenvalue": float(np.max(self.eigenvalues.real)) if self.eigenvalues.size else None,
        }

    def _require_basis(self) -> PODBasis:
        if self.basis is None:
            raise ValueError("This simulation has no POD basis: build the model with one to get fields.")
        return self.basis

    def values(self) -> npt.NDArray[np.float64]:
        r"""Owned dof values :math:`\Phi q(t_k)` at the times reached, ``(n_owned, k_reached)`` (local)."""
        return self._require_basis().reconstruct(self.coefficients)

    def functions(self, *, name: str = "prediction") -> list[fem.Function]:
        """The fields at the times reached as ``dolfinx.fem.Function`` objects (collective)."""
        basis = self._require_basis()
        return [basis.function(self.coefficients[:, k], name=name) for k in range(self.coefficients.shape[1])]

    def write_xdmf(
        self, path: str | Path, *, name: str = "prediction", unit: str | None = None, metadata: dict | None = None
    ) -> Path:
        """Write the fields at the times reached as an XDMF (``.xdmf``) or VTX (``.bp``) time series (collective).

        The simulation time is the file's time, so ParaView's time controls step through it.
        """
        from fem_ml.io import write_fields

        basis = self._require_basis()
        values = basis.reconstruct(self.coefficients)
        steps = [{name: values[:, k]} for k in range(values.shape[1])]
        info = {"simulation": self.report(), **(metadata or {})}
        return write_fields(
            path, basis.V, steps, times=self.t.tolist(), metadata=info, units=None if unit is None else {name: unit}
        )


def integrate_system(
    rhs: Rhs,
    jacobian: Rhs | None,
    initial: npt.ArrayLike,
    times: npt.ArrayLike,
    *,
    method: Integrator = "bdf",
    rtol: float = 1e-8,
    atol: float = 1e-12,
    guard: StabilityGuard | None = None,
    max_steps: int = 100_000,
) -> Simulation:
    r"""Integrate :math:`\dot y = f(t, y)`, :math:`y(t_0) = y_0` to the output times, under a stability guard (local).

    Args:
        rhs: :math:`f(t, y)`.
        jacobian: :math:`\partial f / \partial y (t, y)` (``(n, n)``), or None for finite differences.
        initial: :math:`y_0` at ``times[0]``.
        times: Increasing output times ``(k,)``; the first is the initial time.
        method: ``"bdf"`` (VODE) or ``"scipy-bdf"``.
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        guard: Stop once the state leaves it (default: only non-finite states stop).
        max_steps: Most internal steps between two output times.

    Returns:
        The :class:`~fem_ml.dynamics.simulate.Simulation` (without basis or eigenvalues; the caller adds them).
    """
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    y0 = np.array(initial, dtype=np.float64).reshape(-1)
    if t.size < 1 or not np.isfinite(t).all() or np.any(np.diff(t) <= 0):
        raise ValueError("times must be finite and strictly increasing.")
    if not np.isfinite(y0).all():
        raise ValueError("The initial state contains NaN or inf.")
    if method not in ("bdf", "scipy-bdf"):
        raise ValueError(f"method must be 'bdf' or 'scipy-bdf', got {method!r}.")
    check = guard if guard is not None else StabilityGuard(np.finfo(np.float64).max)
    if not check.allows(y0):
        return Simulation(t, np.empty((y0.size, 0)), False, float(t[0]), "The initial state is outside the guard.")
    state: dict[str, Any] = {"tripped": None, "n": 0}
    zero = np.zeros_like(y0)

    def f(s: float, y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        state["n"] += 1
        if state["tripped"] is not None or not check.allows(y):
            if state["tripped"] is None:
                state["tripped"] = s
            return zero  # a frozen state lets the integrator finish the interval at once
        dy = rhs(s, y)
        if float(dy.dot(dy)) < math.inf:  # finite (the common case, checked in one product) ...
            return dy
        return dy if np.isfinite(dy).all() else zero  # ... or so large that the product overflows

    def jac(s: float, y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if state["tripped"] is not None or not check.allows(y):
            return np.zeros((y.size, y.size))
        assert jacobian is not None
        return jacobian(s, y)

    out = np.empty((y0.size, t.size))
    out[:, 0] = y0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # VODE's "excess work" warning becomes the result's message instead
        run = _run_vode if method == "bdf" else _run_solve_ivp
        reached, failure = run(f, jac if jacobian is not None else None, t, out, state, check, rtol, atol, max_steps)
    elapsed = time.perf_counter() - start
    if reached == t.size:
        return Simulation(t, out, True, None, "completed", wall_time_s=elapsed, n_rhs=int(state["n"]))  # type: ignore[arg-type]
    if failure:
        return Simulation(t, out[:, :reached], False, None, failure, wall_time_s=elapsed, n_rhs=int(state["n"]))  # type: ignore[arg-type]
    when = float(state["tripped"]) if state["tripped"] is not None else float(t[reached])  # type: ignore[arg-type]
    message = (
        f"Blow-up: the reduced state left the guard (|q| <= {check.bound:.3e}, finite) at t = {when:.6g}; "
        f"stopped after {reached} of {t.size} output times."
    )
    return Simulation(t, out[:, :reached], False, when, message, wall_time_s=elapsed, n_rhs=int(state["n"]))  # type: ignore[arg-type]


def _run_vode(
    f: Rhs,
    jac: Rhs | None,
    t: npt.NDArray,
    out: npt.NDArray,
    state: dict[str, Any],
    check: StabilityGuard,
    rtol: float,
    atol: float,
    max_steps: int,
) -> tuple[int, str]:
    """Fill ``out`` with VODE's BDF solution; returns the number of output times reached and a failure message."""
    solver = integrate.ode(f, jac)
    solver.set_integrator("vode", method="bdf", rtol=rtol, atol=atol, nsteps=max_steps, order=5)
    solver.set_initial_value(out[:, 0], t[0])
    for k in range(1, t.size):
        y = solver.integrate(t[k])
        if state["tripped"] is not None or not check.allows(y):
            return k, ""
        if not solver.successful():
            return k, f"VODE stopped before t = {t[k]:.6g} (status {solver.get_return_code()})"
        out[:, k] = y
    return t.size, ""


def _run_solve_ivp(
    f: Rhs,
    jac: Rhs | None,
    t: npt.NDArray,
    out: npt.NDArray,
    state: dict[str, Any],
    check: StabilityGuard,
    rtol: float,
    atol: float,
    max_steps: int,
) -> tuple[int, str]:
    """Fill ``out`` with solve_ivp's BDF solution; returns the number of output times reached and a failure."""
    solution = integrate.solve_ivp(f, (t[0], t[-1]), out[:, 0], method="BDF", t_eval=t, jac=jac, rtol=rtol, atol=atol)
    ys = np.asarray(solution.y)
    reached = 1
    for k in range(1, min(ys.shape[1], t.size)):
        if state["tripped"] is not None and t[k] >= state["tripped"]:
            break
        if not check.allows(ys[:, k]):
            break
        out[:, k] = ys[:, k]
        reached = k + 1
    failure = ""
    if reached < t.size and state["tripped"] is None and not solution.success:
        failure = f"solve_ivp stopped: {solution.message}"
    return reached, failure
