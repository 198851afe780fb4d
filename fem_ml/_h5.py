# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Checked HDF5 files: a flat tree of arrays and scalars, validated against a schema before any dataset is read.

fem_ml's files (surrogates, snapshot entries) are plain HDF5 that h5py, h5dump or ParaView's tools can inspect.
Only numeric arrays, strings and numbers are stored: reading never runs code from a file (no pickle). A tree maps
``"group/name"`` paths to values; NumPy arrays become datasets, ``str``/``int``/``float``/``bool`` become attributes
of their group. The root attributes ``format``, ``format_version`` and ``checksum`` identify the file (and
``signature``, for a file written with a key); the checksum covers every other entry.

A file is untrusted input. :func:`read_tree` walks the file's structure first and refuses, before reading any
dataset: links other than hard links, external raw storage, virtual datasets, filters (compression: a small file
must not claim gigabytes), datasets whose bytes are not all in the file, attributes over 4 MiB, non-numeric
datasets, and names or shapes a :class:`Schema` does not allow (shapes are checked against sizes implied by the
header, within a memory budget). Datasets are then read in blocks while the checksum is computed, so the memory
used is the validated size of the data. Finally the schema checks values (finite numbers, ranges, known names).

The checksum is SHA-256 without a key: it detects accidental damage (a truncated copy, a flipped bit), not
forgery, since anyone can recompute it. With a key (``key=`` or the environment variable ``FEM_ML_KEY``, see
:func:`resolve_key`), the writer also stores an HMAC-SHA256 ``signature`` and the reader requires a valid one:
only holders of the key can make a file that passes.

This module imports only the standard library, NumPy and h5py, and keeps to Python 3.11 syntax, so tools outside
fem_ml (a ParaView plugin) can reuse it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_MAX_BYTES",
    "KEY_ENVIRONMENT_VARIABLE",
    "Declared",
    "Field",
    "FileFormatError",
    "Scalar",
    "Schema",
    "Tree",
    "checksum",
    "read_tree",
    "resolve_key",
    "write_tree",
]

Scalar = str | int | float | bool
Tree = dict[str, "npt.NDArray[Any] | Scalar"]

#: Environment variable holding the key of keyed checksums (used when no ``key=`` is given).
KEY_ENVIRONMENT_VARIABLE = "FEM_ML_KEY"

_RESERVED = ("format", "format_version", "checksum", "signature")
_MAX_ATTRIBUTE_BYTES = 4 << 20
_MAX_DEPTH = 16
_BLOCK_BYTES = 8 << 20
#: Default memory budget of one file's datasets, in bytes.
DEFAULT_MAX_BYTES = 8 << 30


class FileFormatError(ValueError):
    """A file is missing, truncated, corrupted, forged, not a fem_ml file of the kind expected, or of a newer format."""


def resolve_key(key: bytes | str | None) -> bytes | None:
    """The key of keyed checksums: ``key`` if given, else the environment variable ``FEM_ML_KEY``, else None.

    A ``str`` is encoded as UTF-8. An empty key is an error (``ValueError``).
    """
    if key is None:
        key = os.environ.get(KEY_ENVIRONMENT_VARIABLE)
        if key is None:
            return None
    data = key.encode() if isinstance(key, str) else bytes(key)
    if not data:
        raise ValueError("The checksum key is empty.")
    return data


class _Digest:
    """SHA-256 and optionally HMAC-SHA256 of the same length-prefixed fields, fed in pieces."""

    def __init__(self, kind: str, version: int, key: bytes | None):
        self._hashes: list[Any] = [hashlib.sha256()]
        if key is not None:
            self._hashes.append(hmac.new(key, digestmod=hashlib.sha256))
        self.field(kind.encode())
        self.field(str(version).encode())

    def update(self, data: Any) -> None:
        for h in self._hashes:
            h.update(data)

    def field(self, data: bytes) -> None:
        self.update(len(data).to_bytes(8, "little") + data)

    def scalar(self, name: str, value: Scalar) -> None:
        self.field(name.encode())
        if isinstance(value, bool):
            self.field(f"bool:{value}".encode())
        elif isinstance(value, int):
            self.field(f"int:{value}".encode())
        elif isinstance(value, float):
            self.field(f"float:{value.hex()}".encode())
        else:
            self.field(b"str:" + value.encode())

    def array_header(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.field(name.encode())
        self.field(f"array:{dtype.str}:{shape}".encode())
        nbytes = math.prod(shape) * dtype.itemsize
        self.update(nbytes.to_bytes(8, "little"))

    def hexdigest(self) -> str:
        return self._hashes[0].hexdigest()

    def signature(self) -> str | None:
        return self._hashes[1].hexdigest() if len(self._hashes) > 1 else None


def checksum(
    tree: Mapping[str, npt.NDArray[Any] | Scalar], *, kind: str = "", version: int = 0, key: bytes | None = None
) -> str:
    """SHA-256 (or, with ``key``, HMAC-SHA256) of a tree: tag and version, then every entry's name, type and bytes.

    Entries are taken in sorted order and every field is length-prefixed, so no two different trees hash alike by
    shifting text between fields.
    """
    digest = _Digest(kind, version, key)
    for name in sorted(tree):
        value = tree[name]
        if isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value)
            digest.array_header(name, array.dtype, array.shape)
            digest.update(_bytes(array))
        else:
            digest.scalar(name, value)
    return digest.hexdigest() if key is None else str(digest.signature())


