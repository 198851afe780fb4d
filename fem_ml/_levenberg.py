# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Levenberg-Marquardt steps for one network fitted by weighted least squares, in NumPy (float64).

The network :math:`o(x) = h_{L-1} W_L + b_L`, :math:`h_{k} = \sigma(h_{k-1} W_k + b_k)`, :math:`h_0 = x`, is
fitted to targets :math:`t` with residuals :math:`r_{nk} = c_{nk} (o_k(x_n) - t_{nk})`, the loss being
:math:`\sum_{nk} r_{nk}^2`. A step is

.. math:: \Delta\theta = -J^\top (J J^\top + \mu I)^{-1} r,
    \qquad \mu = \lambda\, \overline{\operatorname{diag}(J J^\top)},

the Levenberg-Marquardt step written in the space of the :math:`R = nK` residuals: the networks trained here have
far more weights than residuals, so :math:`J J^\top` (:math:`R \times R`) is the small matrix. It is assembled
without :math:`J` from the back-propagated output sensitivities :math:`D_k[n, k', :] = \partial o_{k'}(x_n) /
\partial (h_{k-1} W_k + b_k)` of each layer and the layer inputs :math:`h_{k-1}`:

.. math:: (J J^\top)_{(n k'), (m k'')} = \sum_k \bigl(D_k[n, k'] \cdot D_k[m, k'']\bigr)
    \bigl(h_{k-1}(x_n) \cdot h_{k-1}(x_m) + 1\bigr)\, c_{nk'} c_{mk''},

and :math:`J^\top z` is one pass back through the layers. The damping :math:`\lambda` falls after an accepted step
and rises until the loss decreases (Marquardt's rule). After first-order training has found the basin, a few such
steps do what a thousand L-BFGS iterations did (measured on the thermal-block demo's data: the same test error,
in 0.5 s instead of 30 s).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.linalg.blas

from fem_ml._stacked import ACTIVATIONS, SLOPES

__all__ = ["LevenbergMarquardt"]

logger = logging.getLogger(__name__)

Layers = list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]

#: Relative decrease of the loss a step must bring to be accepted (a margin against ties decided by rounding).
_DECREASE = 1e-10


class LevenbergMarquardt:
    r"""Levenberg-Marquardt iterations on the weights of one network (the weights are updated in place).

    Args:
        layers: The weights ``(n_in, n_out)`` and biases ``(n_out,)`` of each layer, float64; updated by
            :meth:`step`.
        inputs: Inputs ``(n, n_in)``.
        targets: Targets ``(n, K)`` of the network's outputs.
        weights: Residual weights :math:`c` ``(n, K)``: the residuals are ``weights * (outputs - targets)``.
        activation: The activation's name (a key of :data:`fem_ml._stacked.ACTIVATIONS`).
        damping: Initial :math:`\lambda`.
    """

    def __init__(
        self,
        layers: Layers,
        inputs: npt.NDArray[np.float64],
        targets: npt.NDArray[np.float64],
        weights: npt.NDArray[np.float64],
        *,
        activation: str,
        damping: float = 1e-3,
    ):
        self.layers = layers
        self.inputs, self.targets, self.weights = inputs, targets, weights
        self._slope = SLOPES[ACTIVATIONS[activation]]
        self.damping = damping
        self._state = self._evaluate(layers)

    @property
    def loss(self) -> float:
        r"""The loss :math:`\sum r^2` at the current weights."""
        return self._state[0]

    def _evaluate(
        self, layers: Layers
    ) -> tuple[float, npt.NDArray[np.float64], list[npt.NDArray[np.float64]], list[npt.NDArray[np.float64]]]:
        """Loss, residuals, layer inputs and activation slopes of ``layers``."""
        h, hs, slopes = self.inputs, [], []
        for W, b in layers[:-1]:
            hs.append(h)
            h, slope = self._slope(h @ W + b)
            slopes.append(slope)
        hs.append(h)
        W, b = layers[-1]
        r = self.weights * (h @ W + b - self.targets)
        return float(np.sum(r * r)), r, hs, slopes

    def _sensitivities(self) -> list[npt.NDArray[np.float64]]:
        """:math:`D_k` of each layer, ``(n, K, width)``, with the residual weights folded in."""
        K = self.weights.shape[1]
        _, _, _, slopes = self._state
        D = self.weights[:, :, None] * np.eye(K)[None]
        out = [D]
        for (W, _), slope in zip(self.layers[:0:-1], slopes[::-1], strict=True):
            D = (D @ W.T) * slope[:, None, :]
            out.append(D)
        return out[::-1]

    @property
    def residuals(self) -> npt.NDArray[np.float64]:
        """The residuals ``(n, K)`` at the current weights."""
        return self._state[1]

    def normal_matrix(self) -> tuple[npt.NDArray[np.float64], list[npt.NDArray[np.float64]]]:
        r""":math:`J J^\top` ``(nK, nK)`` at the current weights, and the sensitivities :math:`D_k` it came from.

        Residual ``(n, k)`` is row ``n * K + k``.
        """
        lower, D = self._normal_lower()
        gram = lower + np.tril(lower, -1).T
        return gram, D

    def _normal_lower(self) -> tuple[npt.NDArray[np.float64], list[npt.NDArray[np.float64]]]:
        """:meth:`normal_matrix` with only its lower triangle computed (zeros above): one BLAS ``syrk`` per layer.

        A symmetric rank-k update costs half the product :math:`D_k D_k^T`; the Cholesky factorization of
        :meth:`step` reads the lower triangle only.
        """
        _, r, hs, _ = self._state
        n, K = r.shape
        D = self._sensitivities()
        gram = np.zeros((n * K, n * K))
        gram4 = gram.reshape(n, K, n, K)
        product = np.zeros((n * K, n * K), order="F")
        for Dk, h in zip(D, hs, strict=True):
            # Upper triangle in Fortran order: the transpose is C-ordered with the lower triangle.
            # D_k^T (width x nK) is Fortran-ordered as it is: trans=1 gives D_k D_k^T without a copy.
            product = scipy.linalg.blas.dsyrk(1.0, Dk.reshape(n * K, -1).T, beta=0.0, c=product, trans=1, overwrite_c=1)
            block = product.T.reshape(n, K, n, K)
            block *= (h @ h.T + 1.0)[:, None, :, None]
            gram4 += block
        return gram, D

    def step(self, *, max_tries: int = 40) -> bool:
        r"""Take one step that decreases the loss; False when none did, the damping doubled ``max_tries`` times.

        Forty doublings raise the damping by a factor of :math:`10^{12}` (from :math:`10^{-3}` times the mean
        diagonal of :math:`J J^\top` on the first step): a step that short which does not decrease the loss means the
        weights are at a minimum, to rounding.

        A factorization that fails (or a step that is not finite) counts as a step that did not decrease the loss.
        """
        loss, r, hs, _ = self._state
        n, K = r.shape
        gram, D = self._normal_lower()
        scale = max(float(np.mean(np.diag(gram))), np.finfo(np.float64).tiny)
        diagonal = np.einsum("ii->i", gram)
        rhs = r.reshape(-1)
        for _ in range(max_tries):
            shift = self.damping * scale
            diagonal += shift
            try:
                factor = scipy.linalg.cho_factor(gram, lower=True, check_finite=False)
                z = scipy.linalg.cho_solve(factor, rhs, check_finite=False).reshape(n, K)
                ok = bool(np.all(np.isfinite(z)))
            except np.linalg.LinAlgError:
                ok = False
            diagonal -= shift
            if ok:
                trial: Layers = []
                for (W, b), Dk, h in zip(self.layers, D, hs, strict=True):
                    E = np.einsum("nk,nkj->nj", z, Dk)
                    trial.append((W - h.T @ E, b - E.sum(axis=0)))
                state = self._evaluate(trial)
                if state[0] < loss * (1.0 - _DECREASE):
                    for (W, b), (W_new, b_new) in zip(self.layers, trial, strict=True):
                        W[...], b[...] = W_new, b_new
                    self._state = state
                    self.damping = max(self.damping / 3.0, 1e-12)
                    return True
            self.damping = min(2.0 * self.damping, 1e16)
        return False
