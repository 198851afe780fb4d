# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Field data for equation discovery: trajectories of one field (scalar or vector) on a function space.

:class:`FieldData` holds one or more trajectories, each a set of snapshots at increasing times, as this rank's
owned degrees of freedom. It comes from arrays (:meth:`FieldData.from_arrays`) or from the trajectories of
:func:`fem_ml.collection.collect_trajectories` (:meth:`FieldData.from_snapshots`). :meth:`FieldData.with_noise` adds
Gaussian noise that does not depend on the number of ranks (drawn per mesh vertex in the mesh's input order).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._mpi import collectively
from fem_ml.snapshots import SnapshotSet

__all__ = ["FieldData"]


def _n_owned(V: fem.FunctionSpace) -> int:
    return V.dofmap.index_map.size_local * V.dofmap.index_map_bs


@dataclass(frozen=True)
class FieldData:
    """Snapshots of a field on ``V`` over time, one or more trajectories.

    Attributes:
        V: Function space of the field (scalar, or vector-valued for a field with several components).
        times: One array of increasing times per trajectory.
        values: One array ``(n_times, n_owned_dofs)`` per trajectory: this rank's owned degrees of freedom
            (blocked, as in ``Function.x.array``).
    """

    V: fem.FunctionSpace
    times: tuple[npt.NDArray[np.float64], ...]
    values: tuple[npt.NDArray[np.float64], ...]

    @property
    def comm(self) -> MPI.Comm:
        """The communicator of the mesh."""
        return self.V.mesh.comm

    @property
    def n_components(self) -> int:
        """Number of components of the field (1 for a scalar)."""
        return int(np.prod(self.V.value_shape)) if len(self.V.value_shape) else 1

    @classmethod
    def from_arrays(
        cls,
        V: fem.FunctionSpace,
        times: npt.ArrayLike | Sequence[npt.ArrayLike],
        values: npt.ArrayLike | Sequence[npt.ArrayLike],
    ) -> FieldData:
        """Data from arrays: one trajectory (``times`` 1-D, ``values`` 2-D) or a list of them (collective).

        Args:
            V: Function space of the field.
            times: Increasing times of each trajectory, the same on every rank.
            values: ``(n_times, n_owned_dofs)`` per trajectory: this rank's owned dofs.

        Raises:
            ValueError: on every rank, for mismatched shapes, times that do not increase, fewer than 3 times, or
                values that are not finite.
        """
        comm = V.mesh.comm
        out: FieldData | None = None
        with collectively(comm):
            t_list = [times] if np.ndim(times) == 1 else list(times)  # type: ignore[arg-type]
            v_list = [values] if len(t_list) == 1 and np.ndim(values) == 2 else list(values)  # type: ignore[arg-type]
            if len(t_list) != len(v_list) or not t_list:
                raise ValueError(f"Got {len(t_list)} time arrays for {len(v_list)} value arrays.")
            ts, vs = [], []
            n_local = _n_owned(V)
            for i, (t, v) in enumerate(zip(t_list, v_list, strict=True)):
                t = np.array(t, dtype=np.float64).reshape(-1)
                v = np.array(v, dtype=np.float64)
                if t.size < 3 or not np.isfinite(t).all() or np.any(np.diff(t) <= 0):
                    raise ValueError(f"Trajectory {i}: times must be finite, strictly increasing, at least 3.")
                if v.shape != (t.size, n_local):
                    raise ValueError(f"Trajectory {i}: values must have shape {(t.size, n_local)}, got {v.shape}.")
                if not np.isfinite(v).all():
                    raise ValueError(f"Trajectory {i}: values must be finite.")
                ts.append(t)
                vs.append(v)
            out = cls(V, tuple(ts), tuple(vs))
        assert out is not None
        return out

    @classmethod
    def from_snapshots(cls, snapshots: SnapshotSet) -> FieldData:
        """Data from :func:`fem_ml.collection.collect_trajectories`: the time is the last parameter (collective).

        Consecutive columns with the same other parameters form one trajectory.
        """
        mu = snapshots.parameters[:, :-1]
        t = snapshots.parameters[:, -1]
        starts = [0] + [i for i in range(1, len(t)) if not np.array_equal(mu[i], mu[i - 1]) or t[i] <= t[i - 1]]
        bounds = [*starts, len(t)]
        times = [t[a:b] for a, b in itertools.pairwise(bounds)]
        values = [snapshots.values[:, a:b].T for a, b in itertools.pairwise(bounds)]
        return cls.from_arrays(snapshots.V, times, values)

    def with_noise(self, level: float, *, seed: int = 0) -> FieldData:
        r"""The data plus Gaussian noise of standard deviation ``level`` times each component's standard deviation.

        The noise of a degree of freedom is drawn from its mesh vertex's index in the mesh input, so the noisy
        data is the same for every number of ranks. Needs a degree-1 Lagrange space (collective).

        Args:
            level: Relative noise level (0.05: 5 % of the field's standard deviation over all trajectories).
            seed: Seed of the random generator.

        Raises:
            ValueError: on every rank, for a negative level or a space that is not degree-1 Lagrange.
        """
        comm, V = self.comm, self.V
        with collectively(comm):
            if not level >= 0:
                raise ValueError(f"The noise level must be >= 0, got {level}.")
            element = V.ufl_element()
            if element.embedded_superdegree != 1 or V.dofmap.dof_layout.num_dofs != V.mesh.geometry.cmaps[0].dim:
                raise ValueError("with_noise needs a degree-1 Lagrange space (dofs at the mesh vertices).")
        bs, nc = V.dofmap.index_map_bs, self.n_components
        n_local = V.dofmap.index_map.size_local
        # the mesh input index of each owned dof (node), through the cells: P1 dofs and geometry nodes share the
        # reference ordering of the cell's vertices
        node_input = np.full(n_local, -1, dtype=np.int64)
        dofs = V.dofmap.list
        geom = V.mesh.geometry.dofmaps[0]
        inputs = V.mesh.geometry.input_global_indices
        mask = dofs < n_local
        node_input[dofs[mask]] = np.asarray(inputs)[geom[mask]]
        n_global = int(comm.allreduce(int(node_input.max(initial=-1)) + 1, op=MPI.MAX))
        stacked = np.concatenate([v.reshape(v.shape[0], n_local, bs) for v in self.values], axis=0)
        n_total = comm.allreduce(n_local)
        sums = np.ascontiguousarray(stacked.sum(axis=(0, 1)), dtype=np.float64)
        squares = np.ascontiguousarray((stacked**2).sum(axis=(0, 1)), dtype=np.float64)
        comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        comm.Allreduce(MPI.IN_PLACE, squares, op=MPI.SUM)
        count = stacked.shape[0] * n_total
        std = np.sqrt(np.maximum(squares / count - (sums / count) ** 2, 0.0))
        rng = np.random.default_rng(seed)
        noisy = []
        for v in self.values:
            table = rng.standard_normal((v.shape[0], n_global, nc))
            noise = table[:, node_input, :] * (level * std[:nc])
            noisy.append(v + noise.reshape(v.shape))
        return FieldData(V, self.times, tuple(noisy))
