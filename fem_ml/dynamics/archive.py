# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Save a reduced dynamical model to a ``.femml`` file and load it on any number of ranks.

Both kinds of model are saved: first-order :class:`~fem_ml.dynamics.model.ReducedDynamics` and second-order
:class:`~fem_ml.dynamics.second_order.SecondOrderModel`. The file is checked HDF5 (written by rank 0, atomically,
with a SHA-256 checksum; format tag ``"fem_ml.dynamics"``, version 2), holding:

==========================  ====================================================================================
``model/kind``              ``"first_order"`` or ``"second_order"`` (absent in version-1 files: first order)
``model/`` (first order)    terms, operator entries ``(n_theta, r, n)`` per term, parameter functions and names,
                            guard bound, training initial states, the fit report (JSON)
``model/`` (second order)   ``stiffness`` and ``damping`` ``(r, r)``, ``input_matrix`` ``(r, m)``, the guard's
                            ``reference_norm``, the fit report (:class:`~fem_ml.dynamics.second_order.FitInfo` as
                            JSON, when the model has one)
``mesh/``, ``element/``     the mesh (cells in input order, nodes) and the element, when the model has a basis
``layout/``, ``basis/``     canonical dof keys and coordinates, POD modes in canonical order, singular values and the
                            inner product: by name, or (a matrix such as an assembled mass matrix) as canonical COO
                            triplets ``basis/matrix/rows``, ``columns``, ``values``
root attributes             format tag and version, versions, metadata
==========================  ====================================================================================

Loading validates every entry (shapes, dtypes, finiteness, parameter-function syntax, the mesh's cell indices and
the element as for surrogates; for a second-order model
symmetric :math:`K_r \succ 0` and :math:`C_r \succeq 0`, so a loaded model keeps its energy bound) on rank 0 and
raises :class:`~fem_ml._h5.FileFormatError` on every rank for a bad file. The modes are stored in a rank-independent
dof order (:mod:`fem_ml._layout`), so a model saved on N ranks loads on M. Files of version 1 (first order) load as
before.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, NoReturn

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._atomic import output_set
from fem_ml._fem import element_signature
from fem_ml._formats import NAMED_PRODUCTS, check_mesh_and_basis
from fem_ml._h5 import FileFormatError, Tree, read_tree, write_tree
from fem_ml._layout import DofLayout
from fem_ml._mesh import element_from_tree, element_tree, gather_mesh, mesh_from_tree
from fem_ml._mpi import check_collectively, collectively
from fem_ml._serialize import coo_from_matrix, matrix_from_coo
from fem_ml.archive import versions
from fem_ml.dynamics.model import TERMS, ReducedDynamics
from fem_ml.dynamics.second_order import FitInfo, SecondOrderModel
from fem_ml.pod import InnerProduct, PODBasis, assemble_inner_product

__all__ = ["FORMAT", "KINDS", "VERSION", "describe", "is_dynamics_file", "load", "save"]

logger = logging.getLogger(__name__)

FORMAT, VERSION = "fem_ml.dynamics", 2
#: The kinds of model a file holds (``model/kind``); a file without the entry (version 1) holds a first-order one.
KINDS: tuple[str, ...] = ("first_order", "second_order")
#: The entries only rank 0 reads and keeps (the others get the small ones by broadcast).
_BIG = ("mesh/cells", "mesh/x", "layout/keys", "layout/coordinates", "basis/modes", "basis/matrix/rows",
        "basis/matrix/columns", "basis/matrix/values")  # fmt: skip


