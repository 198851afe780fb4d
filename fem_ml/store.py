# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""The snapshot store: every solve lands on disk as soon as it finishes, and a rerun resumes where it stopped.

A store is a folder::

    store/
        store.h5              the dof layout (canonical keys and coordinates), element, parameter space
        samples/000042.h5     sample 42: parameters, status ("ok" or "failed"), message, solve time, values

Each sample file is written under a temporary name and renamed into place, and carries a SHA-256 checksum: a
process killed at any moment leaves either a complete entry or none, and a damaged entry is detected and solved
again instead of being read as valid. Values are stored in a canonical dof order derived from the mesh's input
cell ordering (see :mod:`fem_ml._layout`), so a store written on N ranks is read on M ranks.

Why HDF5 through h5py, written by rank 0: the pip h5py is serial, ADIOS2's Python module is absent from the
DOLFINx wheel, and one gather per snapshot costs far less than the solve that produced it. HDF5 files open in
h5py, h5dump and HDFView; one file per sample makes each entry atomic (a single HDF5 file is not safe against a
killed writer) and lets ensemble groups write side by side without locks.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._agree import check_same
from fem_ml._atomic import write_file
from fem_ml._fem import element_signature
from fem_ml._formats import SAMPLE, STORE
from fem_ml._h5 import FileFormatError, Tree, read_tree, write_tree
from fem_ml._layout import DofLayout
from fem_ml._mpi import collectively
from fem_ml.parameters import ParameterSpace
from fem_ml.snapshots import FailedSolve, SnapshotSet

