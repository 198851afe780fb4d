# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""One network's weights in one flat NumPy vector, with its weighted least-squares loss, gradient and Adam step.

The network :math:`o(x) = h_{L-1} W_L + b_L`, :math:`h_k = \sigma(h_{k-1} W_k + b_k)`, :math:`h_0 = x`, is
fitted to targets :math:`t` by the loss :math:`\sum_{nk} r_{nk}^2` of the residuals
:math:`r_{nk} = c_{nk} (o_k(x_n) - t_{nk})` (the weights :math:`c` make it the data loss of
:mod:`fem_ml.networks`, as in :mod:`fem_ml._levenberg`). The gradient is one pass back through the layers:

.. math:: E_L = 2\, c \odot r, \qquad \nabla_{W_k} = h_{k-1}^\top E_k, \qquad \nabla_{b_k} = \mathbf{1}^\top E_k,
    \qquad E_{k-1} = (E_k W_k^\top) \odot \sigma'(a_{k-1}).

For the small networks of a parameter-to-coefficient map (a few hundred rows, a few tens of thousands of weights),
this float64 NumPy pass costs less than torch's autograd pass on the same network (measured on the thermal-block
demo's data, one core: an Adam epoch with its validation pass takes 1.5 ms with SiLU and 2 ms with GELU, against
4 ms through torch), and training without torch also spares its import (about 3 s).

The layout of :attr:`FlatNetwork.flat` is that of a one-member stack in :mod:`fem_ml.networks`: per layer the
weights ``(n_in, n_out)`` (transposed from torch's ``nn.Linear``) and then the biases.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.linalg.blas import daxpy as _axpy
from scipy.special import expit, ndtr

from fem_ml._stacked import ACTIVATIONS, SLOPES
from fem_ml._threads import one_blas_thread

__all__ = ["LBFGS", "Adam", "FlatNetwork"]

Layers = list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]


@dataclass
class _Workspace:
    """The work arrays of the pass for one number of rows: per hidden layer, and the outputs."""

    pre: list[npt.NDArray[np.float64]]
    post: list[npt.NDArray[np.float64]]
    slope: list[npt.NDArray[np.float64]]
    scratch: list[npt.NDArray[np.float64]]
    out: npt.NDArray[np.float64]


def _activate(
    name: str,
    a: npt.NDArray[np.float64],
    out: npt.NDArray[np.float64],
    slope: npt.NDArray[np.float64] | None,
    scratch: npt.NDArray[np.float64],
) -> None:
    r"""``out`` :math:`= \sigma(a)` and ``slope`` :math:`= \sigma'(a)` (if given), in place for GELU and SiLU.

    GELU: :math:`a \Phi(a)` and :math:`\Phi(a) + a \varphi(a)`; SiLU: :math:`a s` and :math:`s (1 + a (1 - s))`
    with :math:`s` the logistic sigmoid. The other activations go through :data:`fem_ml._stacked.SLOPES`.
    """
    if name == "gelu":
        cdf = scratch if slope is None else slope
        ndtr(a, out=cdf)
        np.multiply(a, cdf, out=out)
        if slope is not None:
            np.multiply(a, a, out=scratch)
            scratch *= -0.5
            np.exp(scratch, out=scratch)
            scratch *= a
            scratch *= 0.3989422804014327  # 1 / sqrt(2 pi)
            slope += scratch
    elif name == "silu":
        sigmoid = scratch
        expit(a, out=sigmoid)
        np.multiply(a, sigmoid, out=out)
        if slope is not None:
            np.subtract(a, out, out=slope)  # a (1 - s)
            slope += 1.0
            slope *= sigmoid
    else:
        function = ACTIVATIONS[name]
        if slope is None:
            out[...] = function(a)
        else:
            out[...], slope[...] = SLOPES[function](a)


