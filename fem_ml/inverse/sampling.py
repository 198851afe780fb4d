# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Sampling: draws from the surrogate posterior :math:`\pi(\mu \mid d) \propto e^{-J(\mu)}` on the search box.

:func:`~fem_ml.inverse.sample_posterior` runs a random-walk Metropolis chain whose proposals follow the Laplace
covariance of an :func:`~fem_ml.inverse.identify` result; :func:`~fem_ml.inverse.effective_sample_size` measures
how many independent draws the chain is worth.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

from fem_ml._mpi import collectively, run_distributed
from fem_ml.inverse._checks import check_same_on_all_ranks
from fem_ml.inverse.estimation import IdentificationResult
from fem_ml.inverse.observations import Observations
from fem_ml.surrogate import Surrogate

__all__ = ["PosteriorSamples", "effective_sample_size", "sample_posterior"]


@dataclass(frozen=True)
class PosteriorSamples:
    """Samples of the surrogate posterior from :func:`sample_posterior`; the same on every rank.

    Attributes:
        names: Parameter names.
        samples: The chain after burn-in, ``(n_samples, p)``.
        acceptance_rate: Fraction of accepted proposals (burn-in included).
        effective_sample_size: Per parameter, from the chain's autocorrelation (:func:`effective_sample_size`).
        n_surrogate_calls: Forward evaluations of the surrogate.
        time_s: Wall time.
    """

    names: tuple[str, ...]
    samples: npt.NDArray[np.float64]
    acceptance_rate: float
    effective_sample_size: npt.NDArray[np.float64]
    n_surrogate_calls: int
    time_s: float

    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """Posterior mean estimate, ``(p,)``."""
        return self.samples.mean(axis=0)

    @property
    def std(self) -> npt.NDArray[np.float64]:
        """Posterior standard deviation estimate, ``(p,)``."""
        return self.samples.std(axis=0, ddof=1)


