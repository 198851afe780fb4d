# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Checked HDF5 files: a flat tree of arrays and scalars, written atomically, read with a SHA-256 checksum.

fem_ml's files (surrogates, snapshot entries) are plain HDF5 that h5py, h5dump or ParaView's tools can
inspect. Only numeric arrays, strings and numbers are stored: reading never runs code from a file (no pickle).
A tree maps ``"group/name"`` paths to values; NumPy arrays become datasets, ``str``/``int``/``float``/``bool``
become attributes of their group. The root attributes ``format``, ``format_version`` and ``checksum``
identify the file; the checksum covers every other entry, so a flipped bit in the data is caught.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FileFormatError", "Scalar", "Tree", "checksum", "read_tree", "write_tree"]

Scalar = str | int | float | bool
Tree = dict[str, "npt.NDArray[Any] | Scalar"]

_RESERVED = ("format", "format_version", "checksum")


class FileFormatError(ValueError):
    """A file is missing, truncated, corrupted, not a fem_ml file of the expected kind, or from a newer format."""


def checksum(tree: Mapping[str, npt.NDArray[Any] | Scalar], *, kind: str = "", version: int = 0) -> str:
    """SHA-256 of a tree: format tag and version, then names, types, shapes and bytes of every entry, sorted.

    Every field is length-prefixed, so no two different trees hash alike by shifting text between fields.
    """
    digest = hashlib.sha256()

    def field(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "little") + data)

    field(kind.encode())
    field(str(version).encode())
    for name in sorted(tree):
        value = tree[name]
        field(name.encode())
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            field(f"array:{array.dtype.str}:{array.shape}".encode())
            field(array.tobytes())
        elif isinstance(value, bool):
            field(f"bool:{value}".encode())
        elif isinstance(value, int):
            field(f"int:{value}".encode())
        elif isinstance(value, float):
            field(f"float:{value.hex()}".encode())
        else:
            field(b"str:" + value.encode())
    return digest.hexdigest()


def write_tree(
    path: str | os.PathLike,
    tree: Mapping[str, npt.NDArray[Any] | Scalar],
    *,
    kind: str,
    version: int,
    fsync: bool = True,
) -> None:
    """Write a tree to an HDF5 file atomically (local: call on one rank).

    The file is written beside its destination under a temporary name, flushed to disk and renamed over
    ``path``, so readers see the old file or the complete new one, never a partial one.

    Args:
        path: Destination.
        tree: ``{"group/name": value}``; arrays become datasets, scalars attributes.
        kind: Format name stored in the root attribute ``format``.
        version: Format version stored in ``format_version``.
        fsync: Flush the file to the disk before the rename (survives a power cut, not only a killed process).
    """
    import h5py

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for name in tree:
        if name in _RESERVED:
            raise ValueError(f"{name!r} is a reserved root attribute.")
    tree = {k: v if isinstance(v, np.ndarray) else _scalar(v) for k, v in tree.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = kind
            f.attrs["format_version"] = version
            for name, value in tree.items():
                group, _, leaf = name.rpartition("/")
                if isinstance(value, np.ndarray):
                    if value.dtype.kind not in "biuf" or value.ndim == 0:
                        raise TypeError(
                            f"{name}: only numeric arrays of rank >= 1 are stored, not {value.dtype} {value.shape}"
                        )
                    f.create_dataset(name, data=value)
                else:
                    node = f.require_group(group) if group else f
                    node.attrs[leaf] = value
            f.attrs["checksum"] = checksum(tree, kind=kind, version=version)
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file owner-only; give it the usual permissions
        os.replace(tmp, target)
        if fsync:  # make the rename itself durable
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _scalar(value: Any) -> Scalar:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"unexpected attribute of type {type(value).__name__}")


def read_tree(path: str | os.PathLike, *, kind: str, version: int, what: str) -> Tree:
    """Read and verify a tree written by :func:`write_tree` (local).

    Args:
        path: The file.
        kind: Expected ``format`` attribute.
        version: Newest ``format_version`` this code reads.
        what: Description of the file for error messages (e.g. ``"fem_ml surrogate"``).

    Raises:
        FileFormatError: naming the file, if it is missing, not HDF5, truncated, of another kind, of a newer
            format version, or fails its checksum.
    """
    import h5py

    source = Path(path)
    if not source.is_file():
        raise FileFormatError(f"{source}: no such file (expected a {what}).")
    try:
        with h5py.File(source, "r") as f:
            found_kind = _scalar(f.attrs.get("format", b""))
            if found_kind != kind:
                raise FileFormatError(
                    f"{source} is not a {what}: it is an HDF5 file without fem_ml's format tag {kind!r}"
                    + (f" (its format tag is {found_kind!r})." if found_kind else ".")
                )
            found_version = _scalar(f.attrs.get("format_version", -1))
            if not isinstance(found_version, int) or found_version < 1:
                raise FileFormatError(f"{source}: invalid format version {found_version!r}.")
            if found_version > version:
                raise FileFormatError(
                    f"{source} has format version {found_version}, newer than the {version} this fem_ml reads; "
                    "upgrade fem_ml to read it."
                )
            stored = _scalar(f.attrs.get("checksum", ""))
            tree: Tree = {}

            def visit(name: str, node: Any) -> None:
                if isinstance(node, h5py.Dataset):
                    tree[name] = node[()]
                for key, value in node.attrs.items():
                    tree[f"{name}/{key}"] = _scalar(value)

            for key, value in f.attrs.items():
                if key not in _RESERVED:
                    tree[key] = _scalar(value)
            f.visititems(visit)
    except FileFormatError:
        raise
    except Exception as err:  # h5py raises OSError, KeyError, RuntimeError... on damaged files
        raise FileFormatError(f"{source} is not a readable {what}: truncated or corrupted ({err}).") from err
    if stored != checksum(tree, kind=kind, version=int(found_version)):
        raise FileFormatError(f"{source} is corrupted: its checksum does not match its contents.")
    return tree
