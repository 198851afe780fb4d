# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The one writer of every file fem_ml writes: outputs appear complete, as a set, or not at all.

An *output* is the set of files one call produces: a ``.femml`` file; an ``.xdmf`` file with its ``.h5`` and
``.json``; a VTX ``.bp`` folder; a PNG; a JSON file. :func:`output_set` gives every file of the set a temporary
name in one hidden folder beside the destination, lets the caller (every rank) write them, and only when every
rank succeeded moves them into place on rank 0, the main file last, rolling back what it had moved if a move
fails. A failure on any rank removes the temporary folder and raises on every rank, leaving the existing files as
they were.

Permissions: every file gets ``0o666`` and every folder ``0o777``, less the process umask (what ``open`` and
``mkdir`` give), whatever the temporary-file functions used.

Overwriting: an existing destination is replaced only if fem_ml wrote it (see :func:`written_by_fem_ml`) or the
caller passes ``overwrite=True`` (the command line's ``--force``); never if it is one of the ``protect`` paths (the
model file being read), and never a folder by a file or a file by a folder.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mpi4py import MPI

from fem_ml._agree import check_same
from fem_ml._mpi import collectively, wait_for_all

__all__ = ["MARKER", "apply_permissions", "mark_written", "output_set", "write_file", "written_by_fem_ml"]

#: Text that marks XDMF/VTU/PNG files written by fem_ml (and the name of the marker file in a VTX folder).
MARKER = "written by fem_ml"
_MARKER_FILE = ".fem_ml"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_permissions(path: Path) -> None:
    """Give ``path`` (recursively for a folder) the permissions ``open``/``mkdir`` would: 0o666/0o777 less umask."""
    mask = _umask()
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for entry in path.rglob("*"):
            os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def mark_written(path: Path) -> None:
    """Mark a file or folder as written by fem_ml, by its type (local; before it is moved into place).

    HDF5 files get the root attribute ``fem_ml_output``; XDMF and VTU files an XML comment at their end; a VTX
    folder a small ``.fem_ml`` file. PNG files are marked when drawn (text chunk ``Software``), ``.femml`` files by
    their format tag, JSON files need no mark (see :func:`written_by_fem_ml`).
    """
    if path.is_dir():
        (path / _MARKER_FILE).write_text(MARKER + "\n")
        return
    with open(path, "rb") as f:
        head = f.read(8)
    if head == _HDF5_MAGIC:
        import h5py

        with h5py.File(path, "a") as h5:
            if "format" not in h5.attrs:
                h5.attrs["fem_ml_output"] = MARKER
    elif path.suffix in (".xdmf", ".vtu"):
        with open(path, "a") as f:
            f.write(f"<!-- {MARKER} -->\n")


def written_by_fem_ml(path: Path) -> bool:
    """Whether an existing file or folder was written by fem_ml (then an output may replace it).

    Recognised: HDF5 files with a ``fem_ml.*`` format tag or the ``fem_ml_output`` attribute, XDMF/VTU/PNG files
    carrying :data:`MARKER`, VTX folders with the marker file, and JSON files that parse as JSON (fem_ml's own JSON
    outputs carry no mark: a JSON file is replaced if it is valid JSON, refused otherwise).
    """
    if path.is_dir():
        return (path / _MARKER_FILE).is_file()
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if head.startswith(_HDF5_MAGIC):
        import h5py

        try:
            with h5py.File(path, "r") as h5:
                tag = h5.attrs.get("format", b"")
                tag = tag.decode() if isinstance(tag, bytes) else str(tag)
                return tag.startswith("fem_ml.") or "fem_ml_output" in h5.attrs
        except Exception:  # a damaged HDF5 file is not ours
            return False
    if path.suffix in (".xdmf", ".vtu"):
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 256))
            return MARKER.encode() in f.read()
    if path.suffix == ".png":
        return MARKER.encode() in head
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            return False
        return True
    return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_destination(target: Path, *, folder: bool, overwrite: bool, protect: Sequence[Path]) -> None:
    """Raise if ``target`` must not be replaced (local)."""
    for path in protect:
        if _same_file(target, Path(path)) or target.resolve() == Path(path).resolve():
            raise ValueError(f"Refusing to write {target}: it is the input file {path}.")
    if not (target.exists() or target.is_symlink()):
        return
    if target.is_dir() and not folder:
        raise ValueError(f"Cannot write the file {target}: a folder of that name exists.")
    if folder and not target.is_dir():
        raise ValueError(f"Cannot write the folder {target}: a file of that name exists.")
    if not target.is_dir() and not target.is_file():
        raise ValueError(f"Cannot write {target}: it exists and is not a regular file.")
    if not overwrite and not written_by_fem_ml(target):
        raise ValueError(
            f"Refusing to replace {target}: it exists and was not written by fem_ml "
            "(pass overwrite=True, or --force on the command line, to replace it)."
        )


