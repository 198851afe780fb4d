# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Operator inference: fit :math:`\dot q = c + A q + H (q \hat\otimes q) + B u` to reduced trajectories.

Given reduced states :math:`q(t_k)`, their estimated time derivatives :math:`\dot q(t_k)` (finite differences of
order :math:`\ge 4`, :func:`fem_ml.dynamics.data.time_derivative`) and inputs, the operators solve the regularized least
squares problem (Peherstorfer and Willcox, CMAME 306, 2016; McQuarrie, Huang and Willcox, J. R. Soc. N. Z. 51, 2021)

.. math::

    \min_O \sum_k \| D_k O^T - \dot q(t_k)^T \|^2 + \lambda_1^2 s_1 \|O_{c,A,B}\|_F^2
                                                   + \lambda_2^2 s_2 \|O_H\|_F^2,

where the row :math:`D_k = [\theta_c(\mu) \otimes 1, \theta_A(\mu) \otimes q_k^T, \theta_H(\mu) \otimes (q_k
\hat\otimes q_k)^T, \theta_B(\mu) \otimes u_k^T]` stacks the affine parameter functions times the features, and
:math:`s_1, s_2` are the mean squared column norms of the linear and quadratic blocks (so :math:`\lambda` is
relative and independent of the data's scale). One factorization of the small normal matrix per candidate
:math:`(\lambda_1, \lambda_2)`.

The regularization is chosen as in McQuarrie, Huang and Willcox (2021) (the opinf package's ``fit_regselect``): each
candidate model re-simulates every training trajectory, from its first state, over the training window and
``test_time_length`` beyond it; candidates whose states leave ``stability_factor`` times the largest training
state (or that cannot be integrated) are rejected, and the one with the smallest mean relative error of the
re-simulated training trajectories wins (of near-ties within 0.1 %, the largest regularization: the choice is then
the same on any number of ranks). The search runs on a log-scale grid of a common :math:`\lambda`, then refines
:math:`\lambda_2` and :math:`\lambda_1` separately around the choice; the candidates of each stage are spread over
the ranks. Extra ``stability_parameters`` (parameter points without data) must stay stable too.

With ``discrepancy=d`` and trajectories that carry their projection errors :math:`e_P` (as
:func:`~fem_ml.dynamics.data.reduce_trajectories` records them), the most regularized candidate (the largest
:math:`\lambda_1 \lambda_2`) whose mean relative re-simulation error :math:`e_D` is at most :math:`d\, e_P` wins
instead: Morozov's discrepancy principle, with the basis's truncation error as the noise level. The two parts of
a trajectory's field error are orthogonal, :math:`e^2 = e_P^2 + e_D^2`, so a trajectory with :math:`e_D \le d\,
e_P` loses at most a factor :math:`\sqrt{1 + d^2}` (0.5 % for :math:`d = 0.1`) against its projection error; the
bound is on the means, so the mean field error on the training data is at most :math:`(1 + d)` times the mean
projection error. In exchange the operators become less sensitive to rounding of the data (see the README's
reduced-dynamics section for ``demos/dynamics_burgers.py``). The selection's re-simulations then run with a
relative tolerance of at most 1 % of the bound. When no stable candidate meets the bound, the smallest error wins.

With ``sparse_threshold``, sequentially thresholded least squares (STLSQ, Brunton, Proctor and Kutz, PNAS 113,
2016) then drops, equation by equation, every term whose typical contribution
:math:`|O_{aj}|\,\mathrm{rms}(D_{:,j})` is below ``sparse_threshold`` times :math:`\mathrm{rms}(\dot q_a)`, and refits
the rest, so :meth:`~fem_ml.dynamics.model.ReducedDynamics.equations` prints short equations.

Every rank gets the same model: the data are broadcast from rank 0, the final solve happens on rank 0 and is
broadcast, so operators are bit-identical across ranks and agree with a serial fit to rounding of the inputs.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from scipy import linalg

from fem_ml._mpi import collectively, run_distributed
from fem_ml._threads import one_blas_thread
from fem_ml.dynamics.data import Trajectories, time_derivative
from fem_ml.dynamics.model import TERMS, ParameterFunction, ReducedDynamics, quadratic_features
from fem_ml.dynamics.simulate import StabilityGuard

if TYPE_CHECKING:
    from fem_ml.pod import PODBasis

__all__ = ["fit_operator_inference"]

logger = logging.getLogger(__name__)

_DEFAULT_GRID = tuple(10.0 ** np.arange(-12.0, 1.0))
_REFINE = (1e-3, 1e-2, 1e-1, 10.0, 100.0, 1e3)
#: Up to this many unknowns per equation the fit runs on one BLAS thread (threads gain nothing on such matrices).
_ONE_THREAD_UNKNOWNS = 2000


class _Problem:
    """The least-squares data of one fit: normal matrix, right-hand sides, column groups (local)."""

    def __init__(
        self,
        data: Trajectories,
        terms: str,
        functions: Mapping[str, Sequence[str]],
        derivatives: Sequence[npt.NDArray[np.float64]],
    ):
        self.terms = terms
        self.functions = functions
        self.r = data.n_modes
        self.m = data.n_inputs
        rows, targets = [], []
        for i in range(len(data)):
            q = data.states[i]
            features = {
                "c": np.ones((1, q.shape[1])),
                "A": q,
                "H": quadratic_features(q) if "H" in terms else None,
                "B": data.inputs[i] if data.inputs is not None else None,
            }
            blocks = []
            for k in terms:
                theta = np.array([ParameterFunction(e, data.parameter_names)(data.parameters[i]) for e in functions[k]])
                blocks.append(np.kron(theta[:, None], features[k]))  # type: ignore[arg-type]
            rows.append(np.vstack(blocks).T)
            targets.append(derivatives[i].T)
        self.D = np.vstack(rows)
        self.Y = np.vstack(targets)
        self.widths = {"c": 1, "A": self.r, "H": self.r * (self.r + 1) // 2, "B": self.m}
        self.slices: dict[str, list[slice]] = {}
        group = []
        start = 0
        for k in terms:
            self.slices[k] = []
            for _ in functions[k]:
                self.slices[k].append(slice(start, start + self.widths[k]))
                start += self.widths[k]
                group += [1 if k == "H" else 0] * self.widths[k]
        self.group = np.array(group)
        self.G = self.D.T @ self.D
        self.Z = self.D.T @ self.Y
        diag = np.diag(self.G)
        self.scale = np.array(
            [float(np.mean(diag[self.group == g])) if np.any(self.group == g) else 1.0 for g in (0, 1)]
        )
        self.scale = np.where(self.scale > 0, self.scale, 1.0)

    @property
    def n_unknowns(self) -> int:
        return self.D.shape[1]

    def penalty(self, lam: tuple[float, float]) -> npt.NDArray[np.float64]:
        weights = np.array([lam[0] ** 2 * self.scale[0], lam[1] ** 2 * self.scale[1]])
        return weights[self.group]

    def solve(self, lam: tuple[float, float], active: npt.NDArray[np.bool_] | None = None) -> npt.NDArray[np.float64]:
        """Regularized least squares by the normal equations (fast, for the selection).

        ``active`` ``(n_unknowns, r)`` restricts each equation's columns (STLSQ).
        """
        penalty = self.penalty(lam)
        if active is None:
            return _spd_solve(self.G + np.diag(penalty), self.Z)
        X = np.zeros((self.n_unknowns, self.r))
        for a in range(self.r):
            on = np.flatnonzero(active[:, a])
            if on.size:
                X[on, a] = _spd_solve(self.G[np.ix_(on, on)] + np.diag(penalty[on]), self.Z[on, a])
        return X

    def solve_accurately(self, lam: tuple[float, float]) -> npt.NDArray[np.float64]:
        r"""The same solution, by an SVD solve of the column-equilibrated augmented system (no squared condition).

        Each column of the augmented matrix :math:`[D; \Gamma]` is scaled to unit norm, penalty row included
        (:math:`\sqrt{\|D_{:,j}\|^2 + \gamma_j^2}`). Scaling by the data columns alone would leave the penalty
        rows of the weak columns (quadratic features of small modes, :math:`10^{-11}` of the largest column for
        ``demos/dynamics_burgers.py``) at up to :math:`10^7` times the data rows; the solver's backward error is
        relative to that largest row, and the operators then moved by :math:`5 \cdot 10^{-8}` (relative) for
        input perturbations of :math:`2 \cdot 10^{-16}`, against :math:`1.6 \cdot 10^{-9}` with this scaling.
        """
        penalty = self.penalty(lam)
        norms = np.sqrt(np.diag(self.G) + penalty)
        norms = np.where(norms > 0, norms, 1.0)
        augmented = np.vstack([self.D / norms, np.diag(np.sqrt(penalty) / norms)])
        rhs = np.vstack([self.Y, np.zeros((self.n_unknowns, self.r))])
        return linalg.lstsq(augmented, rhs, lapack_driver="gelsd")[0] / norms[:, None]

    def entries(self, X: npt.NDArray[np.float64]) -> dict[str, npt.NDArray[np.float64]]:
        return {k: np.stack([X[s].T for s in self.slices[k]]) for k in self.terms}


def _spd_solve(matrix: npt.NDArray[np.float64], rhs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    try:
        return linalg.cho_solve(linalg.cho_factor(matrix), rhs)
    except linalg.LinAlgError:
        return np.linalg.lstsq(matrix, rhs, rcond=None)[0]


def _input_history(
    t: npt.NDArray[np.float64], u: npt.NDArray[np.float64]
) -> Callable[[float], npt.NDArray[np.float64]]:
    """Linear interpolation of sampled inputs, held at the last value beyond the samples."""
    return lambda s: np.array([np.interp(s, t, row) for row in u])


def _prepare(
    data: Trajectories,
    terms: str,
    parameter_functions: Mapping[str, Sequence[str]] | None,
    basis: PODBasis | None,
    options: dict[str, Any],
) -> tuple[str, dict[str, list[str]], _Problem, npt.NDArray[np.float64]]:
    """Check the options and build the least-squares problem (local; raises ValueError or TypeError)."""
    stability_factor, guard_factor = options["stability_factor"], options["guard_factor"]
    sparse_threshold, derivatives = options["sparse_threshold"], options["derivatives"]
    stability_parameters = options["stability_parameters"]
    if not isinstance(data, Trajectories):
        raise TypeError(f"trajectories must be a Trajectories object, got {type(data).__name__}.")
    if not terms or set(terms) - set(TERMS) or len(set(terms)) != len(terms):
        raise ValueError(f"terms must be distinct letters of {''.join(TERMS)!r}, got {terms!r}.")
    terms = "".join(k for k in TERMS if k in terms)
    if ("B" in terms) != (data.inputs is not None):
        raise ValueError("The input term 'B' needs trajectories with inputs, and inputs need the term 'B'.")
    functions = {k: ["1"] for k in terms}
    for k, v in (parameter_functions or {}).items():
        if k not in terms:
            raise ValueError(f"parameter_functions names {k!r}, which is not among the terms {terms!r}.")
        if isinstance(v, str) or len(v) == 0:
            raise ValueError(f"parameter_functions[{k!r}] must be a non-empty list of expressions.")
        functions[k] = [str(e) for e in v]
        for e in v:
            ParameterFunction(e, data.parameter_names)  # a syntax check
    if basis is not None and basis.n_modes != data.n_modes:
        raise ValueError(f"The basis has {basis.n_modes} modes, the trajectories {data.n_modes}.")
    if stability_factor <= 1 or guard_factor <= 1:
        raise ValueError("stability_factor and guard_factor must be > 1.")
    discrepancy = options["discrepancy"]
    if discrepancy is not None:
        real = isinstance(discrepancy, numbers.Real) and not isinstance(discrepancy, bool)
        if not real or not 0 < float(discrepancy) < np.inf:
            raise ValueError(f"discrepancy must be a positive number or None, got {discrepancy!r}.")
        if data.projection_errors is None:
            raise ValueError(
                "discrepancy needs trajectories that carry their projection errors (reduce_trajectories records "
                "them; Trajectories.from_arrays takes projection_errors=)."
            )
    if sparse_threshold is not None and not sparse_threshold > 0:
        raise ValueError(f"sparse_threshold must be positive, got {sparse_threshold!r}.")
    extra = np.zeros((0, data.parameters.shape[1]))
    if stability_parameters is not None:
        extra = np.atleast_2d(np.asarray(stability_parameters, dtype=np.float64))
        if extra.shape[1] != data.parameters.shape[1] or not np.isfinite(extra).all():
            raise ValueError(f"stability_parameters must be finite with {data.parameters.shape[1]} columns.")
    if derivatives is not None:
        dq = [np.asarray(d, dtype=np.float64) for d in derivatives]
        if len(dq) != len(data) or any(d.shape != q.shape for d, q in zip(dq, data.states, strict=True)):
            raise ValueError("derivatives must match the trajectories' states in number and shape.")
        if not all(np.isfinite(d).all() for d in dq):
            raise ValueError("derivatives contain NaN or inf.")
    else:
        dq = [
            time_derivative(t, q, order=options["derivative_order"])
            for t, q in zip(data.times, data.states, strict=True)
        ]
    problem = _Problem(data, terms, functions, dq)
    if problem.D.shape[0] < 1:
        raise ValueError("No data.")
    return terms, functions, problem, extra


class _Scorer:
    """Scores a regularization: mean relative error of the re-simulated training trajectories, inf if unstable."""

    def __init__(
        self,
        problem: _Problem,
        data: Trajectories,
        build: Callable[[npt.NDArray[np.float64]], ReducedDynamics],
        extra: npt.NDArray[np.float64],
        horizon: float,
        guard: StabilityGuard,
        rtol: float,
    ):
        self.problem, self.data, self.build, self.extra = problem, data, build, extra
        self.horizon, self.guard, self.rtol = horizon, guard, rtol

    def __call__(self, lam: tuple[float, float]) -> float:
        """The score of ``lam`` (local)."""
        problem, data, build, extra, horizon = self.problem, self.data, self.build, self.extra, self.horizon
        selection_guard, selection_rtol = self.guard, self.rtol
        try:
            model = build(problem.solve(lam))
        except ValueError:  # non-finite operators
            return float("inf")
        errors = []
        for i in range(len(data)):
            t, q = data.times[i], data.states[i]
            step = (t[-1] - t[0]) / max(t.size - 1, 1)
            # Beyond the window only stability counts: one output time at its end. The guard checks the state at
            # every right-hand-side evaluation, and VODE's steps do not depend on the output times.
            extension = np.array([t[-1] + step * np.ceil(horizon / step)]) if horizon > 0 else np.empty(0)
            u = None if data.inputs is None else _input_history(t, data.inputs[i])
            sim = model.simulate(
                data.parameters[i], q[:, 0], np.concatenate([t, extension]), u, guard=selection_guard,
                rtol=selection_rtol,
            )  # fmt: skip
            if not sim.completed:
                return float("inf")
            errors.append(float(np.linalg.norm(sim.coefficients[:, : t.size] - q) / max(np.linalg.norm(q), 1e-300)))
        for mu in extra:
            i = int(np.argmin(np.linalg.norm(data.parameters - mu, axis=1)))
            t = data.times[i]
            end = t[-1] + horizon
            u = None if data.inputs is None else _input_history(t, data.inputs[i])
            sim = model.simulate(mu, data.states[i][:, 0], np.array([t[0], end]), u, guard=selection_guard,
                                 rtol=selection_rtol)  # fmt: skip
            if not sim.completed:
                return float("inf")
        return float(np.mean(errors))


def _search(
    comm: MPI.Comm,
    score: Callable[[tuple[float, float]], float],
    grid: Sequence[float],
    has_h: bool,
    bound: float | None,
) -> tuple[tuple[float, float] | None, list[tuple[float, float, float]]]:
    """A grid of a common lambda, then lambda_2 and lambda_1 refined around the choice (collective).

    The candidates of each stage are spread over the ranks.

    ``bound``: the discrepancy bound of the error (None: the smallest error wins), see ``_choose``.
    """
    tried: list[tuple[float, float, float]] = []

    def evaluate(pairs: list[tuple[float, float]]) -> None:
        done = {(a, b) for a, b, _ in tried}
        pairs = [p for p in pairs if p not in done]
        tasks: list[Callable[[], float]] = [lambda p=p: score(p) for p in pairs]  # type: ignore[misc]
        results = run_distributed(comm, tasks)
        tried.extend((p[0], p[1], e) for p, e in zip(pairs, results, strict=True))

    evaluate([(c, c) for c in grid])
    chosen = _choose(tried, bound)
    for which in (1, 0) if has_h else ():  # refine lambda_2, then lambda_1
        if chosen is None:
            break
        evaluate([(chosen[0] * f, chosen[1]) if which == 0 else (chosen[0], chosen[1] * f) for f in _REFINE])
        chosen = _choose(tried, bound)
    return chosen, tried


def fit_operator_inference(
    trajectories: Trajectories,
    *,
    terms: str = "cAH",
    parameter_functions: Mapping[str, Sequence[str]] | None = None,
    regularization: float | tuple[float, float] | Literal["auto"] = "auto",
    candidates: Sequence[float] | None = None,
    derivative_order: int = 4,
    derivatives: Sequence[npt.ArrayLike] | None = None,
    test_time_length: float | None = None,
    stability_factor: float = 5.0,
    guard_factor: float = 10.0,
    stability_parameters: npt.ArrayLike | None = None,
    sparse_threshold: float | None = None,
    discrepancy: float | None = None,
    basis: PODBasis | None = None,
    comm: MPI.Comm | None = None,
    selection_rtol: float = 1e-6,
) -> ReducedDynamics:
    r"""Fit a reduced model :math:`\dot q = c + A q + H (q \hat\otimes q) + B u` by operator inference (collective).

    The selection's and the final solve's dense linear algebra runs on one BLAS thread when there are at most
    2,000 unknowns per equation: on 2 cores shared with another busy process, a serial fit of the Burgers demo (324
    unknowns) took 7 s to 15 s with NumPy's and SciPy's two-thread pools, 2.3 s on one thread under the same load
    (about 1 s on a quiet machine). Larger problems keep the pools' threads.

    Args:
        trajectories: Reduced trajectories (see :func:`fem_ml.dynamics.data.reduce_trajectories`).
        terms: The operator terms, a string of ``"c"``, ``"A"``, ``"H"``, ``"B"`` (``"B"`` needs inputs).
        parameter_functions: For each term, the expressions :math:`\theta^{(a)}(\mu)` it is affine in, e.g.
            ``{"A": ["1", "nu"]}``; terms not named are constant (``["1"]``).
        regularization: ``"auto"`` (selected, see the module), one relative :math:`\lambda` for both blocks, or
            :math:`(\lambda_1, \lambda_2)`.
        candidates: The log-scale grid of the common :math:`\lambda` for ``"auto"`` (default ``1e-12 ... 1``).
        derivative_order: Order of the finite-difference derivative estimates (>= 4).
        derivatives: Time derivatives ``(r, k_i)`` of each trajectory, instead of finite differences.
        test_time_length: How long beyond each training window candidate models must stay bounded (default: the
            length of the longest training window).
        stability_factor: A candidate is unstable once a state norm exceeds this times the largest training norm.
        guard_factor: The fitted model's default guard bound, in multiples of the largest training norm.
        stability_parameters: Extra parameter points ``(n, p)`` where candidates must stay bounded (from the
            initial state of the nearest training trajectory).
        sparse_threshold: Relative threshold of the STLSQ sparse fit (None: dense fit).
        discrepancy: For ``"auto"`` with trajectories that carry projection errors: choose the most regularized
            candidate whose mean relative re-simulation error is at most this times their mean projection error
            (the discrepancy principle, see the module); None (the default): the smallest error.
        basis: The POD basis, kept in the model for fields and saving.
        comm: Communicator (default: the basis's, else ``MPI.COMM_SELF``).
        selection_rtol: Relative tolerance of the re-simulations during the selection (with ``discrepancy``, at
            most 1 % of the bound on the error).

    Returns:
        The model; ``model.fit_report`` holds the chosen regularization, the training error of every candidate,
        the mean projection error and the error bound of the selection, the fit time and the least-squares sizes.

    Raises:
        ValueError: on every rank, for bad options or data, or when no candidate regularization gives a model
            that stays bounded.

    (Over 80 lines because of the documentation of its options; the work is in ``_prepare``, ``_Scorer`` and
    ``_search``.)
    """
    start_time = time.perf_counter()
    comm = comm if comm is not None else (basis.V.mesh.comm if basis is not None else MPI.COMM_SELF)
    data: Trajectories = comm.bcast(trajectories, root=0)  # bit-identical data on every rank
    options = {
        "stability_factor": stability_factor, "guard_factor": guard_factor, "sparse_threshold": sparse_threshold,
        "derivatives": derivatives, "stability_parameters": stability_parameters, "derivative_order": derivative_order,
        "discrepancy": discrepancy,
    }  # fmt: skip
    with collectively(comm):
        terms, functions, problem, extra = _prepare(data, terms, parameter_functions, basis, options)
        lam_fixed = _fixed_regularization(regularization)
        if discrepancy is not None and lam_fixed is not None:
            raise ValueError("discrepancy chooses the regularization: it needs regularization='auto'.")
        grid = tuple(float(c) for c in (candidates if candidates is not None else _DEFAULT_GRID))
        if not grid or not all(np.isfinite(c) and c >= 0 for c in grid):
            raise ValueError("candidates must be non-negative finite numbers.")
    largest = max(float(np.max(np.linalg.norm(q, axis=0))) for q in data.states)
    window = max(float(t[-1] - t[0]) for t in data.times)
    horizon = window if test_time_length is None else float(test_time_length)
    selection_guard = StabilityGuard(stability_factor * largest)
    projection_error = None if data.projection_errors is None else float(np.mean(data.projection_errors))
    bound = None if discrepancy is None or projection_error is None else discrepancy * projection_error
    # Candidates are told apart near the bound: the integrator's own error must stay well below it.
    rtol = selection_rtol if bound is None else min(selection_rtol, 0.01 * bound)

    def build(X: npt.NDArray[np.float64], with_basis: bool = False) -> ReducedDynamics:
        # Candidates are scored on one rank each: without the basis, their simulations are local (no collectives).
        return ReducedDynamics(
            problem.entries(X), functions, parameter_names=data.parameter_names, state_bound=guard_factor * largest,
            basis=basis if with_basis else None, initial_states=np.stack([q[:, 0] for q in data.states]),
            initial_parameters=data.parameters,
        )  # fmt: skip

    # Many small dense solves (see the docstring): on one BLAS thread up to a few thousand unknowns per equation.
    threads = one_blas_thread() if problem.n_unknowns <= _ONE_THREAD_UNKNOWNS else contextlib.nullcontext()
    with threads:
        score = _Scorer(problem, data, build, extra, horizon, selection_guard, rtol)
        has_h = "H" in terms
        tried: list[tuple[float, float, float]] = []
        if lam_fixed is not None:
            chosen: tuple[float, float] | None = lam_fixed
        else:
            chosen, tried = _search(comm, score, grid, has_h, bound)
            if chosen is None:
                with collectively(comm):
                    raise ValueError(
                        f"No regularization among {len(tried)} candidates gives a model whose re-simulated training "
                        f"trajectories stay within {stability_factor} x the largest training state over the window and "
                        f"{horizon:.4g} beyond; try more modes, other candidates or a larger stability_factor."
                    )
        assert chosen is not None
        X = None
        with collectively(comm):  # a failure of the solve on rank 0 reaches every rank before the broadcast
            if comm.rank == 0:
                X = problem.solve_accurately(chosen)
                if sparse_threshold is not None:
                    X = _stlsq(problem, chosen, X, sparse_threshold)
    X = comm.bcast(X, root=0)
    model = build(X, with_basis=True)
    score_chosen = next((e for a, b, e in tried if (a, b) == chosen), None)
    model.fit_report = {
        "regularization": [float(chosen[0]), float(chosen[1] if has_h else chosen[0])],
        "training_error": score_chosen,
        "projection_error": projection_error,
        "selection_bound": bound,
        "selection_rtol": rtol if lam_fixed is None else None,
        "candidates": [[a, b, e if np.isfinite(e) else None] for a, b, e in tried],
        "n_stable_candidates": int(sum(np.isfinite(e) for _, _, e in tried)),
        "n_snapshots": int(problem.D.shape[0]),
        "n_unknowns_per_equation": int(problem.n_unknowns),
        "derivative_order": None if derivatives is not None else int(derivative_order),
        "sparse_threshold": sparse_threshold,
        "n_nonzero": int(np.count_nonzero(X)),
        "test_time_length": horizon,
        "t_fit_s": time.perf_counter() - start_time,
    }
    logger.info(
        "Operator inference: r = %d, %d unknowns per equation from %d snapshots, lambda = %s, training error %s, "
        "%.2f s", data.n_modes, problem.n_unknowns, problem.D.shape[0], model.fit_report["regularization"],
        score_chosen, model.fit_report["t_fit_s"],
    )  # fmt: skip
    return model


def _fixed_regularization(regularization: Any) -> tuple[float, float] | None:
    if isinstance(regularization, str):
        if regularization != "auto":
            raise ValueError(f"regularization must be 'auto', a number or a pair, got {regularization!r}.")
        return None
    values = np.atleast_1d(np.asarray(regularization, dtype=np.float64))
    if values.size not in (1, 2) or not np.isfinite(values).all() or np.any(values < 0):
        raise ValueError(f"regularization must be one or two non-negative numbers, got {regularization!r}.")
    return (float(values[0]), float(values[-1]))


def _choose(tried: list[tuple[float, float, float]], bound: float | None) -> tuple[float, float] | None:
    """The most regularized candidate (largest lambda_1 lambda_2) with an error at most ``bound``, else ``_best``."""
    if bound is not None:
        within = [(a, b) for a, b, e in tried if np.isfinite(e) and e <= bound]
        if within:  # the most regularized on the log scale: the largest product lambda_1 lambda_2
            return max(within, key=lambda ab: (ab[0] * ab[1], ab))
    return _best(tried)


def _best(tried: list[tuple[float, float, float]], rtol: float = 1e-3) -> tuple[float, float] | None:
    """The largest regularization whose error is within ``rtol`` of the smallest (None if all are unstable).

    Near-ties are common among weak regularizations; taking the largest of them makes the choice insensitive to
    rounding (the same on any number of ranks) and the model no less stable.
    """
    finite = [(e, a, b) for a, b, e in tried if np.isfinite(e)]
    if not finite:
        return None
    smallest = min(e for e, _, _ in finite)
    return max((a, b) for e, a, b in finite if e <= smallest * (1 + rtol))


def _stlsq(problem: _Problem, lam: tuple[float, float], X: npt.NDArray[np.float64], threshold: float) -> npt.NDArray:
    """Sequentially thresholded least squares from the dense solution ``X`` (at most 10 sweeps)."""
    column_rms = np.sqrt(np.diag(problem.G) / problem.D.shape[0])
    target_rms = np.sqrt(np.mean(problem.Y**2, axis=0))
    active = np.ones_like(X, dtype=bool)
    for _ in range(10):
        keep = np.abs(X) * column_rms[:, None] >= threshold * target_rms[None, :]
        if np.array_equal(keep & active, active):
            break
        active &= keep
        X = problem.solve(lam, active)
    return X
