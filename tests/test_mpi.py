# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The collective-failure construct: an error on some ranks is raised on every rank, never a hang."""

from __future__ import annotations

from mpi4py import MPI

import pytest

from fem_ml._h5 import FileFormatError
from fem_ml._mpi import CollectiveError, check_collectively, collectively


class _Unbuildable(Exception):
    """An exception whose constructor needs two arguments, so it cannot be rebuilt from a message."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def test_success_passes_through():
    comm = MPI.COMM_WORLD
    with collectively(comm):
        value = comm.rank + 1
    assert value == comm.rank + 1
    comm.barrier()  # the ranks are still in step


@pytest.mark.parametrize("failing", ["last", "all"])
def test_error_on_some_ranks_is_raised_everywhere(failing):
    comm = MPI.COMM_WORLD
    fails = comm.rank == comm.size - 1 if failing == "last" else True
    with pytest.raises(FileFormatError, match="bad entry"):
        with collectively(comm):
            if fails:
                raise FileFormatError(f"bad entry on {comm.rank}")
    comm.barrier()


def test_lowest_failing_rank_wins_and_keeps_its_traceback():
    comm = MPI.COMM_WORLD
    with pytest.raises(KeyError) if comm.rank == 0 else pytest.raises(CollectiveError, match="KeyError") as info:
        with collectively(comm):
            raise KeyError("missing")  # str(KeyError) is quoted: other ranks get a CollectiveError naming it
    if comm.rank == 0:
        assert info.value.args == ("missing",)


def test_unbuildable_class_becomes_collective_error():
    comm = MPI.COMM_WORLD
    expected = _Unbuildable if comm.rank == 0 else CollectiveError
    with pytest.raises(expected, match="x/y"):
        with collectively(comm):
            if comm.rank == 0:
                raise _Unbuildable("x", "y")


def test_check_collectively_message():
    comm = MPI.COMM_WORLD
    with pytest.raises(OSError, match="cannot write"):
        check_collectively(comm, "cannot write" if comm.rank == comm.size - 1 else None, OSError)
    check_collectively(comm, None)