@contextmanager
def output_set(
    comm: MPI.Comm,
    targets: Sequence[str | os.PathLike[str]],
    *,
    folders: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    protect: Sequence[str | os.PathLike[str]] = (),
    fsync: bool = True,
    exclusive: bool = False,
) -> Iterator[dict[Path, Path]]:
    """Write the files of one output under temporary names; move them into place when all ranks succeeded.

    Collective. The block gets ``{destination: temporary path}`` on every rank (all in one hidden folder beside
    the destinations, which must share a folder) and writes the files there; it may call collectives. When the
    block ends on every rank, rank 0 marks the files (:func:`mark_written`), sets their permissions, flushes them
    to disk (``fsync``) and renames them into place, ``targets[0]`` last; a failure on any rank in any of these
    steps raises on every rank and leaves the destinations as they were.

    Args:
        comm: Communicator whose ranks all write.
        targets: Destinations; the first is the main file (moved last). A destination that is a folder (VTX) must
            also be listed in ``folders``.
        folders: Destinations that are folders.
        overwrite: Replace existing files that fem_ml did not write.
        protect: Paths that must never be replaced (e.g. the input model).
        fsync: Flush files and the folder to disk before and after the renames.
        exclusive: Fail (``FileExistsError``) if a destination exists when the files are moved into place, even
            one created meanwhile by another process; nothing is replaced.

    Raises:
        ValueError: on every rank, for a destination that must not be replaced, or destinations or options that
            differ between ranks.
        OSError: on every rank, if a file cannot be written or moved.
    """
    paths = [Path(t) for t in targets]
    folder_set = {Path(p) for p in folders}
    check_same(comm, "The output paths or options", [str(p) for p in paths], sorted(str(p) for p in folder_set),
               overwrite, [str(p) for p in protect], fsync, exclusive)  # fmt: skip
    parent = paths[0].parent
    name = None
    with collectively(comm):
        if len({p.parent for p in paths}) != 1:
            raise ValueError(f"The files of one output must share a folder: {[str(p) for p in paths]}.")
        if comm.rank == 0:
            for p in paths:
                if exclusive and (p.exists() or p.is_symlink()):
                    raise FileExistsError(f"{p} exists.")
                _check_destination(p, folder=p in folder_set, overwrite=overwrite, protect=[Path(q) for q in protect])
            parent.mkdir(parents=True, exist_ok=True)
            name = f".{paths[0].name}.tmp-{uuid.uuid4().hex[:12]}"
            (parent / name).mkdir()
    tmp_dir = parent / comm.bcast(name, root=0)
    try:
        yield {p: tmp_dir / p.name for p in paths}
        wait_for_all(comm)  # every rank has closed its files
        with collectively(comm):
            if comm.rank == 0:
                try:
                    _commit(tmp_dir, paths, fsync=fsync, exclusive=exclusive)
                finally:  # before the other ranks leave: they see no temporary folder
                    shutil.rmtree(tmp_dir, ignore_errors=True)
    finally:
        if comm.rank == 0:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _commit(tmp_dir: Path, paths: Sequence[Path], *, fsync: bool, exclusive: bool) -> None:
    """Mark, set permissions, sync and move the files of ``tmp_dir`` into place, main file last (rank 0)."""
    for p in paths:
        written = tmp_dir / p.name
        if not (written.exists()):
            raise OSError(f"{p} was not written.")
        mark_written(written)
        apply_permissions(written)
        if fsync:
            _sync(written)
    moved: list[tuple[Path, Path | None]] = []
    try:
        for p in reversed(paths):
            new = tmp_dir / p.name
            if exclusive:
                os.link(new, p)  # FileExistsError if another process created it first
                moved.append((p, None))
                continue
            old: Path | None = None
            if p.is_dir() and not p.is_symlink():
                old = tmp_dir / f".old-{p.name}"
                os.replace(p, old)  # a folder cannot be swapped in one step
            elif p.exists() or p.is_symlink():
                old = tmp_dir / f".old-{p.name}"
                os.link(p, old, follow_symlinks=False)  # a second name, so readers always see a file
            moved.append((p, old))
            os.replace(new, p)
    except BaseException:
        for p, old in reversed(moved):  # put back what was there
            if old is not None:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                os.replace(old, p)
            else:
                p.unlink(missing_ok=True)
        raise
    if fsync:
        _sync_dir(paths[0].parent)


def _sync(path: Path) -> None:
    entries = [path] if not path.is_dir() else [e for e in path.rglob("*") if e.is_file()]
    for entry in entries:
        with open(entry, "rb") as f:
            os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(
    target: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    overwrite: bool = True,
    protect: Sequence[str | os.PathLike[str]] = (),
    fsync: bool = True,
    exclusive: bool = False,
) -> Path:
    """Write one file atomically on this process alone (local): ``write(tmp_path)`` then mark, sync and rename.

    The local counterpart of :func:`output_set` (same permissions, marks and overwrite rules), for files a single
    rank writes (a snapshot-store entry, a plot drawn on rank 0).

    Args:
        target: Destination.
        write: ``write(path)`` creates the file at the temporary ``path``.
        overwrite: Replace an existing file that fem_ml did not write.
        protect: Paths that must never be replaced.
        fsync: Flush the file and the folder to disk.
        exclusive: Fail with ``FileExistsError`` instead of replacing an existing file.

    Returns:
        ``target`` as a Path.
    """
    path = Path(target)
    with output_set(
        MPI.COMM_SELF, [path], overwrite=overwrite, protect=protect, fsync=fsync, exclusive=exclusive
    ) as tmp:
        write(tmp[path])
    return path