def write_tree(
    path: str | os.PathLike,
    tree: Mapping[str, npt.NDArray[Any] | Scalar],
    *,
    kind: str,
    version: int,
    key: bytes | None = None,
) -> None:
    """Write a tree to a new HDF5 file at ``path`` (local; not atomic: see :mod:`fem_ml._atomic` for that).

    Args:
        path: The file to create (an existing file is truncated).
        tree: ``{"group/name": value}``; arrays become datasets, scalars attributes.
        kind: Format name stored in the root attribute ``format``.
        version: Format version stored in ``format_version``.
        key: If given, also store an HMAC-SHA256 ``signature`` made with this key.
    """
    for name in tree:
        if name in _RESERVED:
            raise ValueError(f"{name!r} is a reserved root attribute.")
    clean = {k: v if isinstance(v, np.ndarray) else _scalar(v) for k, v in tree.items()}
    with h5py.File(path, "w") as f:
        f.attrs["format"] = kind
        f.attrs["format_version"] = version
        for name, value in clean.items():
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
        f.attrs["checksum"] = checksum(clean, kind=kind, version=version)
        if key is not None:
            f.attrs["signature"] = checksum(clean, kind=kind, version=version, key=key)


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
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"unexpected attribute of type {type(value).__name__}")


# --- schema --------------------------------------------------------------------------------------------------------

#: Types of tree entries: a numeric array, or a scalar attribute.
_SCALAR_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
}

ShapeRule = Callable[[Any, Mapping[str, int]], "tuple[int | None, ...] | None"]


@dataclass(frozen=True)
class Field:
    """One kind of entry a file may hold.

    Attributes:
        pattern: Regular expression the entry's full name must match.
        type: ``"array"`` or a scalar type: ``"str"``, ``"int"``, ``"float"``, ``"bool"``.
        dtype: NumPy kinds allowed for an array (``"f"``, ``"i"``, ``"iu"``...).
        shape: Expected shape: a tuple of ints, dimension names (looked up in the dimensions the schema derives
            from the header) and ``"*"`` (any size), or a function ``(match, dims) -> shape``; None allows any
            shape of rank ``ndim``.
        ndim: Rank required when ``shape`` is None (None: any rank).
        required: The entry must be present.
    """

    pattern: str
    type: str = "array"
    dtype: str = "f"
    shape: tuple[int | str, ...] | ShapeRule | None = None
    ndim: int | None = None
    required: bool = True


Declared = dict[str, "tuple[np.dtype, tuple[int, ...]] | Scalar"]