__all__ = ["SampleRecord", "SnapshotStore", "element_signature"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleRecord:
    """What the store knows about one sample (without its values).

    Attributes:
        index: Position of the sample in the parameter array it came from.
        parameters: The parameter point ``(p,)``.
        ok: True if the solve succeeded.
        message: The error message of a failed solve ("" for a successful one).
        solve_time: Wall-clock seconds of the solve.
    """

    index: int
    parameters: npt.NDArray[np.float64]
    ok: bool
    message: str
    solve_time: float


class SnapshotStore:
    """A folder of snapshots, one atomic HDF5 file per sample, readable on any number of ranks.

    Opening is collective on ``V``'s communicator. A new folder is initialised with ``V``'s dof layout; an
    existing store must hold the same mesh and element (checked through canonical dof keys and coordinates)
    and, if ``space`` is given, the same parameter names and bounds.

    Args:
        path: The store's folder.
        V: Function space of the snapshots.
        space: The parameter space; stored on creation, checked on reopening.

    Raises:
        FileFormatError: on every rank, if the folder holds something that is not a compatible store.
    """

    def __init__(self, path: str | os.PathLike, V: fem.FunctionSpace, *, space: ParameterSpace | None = None):
        self.path = Path(path)
        self.V = V
        self.comm: MPI.Comm = V.mesh.comm
        check_same(self.comm, "The path of the SnapshotStore", str(self.path))
        self.layout = DofLayout(V)
        header = self.path / "store.h5"
        exists = self.comm.bcast(header.exists() if self.comm.rank == 0 else None, root=0)
        self.space: ParameterSpace | None = self._open(header, space) if exists else self._create(header, space)

    def _open(self, header: Path, space: ParameterSpace | None) -> ParameterSpace | None:
        """Check an existing store against the function space and parameter space (collective)."""
        keys = coordinates = None
        found: ParameterSpace | None = None
        with collectively(self.comm):
            if self.comm.rank == 0:
                tree = read_tree(header, kind=STORE.kind, version=STORE.version, what=STORE.what, schema=STORE.schema)
                if tree["element"] != element_signature(self.V):
                    raise FileFormatError(
                        f"{header}: the store holds snapshots on {tree['element']}, not on {element_signature(self.V)}."
                    )
                try:
                    bounds = json.loads(str(tree["parameter_space"]))
                    found = ParameterSpace({k: tuple(v) for k, v in bounds.items()}) if bounds else None
                except (TypeError, ValueError) as err:
                    raise FileFormatError(f"{header}: 'parameter_space' is not a parameter space: {err}") from None
                if space is not None and found is not None and found != space:
                    raise FileFormatError(f"{header}: the store was made for {found}, not for {space}.")
                keys, coordinates = np.asarray(tree["layout/keys"]), np.asarray(tree["layout/coordinates"])
        problem = self.layout.mismatch(keys, coordinates)
        if problem is not None:
            raise FileFormatError(f"{header} does not match the function space: {problem}.")
        return self.comm.bcast(found or space, root=0)

    def _create(self, header: Path, space: ParameterSpace | None) -> ParameterSpace | None:
        """Initialise a new store with the dof layout (collective)."""
        coordinates = self.layout.coordinates()
        created = False
        with collectively(self.comm):
            if self.comm.rank == 0:
                assert coordinates is not None
                tree: Tree = {
                    "layout/keys": self.layout.keys,
                    "layout/coordinates": coordinates,
                    "element": element_signature(self.V),
                    "n_dofs": int(self.layout.n_global),
                    "parameter_space": json.dumps({} if space is None else space.bounds),
                    "written_on_ranks": int(self.comm.size),
                }
                try:
                    (self.path / "samples").mkdir(parents=True, exist_ok=True)
                    write_file(
                        header,
                        lambda tmp: write_tree(tmp, tree, kind=STORE.kind, version=STORE.version),
                        exclusive=True,  # another process creating the same store at the same time: keep its header
                    )
                    created = True
                    logger.info("Created snapshot store %s", self.path)
                except FileExistsError:
                    pass
                except OSError as err:
                    raise OSError(f"Could not create the snapshot store {self.path}: {err}") from err
        if not self.comm.bcast(created, root=0):
            return self._open(header, space)
        return space

    def _sample_path(self, index: int) -> Path:
        return self.path / "samples" / f"{index:06d}.h5"

    def records(self) -> dict[int, SampleRecord]:
        """Every complete, intact entry by sample index (collective; read on rank 0, shared).

        A damaged entry (from a crash during a write at the file-system level, or corruption later) is logged,
        renamed to ``*.corrupt`` and left out, so the sample is solved again.
        """
        found: dict[int, SampleRecord] = {}
        with collectively(self.comm):
            if self.comm.rank == 0:
                try:
                    files = sorted((self.path / "samples").glob("[0-9]*.h5"))
                except OSError as err:
                    raise OSError(f"Could not list the snapshot store {self.path}: {err}") from err
                for file in files:
                    try:
                        record = _record(self._read(file))
                        if record.index != int(file.stem):
                            raise FileFormatError(f"{file} holds sample {record.index}, not {int(file.stem)}.")
                    except FileFormatError as err:
                        logger.warning("Ignoring damaged snapshot entry %s: %s", file, err)
                        try:
                            file.rename(file.with_suffix(".corrupt"))
                        except OSError as rename_error:  # read-only store, or another group renamed it first
                            logger.warning("Could not set %s aside: %s", file, rename_error)
                        continue
                    found[record.index] = record
        return self.comm.bcast(found, root=0)

    def _read(self, file: Path) -> dict:
        return read_tree(
            file,
            kind=SAMPLE.kind,
            version=SAMPLE.version,
            what=SAMPLE.what,
            schema=SAMPLE.schema,
            dims={"n_dofs": self.layout.n_global},
        )

    def write(
        self,
        index: int,
        parameters: npt.NDArray[np.float64],
        values: npt.NDArray[np.float64] | None,
        *,
        solve_time: float,
        message: str = "",
    ) -> None:
        """Write one sample atomically (collective: rank 0 gathers the owned values and writes).

        Args:
            index: Sample index (the file name); an existing entry is replaced.
            parameters: The point ``(p,)``.
            values: Owned dof values ``(n_owned,)``, or None for a failed solve.
            solve_time: Wall-clock seconds of the solve.
            message: Error message of a failed solve.
        """
        ok = values is not None
        what = f"Sample {index}: the index, parameters or values given (on some ranks only?)"
        check_same(self.comm, what, int(index), np.asarray(parameters, dtype=np.float64), ok)
        gathered = self.layout.gather(values) if values is not None else None
        with collectively(self.comm):
            if self.comm.rank == 0:
                tree: Tree = {
                    "index": int(index),
                    "parameters": np.asarray(parameters, dtype=np.float64).reshape(-1),
                    "ok": bool(ok),
                    "message": message,
                    "solve_time": float(solve_time),
                }
                if gathered is not None:
                    tree["values"] = gathered
                try:
                    write_file(
                        self._sample_path(index),
                        lambda tmp: write_tree(tmp, tree, kind=SAMPLE.kind, version=SAMPLE.version),
                        fsync=False,
                    )
                except OSError as err:
                    raise OSError(f"Could not write snapshot {index} to {self.path}: {err}") from err

    def read_values(self, indices: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Owned dof values ``(n_owned, len(indices))`` of successful samples (collective).

        Raises:
            FileFormatError: if an entry is missing, failed or damaged.
        """
        idx = [int(i) for i in np.atleast_1d(np.asarray(indices))]
        out = np.empty((self.layout.n_owned, len(idx)), dtype=np.float64)
        for column, i in enumerate(idx):
            full = None
            with collectively(self.comm):
                if self.comm.rank == 0:
                    tree = self._read(self._sample_path(i))
                    if not tree["ok"]:
                        raise FileFormatError(f"sample {i} in {self.path} is a failed solve: {tree['message']}")
                    full = np.asarray(tree["values"], dtype=np.float64)
            out[:, column] = self.layout.scatter(full)
        return out

    # The read protocol of fem_ml.snapshots.SnapshotSource: the successful samples as columns, in index order.

    @property
    def in_memory(self) -> bool:
        """False, since columns are read from disk (see :class:`~fem_ml.snapshots.SnapshotSource`)."""
        return False

    def column_count(self) -> int:
        """Number of successful samples (collective: lists the store; see :class:`~fem_ml.snapshots.SnapshotSource`).

        It fixes the columns :meth:`read_columns` reads: column ``j`` is the ``j``-th successful sample by index
        at the time of this call, so samples written later do not shift a reader that is streaming.
        """
        self._columns = [i for i, record in sorted(self.records().items()) if record.ok]
        return len(self._columns)

    def read_columns(self, start: int, stop: int) -> npt.NDArray[np.float64]:
        """Owned values of successful samples ``start:stop`` (collective; see :meth:`column_count`)."""
        columns: list[int] | None = getattr(self, "_columns", None)
        if columns is None:
            self.column_count()
            columns = self._columns
        return self.read_values(columns[start:stop])

    def snapshots(self) -> SnapshotSet:
        """All successful samples as a :class:`~fem_ml.snapshots.SnapshotSet` in index order (collective).

        Failed samples are listed in its ``failures``.
        """
        records = self.records()
        ok = [r for _, r in sorted(records.items()) if r.ok]
        failed = tuple(FailedSolve(r.index, r.parameters, r.message) for _, r in sorted(records.items()) if not r.ok)
        if not ok:
            raise ValueError(f"The store {self.path} holds no successful snapshot.")
        return SnapshotSet(
            self.V,
            np.stack([r.parameters for r in ok]),
            self.read_values([r.index for r in ok]),
            np.array([r.solve_time for r in ok]),
            indices=np.array([r.index for r in ok], dtype=np.int64),
            failures=failed,
        )


def _record(tree: dict) -> SampleRecord:
    return SampleRecord(
        index=int(tree["index"]),
        parameters=np.asarray(tree["parameters"], dtype=np.float64),
        ok=bool(tree["ok"]),
        message=str(tree["message"]),
        solve_time=float(tree["solve_time"]),
    )