def save(
    model: ReducedDynamics | SecondOrderModel,
    path: str | os.PathLike,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    comm: MPI.Comm | None = None,
) -> Path:
    """Write the model (and its POD basis and mesh, if it has a basis) to one file (collective; rank 0 writes).

    Args:
        model: A first-order :class:`~fem_ml.dynamics.model.ReducedDynamics` or a second-order
            :class:`~fem_ml.dynamics.second_order.SecondOrderModel`.
        path: Destination, conventionally ``*.femml``; replaced atomically.
        metadata: JSON-serialisable user data.
        overwrite: Replace an existing file that fem_ml did not write (as :func:`fem_ml.archive.save`).
        comm: The communicator of a model without a basis (default ``MPI.COMM_WORLD``, as in
            :func:`~fem_ml.dynamics.archive.load`); a model with a basis is saved on its mesh's.

    Returns:
        The path written.

    Raises:
        ValueError: on every rank, for a second-order model whose stiffness is not symmetric positive definite or
            whose damping is not symmetric positive semi-definite (it would not load), or a ``comm`` that differs
            from the basis'.
        TypeError: for another kind of model.
    """
    if not isinstance(model, ReducedDynamics | SecondOrderModel):
        raise TypeError(f"save takes a ReducedDynamics or a SecondOrderModel, got {type(model).__name__}.")
    basis = model.basis
    if basis is not None and comm is not None and comm != basis.V.mesh.comm:
        raise ValueError("comm differs from the basis' communicator; leave comm out for a model with a basis.")
    comm = basis.V.mesh.comm if basis is not None else (MPI.COMM_WORLD if comm is None else comm)
    target = Path(path)
    tree: Tree = {}
    with collectively(comm):
        tree |= {
            "model/kind": KINDS[isinstance(model, SecondOrderModel)],
            "metadata": json.dumps(metadata or {}),
            "saved_on_ranks": int(comm.size),
            "has_basis": basis is not None,
        }
        tree |= _second_order_tree(model) if isinstance(model, SecondOrderModel) else _first_order_tree(model)
        tree |= {f"versions/{k}": v for k, v in versions().items()}
        if basis is not None:
            tree |= {f"element/{k}": v for k, v in element_tree(basis.V, what="models").items()}
    if basis is not None:
        tree |= _basis_tree(basis)
    with output_set(comm, [target], overwrite=overwrite) as tmp, collectively(comm):
        if comm.rank == 0:
            write_tree(tmp[target], tree, kind=FORMAT, version=VERSION)
    logger.info("Saved %r to %s", model, target)
    return target


def _first_order_tree(model: ReducedDynamics) -> Tree:
    """The ``model/`` entries of a first-order model."""
    tree: Tree = {
        "model/terms": model.terms,
        "model/parameter_names": json.dumps(list(model.parameter_names)),
        "model/state_bound": float(model.state_bound),
        "model/n_modes": int(model.n_modes),
        "model/n_inputs": int(model.n_inputs),
        "model/fit_report": json.dumps(model.fit_report),
    }
    for k, E in model.entries.items():
        tree[f"model/entries/{k}"] = np.ascontiguousarray(E, dtype=np.float64)
        tree[f"model/functions/{k}"] = json.dumps(list(model.parameter_functions[k]))
    if model.initial_states.shape[0]:
        tree["model/initial_states"] = model.initial_states
        if model.initial_parameters.shape[1]:
            tree["model/initial_parameters"] = model.initial_parameters
    return tree


def _second_order_tree(model: SecondOrderModel) -> Tree:
    """The ``model/`` entries of a second-order model (ValueError for one without the structure)."""
    problem = _structure_problem(model.stiffness, model.damping)
    if problem is not None:
        raise ValueError(f"Only a second-order model with the structure of a stable structure is saved: {problem}.")
    if not (math.isfinite(model.reference_norm) and model.reference_norm >= 0):
        raise ValueError(f"The model's reference_norm must be finite and >= 0, got {model.reference_norm}.")
    tree: Tree = {
        "model/n_modes": int(model.n_modes),
        "model/n_inputs": int(model.n_inputs),
        "model/stiffness": np.ascontiguousarray(model.stiffness, dtype=np.float64),
        "model/damping": np.ascontiguousarray(model.damping, dtype=np.float64),
        "model/input_matrix": np.ascontiguousarray(model.input_matrix, dtype=np.float64),
        "model/reference_norm": float(model.reference_norm),
    }
    if model.fit_info is not None:
        tree["model/fit_info"] = json.dumps(model.fit_info.as_dict())
    return tree


def _structure_problem(K: npt.NDArray[np.float64], C: npt.NDArray[np.float64]) -> str | None:
    r"""Why finite ``(r, r)`` matrices are not a symmetric positive definite :math:`K` and semi-definite :math:`C`.

    Symmetric to the tolerance of :class:`~fem_ml.dynamics.second_order.SecondOrderModel`; the smallest
    eigenvalue of :math:`K` must be > 0, that of :math:`C` >= -1e-12 times its largest modulus (rounding).
    """
    for name, X in (("stiffness", K), ("damping", C)):
        if np.max(np.abs(X - X.T), initial=0.0) > 1e-12 * max(float(np.max(np.abs(X), initial=0.0)), 1e-300):
            return f"the {name} is not symmetric"
    lowest = float(np.linalg.eigvalsh(0.5 * (K + K.T))[0])
    if not lowest > 0:
        return f"the stiffness is not positive definite (smallest eigenvalue {lowest:.3e})"
    damping = np.linalg.eigvalsh(0.5 * (C + C.T))
    if damping[0] < -1e-12 * max(float(np.max(np.abs(damping))), 1e-300):
        return f"the damping is not positive semi-definite (smallest eigenvalue {damping[0]:.3e})"
    return None