class FlatNetwork:
    r"""A fully connected network whose weights and gradient are two flat float64 vectors with per-layer views.

    It offers the member interface that :mod:`fem_ml.networks`' optimizers use (:attr:`flat`, :attr:`member_of`,
    :meth:`member_layers`, :meth:`set_member_layers`) for one member.

    Args:
        widths: The layer widths, inputs first and outputs last.
        activation: The activation's name (a key of :data:`fem_ml._stacked.ACTIVATIONS`).
        rng: Draws the initial weights as torch's ``nn.Linear`` does: weights and biases uniform in
            :math:`\pm 1/\sqrt{n_{in}}`.
    """

    n_members = 1

    def __init__(self, widths: tuple[int, ...], activation: str, rng: np.random.Generator):
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths must be at least two positive ints, got {widths!r}.")
        self.widths = tuple(int(w) for w in widths)
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}.")
        self._name = activation
        self._work: dict[int, _Workspace] = {}
        sizes = [(a, b) for a, b in itertools.pairwise(self.widths)]
        self.flat = np.empty(sum(a * b + b for a, b in sizes))
        self.grad = np.zeros_like(self.flat)
        #: The member of each weight (all 0: one member).
        self.member_of = np.zeros(self.flat.size, dtype=np.int64)
        #: Per layer, the weights ``(n_in, n_out)`` and biases ``(n_out,)``: views of :attr:`flat`.
        self.layers: Layers = []
        #: The same views of :attr:`grad`.
        self.grad_layers: Layers = []
        offset = 0
        for a, b in sizes:
            bound = 1.0 / math.sqrt(a)
            W, g_W = self.flat[offset : offset + a * b].reshape(a, b), self.grad[offset : offset + a * b].reshape(a, b)
            W[...] = rng.uniform(-bound, bound, size=(b, a)).T  # drawn in torch's (out, in) order
            offset += a * b
            bias, g_b = self.flat[offset : offset + b], self.grad[offset : offset + b]
            bias[...] = rng.uniform(-bound, bound, size=b)
            offset += b
            self.layers.append((W, bias))
            self.grad_layers.append((g_W, g_b))

    def outputs(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The network's outputs ``(n, n_out)`` for inputs ``(n, n_in)`` (a view of a work array: copy to keep)."""
        return self._forward(x, slopes=False).out

    def _forward(self, x: npt.NDArray[np.float64], *, slopes: bool) -> _Workspace:
        """The pass into the work arrays of ``x``'s row count: activations, outputs and, if asked, the slopes."""
        work = self._workspace(x.shape[0])
        h = x
        for k, (W, b) in enumerate(self.layers[:-1]):
            a = work.pre[k]
            np.matmul(h, W, out=a)
            a += b
            h = work.post[k]
            _activate(self._name, a, h, work.slope[k] if slopes else None, work.scratch[k])
        W, b = self.layers[-1]
        np.matmul(h, W, out=work.out)
        work.out += b
        return work

    def loss(self, x: npt.NDArray[np.float64], targets: npt.NDArray[np.float64], c: npt.NDArray[np.float64]) -> float:
        r"""The loss :math:`\sum_{nk} (c_{nk} (o_k(x_n) - t_{nk}))^2`."""
        r = self.outputs(x)
        r -= targets
        r *= c
        return float(np.vdot(r, r))

    def loss_and_gradient(
        self, x: npt.NDArray[np.float64], targets: npt.NDArray[np.float64], c: npt.NDArray[np.float64]
    ) -> float:
        """The loss (as :meth:`loss`); its gradient with respect to :attr:`flat` is written into :attr:`grad`.

        The pass runs in work arrays allocated once per number of rows, and GELU and SiLU evaluate in place.
        """
        work = self._forward(x, slopes=True)
        o = work.out
        o -= targets
        o *= c  # the residuals
        loss = float(np.vdot(o, o))
        error = o
        error *= c
        error *= 2.0
        inputs = [x, *work.post]
        for k in range(len(self.layers) - 1, -1, -1):
            g_W, g_b = self.grad_layers[k]
            np.matmul(inputs[k].T, error, out=g_W)
            np.sum(error, axis=0, out=g_b)
            if k:
                back = work.pre[k - 1]  # the pre-activations are no longer needed
                np.matmul(error, self.layers[k][0].T, out=back)
                back *= work.slope[k - 1]
                error = back
        return loss

    def _workspace(self, rows: int) -> _Workspace:
        work = self._work.get(rows)
        if work is None:
            hidden = self.widths[1:-1]
            work = _Workspace(
                pre=[np.empty((rows, w)) for w in hidden], post=[np.empty((rows, w)) for w in hidden],
                slope=[np.empty((rows, w)) for w in hidden], scratch=[np.empty((rows, w)) for w in hidden],
                out=np.empty((rows, self.widths[-1])),
            )  # fmt: skip
            self._work = {rows: work, **dict(list(self._work.items())[:3])}  # a few sizes: batches, validation
        return work

    def member_layers(self, m: int = 0) -> Layers:
        """Copies of the weights ``(n_in, n_out)`` and biases ``(n_out,)`` of each layer (``m`` must be 0)."""
        self._check_member(m)
        return [(W.copy(), b.copy()) for W, b in self.layers]

    def set_member_layers(self, m: int, layers: Layers) -> None:
        """Set the weights from :meth:`member_layers`' layout (``m`` must be 0)."""
        self._check_member(m)
        for (W, b), (W_new, b_new) in zip(self.layers, layers, strict=True):
            W[...], b[...] = W_new, b_new

    def state_dict(self) -> dict[str, npt.NDArray[np.float64]]:
        """The weights as the ``state_dict`` of :class:`fem_ml.networks.MLP` (NumPy copies, torch's layout)."""
        state = {}
        for k, (W, b) in enumerate(self.layers):
            state[f"layers.{2 * k}.weight"] = np.ascontiguousarray(W.T)
            state[f"layers.{2 * k}.bias"] = b.copy()
        return state

    def _check_member(self, m: int) -> None:
        if m != 0:
            raise IndexError(f"a FlatNetwork has one member, not member {m}")


class Adam:
    r"""Adam (Kingma and Ba; the update of :class:`torch.optim.Adam`) on a flat vector, in place.

    :math:`m \leftarrow \beta_1 m + (1 - \beta_1) g`, :math:`v \leftarrow \beta_2 v + (1 - \beta_2) g^2`,
    :math:`\theta \leftarrow \theta - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)` with the bias corrections
    :math:`\hat m = m / (1 - \beta_1^t)`, :math:`\sqrt{\hat v} = \sqrt{v} / \sqrt{1 - \beta_2^t}`, and the L2
    ``weight_decay`` added to the gradient. The work arrays are allocated once.

    Args:
        flat: The vector updated by :meth:`step`.
        weight_decay: L2 weight decay.
        betas: :math:`(\beta_1, \beta_2)`.
        eps: :math:`\epsilon`.
    """

    def __init__(
        self,
        flat: npt.NDArray[np.float64],
        *,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.flat = flat
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        self.steps = 0
        self._first, self._second = np.zeros_like(flat), np.zeros_like(flat)
        self._work, self._denominator = np.empty_like(flat), np.empty_like(flat)

    def step(self, gradient: npt.NDArray[np.float64], learning_rate: float) -> None:
        """One update of :attr:`flat` from its gradient."""
        beta1, beta2 = self.betas
        self.steps += 1
        work = self._work
        first, second, denominator = self._first, self._second, self._denominator
        if self.weight_decay:
            np.multiply(self.flat, self.weight_decay, out=denominator)  # a work array until the denominator below
            denominator += gradient
            gradient = denominator
        first *= beta1
        np.multiply(gradient, 1.0 - beta1, out=work)
        first += work
        second *= beta2
        np.multiply(gradient, gradient, out=work)
        work *= 1.0 - beta2
        second += work
        np.sqrt(second, out=denominator)
        denominator *= 1.0 / math.sqrt(1.0 - beta2**self.steps)
        denominator += self.eps
        np.divide(first, denominator, out=work)
        work *= learning_rate / (1.0 - beta1**self.steps)
        self.flat -= work


def _cubic_minimizer(
    t1: float, f1: float, g1: float, t2: float, f2: float, g2: float, low: float, high: float
) -> float:
    r"""The minimizer in :math:`[low, high]` of the cubic through :math:`(t_i, f_i)` with slopes :math:`g_i`.

    Nocedal and Wright, *Numerical Optimization* (2006), eq. (3.59); the middle of the interval when the cubic has
    no minimizer.
    """
    d1 = g1 + g2 - 3.0 * (f1 - f2) / (t1 - t2)
    square = d1 * d1 - g1 * g2
    if square < 0.0 or not math.isfinite(square):
        return 0.5 * (low + high)
    d2 = math.copysign(math.sqrt(square), t2 - t1)
    t = t2 - (t2 - t1) * (g2 + d2 - d1) / (g2 - g1 + 2.0 * d2)
    return min(max(t, low), high) if math.isfinite(t) else 0.5 * (low + high)


Objective = Callable[[npt.NDArray[np.float64]], tuple[float, npt.NDArray[np.float64]]]


class LBFGS:
    r"""L-BFGS with a strong Wolfe line search on a flat vector, in place (Nocedal and Wright, Alg. 7.4, 3.5, 3.6).

    The direction is :math:`-H g` by the two-loop recursion over the last ``history`` pairs
    :math:`(s, y)` (a pair is kept when :math:`y^\top s > 10^{-10}`), with :math:`H_0 = (y^\top s / y^\top y) I`
    from the newest pair. The first step has the length :math:`\min(1, 1 / \|g\|_1)`, the later ones 1; the line
    search brackets a step satisfying the strong Wolfe conditions (:math:`c_1 = 10^{-4}`, :math:`c_2 = 0.9`) and
    zooms by cubic interpolation, kept at least 10 % of the bracket away from its ends. The first step, the pair
    rule, the scaling, the Wolfe constants and the tolerances are those of :class:`torch.optim.LBFGS` with
    ``line_search_fn="strong_wolfe"``; its zoom safeguard differs in detail, and its evaluations are also capped per
    call (``max_eval``), where here each line search is capped (``max_line_search``). Measured from the same
    network and weights, 300 iterations of each took 306 to 307 evaluations and reached losses within 1 % of each
    other. On NumPy vectors the two-loop recursion costs a few BLAS calls per pair instead of a few torch calls.

    :meth:`run` may be called repeatedly: the pairs, the last loss and gradient carry over.

    Args:
        flat: The vector optimized (updated in place).
        objective: Maps the vector to the loss and its gradient (the gradient array may be reused by the caller;
            it is copied).
        history: Number of pairs kept.
        tolerance_grad: Stop when :math:`\max |g| \le` this.
        tolerance_change: Stop when a step or the loss change falls below this.
        max_line_search: Function evaluations of one line search.
    """

    def __init__(
        self,
        flat: npt.NDArray[np.float64],
        objective: Objective,
        *,
        history: int = 100,
        tolerance_grad: float = 1e-14,
        tolerance_change: float = 1e-16,
        max_line_search: int = 25,
    ):
        self.flat, self.objective = flat, objective
        self.history, self.max_line_search = history, max_line_search
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self._s: list[npt.NDArray[np.float64]] = []
        self._y: list[npt.NDArray[np.float64]] = []
        self._rho: list[float] = []
        self._scale = 1.0
        self.loss = math.nan
        self._gradient: npt.NDArray[np.float64] | None = None
        self.iterations = 0
        self.evaluations = 0
        #: Why the last :meth:`run` stopped before its iteration count (None if it did not).
        self.converged: str | None = None

    @property
    def n_pairs(self) -> int:
        """The number of pairs :math:`(s, y)` kept."""
        return len(self._s)

    def _evaluate(self, point: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        self.flat[...] = point
        loss, gradient = self.objective(self.flat)
        self.evaluations += 1
        return float(loss), gradient.copy()

    def _direction(self, gradient: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """:math:`-H g` by the two-loop recursion, its BLAS calls on one thread.

        They alternate between NumPy's OpenBLAS (``dot``) and SciPy's (``daxpy``), two thread pools whose idle
        workers spin: above 10,000 entries both go multi-threaded, and on 2 cores each call then waited for a
        descheduled worker, 5.9 s for one direction from 100 pairs of 10,072 entries (NumPy 2.5, SciPy 1.18)
        against 3 ms on one thread. Level-1 operations of this size gain nothing from threads. Where every BLAS
        already runs on one thread (``OMP_NUM_THREADS=1``) there is nothing to limit.
        """
        with one_blas_thread():
            return self._two_loop(gradient)

    def _two_loop(self, gradient: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        q = -gradient
        alphas = []
        for s, y, rho in zip(reversed(self._s), reversed(self._y), reversed(self._rho), strict=True):
            alpha = rho * float(np.dot(s, q))
            q = _axpy(y, q, a=-alpha)  # in place: q -= alpha y
            alphas.append(alpha)
        q *= self._scale
        for s, y, rho, alpha in zip(self._s, self._y, self._rho, reversed(alphas), strict=True):
            beta = rho * float(np.dot(y, q))
            q = _axpy(s, q, a=alpha - beta)
        return q

    def run(self, iterations: int) -> int:
        """Up to ``iterations`` iterations (fewer when converged: see :attr:`converged`); returns how many ran."""
        self.converged = None
        if self._gradient is None:
            self.loss, self._gradient = self._evaluate(self.flat.copy())
        done = 0
        while done < iterations:
            gradient = self._gradient
            if not (math.isfinite(self.loss) and np.all(np.isfinite(gradient))):
                self.converged = "not finite"
                break
            if float(np.max(np.abs(gradient))) <= self.tolerance_grad:
                self.converged = "gradient"
                break
            if self.iterations == 0:
                direction = -gradient
                step = min(1.0, 1.0 / float(np.sum(np.abs(gradient))))
            else:
                direction, step = self._direction(gradient), 1.0
            slope = float(np.dot(gradient, direction))
            if slope > -self.tolerance_change:
                self.converged = "direction"
                break
            start, previous = self.flat.copy(), self.loss
            step, self.loss, new_gradient = self._line_search(start, direction, step, slope)
            self.flat[...] = start + step * direction
            s, y = step * direction, new_gradient - gradient
            ys = float(np.dot(y, s))
            if ys > 1e-10:
                if len(self._s) == self.history:
                    del self._s[0], self._y[0], self._rho[0]
                self._s.append(s)
                self._y.append(y)
                self._rho.append(1.0 / ys)
                self._scale = ys / float(np.dot(y, y))
            self._gradient = new_gradient
            self.iterations += 1
            done += 1
            if float(np.max(np.abs(s))) <= self.tolerance_change:
                self.converged = "step"
                break
            if abs(self.loss - previous) < self.tolerance_change:
                self.converged = "loss"
                break
        return done

    def _line_search(
        self, start: npt.NDArray[np.float64], direction: npt.NDArray[np.float64], step: float, slope: float
    ) -> tuple[float, float, npt.NDArray[np.float64]]:
        """A step satisfying the strong Wolfe conditions (or the best found): ``(step, loss, gradient)``."""
        c1, c2 = 1e-4, 0.9
        loss0 = self.loss
        assert self._gradient is not None
        # The bracketing phase (Algorithm 3.5).
        t_prev, f_prev, g_prev, d_prev = 0.0, loss0, self._gradient, slope
        bracket: list[tuple[float, float, npt.NDArray[np.float64], float]] = []
        t = step
        for evaluation in range(self.max_line_search):
            f, g = self._evaluate(start + t * direction)
            d = float(np.dot(g, direction))
            if f > loss0 + c1 * t * slope or (evaluation > 0 and f >= f_prev):
                bracket = [(t_prev, f_prev, g_prev, d_prev), (t, f, g, d)]
                break
            if abs(d) <= -c2 * slope:
                return t, f, g
            if d >= 0:
                bracket = [(t, f, g, d), (t_prev, f_prev, g_prev, d_prev)]
                break
            low, high = t + 0.01 * (t - t_prev), 10.0 * t
            t_next = _cubic_minimizer(t_prev, f_prev, d_prev, t, f, d, low, high)
            t_prev, f_prev, g_prev, d_prev = t, f, g, d
            t = t_next
        else:
            return t_prev, f_prev, g_prev  # no bracket within the evaluations: the last acceptable point
        # The zoom phase (Algorithm 3.6): bracket[0] is the low end (the lower loss, satisfying the decrease).
        scale = float(np.max(np.abs(direction)))
        for _ in range(self.max_line_search - evaluation - 1):
            (t_lo, f_lo, g_lo, d_lo), (t_hi, f_hi, _, d_hi) = bracket
            if abs(t_hi - t_lo) * scale < self.tolerance_change:
                break
            low, high = min(t_lo, t_hi), max(t_lo, t_hi)
            t = _cubic_minimizer(t_lo, f_lo, d_lo, t_hi, f_hi, d_hi, low, high)
            width = high - low
            if min(t - low, high - t) < 0.1 * width:  # too close to an end: move to 10 % inside
                t = low + 0.1 * width if t - low < high - t else high - 0.1 * width
            f, g = self._evaluate(start + t * direction)
            d = float(np.dot(g, direction))
            if f > loss0 + c1 * t * slope or f >= f_lo:
                bracket[1] = (t, f, g, d)
                continue
            if abs(d) <= -c2 * slope:
                return t, f, g
            if d * (t_hi - t_lo) >= 0:
                bracket[1] = bracket[0]
            bracket[0] = (t, f, g, d)
        t_lo, f_lo, g_lo, _ = bracket[0]
        return t_lo, f_lo, g_lo