class Schema:
    """The entries one kind of file may hold, the sizes they imply and the checks of their values.

    Args:
        fields: The allowed entries.
        dimensions: ``(declared, read_small) -> dims``: sizes implied by the header. ``declared`` maps every entry
            to its scalar value or, for a dataset, ``(dtype, shape)``; ``read_small(name)`` reads a dataset of at
            most 64 KiB (e.g. layer widths). Raise :class:`ValueError` for an inconsistent header.
        check: ``tree -> None``, raising :class:`ValueError` (message starting with the entry name) for values
            out of range, not finite or unknown, after the tree is read and its checksum verified.
        expected: ``(declared, dims) -> names``: dataset and attribute names that must be present beyond the
            required fields (e.g. the weights of each ensemble member).
    """

    def __init__(
        self,
        fields: Iterable[Field],
        *,
        dimensions: Callable[[Declared, Callable[[str], npt.NDArray[Any]]], dict[str, int]] | None = None,
        check: Callable[[Tree], None] | None = None,
        expected: Callable[[Declared, Mapping[str, int]], Iterable[str]] | None = None,
    ):
        self.fields = tuple(fields)
        self._compiled = [(re.compile(f.pattern), f) for f in self.fields]
        self._dimensions = dimensions
        self._check = check
        self._expected = expected

    def match(self, name: str) -> tuple[re.Match[str], Field] | None:
        """The first field whose pattern matches ``name`` entirely, with the match; None for an unknown name."""
        for regex, field in self._compiled:
            m = regex.fullmatch(name)
            if m is not None:
                return m, field
        return None

    def validate_structure(
        self, declared: Declared, read_small: Callable[[str], npt.NDArray[Any]], extra: Mapping[str, int]
    ) -> None:
        """Check names, types, dtypes and shapes of the declared entries (raises ValueError)."""
        for name, value in declared.items():
            found = self.match(name)
            if found is None:
                raise ValueError(f"{name!r}: unknown entry")
            _, field = found
            is_array = isinstance(value, tuple)
            if (field.type == "array") != is_array:
                raise ValueError(f"{name!r}: expected {'a dataset' if field.type == 'array' else field.type}")
            if is_array:
                dtype, shape = cast("tuple[np.dtype, tuple[int, ...]]", value)
                if dtype.kind not in field.dtype:
                    raise ValueError(f"{name!r}: dtype {dtype} is not of kind {field.dtype!r}")
                if field.ndim is not None and len(shape) != field.ndim:
                    raise ValueError(f"{name!r}: shape {shape} is not of rank {field.ndim}")
            elif not isinstance(value, _SCALAR_TYPES[field.type]) or (
                field.type in ("int", "float") and isinstance(value, bool)
            ):
                raise ValueError(f"{name!r}: expected {field.type}, found {type(value).__name__}")
        for regex, field in self._compiled:
            if field.required and "(" not in field.pattern and not any(regex.fullmatch(n) for n in declared):
                raise ValueError(f"{field.pattern.replace(chr(92), '')!r}: missing entry")
        dims = dict(extra)
        if self._dimensions is not None:
            dims |= self._dimensions(declared, read_small)
        if self._expected is not None:
            missing = sorted(set(self._expected(declared, dims)) - set(declared))
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise ValueError(f"{missing[0]!r}: missing entry{more}")
        for name, value in declared.items():
            if not isinstance(value, tuple):
                continue
            matched = self.match(name)
            assert matched is not None
            m, field = matched
            if field.shape is None:
                continue
            want = field.shape(m, dims) if callable(field.shape) else _resolve(field.shape, dims, name)
            if want is None:
                continue
            shape = tuple(value[1])
            if len(shape) != len(want) or any(w is not None and w != s for w, s in zip(want, shape, strict=False)):
                shown = tuple("*" if w is None else w for w in want)
                raise ValueError(f"{name!r}: shape {shape}, the header implies {shown}")

    def check_values(self, tree: Tree) -> None:
        """Check the values of a tree that passed :meth:`validate_structure` (raises ValueError)."""
        if self._check is not None:
            self._check(tree)


def _resolve(shape: tuple[int | str, ...], dims: Mapping[str, int], name: str) -> tuple[int | None, ...]:
    """The expected shape, None for a free size (``"*"``)."""
    out: list[int | None] = []
    for s in shape:
        if s == "*":
            out.append(None)
        elif isinstance(s, int):
            out.append(s)
        elif s in dims:
            out.append(int(dims[s]))
        else:
            raise ValueError(f"{name!r}: the header does not give its size {s!r}")
    return tuple(out)


# --- reading -------------------------------------------------------------------------------------------------------


def _read_attribute(node: Any, key: str, where: str) -> Scalar:
    """One attribute, after checking its size and type (strings and numeric scalars only)."""
    aid = node.attrs.get_id(key)
    if aid.get_storage_size() > _MAX_ATTRIBUTE_BYTES:
        raise ValueError(f"{where!r}: attribute of {aid.get_storage_size()} bytes (over {_MAX_ATTRIBUTE_BYTES})")
    if aid.shape not in ((), None):
        raise ValueError(f"{where!r}: attribute of shape {aid.shape}, expected a scalar")
    dtype = aid.dtype
    if h5py.check_string_dtype(dtype) is None and dtype.kind not in "biuf":
        raise ValueError(f"{where!r}: attribute of type {dtype}, expected a string or a number")
    value = node.attrs[key]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    try:
        return _scalar(value)
    except (TypeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where!r}: {err}") from None


