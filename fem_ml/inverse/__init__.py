# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Inverse problems through the differentiable surrogate: observations, estimation, posterior sampling.

Observations are linear in the reduced coefficients :math:`c`: the data :math:`d \in \mathbb{R}^k` are modelled as

.. math:: d = B\, c(\mu) + e, \qquad e \sim \mathcal{N}(0, \Sigma), \quad \Sigma = \mathrm{diag}(\sigma_i^2),

where :math:`B \in \mathbb{R}^{k \times r}` is precomputed once: at sensors it holds the modes evaluated at the
sensor points (:class:`Sensors`); for a whole observed field it is a factor of the Gram matrix of the modes
(:func:`observe_field`). A misfit then costs :math:`O(kr)` besides the network, whatever the mesh size.

:func:`identify` minimizes

.. math::
    J(\mu) = \tfrac12 \big\| \Sigma^{-1/2} (B c(\mu) - d) \big\|^2
    + \tfrac12 \big\| \Sigma_0^{-1/2} (\mu - \mu_0) \big\|^2

(the second term only with a :class:`Gaussian` prior) over the parameter box, by SciPy's L-BFGS-B on the exact
gradient of the surrogate network (in NumPy), from several starting points. It reports the Laplace
(Gauss-Newton) covariance :math:`(J_\mu^T \Sigma^{-1} J_\mu + \Sigma_0^{-1})^{-1}`, :math:`J_\mu = B\,\partial
c / \partial \mu`, at the estimate. :func:`sample_posterior` draws from the surrogate posterior
:math:`\pi(\mu \mid d) \propto e^{-J(\mu)}` on the box by random-walk Metropolis.

The package has one module per step, each importing only the ones before it:

- :mod:`fem_ml.inverse.observations`: :class:`Sensors`, :func:`observe_field` and the observations they build;
- :mod:`fem_ml.inverse.estimation`: :func:`identify`, :class:`Gaussian` priors, the Laplace covariance;
- :mod:`fem_ml.inverse.sampling`: :func:`sample_posterior`, :func:`effective_sample_size`.

Every name is also available from this package and from :mod:`fem_ml` itself.

**MPI.** The sensor matrix, data and noise are the same on every rank; inputs that differ between ranks are an
error on every rank. The starts of :func:`identify` are spread over the ranks (start ``k`` on rank
``k % size``); each start is deterministic, so the estimate does not depend on the rank count, and every rank
returns rank 0's result (broadcast). Only the optional verification solve uses the distributed mesh.
"""

from fem_ml.inverse.estimation import Gaussian, IdentificationResult, Verification, identify, laplace_covariance
from fem_ml.inverse.observations import FieldObservations, Observations, SensorObservations, Sensors, observe_field
from fem_ml.inverse.sampling import PosteriorSamples, effective_sample_size, sample_posterior

__all__ = [
    "FieldObservations",
    "Gaussian",
    "IdentificationResult",
    "Observations",
    "PosteriorSamples",
    "SensorObservations",
    "Sensors",
    "Verification",
    "effective_sample_size",
    "identify",
    "laplace_covariance",
    "observe_field",
    "sample_posterior",
]
