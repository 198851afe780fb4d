# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""A learned reduced model :math:`\dot q = c(\mu) + A(\mu) q + H(\mu)(q \otimes q) + B(\mu) u(t)`.

The quadratic operator acts on the compressed Kronecker product :math:`q \hat\otimes q = (q_i q_j)_{i \le j}`, so
:math:`H \in \mathbb{R}^{r \times r(r+1)/2}`. Every operator is affine in given functions of the parameters,

.. math:: A(\mu) = \sum_a \theta_A^{(a)}(\mu)\, A^{(a)},

with :math:`\theta` written as expressions of the parameter names (``["1", "nu"]``, ``["1", "exp(-k)"]``): plain
arithmetic, powers and ``exp``, ``log``, ``sqrt``, ``sin``, ``cos``, ``tanh``, parsed without ``eval`` so a saved
model can be loaded from an untrusted file.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

from fem_ml._mpi import collectively
from fem_ml.dynamics.simulate import Integrator, Simulation, StabilityGuard, integrate_system

if TYPE_CHECKING:
    from dolfinx import fem

    from fem_ml.pod import PODBasis

__all__ = ["TERMS", "ParameterFunction", "ReducedDynamics", "quadratic_features"]

#: The operator terms, constant, linear, quadratic and input.
TERMS = ("c", "A", "H", "B")

_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
    "sin": math.sin,
    "cos": math.cos,
    "tanh": math.tanh,
}


class ParameterFunction:
    """A scalar function of the parameters written as an expression, e.g. ``"1"``, ``"nu"``, ``"1/nu"``.

    Args:
        expression: The expression; names are parameter names.
        names: The parameter names, in the order of parameter vectors.

    Raises:
        ValueError: for syntax outside arithmetic, numbers, parameter names and the functions listed above.
    """

    def __init__(self, expression: str, names: Sequence[str]):
        self.expression = str(expression).strip()
        self.names = tuple(names)
        try:
            tree = ast.parse(self.expression, mode="eval")
        except SyntaxError as err:
            raise ValueError(f"Cannot parse the parameter function {expression!r}: {err.msg}.") from None
        self._check(tree.body)
        self._tree = tree.body

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return
        if isinstance(node, ast.Name):
            if node.id not in self.names:
                raise ValueError(f"{self.expression!r}: {node.id!r} is not a parameter ({list(self.names)}).")
            return
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            self._check(node.left)
            self._check(node.right)
            return
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            self._check(node.operand)
            return
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and len(node.args) == 1
            and not node.keywords
        ):
            self._check(node.args[0])
            return
        raise ValueError(
            f"{self.expression!r}: only numbers, parameter names, + - * / ** and {sorted(_FUNCTIONS)} are allowed."
        )

    def __call__(self, mu: npt.NDArray[np.float64]) -> float:
        """The value at the parameter vector ``mu``."""
        values = dict(zip(self.names, (float(v) for v in mu), strict=True))

        def run(node: ast.AST) -> float:
            if isinstance(node, ast.Constant):
                return float(node.value)  # type: ignore[arg-type]  # checked to be a number in _check
            if isinstance(node, ast.Name):
                return values[node.id]
            if isinstance(node, ast.BinOp):
                return _BINARY[type(node.op)](run(node.left), run(node.right))
            if isinstance(node, ast.UnaryOp):
                return _UNARY[type(node.op)](run(node.operand))
            assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            return _FUNCTIONS[node.func.id](run(node.args[0]))

        try:
            value = run(self._tree)
        except (ArithmeticError, ValueError) as err:
            raise ValueError(f"The parameter function {self.expression!r} fails at {values}: {err}.") from None
        if not math.isfinite(value):
            raise ValueError(f"The parameter function {self.expression!r} is not finite at {values}.")
        return value

    def __repr__(self) -> str:
        return f"ParameterFunction({self.expression!r})"


