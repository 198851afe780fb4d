# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Named parameters with bounds, samplers and input validation.

A :class:`ParameterSpace` is the box
:math:`\mathcal{P} = [a_1, b_1] \times \dots \times [a_p, b_p]` of named parameters. Points are
``(n_samples, n_params)`` float64 arrays; a single point may also be given as a ``(n_params,)`` array or a
mapping ``{name: value}``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

__all__ = ["ParameterSpace", "SamplingMethod"]

#: Names of the samplers of :meth:`ParameterSpace.sample`.
SamplingMethod = Literal["uniform", "lhs", "sobol", "grid"]

_SAMPLERS: tuple[str, ...] = ("uniform", "lhs", "sobol", "grid")


class ParameterSpace:
    """A box of named, bounded parameters.

    Args:
        bounds: Mapping from parameter name to ``(lower, upper)``, in the order the parameters take in arrays.

    Example:
        >>> space = ParameterSpace({"k0": (0.1, 1.0), "k1": (0.1, 1.0)})
        >>> space.sample(4, method="lhs", seed=0).shape
        (4, 2)
    """

    def __init__(self, bounds: Mapping[str, tuple[float, float]]):
        if not isinstance(bounds, Mapping) or len(bounds) == 0:
            raise ValueError("ParameterSpace needs a non-empty mapping {name: (lower, upper)}.")
        names: list[str] = []
        lower: list[float] = []
        upper: list[float] = []
        for name, bound in bounds.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"Parameter name {name!r} is not a valid identifier.")
            try:
                a, b = (float(v) for v in bound)
            except (TypeError, ValueError) as err:
                raise ValueError(f"Bounds of parameter {name!r} must be a pair (lower, upper), got {bound!r}.") from err
            if not (math.isfinite(a) and math.isfinite(b)):
                raise ValueError(f"Bounds of parameter {name!r} must be finite, got ({a}, {b}).")
            if not a < b:
                raise ValueError(f"Parameter {name!r} needs lower < upper, got ({a}, {b}).")
            names.append(name)
            lower.append(a)
            upper.append(b)
        self._names = tuple(names)
        self._lower = np.array(lower, dtype=np.float64)
        self._upper = np.array(upper, dtype=np.float64)
        self._lower.setflags(write=False)
        self._upper.setflags(write=False)

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, in array order."""
        return self._names

    @property
    def dim(self) -> int:
        """Number of parameters :math:`p`."""
        return len(self._names)

    @property
    def lower(self) -> npt.NDArray[np.float64]:
        """Lower bounds, shape ``(p,)`` (read-only)."""
        return self._lower

    @property
    def upper(self) -> npt.NDArray[np.float64]:
        """Upper bounds, shape ``(p,)`` (read-only)."""
        return self._upper

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """The bounds as a mapping ``{name: (lower, upper)}``."""
        return {n: (float(a), float(b)) for n, a, b in zip(self._names, self._lower, self._upper, strict=True)}

    def __repr__(self) -> str:
        return f"ParameterSpace({self.bounds!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParameterSpace):
            return NotImplemented
        return (
            self._names == other._names
            and np.array_equal(self._lower, other._lower)
            and np.array_equal(self._upper, other._upper)
        )

    def __hash__(self) -> int:
        return hash((self._names, self._lower.tobytes(), self._upper.tobytes()))

    def sample(
        self,
        n: int | Sequence[int],
        *,
        method: SamplingMethod = "lhs",
        seed: int | None = None,
        comm: MPI.Comm | None = None,
    ) -> npt.NDArray[np.float64]:
        """Sample points of the space.

        Args:
            n: Number of points. For ``method="grid"``, the number of points per parameter (an int for all
                parameters, or one int per parameter); the grid holds their product, with the last parameter
                varying fastest.
            method: ``"uniform"`` (independent uniform draws), ``"lhs"`` (Latin hypercube), ``"sobol"``
                (scrambled Sobol sequence; powers of two keep its balance properties) or ``"grid"`` (tensor grid
                including the bounds).
            seed: Seed of the random generator; the same seed gives the same points.
            comm: If given, rank 0 samples and broadcasts, so every rank holds the same points even when
                ``seed`` is None. Without it, give a seed when running under MPI.

        Returns:
            Points, shape ``(n_points, p)``.
        """
        if method not in _SAMPLERS:
            raise ValueError(f"Unknown sampling method {method!r}; choose one of {_SAMPLERS}.")
        if comm is not None and comm.size > 1:
            points = self.sample(n, method=method, seed=seed) if comm.rank == 0 else None
            return comm.bcast(points, root=0)
        if method == "grid":
            counts = [n] * self.dim if isinstance(n, int | np.integer) else list(n)
            if len(counts) != self.dim:
                raise ValueError(f"Grid needs {self.dim} point counts (one per parameter), got {len(counts)}.")
            if any(int(c) < 1 for c in counts):
                raise ValueError(f"Grid point counts must be >= 1, got {counts}.")
            axes = [
                np.linspace(a, b, int(c)) if int(c) > 1 else np.array([0.5 * (a + b)])
                for a, b, c in zip(self._lower, self._upper, counts, strict=True)
            ]
            mesh = np.meshgrid(*axes, indexing="ij")
            return np.stack([m.ravel() for m in mesh], axis=1).astype(np.float64)
        if not isinstance(n, int | np.integer) or int(n) < 1:
            raise ValueError(f"Number of samples must be a positive int, got {n!r}.")
        n = int(n)
        rng = np.random.default_rng(seed)
        from scipy.stats import qmc  # scipy.stats takes a second to import: only when sampling

        if method == "uniform":
            unit = rng.random((n, self.dim))
        elif method == "lhs":
            unit = qmc.LatinHypercube(d=self.dim, rng=rng).random(n)
        else:
            with warnings.catch_warnings():
                # A non-power-of-two count is legitimate; scipy warns about balance properties only.
                warnings.filterwarnings("ignore", message=".*balance properties.*", category=UserWarning)
                unit = qmc.Sobol(d=self.dim, scramble=True, rng=rng).random(n)
        points = self._lower + unit * (self._upper - self._lower)
        return np.clip(points, self._lower, self._upper)

    def validate(
        self,
        points: npt.ArrayLike | Mapping[str, float],
        *,
        expected: int | None = None,
        check_bounds: bool = True,
    ) -> npt.NDArray[np.float64]:
        """Check points and return them as a ``(n_points, p)`` float64 array.

        Args:
            points: One point (``(p,)`` array or ``{name: value}`` mapping) or several (``(n, p)`` array or a
                sequence of mappings).
            expected: If given, the number of points required.
            check_bounds: Reject points outside the box.

        Returns:
            A new ``(n_points, p)`` float64 array.

        Raises:
            ValueError: naming the problem: wrong shape or count, unknown or missing names, NaN/inf, or a point
                outside the bounds.
        """
        if isinstance(points, Mapping):
            array = self._from_mapping(points)[None, :]
        elif isinstance(points, Sequence) and len(points) > 0 and isinstance(points[0], Mapping):
            array = np.stack([self._from_mapping(p) for p in points])  # type: ignore[arg-type]
        else:
            try:
                array = np.array(points, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"Parameters must be numbers, got {points!r}.") from err
            if array.ndim == 1:
                array = array[None, :]
            if array.ndim != 2 or array.shape[1] != self.dim:
                raise ValueError(
                    f"Parameters must have shape (n, {self.dim}) or ({self.dim},) for {self.names}, "
                    f"got shape {np.shape(points)}."
                )
        if array.shape[0] == 0:
            raise ValueError("No parameter points given.")
        if expected is not None and array.shape[0] != expected:
            raise ValueError(f"Expected {expected} parameter points, got {array.shape[0]}.")
        bad = ~np.isfinite(array)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"Parameter {self.names[j]!r} of point {i} is {array[i, j]}; NaN and inf are not allowed.")
        if check_bounds:
            scale = self._upper - self._lower
            tol = 1e-12 * scale
            outside = (array < self._lower - tol) | (array > self._upper + tol)
            if outside.any():
                i, j = np.argwhere(outside)[0]
                raise ValueError(
                    f"Parameter {self.names[j]!r} of point {i} is {float(array[i, j])}, outside its bounds "
                    f"[{float(self._lower[j])}, {float(self._upper[j])}]."
                )
        return array

    def to_dict(self, point: npt.ArrayLike) -> dict[str, float]:
        """Return one point as a mapping ``{name: value}``."""
        values = self.validate(point, expected=1, check_bounds=False)[0]
        return {n: float(v) for n, v in zip(self._names, values, strict=True)}

    def _from_mapping(self, point: Mapping[str, float]) -> npt.NDArray[np.float64]:
        unknown = sorted(set(point) - set(self._names))
        missing = [n for n in self._names if n not in point]
        if unknown or missing:
            raise ValueError(f"Parameter names do not match {self.names}: unknown {unknown}, missing {missing}.")
        return np.array([float(point[n]) for n in self._names], dtype=np.float64)
