# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Evaluation against the truth: relative errors of a prediction and of the POD projection.

For true solutions :math:`u_i` at test points, a prediction :math:`\hat u_i = \Phi \hat c_i` and the projection
:math:`\Phi c_i`, :math:`c_i = \Phi^T M u_i`, :func:`relative_errors` returns per sample

.. math:: \frac{\|u_i - \hat u_i\|}{\|u_i\|}, \qquad \frac{\|u_i - \Phi c_i\|}{\|u_i\|}, \qquad
    \frac{\|\hat c_i - c_i\|_2}{\|c_i\|_2}

in the :math:`L^2` and :math:`H^1` norms (the last one, the network's own error, in the basis' inner product).
A relative error needs a nonzero, finite truth: a zero or NaN truth is an error on every rank. The stage works on
anything that satisfies :class:`Predictor` (a :class:`~fem_ml.surrogate.Surrogate` does), so the residual check
and the surrogate share it without importing each other.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._agree import agreed
from fem_ml._fem import n_owned, space_mismatch
from fem_ml.pod import InnerProduct, PODBasis, assemble_inner_product
from fem_ml.snapshots import SnapshotSet

__all__ = ["FieldNorms", "Predictor", "checked_truth", "relative_errors"]


class Predictor(Protocol):
    """What the evaluation needs of a surrogate: its basis, a check of points and predicted coefficients."""

    @property
    def basis(self) -> PODBasis:
        """The reduced basis of the predictions."""
        ...

    def check_points(self, parameters: npt.ArrayLike | Any, *, expected: int | None = None) -> npt.NDArray[np.float64]:
        """Validated points ``(n, p)`` (local)."""
        ...

    def coefficients(self, parameters: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Predicted coefficients ``(n, r)`` (collective)."""
        ...


class FieldNorms:
    """The :math:`L^2` and :math:`H^1` inner products of a space, assembled on first use (collective then).

    A product with the name of ``reuse`` (the basis' inner product) is that object. The object owns the products it
    assembled and destroys them in :meth:`destroy` (collective), never ``reuse``.

    Args:
        V: Function space.
        reuse: An inner product to use for its own name instead of assembling it again.
    """

    def __init__(self, V: fem.FunctionSpace, reuse: InnerProduct | None = None):
        self.V = V
        self._reuse = reuse
        self._made: dict[str, InnerProduct] = {}

    def get(self, kind: str) -> InnerProduct:
        """The inner product named ``kind`` (``"l2"``, ``"h1"``, ...), cached."""
        if self._reuse is not None and kind == self._reuse.name and not self._reuse.destroyed:
            return self._reuse
        if kind not in self._made:
            self._made[kind] = assemble_inner_product(self.V, kind)  # type: ignore[arg-type]
        return self._made[kind]

    def destroy(self) -> None:
        """Destroy the inner products this object assembled (collective)."""
        for product in self._made.values():
            product.destroy()
        self._made.clear()


def checked_truth(
    predictor: Predictor, parameters: npt.ArrayLike, truth: SnapshotSet | npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Points and owned truth values ``(n_owned, n)``, checked on every rank (collective, one Allreduce).

    Raises:
        ValueError: on every rank, for bad points, points that differ between ranks, a truth on another space or
            of the wrong shape, or a truth holding NaN or inf.
    """
    V = predictor.basis.V

    def check() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        points = predictor.check_points(parameters)
        if isinstance(truth, SnapshotSet) and (mismatch := space_mismatch(V, truth.V)) is not None:
            raise ValueError(f"Test snapshots are on another function space: {mismatch}.")
        values = truth.values if isinstance(truth, SnapshotSet) else np.asarray(truth, dtype=np.float64)
        if values.shape != (n_owned(V), points.shape[0]):
            raise ValueError(
                f"Truth must have shape (n_owned, n) = {(n_owned(V), points.shape[0])}, got {values.shape}."
            )
        if not np.isfinite(values).all():
            column = int(np.flatnonzero(~np.isfinite(values).all(axis=0))[0])
            raise ValueError(f"The truth of sample {column} holds NaN or inf: no error can be measured against it.")
        return points, values

    return agreed(V.mesh.comm, check, "The test points", key=lambda result: result[0])


def relative_errors(
    basis: PODBasis,
    norms: FieldNorms,
    values: npt.NDArray[np.float64],
    coefficients: npt.NDArray[np.float64],
) -> dict[str, npt.NDArray[np.float64]]:
    """Relative L2 and H1 errors of predicted coefficients and of the POD projection (collective).

    Args:
        basis: The reduced basis.
        norms: The norms to measure in.
        values: Checked owned truth values ``(n_owned, n)`` (see :func:`checked_truth`).
        coefficients: Predicted coefficients ``(n, r)``, the same on every rank.

    Returns:
        ``rel_error_l2``, ``rel_error_h1``, ``proj_error_l2``, ``proj_error_h1`` and ``network_error``, each ``(n,)``.

    Raises:
        ValueError: on every rank, if a truth is zero (its norm, the reference, is the same on every rank).
    """
    n = values.shape[1]
    prediction = basis.reconstruct(coefficients.T)
    projected = basis.project(values)
    projection = basis.reconstruct(projected)
    relative: dict[str, npt.NDArray[np.float64]] = {}
    # One sparse-times-dense product per norm: truth, surrogate error and projection error side by side.
    block = np.hstack([values, values - prediction, values - projection])
    for kind in ("l2", "h1"):
        all_norms = norms.get(kind).norms(block)
        reference = all_norms[:n]
        if (reference <= 0).any():
            i = int(np.flatnonzero(reference <= 0)[0])
            raise ValueError(f"The truth of sample {i} is zero in {kind.upper()}: a relative error is undefined.")
        relative[f"rel_error_{kind}"] = all_norms[n : 2 * n] / reference
        relative[f"proj_error_{kind}"] = all_norms[2 * n :] / reference
    reference = np.linalg.norm(projected, axis=0)
    relative["network_error"] = np.linalg.norm(coefficients.T - projected, axis=0) / np.where(
        reference > 0, reference, 1.0
    )
    return relative