def quadratic_features(q: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    r"""The compressed Kronecker product :math:`(q_i q_j)_{i \le j}` of states ``(r,)`` or ``(r, k)`` (rows)."""
    r = q.shape[0]
    i, j = np.triu_indices(r)
    return q[i] * q[j]


def _symmetric_tensor(H: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    r"""The tensor :math:`T` with :math:`T_{a i j} = T_{a j i}` and :math:`H (q \hat\otimes q) = T : q q^T`."""
    r = H.shape[0]
    i, j = np.triu_indices(r)
    T = np.zeros((r, r, r))
    T[:, i, j] += 0.5 * H
    T[:, j, i] += 0.5 * H
    return T


class ReducedDynamics:
    r"""A reduced model :math:`\dot q = c(\mu) + A(\mu) q + H(\mu)(q \hat\otimes q) + B(\mu) u(t)`.

    Built by :func:`~fem_ml.dynamics.opinf.fit_operator_inference` or :func:`~fem_ml.dynamics.archive.load`. All
    arrays are small and replicated on every rank; only turning coefficients into fields is collective.

    Args:
        entries: For each term present (``"c"``, ``"A"``, ``"H"``, ``"B"``), its affine components, shape
            ``(n_theta, r, n_columns)`` with ``n_columns`` 1, ``r``, ``r(r+1)/2`` and ``m``.
        parameter_functions: For each term present, the expressions :math:`\theta^{(a)}` (``n_theta`` of them).
        parameter_names: Names of the parameters.
        state_bound: Default bound of the stability guard on :math:`\|q\|_2`.
        basis: The POD basis, for fields (optional).
        fit_report: What the fit found (regularization, errors, timing), JSON-serialisable.
        initial_states: Initial states ``(s, r)`` of the training trajectories (the default initial state of
            :meth:`initial_state`).
        initial_parameters: Their parameter points ``(s, p)``.

    Attributes:
        entries, parameter_functions, parameter_names, state_bound, basis, fit_report, initial_states,
        initial_parameters: as given.
    """

    def __init__(
        self,
        entries: Mapping[str, npt.NDArray[np.float64]],
        parameter_functions: Mapping[str, Sequence[str]],
        *,
        parameter_names: Sequence[str] = (),
        state_bound: float,
        basis: PODBasis | None = None,
        fit_report: dict[str, Any] | None = None,
        initial_states: npt.ArrayLike | None = None,
        initial_parameters: npt.ArrayLike | None = None,
    ):
        unknown = set(entries) - set(TERMS)
        if unknown or not entries:
            raise ValueError(f"Terms must be among {TERMS}, got {sorted(entries)}.")
        if set(parameter_functions) != set(entries):
            raise ValueError("Give parameter functions for exactly the terms present.")
        self.parameter_names = tuple(parameter_names)
        self.entries = {k: np.ascontiguousarray(entries[k], dtype=np.float64) for k in TERMS if k in entries}
        self.parameter_functions = {k: tuple(str(e) for e in parameter_functions[k]) for k in self.entries}
        self._theta = {
            k: [ParameterFunction(e, self.parameter_names) for e in v] for k, v in self.parameter_functions.items()
        }
        first = next(iter(self.entries.values()))
        r = first.shape[1]
        widths = {"c": 1, "A": r, "H": r * (r + 1) // 2}
        for k, E in self.entries.items():
            if E.ndim != 3 or E.shape[0] != len(self._theta[k]) or E.shape[1] != r:
                raise ValueError(f"Operator {k}: expected shape ({len(self._theta[k])}, {r}, n), got {E.shape}.")
            if k in widths and E.shape[2] != widths[k]:
                raise ValueError(f"Operator {k}: expected {widths[k]} columns, got {E.shape[2]}.")
            if not np.isfinite(E).all():
                raise ValueError(f"Operator {k} contains NaN or inf.")
        self.n_modes = r
        self.n_inputs = self.entries["B"].shape[2] if "B" in self.entries else 0
        if not np.isfinite(state_bound) or state_bound <= 0:
            raise ValueError(f"state_bound must be positive and finite, got {state_bound!r}.")
        self.state_bound = float(state_bound)
        if basis is not None and basis.n_modes != r:
            raise ValueError(f"The basis has {basis.n_modes} modes, the model {r}.")
        self.basis = basis
        self.fit_report: dict[str, Any] = dict(fit_report or {})
        self._cache: tuple[bytes, dict[str, npt.NDArray[np.float64]]] | None = None
        p = len(self.parameter_names)
        self.initial_states = np.zeros((0, r)) if initial_states is None else np.array(initial_states, dtype=np.float64)
        self.initial_parameters = (
            np.zeros((self.initial_states.shape[0], p))
            if initial_parameters is None or p == 0
            else np.array(initial_parameters, dtype=np.float64).reshape(-1, p)
        )
        s = self.initial_states.shape[0]
        if self.initial_states.shape != (s, r) or self.initial_parameters.shape != (s, p):
            raise ValueError(f"initial_states must be (s, {r}) and initial_parameters (s, {p}).")
        if not (np.isfinite(self.initial_states).all() and np.isfinite(self.initial_parameters).all()):
            raise ValueError("initial_states and initial_parameters must be finite.")

    def initial_state(self, mu: npt.ArrayLike | Mapping[str, float] | None = None) -> npt.NDArray[np.float64]:
        """The initial state of the training trajectory whose parameters are nearest to ``mu`` (a copy)."""
        if self.initial_states.shape[0] == 0:
            raise ValueError("This model stores no training initial states; give the initial coefficients.")
        vector = self.parameter_vector(mu)
        i = int(np.argmin(np.linalg.norm(self.initial_parameters - vector, axis=1))) if vector.size else 0
        return self.initial_states[i].copy()

    @property
    def terms(self) -> str:
        """The terms present, e.g. ``"cAH"``."""
        return "".join(self.entries)

    @property
    def n_parameters(self) -> int:
        """Number of parameters :math:`p`."""
        return len(self.parameter_names)

    def parameter_vector(self, mu: npt.ArrayLike | Mapping[str, float] | None) -> npt.NDArray[np.float64]:
        """``mu`` as a finite ``(p,)`` vector (a mapping by name, a sequence, or None when ``p = 0``)."""
        if mu is None:
            vector = np.zeros(0)
        elif isinstance(mu, Mapping):
            missing = set(self.parameter_names) - set(mu)
            extra = set(mu) - set(self.parameter_names)
            if missing or extra:
                raise ValueError(f"Parameters must be exactly {list(self.parameter_names)}, got {sorted(mu)}.")
            vector = np.array([float(mu[n]) for n in self.parameter_names])
        else:
            vector = np.array(mu, dtype=np.float64).reshape(-1)
        if vector.shape != (self.n_parameters,) or not np.isfinite(vector).all():
            raise ValueError(f"Expected {self.n_parameters} finite parameter values, got {np.shape(vector)} {vector}.")
        return vector

    def operators(self, mu: npt.ArrayLike | Mapping[str, float] | None = None) -> dict[str, npt.NDArray[np.float64]]:
        """The operators at ``mu``: ``{"c": (r,), "A": (r, r), "H": (r, r(r+1)/2), "B": (r, m)}`` (terms present)."""
        vector = self.parameter_vector(mu)
        key = vector.tobytes()
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        out = {}
        for k, E in self.entries.items():
            theta = np.array([f(vector) for f in self._theta[k]])
            out[k] = np.tensordot(theta, E, axes=1)
        out["c"] = out["c"][:, 0] if "c" in out else np.zeros(self.n_modes)
        self._cache = (key, out)
        return out

    def eigenvalues(self, mu: npt.ArrayLike | Mapping[str, float] | None = None) -> npt.NDArray[np.complex128]:
        r"""Eigenvalues of the linear part :math:`A(\mu)`, sorted by real part, largest first (empty without A)."""
        ops = self.operators(mu)
        if "A" not in ops:
            return np.empty(0, dtype=np.complex128)
        values = np.linalg.eigvals(ops["A"]).astype(np.complex128)
        return values[np.argsort(-values.real, kind="stable")]

    def system(
        self,
        mu: npt.ArrayLike | Mapping[str, float] | None = None,
        inputs: Callable[[float], npt.ArrayLike] | None = None,
    ) -> tuple[Callable[[float, npt.NDArray[np.float64]], npt.NDArray[np.float64]], Callable[..., Any]]:
        r"""The right-hand side :math:`f(t, q)` and its Jacobian :math:`\partial f/\partial q` at ``mu`` (local)."""
        ops = self.operators(mu)
        r = self.n_modes
        c = ops["c"]
        A = ops.get("A", np.zeros((r, r)))
        T = _symmetric_tensor(ops["H"]).reshape(r * r, r) if "H" in ops else None
        B = ops.get("B")
        if B is not None and inputs is None:
            raise ValueError(f"This model takes {self.n_inputs} input(s): give inputs.")

        def rhs(t: float, q: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            if T is not None:  # (A + H(q)) q in one product: the right-hand side is called thousands of times
                linear = (T @ q).reshape(r, r)
                linear += A
                dq = linear @ q
                dq += c
            else:
                dq = c + A @ q
            if B is not None:
                assert inputs is not None
                dq += B @ np.asarray(inputs(t), dtype=np.float64).reshape(-1)
            return dq

        def jacobian(t: float, q: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            return A + 2.0 * (T @ q).reshape(r, r) if T is not None else A

        return rhs, jacobian

    def _input_function(
        self, inputs: Callable[[float], npt.ArrayLike] | npt.ArrayLike | None, times: npt.NDArray[np.float64]
    ) -> Callable[[float], npt.NDArray[np.float64]] | None:
        if self.n_inputs == 0:
            if inputs is not None:
                raise ValueError("This model takes no inputs.")
            return None
        if inputs is None:
            raise ValueError(f"This model takes {self.n_inputs} input(s): give inputs.")
        if callable(inputs):
            function = inputs
            probe = np.asarray(function(float(times[0])), dtype=np.float64).reshape(-1)
            if probe.shape != (self.n_inputs,) or not np.isfinite(probe).all():
                raise ValueError(f"inputs(t) must return {self.n_inputs} finite values, got {probe}.")
            return lambda t: np.asarray(function(t), dtype=np.float64).reshape(-1)
        table = np.atleast_2d(np.asarray(inputs, dtype=np.float64))
        if table.shape != (self.n_inputs, times.size) or not np.isfinite(table).all():
            raise ValueError(
                f"inputs given as values must be finite with shape ({self.n_inputs}, {times.size}) (one column per "
                f"output time), got {table.shape}."
            )
        return lambda t: np.array([np.interp(t, times, row) for row in table])

    def simulate(
        self,
        mu: npt.ArrayLike | Mapping[str, float] | None,
        initial: npt.ArrayLike | fem.Function,
        t: npt.ArrayLike,
        inputs: Callable[[float], npt.ArrayLike] | npt.ArrayLike | None = None,
        *,
        method: Integrator = "bdf",
        rtol: float = 1e-8,
        atol: float | None = None,
        guard: StabilityGuard | float | None = None,
        raise_on_blowup: bool = False,
    ) -> Simulation:
        r"""Integrate the reduced model from ``initial`` to the times ``t`` (local; collective for a Function).

        Args:
            mu: The parameters (a mapping by name, a ``(p,)`` sequence, or None without parameters).
            initial: Initial coefficients ``(r,)``, or a ``dolfinx.fem.Function`` on the basis's space (projected
                in the basis's inner product: collective).
            t: Increasing output times; ``t[0]`` is the initial time.
            inputs: The input :math:`u(t)`: a callable returning ``(m,)``, or values ``(m, len(t))`` at the output
                times (interpolated linearly). Only for models with an input term.
            method: ``"bdf"`` (VODE, default) or ``"scipy-bdf"``; both implicit, with the analytic Jacobian.
            rtol: Relative tolerance of the integrator.
            atol: Absolute tolerance (default ``1e-10`` times the guard's bound).
            guard: A :class:`~fem_ml.dynamics.simulate.StabilityGuard`, or a bound on :math:`\|q\|_2` (default:
                the model's ``state_bound``, a multiple of the largest training state).
            raise_on_blowup: Raise :class:`~fem_ml.dynamics.simulate.BlowUpError` instead of returning an
                incomplete :class:`~fem_ml.dynamics.simulate.Simulation`.

        Returns:
            The :class:`~fem_ml.dynamics.simulate.Simulation`: coefficients at the times reached (all finite),
            whether it completed, the eigenvalues of the linear part, and the basis for fields.
        """
        comm: MPI.Comm = self.basis.V.mesh.comm if self.basis is not None else MPI.COMM_SELF
        q0 = None
        if not isinstance(initial, np.ndarray | list | tuple):  # a Function: projected collectively
            if self.basis is None:
                raise ValueError("Initial fields need a model with a POD basis; give coefficients.")
            values = initial.x.array[: self.basis.modes.shape[0]]  # type: ignore[union-attr]
            q0 = self.basis.project(values).reshape(-1)
        with collectively(comm):
            vector = self.parameter_vector(mu)
            times = np.asarray(t, dtype=np.float64).reshape(-1)
            if times.size < 1 or not np.isfinite(times).all() or np.any(np.diff(times) <= 0):
                raise ValueError("t must be finite and strictly increasing.")
            if q0 is None:
                q0 = np.asarray(initial, dtype=np.float64).reshape(-1)
            if q0.shape != (self.n_modes,) or not np.isfinite(q0).all():
                raise ValueError(f"initial must hold {self.n_modes} finite coefficients, got shape {q0.shape}.")
            check = (
                guard
                if isinstance(guard, StabilityGuard)
                else StabilityGuard(self.state_bound if guard is None else float(guard))
            )
            u = self._input_function(inputs, times)
            rhs, jacobian = self.system(vector, u)
        result = integrate_system(
            rhs, jacobian, q0, times, method=method, rtol=rtol,
            atol=1e-10 * check.bound if atol is None else atol, guard=check,
        )  # fmt: skip
        result.eigenvalues = self.eigenvalues(vector)
        result.basis = self.basis
        if raise_on_blowup:
            result.raise_if_blowup()
        return result

    def equations(
        self, mu: npt.ArrayLike | Mapping[str, float] | None = None, *, precision: int = 4, threshold: float = 0.0
    ) -> str:
        r"""The reduced equations at ``mu`` as text, one line per mode: ``dq0/dt = -1.2 q0 + 0.3 q0 q1 + ...``.

        Args:
            mu: The parameters.
            precision: Significant digits.
            threshold: Leave out terms whose coefficient is at most this in absolute value.
        """
        ops = self.operators(mu)
        r = self.n_modes
        i, j = np.triu_indices(r)
        lines = []
        for a in range(r):
            terms: list[tuple[float, str]] = []
            if "c" in self.entries:
                terms.append((ops["c"][a], ""))
            if "A" in ops:
                terms += [(ops["A"][a, b], f"q{b}") for b in range(r)]
            if "H" in ops:
                terms += [(ops["H"][a, k], f"q{i[k]}^2" if i[k] == j[k] else f"q{i[k]} q{j[k]}") for k in range(i.size)]
            if "B" in ops:
                terms += [(ops["B"][a, b], f"u{b}") for b in range(self.n_inputs)]
            text = ""
            for value, name in terms:
                if abs(value) <= threshold or value == 0.0:
                    continue
                number = f"{abs(value):.{precision}g}"
                sign = "-" if value < 0 else "+"
                text += (
                    f" {sign} {number}" + (f" {name}" if name else "")
                    if text
                    else (("-" if value < 0 else "") + number + (f" {name}" if name else ""))
                )
            lines.append(f"dq{a}/dt = {text or '0'}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        names = f", parameters {list(self.parameter_names)}" if self.parameter_names else ""
        return f"ReducedDynamics(r={self.n_modes}, terms={self.terms!r}{names})"
