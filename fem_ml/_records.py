# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Plain records that surrogate files store, in NumPy only, so that reading a file needs neither DOLFINx nor torch.

:class:`ErrorReport` is part of :mod:`fem_ml.surrogate`'s interface and is re-exported there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fem_ml._serialize import dataclass_kwargs, dataclass_tree

__all__ = ["ErrorReport"]


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