def _check_dataset(name: str, dset: h5py.Dataset) -> tuple[np.dtype, tuple[int, ...]]:
    """Refuse anything but a plain numeric dataset whose bytes all lie in this file."""
    if dset.is_virtual:
        raise ValueError(f"{name!r}: a virtual dataset (its data lies in other files)")
    plist = dset.id.get_create_plist()
    if plist.get_external_count() > 0:
        raise ValueError(f"{name!r}: a dataset with external raw storage (its data lies in another file)")
    if plist.get_nfilters() > 0:
        raise ValueError(f"{name!r}: a filtered (compressed) dataset; fem_ml writes none")
    dtype = dset.dtype
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(f"{name!r}: dtype {dtype} is not a plain number type")
    shape = tuple(int(s) for s in dset.shape) if dset.shape is not None else ()
    if len(shape) == 0:
        raise ValueError(f"{name!r}: a scalar or empty dataset; fem_ml stores arrays of rank >= 1")
    nbytes = math.prod(shape) * dtype.itemsize
    stored = int(dset.id.get_storage_size())
    if stored != nbytes:
        raise ValueError(f"{name!r}: declares {nbytes} bytes but holds {stored} in the file")
    return dtype, shape


def _walk(f: h5py.File) -> tuple[Declared, dict[str, h5py.Dataset]]:
    """Every entry of the file (scalar values; dataset dtypes and shapes), refusing links and odd objects."""
    declared: Declared = {}
    datasets: dict[str, h5py.Dataset] = {}
    seen: set[Any] = set()
    for key in f.attrs:
        if key not in _RESERVED:
            declared[key] = _read_attribute(f, key, key)

    def visit(group: h5py.Group, prefix: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise ValueError(f"{prefix!r}: groups nested deeper than {_MAX_DEPTH}")
        for key in group:
            name = f"{prefix}{key}"
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise ValueError(f"{name!r}: a {type(link).__name__} (fem_ml files hold no links)")
            node = group[key]
            address = hash(node.id)  # h5py hashes object ids by file and object number
            if address in seen:
                raise ValueError(f"{name!r}: a second name of an object already in the file")
            seen.add(address)
            for attr in node.attrs:
                declared[f"{name}/{attr}"] = _read_attribute(node, attr, f"{name}/{attr}")
            if isinstance(node, h5py.Dataset):
                declared[name] = _check_dataset(name, node)
                datasets[name] = node
            elif isinstance(node, h5py.Group):
                visit(node, f"{name}/", depth + 1)
            else:
                raise ValueError(f"{name!r}: a {type(node).__name__}, not a group or dataset")

    visit(f, "", 0)
    return declared, datasets


def _read_small(datasets: Mapping[str, h5py.Dataset]) -> Callable[[str], npt.NDArray[Any]]:
    def read(name: str) -> npt.NDArray[Any]:
        dset = datasets.get(name)
        if dset is None:
            raise ValueError(f"{name!r}: missing entry")
        if dset.size * dset.dtype.itemsize > 64 << 10:
            raise ValueError(f"{name!r}: too large for a header entry ({dset.shape})")
        return np.asarray(dset[()])

    return read


def read_tree(
    path: str | os.PathLike,
    *,
    kind: str,
    version: int,
    what: str,
    schema: Schema | None = None,
    dims: Mapping[str, int] | None = None,
    key: bytes | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Tree:
    """Read, validate and verify a tree written by :func:`write_tree` (local).

    The order is: file type and format tag; the structure (links, storage, dtypes, attribute sizes); the schema's
    names and shapes against the header, and the memory budget; then the datasets, read in blocks while the
    checksum (and, with ``key``, the signature) is computed; finally the schema's value checks.

    Args:
        path: The file.
        kind: Expected ``format`` attribute.
        version: Newest ``format_version`` this code reads.
        what: Description of the file for error messages (e.g. ``"fem_ml surrogate"``).
        schema: The entries the file may hold; None accepts any plain numeric datasets and scalars.
        dims: Sizes known to the caller (e.g. ``{"n_dofs": 1089}``), used by the schema's shapes.
        key: Require a valid HMAC-SHA256 signature made with this key.
        max_bytes: Memory budget: the datasets together may hold at most this many bytes.

    Raises:
        FileFormatError: naming the file and the entry, for a missing, foreign, newer-format, damaged, forged or
            malformed file.
    """
    source = Path(path)
    try:
        if not source.is_file():
            raise FileFormatError(f"{source}: no such file (expected a {what}).")
        return _read_tree(source, kind, version, what, schema, dims or {}, key, max_bytes)
    except FileFormatError:
        raise
    except Exception as err:  # every other failure of a damaged or hostile file is a format error
        raise FileFormatError(f"{source} is not a valid {what}: {type(err).__name__}: {err}") from err


def _read_tree(
    source: Path,
    kind: str,
    version: int,
    what: str,
    schema: Schema | None,
    dims: Mapping[str, int],
    key: bytes | None,
    max_bytes: int,
) -> Tree:
    if not h5py.is_hdf5(source):
        raise FileFormatError(
            f"{source} is not a readable {what}: not an HDF5 file (truncated or corrupted, or of another type)."
        )
    try:
        f = h5py.File(source, "r")
    except Exception as err:
        raise FileFormatError(f"{source} is not a readable {what}: truncated or corrupted ({err}).") from err
    with f:
        found_kind = _read_attribute(f, "format", "format") if "format" in f.attrs else ""
        if found_kind != kind:
            raise FileFormatError(
                f"{source} is not a {what}: it is an HDF5 file without fem_ml's format tag {kind!r}"
                + (f" (its format tag is {found_kind!r})." if found_kind else ".")
            )
        found_version = _read_attribute(f, "format_version", "format_version") if "format_version" in f.attrs else -1
        if not isinstance(found_version, int) or isinstance(found_version, bool) or found_version < 1:
            raise FileFormatError(f"{source}: invalid format version {found_version!r}.")
        if found_version > version:
            raise FileFormatError(
                f"{source} has format version {found_version}, newer than the {version} this fem_ml reads; "
                "upgrade fem_ml to read it."
            )
        stored = _read_attribute(f, "checksum", "checksum") if "checksum" in f.attrs else ""
        signed = _read_attribute(f, "signature", "signature") if "signature" in f.attrs else None
        if key is not None and signed is None:
            raise FileFormatError(f"{source}: not signed, but a checksum key was given; refusing an unsigned {what}.")
        try:
            declared, datasets = _walk(f)
            total = sum(math.prod(v[1]) * v[0].itemsize for v in declared.values() if isinstance(v, tuple))
            if total > max_bytes:
                raise ValueError(f"datasets of {total} bytes in all, over the memory budget of {max_bytes}")
            if schema is not None:
                schema.validate_structure(declared, _read_small(datasets), dims)
        except ValueError as err:
            raise FileFormatError(f"{source} is not a valid {what}: {err}.") from None
        digest = _Digest(kind, int(found_version), key)
        tree: Tree = {}
        for name in sorted(declared):
            value = declared[name]
            if not isinstance(value, tuple):
                digest.scalar(name, value)
                tree[name] = value
                continue
            dtype, shape = value
            digest.array_header(name, dtype, shape)
            tree[name] = _stream(datasets[name], dtype, shape, digest)
    if not hmac.compare_digest(str(stored), digest.hexdigest()):
        raise FileFormatError(f"{source} is corrupted: its checksum does not match its contents.")
    if key is not None and not hmac.compare_digest(str(signed), str(digest.signature())):
        raise FileFormatError(f"{source}: its signature does not match the key (forged, or signed with another key).")
    if schema is not None:
        try:
            schema.check_values(tree)
        except ValueError as err:
            raise FileFormatError(f"{source} is not a valid {what}: {err}.") from None
    return tree


def _stream(dset: h5py.Dataset, dtype: np.dtype, shape: tuple[int, ...], digest: _Digest) -> npt.NDArray[Any]:
    """Read a dataset in blocks of rows into one array, feeding each block to the digest."""
    out = np.empty(shape, dtype=dtype)
    row_bytes = max(math.prod(shape[1:]) * dtype.itemsize, 1)
    step = max(1, _BLOCK_BYTES // row_bytes)
    for start in range(0, shape[0], step):
        stop = min(shape[0], start + step)
        block = out[start:stop]
        if block.size:
            dset.read_direct(out, np.s_[start:stop], np.s_[start:stop])
            digest.update(_bytes(block))
    return out


def _bytes(array: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """The bytes of a C-contiguous array, without a copy."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)