def _basis_tree(basis: PODBasis) -> Tree:
    """The mesh, dof layout and basis entries (collective; the entries on rank 0, an empty tree on the others).

    A named inner product is stored by name, any other (an assembled mass matrix) as canonical COO triplets.
    """
    V = basis.V
    layout = DofLayout(V)
    coordinates = layout.coordinates()
    modes = layout.gather(basis.modes)
    mesh_entries = gather_mesh(V.mesh)
    named = basis.inner_product.name in NAMED_PRODUCTS
    matrix = basis.inner_product.matrix
    with collectively(V.mesh.comm):
        if not named and matrix is None:
            raise ValueError(f"The basis' inner product {basis.inner_product.name!r} has neither a name nor a matrix.")
    coo = None if named or matrix is None else coo_from_matrix(matrix, layout)
    if V.mesh.comm.rank != 0:
        return {}
    assert modes is not None and coordinates is not None
    tree: Tree = dict(mesh_entries)
    tree |= {
        "layout/keys": layout.keys,
        "layout/coordinates": coordinates,
        "basis/modes": np.ascontiguousarray(modes.T),
        "basis/singular_values": np.asarray(basis.singular_values, dtype=np.float64),
        "basis/orthonormality_error": float(basis.orthonormality_error),
        "basis/inner_product": basis.inner_product.name,
    }
    if basis.total_energy is not None:
        tree["basis/total_energy"] = float(basis.total_energy)
    if coo is not None:
        tree |= {f"basis/matrix/{k}": v for k, v in coo.items()}
    return tree


def is_dynamics_file(path: str | os.PathLike, *, comm: MPI.Comm | None = None) -> bool:
    """True if ``path`` is an HDF5 file with the format tag ``"fem_ml.dynamics"`` (collective on ``comm``)."""
    comm = MPI.COMM_WORLD if comm is None else comm
    found = False
    if comm.rank == 0:
        try:
            import h5py

            with h5py.File(path, "r") as f:
                tag = f.attrs.get("format", b"")
                found = (tag.decode() if isinstance(tag, bytes) else str(tag)) == FORMAT
        except Exception:  # not a file, not HDF5: not a dynamics file
            found = False
    return bool(comm.bcast(found, root=0))


class _Entries:
    """Typed access to the entries of a file under validation; every problem is a :class:`FileFormatError`."""

    def __init__(self, source: Path, tree: Tree):
        self.source, self.tree = source, tree

    def fail(self, message: str) -> NoReturn:
        raise FileFormatError(f"{self.source}: {message}.")

    def array(self, key: str, ndim: int, kind: str = "f") -> npt.NDArray:
        """The array ``key`` with ``ndim`` dimensions and a dtype kind in ``kind``; finite if floating."""
        value = self.tree.get(key)
        if not isinstance(value, np.ndarray):
            self.fail(f"the entry {key!r} is missing or not an array")
        if value.ndim != ndim or value.dtype.kind not in kind:
            self.fail(f"the entry {key!r} has dtype {value.dtype} and {value.ndim} dimensions")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            self.fail(f"the entry {key!r} contains NaN or inf")
        return value

    def scalar(self, key: str, kind: type | tuple[type, ...]) -> Any:
        """The scalar ``key`` of type ``kind`` (a bool is not a number)."""
        value = self.tree.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (float, int))):
            self.fail(f"the entry {key!r} is missing or not a {kind}")
        return value


def _validate(source: Path, tree: Tree) -> str:
    """Raise :class:`FileFormatError` unless every entry has the expected kind, shape, dtype and finite values.

    Returns:
        The kind of model, one of :data:`KINDS`.
    """
    entries = _Entries(source, tree)
    kind = entries.scalar("model/kind", str) if "model/kind" in tree else KINDS[0]
    if kind not in KINDS:
        entries.fail(f"unknown model kind {kind!r} (expected one of {KINDS})")
    r = entries.scalar("model/n_modes", int)
    m = entries.scalar("model/n_inputs", int)
    if r < 1 or m < 0:
        entries.fail(f"invalid sizes r = {r}, m = {m}")
    if kind == "second_order":
        _validate_second_order(entries, r, m)
    else:
        _validate_first_order(entries, r, m)
    if entries.scalar("has_basis", bool):
        _validate_basis(entries, r)
    try:
        metadata = json.loads(entries.scalar("metadata", str))
    except ValueError:
        entries.fail("the metadata are not valid JSON")
    if not isinstance(metadata, dict):
        entries.fail("the metadata are not a JSON object")
    if entries.scalar("saved_on_ranks", int) < 1:
        entries.fail("invalid saved_on_ranks")
    return kind


