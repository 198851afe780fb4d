# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The energy of a POD spectrum, in NumPy only: one formula for the basis and for a file's description.

:attr:`fem_ml.pod.PODBasis.energy_curve` and :func:`fem_ml.archive.describe` (which reads a file without
DOLFINx) both compute the retained energy here, so the two always agree.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["energy_curve"]


def energy_curve(singular_values: npt.ArrayLike, total_energy: float | None = None) -> npt.NDArray[np.float64]:
    r"""Energy retained by the first :math:`k` modes, for ``k = 1, 2, ...`` up to the number of singular values.

    That is :math:`\sum_{j \le k} \sigma_j^2 / E` with :math:`E = \sum_j \sigma_j^2`, or the given total energy
    :math:`E = \mathrm{tr}(U^T M U)` when not every singular value is known (local, no MPI).

    Args:
        singular_values: The known singular values :math:`\sigma_j`, in decreasing order.
        total_energy: :math:`E`, or None for the sum over ``singular_values``.

    Returns:
        The cumulative fractions; all ones when the energy is zero.
    """
    energy = np.asarray(singular_values, dtype=np.float64) ** 2
    total = energy.sum() if total_energy is None else float(total_energy)
    return np.cumsum(energy) / total if total > 0 else np.ones_like(energy)
