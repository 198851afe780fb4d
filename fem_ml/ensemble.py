# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Ensemble parallelism: groups of ranks solve different samples at the same time.

``mpirun -n 8`` with groups of 2 ranks gives 4 groups; each group builds the mesh on its own communicator
(domain decomposition inside the group) and solves its share of the samples, so the two kinds of parallelism
combine. All groups write into one :class:`~fem_ml.store.SnapshotStore`, whose rank-independent layout lets the
POD (or any later step) read the snapshots on any communicator, whatever the group sizes were::

    ensemble = fem_ml.Ensemble(MPI.COMM_WORLD, group_size=2)
    V, solve = build_problem(ensemble.comm)                  # the mesh lives on the group
    store = fem_ml.SnapshotStore("snapshots/", V, space=space)
    snapshots = fem_ml.collect_snapshots(solve, train, V, store=store, ensemble=ensemble)
"""

from __future__ import annotations

from collections.abc import Sequence

from mpi4py import MPI

from fem_ml._agree import agreed

__all__ = ["Ensemble"]


class Ensemble:
    r"""A split of a communicator into groups of ranks (collective on ``world`` to create).

    Every rank must pass the same ``group_size`` (checked); a bad one is a ``ValueError`` on every rank.

    Sample :math:`i` is solved by group :math:`i \bmod n_{\text{groups}}`: groups of equal size balance best.
    The object owns the group communicator; :meth:`destroy` frees it.

    Args:
        world: The communicator to split (usually ``MPI.COMM_WORLD``).
        group_size: Ranks per group (must divide ``world.size``), or the size of each group in rank order
            (must sum to ``world.size``).

    Attributes:
        world: The communicator that was split.
        comm: This rank's group communicator: build the mesh on it.
        index: This rank's group number.
        n_groups: Number of groups.
        sizes: Size of every group.
    """

    def __init__(self, world: MPI.Comm, group_size: int | Sequence[int] = 1):
        sizes = agreed(world, lambda: _group_sizes(world.size, group_size), "The group sizes of Ensemble")
        bounds = [sum(sizes[:g]) for g in range(len(sizes) + 1)]
        index = next(g for g in range(len(sizes)) if bounds[g] <= world.rank < bounds[g + 1])
        self.world = world
        self.sizes = sizes
        self.n_groups = len(sizes)
        self.index = index
        self.comm: MPI.Comm = world.Split(color=index, key=world.rank)

    def owns(self, sample: int) -> bool:
        """Whether this group solves sample ``sample``."""
        return sample % self.n_groups == self.index

    def __repr__(self) -> str:
        return f"Ensemble(group {self.index} of {self.n_groups}, sizes {self.sizes})"

    def destroy(self) -> None:
        """Free the group communicator."""
        if self.comm != MPI.COMM_NULL:
            self.comm.Free()


def _group_sizes(n_ranks: int, group_size: int | Sequence[int]) -> tuple[int, ...]:
    """The size of every group, checked (local)."""
    if isinstance(group_size, int):
        if group_size < 1 or n_ranks % group_size != 0:
            raise ValueError(f"group_size={group_size} does not divide the {n_ranks} ranks into equal groups.")
        return (group_size,) * (n_ranks // group_size)
    sizes = tuple(int(s) for s in group_size)
    if any(s < 1 for s in sizes) or sum(sizes) != n_ranks:
        raise ValueError(f"Group sizes {sizes} must be positive and sum to the {n_ranks} ranks.")
    return sizes