def _validate_first_order(entries: _Entries, r: int, m: int) -> None:
    terms = entries.scalar("model/terms", str)
    if not terms or set(terms) - set(TERMS):
        entries.fail(f"invalid terms {terms!r}")
    bound = entries.scalar("model/state_bound", (float, int))
    if not np.isfinite(bound) or bound <= 0:
        entries.fail(f"invalid bound {bound}")
    names = json.loads(entries.scalar("model/parameter_names", str))
    if not isinstance(names, list) or not all(isinstance(n, str) and n.isidentifier() for n in names):
        entries.fail("invalid parameter names")
    widths = {"c": 1, "A": r, "H": r * (r + 1) // 2, "B": m}
    for k in terms:
        functions = json.loads(entries.scalar(f"model/functions/{k}", str))
        if not isinstance(functions, list) or not functions or not all(isinstance(e, str) for e in functions):
            entries.fail(f"invalid parameter functions of {k}")
        E = entries.array(f"model/entries/{k}", 3)
        if E.shape != (len(functions), r, widths[k]):
            entries.fail(f"operator {k} has shape {E.shape}, expected {(len(functions), r, widths[k])}")
    if "model/initial_states" in entries.tree:
        states = entries.array("model/initial_states", 2)
        if states.shape[1] != r:
            entries.fail(f"initial states of shape {states.shape} for r = {r}")
        if names:
            params = entries.array("model/initial_parameters", 2)
            if params.shape != (states.shape[0], len(names)):
                entries.fail(f"initial parameters of shape {params.shape}")


def _validate_second_order(entries: _Entries, r: int, m: int) -> None:
    K = entries.array("model/stiffness", 2)
    C = entries.array("model/damping", 2)
    B = entries.array("model/input_matrix", 2)
    if K.shape != (r, r) or C.shape != (r, r) or B.shape != (r, m):
        entries.fail(f"stiffness {K.shape}, damping {C.shape}, input matrix {B.shape} for r = {r}, m = {m}")
    problem = _structure_problem(K, C)
    if problem is not None:
        entries.fail(problem)
    reference = entries.scalar("model/reference_norm", (float, int))
    if not (math.isfinite(reference) and reference >= 0):
        entries.fail(f"invalid reference norm {reference}")
    if "model/fit_info" in entries.tree:
        try:
            _fit_info(entries.scalar("model/fit_info", str))
        except ValueError as err:  # json.JSONDecodeError is one
            entries.fail(f"invalid fit report: {err}")


def _validate_basis(entries: _Entries, r: int) -> None:
    keys = entries.array("layout/keys", 1, "iu")
    coordinates = entries.array("layout/coordinates", 2)
    modes = entries.array("basis/modes", 2)
    entries.array("basis/singular_values", 1)
    entries.array("mesh/cells", 2, "iu")
    entries.array("mesh/x", 2)
    if modes.shape != (r, keys.shape[0]) or coordinates.shape != (keys.shape[0], 3):
        entries.fail(
            f"modes {modes.shape}, dof keys {keys.shape}, coordinates {coordinates.shape} are inconsistent (r = {r})"
        )
    if entries.scalar("basis/inner_product", str) not in NAMED_PRODUCTS:
        rows = entries.array("basis/matrix/rows", 1, "iu")
        columns = entries.array("basis/matrix/columns", 1, "iu")
        values = entries.array("basis/matrix/values", 1)
        if not rows.shape == columns.shape == values.shape:
            entries.fail(f"matrix triplets of lengths {rows.size}, {columns.size}, {values.size}")
    for key in ("element/family", "element/signature", "mesh/cell_type"):
        entries.scalar(key, str)
    for key in ("element/degree", "element/lagrange_variant", "mesh/degree", "mesh/lagrange_variant"):
        entries.scalar(key, int)
    for key in ("element/discontinuous", "element/scalar"):
        entries.scalar(key, bool)
    entries.array("element/shape", 1, "iu")
    try:  # the values: cell indices within the nodes, sizes, finiteness, known names (shared with surrogates)
        check_mesh_and_basis(entries.tree)
        element_from_tree(entries.tree)  # a known element (basix), before any rank builds one
    except (ValueError, TypeError, KeyError) as err:
        entries.fail(str(err))


def _fit_info(text: str) -> FitInfo:
    """:class:`FitInfo` from the JSON of its ``as_dict``, each field checked against its annotation.

    A field missing from the report takes its default (a report saved before the field existed); a required field
    missing, or a value of the wrong type, is a ValueError. Keys that are not fields are ignored: the report is
    information, not an option.
    """
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    hints = typing.get_type_hints(FitInfo)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(FitInfo):
        if f.name in data:
            values[f.name] = _typed(data[f.name], hints[f.name], f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{f.name!r} is missing")
    rayleigh = values.get("rayleigh")
    if rayleigh is not None and not all(math.isfinite(x) and x >= 0 for x in rayleigh):
        raise ValueError(f"'rayleigh' = {rayleigh!r} is not two finite numbers >= 0")
    return FitInfo(**values)


def _typed(value: Any, hint: Any, name: str) -> Any:
    """``value`` (from JSON) as type ``hint``: float, int, str, bool, None, Literal, unions and tuples of them."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _typed(value, option, name)
            except ValueError:
                continue
    elif origin is typing.Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
    elif origin is tuple and isinstance(value, list | tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(v, args[0], name) for v in value)
        if len(value) == len(args):
            return tuple(_typed(v, a, name) for v, a in zip(value, args, strict=True))
    elif hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint in (int, str, bool):
        if type(value) is hint:
            return value
    raise ValueError(f"{name!r} = {value!r} is not of type {hint}")


def _model(kind: str, small: dict[str, Any], basis: PODBasis | None) -> ReducedDynamics | SecondOrderModel:
    """The model of validated entries (collective on the basis' communicator if there is one)."""
    if kind == "second_order":
        text = small.get("model/fit_info")
        return SecondOrderModel(
            np.asarray(small["model/stiffness"]), np.asarray(small["model/damping"]),
            np.asarray(small["model/input_matrix"]), basis=basis,
            fit_info=None if text is None else _fit_info(str(text)),
            reference_norm=float(small["model/reference_norm"]),
        )  # fmt: skip
    terms = str(small["model/terms"])
    names = json.loads(str(small["model/parameter_names"]))
    states = small.get("model/initial_states")
    return ReducedDynamics(
        {k: np.asarray(small[f"model/entries/{k}"]) for k in terms},
        {k: json.loads(str(small[f"model/functions/{k}"])) for k in terms},
        parameter_names=names,
        state_bound=float(small["model/state_bound"]),
        basis=basis,
        fit_report=json.loads(str(small["model/fit_report"])),
        initial_states=states,
        initial_parameters=small.get("model/initial_parameters") if states is not None and names else None,
    )


def load(
    path: str | os.PathLike, V: fem.FunctionSpace | None = None, *, comm: MPI.Comm | None = None
) -> ReducedDynamics | SecondOrderModel:
    """Load a model saved by :func:`save` (collective): a ``ReducedDynamics`` or a ``SecondOrderModel``.

    Args:
        path: The ``.femml`` file.
        V: Function space for the fields (same element and mesh as at saving, any number of ranks); if None and
            the file holds a basis, the mesh and space are rebuilt from the file on ``comm``.
        comm: Communicator (default ``MPI.COMM_WORLD``; with ``V``, its mesh's).

    Returns:
        The model, with the file's metadata in its attribute ``metadata``.

    Raises:
        FileFormatError: on every rank, for a missing, damaged, foreign, newer or invalid file.
        ValueError: on every rank, if ``V`` does not match the stored mesh or element.
    """
    if V is not None:
        comm = V.mesh.comm
    comm = MPI.COMM_WORLD if comm is None else comm
    source = Path(path)
    tree: Tree = {}
    kind = ""
    with collectively(comm):
        if comm.rank == 0:
            tree = read_tree(source, kind=FORMAT, version=VERSION, what="fem_ml reduced dynamics model")
            try:
                kind = _validate(source, tree)
                _model(kind, tree, None)  # the operators, parameter functions and fit report are valid
            except FileFormatError:
                raise
            except (ValueError, TypeError, KeyError, ArithmeticError, np.linalg.LinAlgError) as err:
                raise FileFormatError(f"{source}: invalid model: {err}") from None
    kind, small = comm.bcast((kind, {k: v for k, v in tree.items() if k not in _BIG}), root=0)
    basis = _load_basis(source, tree, small, V, comm) if small["has_basis"] else None
    model = _model(kind, small, basis)
    model.metadata = json.loads(str(small.get("metadata", "{}")))  # type: ignore[union-attr]
    logger.info("Loaded %r from %s on %d rank(s)", model, source, comm.size)
    return model


def _load_basis(
    source: Path, tree: Tree, small: dict[str, Any], V: fem.FunctionSpace | None, comm: MPI.Comm
) -> PODBasis:
    """The basis of validated entries on ``V`` or on the stored mesh rebuilt on ``comm`` (collective).

    Rank 0 passes every entry, the others the small ones.

    Raises:
        ValueError: on every rank, if ``V`` is not on the stored mesh and element.
        FileFormatError: on every rank, if the modes are not orthonormal in the stored inner product.
    """
    with collectively(comm):
        element = element_from_tree(small)
        if V is not None and element_signature(V) != str(small["element/signature"]):
            raise ValueError(
                f"{source}: the model's basis lives on {small['element/signature']}; the given space has "
                f"{element_signature(V)}."
            )
    if V is None:
        V = fem.functionspace(mesh_from_tree(comm, tree, small), element)
    layout = DofLayout(V)
    problem = layout.mismatch(tree.get("layout/keys"), tree.get("layout/coordinates"))  # type: ignore[arg-type]
    if problem is not None:
        raise ValueError(f"{source}: the function space is not on the model's mesh: {problem}.")
    r = int(small["model/n_modes"])
    modes = layout.scatter(np.asarray(tree["basis/modes"]).T if comm.rank == 0 else None, width=r)
    name = str(small["basis/inner_product"])
    if name in NAMED_PRODUCTS:
        product = assemble_inner_product(V, name)  # type: ignore[arg-type]
    else:
        coo = None
        if comm.rank == 0:
            coo = {k: np.asarray(tree[f"basis/matrix/{k}"]) for k in ("rows", "columns", "values")}
        product = InnerProduct(V, matrix_from_coo(layout, coo), name=name, owns_matrix=True)
    basis = PODBasis(
        V, modes, np.asarray(small["basis/singular_values"]), product, float(small["basis/orthonormality_error"]),
        total_energy=float(small["basis/total_energy"]) if "basis/total_energy" in small else None,
    )  # fmt: skip
    drift = float(np.max(np.abs(product.gram(modes) - np.eye(r))))  # the same on every rank (gram reduces)
    problem = None
    if not drift <= max(1e-8, 100 * basis.orthonormality_error):  # also catches NaN
        product.destroy()
        problem = f"{source}: the modes are not orthonormal in their inner product ({drift:.2e})."
    check_collectively(comm, problem, FileFormatError)
    return basis


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """What a dynamics file holds (read, checksum-verified and validated; local).

    Raises:
        FileFormatError: for a missing, damaged, foreign, newer or invalid file.
    """
    source = Path(path)
    tree = read_tree(source, kind=FORMAT, version=VERSION, what="fem_ml reduced dynamics model")
    try:
        kind = _validate(source, tree)
        model = _model(kind, tree, None)
    except FileFormatError:
        raise
    except (ValueError, TypeError, KeyError, ArithmeticError, np.linalg.LinAlgError) as err:
        raise FileFormatError(f"{source}: invalid model: {err}") from None
    common = {
        "file": str(source),
        "kind": kind,
        "n_modes": model.n_modes,
        "n_inputs": model.n_inputs,
        "has_basis": bool(tree["has_basis"]),
        "saved_on_ranks": int(tree["saved_on_ranks"]),  # type: ignore[arg-type]
        "metadata": json.loads(str(tree["metadata"])),
    }
    if isinstance(model, SecondOrderModel):
        fit = model.fit_info.as_dict() if model.fit_info is not None else None
        return common | {
            **model.structure(),
            "modal": model.modal_analysis().as_dict(),
            "reference_norm": model.reference_norm,
            "fit_report": None if fit is None else {k: v for k, v in fit.items() if k != "candidates"},
        }
    return common | {
        "terms": model.terms,
        "parameters": list(model.parameter_names),
        "parameter_functions": {k: list(v) for k, v in model.parameter_functions.items()},
        "fit_report": {k: v for k, v in model.fit_report.items() if k != "candidates"},
    }