def effective_sample_size(chain: npt.ArrayLike) -> npt.NDArray[np.float64]:
    r"""Effective sample size :math:`n / \tau` of each column of a chain ``(n,)`` or ``(n, p)``.

    The integrated autocorrelation time :math:`\tau = -1 + 2 \sum_{k \ge 0} (\rho_{2k} + \rho_{2k+1})` sums
    Geyer's initial positive sequence of the pair sums of the empirical autocorrelations :math:`\rho`, made
    monotone (the initial monotone sequence estimator). A constant column has an effective size of 1.
    """
    x = np.asarray(chain, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    n = x.shape[0]
    centered = x - x.mean(axis=0)
    spectrum = np.fft.rfft(centered, n=2 * n, axis=0)
    autocov = np.fft.irfft(spectrum * np.conj(spectrum), axis=0)[:n] / n
    ess = np.ones(x.shape[1])
    for j in range(x.shape[1]):
        if autocov[0, j] <= 0:
            continue
        rho = autocov[:, j] / autocov[0, j]
        pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
        positive = np.flatnonzero(pairs <= 0)
        pairs = pairs[: positive[0]] if positive.size else pairs
        pairs = np.minimum.accumulate(pairs)
        tau = max(-1.0 + 2.0 * float(pairs.sum()), 1.0 / n)
        ess[j] = n / tau
    return ess


def sample_posterior(
    rom: Surrogate,
    observations: Observations,
    result: IdentificationResult,
    *,
    n_samples: int = 5000,
    burn_in: int = 1000,
    seed: int = 0,
    step_scale: float | None = None,
) -> PosteriorSamples:
    r"""Random-walk Metropolis on the surrogate posterior :math:`\pi(\mu) \propto e^{-J(\mu)}` on the box (collective).

    Proposals are :math:`\mu' = \mu + s L \xi`, :math:`\xi \sim \mathcal{N}(0, I)`, with :math:`L L^T` the
    Laplace covariance of ``result`` and :math:`s = 2.38/\sqrt{p}` by default (the optimal scale for a Gaussian
    target). A proposal outside the search box of ``result`` is rejected (the box is a uniform prior);
    ``result.prior`` is used as in the estimation. The chain starts at ``result.estimate`` and runs on rank 0
    (the other ranks wait without spinning); every rank receives the same samples, which depend only on ``seed``.

    Args:
        rom: The surrogate.
        observations: The observations used for ``result``.
        result: An :func:`~fem_ml.inverse.identify` result: the start and the proposal covariance.
        n_samples: Samples kept after burn-in.
        burn_in: Samples discarded first.
        seed: Seed of the chain.
        step_scale: The factor :math:`s`.

    Returns:
        The samples, the acceptance rate and the effective sample sizes.

    Raises:
        ValueError: on every rank for observations of another surrogate, bad option values, or inputs that
            differ between ranks.
    """
    comm = rom.V.mesh.comm if isinstance(rom, Surrogate) else MPI.COMM_WORLD
    with collectively(comm):
        if not isinstance(observations, Observations):
            raise ValueError(
                f"Expected fem_ml.Observations (Sensors.observe, observe_field), got {type(observations)}."
            )
        observations.check_surrogate(rom)
        if not isinstance(result, IdentificationResult) or result.estimate.shape != (rom.space.dim,):
            raise ValueError("result must be the IdentificationResult of identify() for this surrogate.")
        prior = None if result.prior is None else result.prior.arrays(rom.space)
        if int(n_samples) != n_samples or n_samples < 2 or int(burn_in) != burn_in or burn_in < 0:
            raise ValueError(f"Need n_samples >= 2 and burn_in >= 0, got {n_samples!r} and {burn_in!r}.")
        if step_scale is not None and not (step_scale > 0 and math.isfinite(step_scale)):
            raise ValueError(f"step_scale must be positive, got {step_scale!r}.")
    check_same_on_all_ranks(
        comm, "The inputs of sample_posterior (result, observations, seed or options)", result, n_samples, burn_in,
        seed, step_scale, observations.matrix, observations.data, observations.noise_std, observations.residual,
    )  # fmt: skip
    network = rom.network  # a TypeError on every rank for a surrogate without a network
    p = rom.space.dim
    scale = 2.38 / math.sqrt(p) if step_scale is None else float(step_scale)
    eigenvalues, vectors = np.linalg.eigh(result.covariance)
    factor = vectors * np.sqrt(np.maximum(eigenvalues, 0.0)) * scale

    def log_posterior(mu: npt.NDArray[np.float64]) -> float:
        value = observations.misfit(network(mu[None, :])[0])
        if prior is not None:
            value += 0.5 * float(np.sum(((mu - prior[0]) / prior[1]) ** 2))
        return -value

    def chain() -> tuple[npt.NDArray[np.float64], int, int, float]:
        return _metropolis(log_posterior, result, factor, int(n_samples) + int(burn_in), seed)

    samples, accepted, calls, seconds = run_distributed(comm, [chain])[0]
    return PosteriorSamples(
        names=rom.space.names,
        samples=samples[int(burn_in) :],
        acceptance_rate=accepted / (int(n_samples) + int(burn_in)),
        effective_sample_size=effective_sample_size(samples[int(burn_in) :]),
        n_surrogate_calls=calls,
        time_s=seconds,
    )


def _metropolis(
    log_posterior: Callable[[npt.NDArray[np.float64]], float],
    result: IdentificationResult,
    factor: npt.NDArray[np.float64],
    total: int,
    seed: int,
) -> tuple[npt.NDArray[np.float64], int, int, float]:
    """``total`` steps of the chain from ``result.estimate`` in its box; samples, accepted, calls and seconds."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    p = factor.shape[0]
    samples = np.empty((total, p))
    current = result.estimate.copy()
    current_lp = log_posterior(current)
    calls, accepted = 1, 0
    for i in range(total):
        proposal = current + factor @ rng.standard_normal(p)
        log_u = math.log(rng.random())
        if np.all(proposal >= result.lower) and np.all(proposal <= result.upper):
            proposal_lp = log_posterior(proposal)
            calls += 1
            if log_u < proposal_lp - current_lp:
                current, current_lp = proposal, proposal_lp
                accepted += 1
        samples[i] = current
    return samples, accepted, calls, time.perf_counter() - start
