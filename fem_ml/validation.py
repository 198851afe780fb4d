# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""k-fold cross-validation of the network over the training snapshots, without new solves.

The snapshots are split into :math:`k` folds; for each fold a network is trained on the others and evaluated on
it. With :math:`c = \Phi^T M u` and the network's :math:`\hat c`, the surrogate's error splits exactly into two
:math:`M`-orthogonal parts,

.. math:: \|u - \Phi \hat c\|_M^2 = \|u - \Phi c\|_M^2 + \|c - \hat c\|_2^2,

the projection error (the basis) and the network error (the data and the network). Only the network is refit per
fold; the basis is the one given, built from all snapshots, so the projection part is an in-sample figure while
the network part is out-of-sample.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fem_ml._agree import agreed
from fem_ml._fem import space_mismatch
from fem_ml.networks import TrainingOptions, train_network
from fem_ml.parameters import ParameterSpace
from fem_ml.pod import PODBasis
from fem_ml.snapshots import SnapshotSet

__all__ = ["CrossValidation", "cross_validate"]


@dataclass(frozen=True)
class CrossValidation:
    r"""Held-out errors of a k-fold cross-validation, one entry per snapshot (relative, in the basis' norm).

    Attributes:
        fold: The fold each snapshot was held out in.
        network_error: :math:`\|\hat c - c\|_2 / \|c\|_2` of the network trained without the snapshot's fold.
        projection_error: :math:`\|u - \Phi c\|_M / \|u\|_M`.
        error: :math:`\|u - \Phi \hat c\|_M / \|u\|_M`, both parts together.
    """

    fold: npt.NDArray[np.int64]
    network_error: npt.NDArray[np.float64]
    projection_error: npt.NDArray[np.float64]
    error: npt.NDArray[np.float64]

    def summary(self) -> dict[str, float]:
        """Means and maxima over the snapshots, and the spread of the per-fold mean error."""
        out: dict[str, float] = {}
        for name in ("network_error", "projection_error", "error"):
            out[f"cv_{name}_mean"] = float(np.mean(getattr(self, name)))
            out[f"cv_{name}_max"] = float(np.max(getattr(self, name)))
        per_fold = [float(np.mean(self.error[self.fold == f])) for f in np.unique(self.fold)]
        out["cv_error_fold_std"] = float(np.std(per_fold))
        return out


def cross_validate(
    basis: PODBasis,
    snapshots: SnapshotSet,
    space: ParameterSpace,
    *,
    k: int = 5,
    seed: int = 0,
    options: TrainingOptions | None = None,
    **overrides: Any,
) -> CrossValidation:
    """k-fold cross-validation of the network (collective; no solves).

    The training options are given as in :func:`~fem_ml.surrogate.train_surrogate`: ``options=`` and keyword
    overrides of its fields (an unknown name is a ``TypeError``). ``seed`` here is the seed of the split; the
    networks' seed is ``options.seed``.

    Args:
        basis: The reduced basis.
        snapshots: The training snapshots.
        space: The parameter space.
        k: Number of folds (``2 <= k <= len(snapshots)``).
        seed: Seed of the split into folds.
        options: Training options of each fold's network (default :class:`~fem_ml.networks.TrainingOptions` with
            ``progress=False``).
        overrides: Fields of :class:`~fem_ml.networks.TrainingOptions` that replace those of ``options``.

    Returns:
        The held-out errors.

    Raises:
        ValueError: on every rank, for a bad ``k``, snapshots on another space than the basis, bad points, or
            points and options that differ between ranks.
    """
    options = dataclasses.replace(options if options is not None else TrainingOptions(progress=False), **overrides)
    comm = basis.V.mesh.comm
    n = len(snapshots)

    def check() -> npt.NDArray[np.float64]:
        if not 2 <= k <= n:
            raise ValueError(f"k must be in [2, {n}] for {n} snapshots, got {k}.")
        if (mismatch := space_mismatch(basis.V, snapshots.V)) is not None:
            raise ValueError(f"Snapshots and basis differ: {mismatch}.")
        return space.validate(snapshots.parameters)

    parameters = agreed(comm, check, "The points or options of cross_validate", key=lambda p: (p, k, seed, options))
    coefficients = basis.project(snapshots).T
    norms, projection = basis.projection_norms(snapshots.values, coefficients.T)
    projection_sq = projection**2
    c_norms = np.linalg.norm(coefficients, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    fold = np.empty(n, dtype=np.int64)
    for f, members in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), k)):
        fold[members] = f
    network_sq = np.empty(n)
    for f in range(k):
        held = fold == f
        network, _ = train_network(
            parameters[~held], coefficients[~held], space.lower, space.upper, options=options, comm=comm
        )
        network_sq[held] = np.sum((network(parameters[held]) - coefficients[held]) ** 2, axis=1)
    return CrossValidation(
        fold=fold,
        network_error=np.sqrt(network_sq) / np.where(c_norms > 0, c_norms, 1.0),
        projection_error=np.sqrt(projection_sq) / safe,
        error=np.sqrt(projection_sq + network_sq) / safe,
    )
