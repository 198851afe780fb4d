# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Save a reduced dynamical model to a ``.femml`` file and load it on any number of ranks.

The file is checked HDF5 (written by rank 0, atomically, with a SHA-256 checksum; format tag
``"fem_ml.dynamics"``), holding:

==========================  ====================================================================================
``model/``                  terms, operator entries ``(n_theta, r, n)`` per term, parameter functions and names,
                            guard bound, training initial states, the fit report (JSON)
``mesh/``, ``element/``     the mesh (cells in input order, nodes) and the element, when the model has a basis
``layout/``, ``basis/``     canonical dof keys and coordinates, POD modes in canonical order, singular values and the
                            named inner product
root attributes             format tag and version, versions, metadata
==========================  ====================================================================================

Loading validates every entry (shapes, dtypes, finiteness, parameter-function syntax) on rank 0 and raises
:class:`~fem_ml._h5.FileFormatError` on every rank for a bad file. The modes are stored in a rank-independent dof order
(:mod:`fem_ml._layout`), so a model saved on N ranks loads on M.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mpi4py import MPI

import numpy as np
import numpy.typing as npt
from dolfinx import fem

from fem_ml._atomic import output_set
from fem_ml._fem import element_signature
from fem_ml._formats import NAMED_PRODUCTS
from fem_ml._h5 import FileFormatError, Tree, read_tree, write_tree
from fem_ml._layout import DofLayout
from fem_ml._mesh import element_from_tree, element_tree, gather_mesh, mesh_from_tree
from fem_ml._mpi import check_collectively, collectively
from fem_ml.archive import versions
from fem_ml.dynamics.model import TERMS, ReducedDynamics
from fem_ml.pod import PODBasis, assemble_inner_product

__all__ = ["FORMAT", "VERSION", "describe", "is_dynamics_file", "load", "save"]

logger = logging.getLogger(__name__)

FORMAT, VERSION = "fem_ml.dynamics", 1


def save(
    model: ReducedDynamics,
    path: str | os.PathLike,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    comm: MPI.Comm | None = None,
) -> Path:
    """Write the model (and its POD basis and mesh, if it has a basis) to one file (collective; rank 0 writes).

    Args:
        model: The model.
        path: Destination, conventionally ``*.femml``; replaced atomically.
        metadata: JSON-serialisable user data.
        overwrite: Replace an existing file that fem_ml did not write (as :func:`fem_ml.archive.save`).
        comm: The communicator of a model without a basis (default ``MPI.COMM_WORLD``, as in
            :func:`~fem_ml.dynamics.archive.load`); a model with a basis is saved on its mesh's.

    Returns:
        The path written.
    """
    basis = model.basis
    if basis is not None and comm is not None and comm != basis.V.mesh.comm:
        raise ValueError("comm differs from the basis' communicator; leave comm out for a model with a basis.")
    comm = basis.V.mesh.comm if basis is not None else (MPI.COMM_WORLD if comm is None else comm)
    target = Path(path)
    tree: Tree = {}
    with collectively(comm):
        tree |= {
            "model/terms": model.terms,
            "model/parameter_names": json.dumps(list(model.parameter_names)),
            "model/state_bound": float(model.state_bound),
            "model/n_modes": int(model.n_modes),
            "model/n_inputs": int(model.n_inputs),
            "model/fit_report": json.dumps(model.fit_report),
            "metadata": json.dumps(metadata or {}),
            "saved_on_ranks": int(comm.size),
            "has_basis": basis is not None,
        }
        for k, E in model.entries.items():
            tree[f"model/entries/{k}"] = np.ascontiguousarray(E, dtype=np.float64)
            tree[f"model/functions/{k}"] = json.dumps(list(model.parameter_functions[k]))
        if model.initial_states.shape[0]:
            tree["model/initial_states"] = model.initial_states
            if model.initial_parameters.shape[1]:
                tree["model/initial_parameters"] = model.initial_parameters
        tree |= {f"versions/{k}": v for k, v in versions().items()}
        if basis is not None:
            if basis.inner_product.name not in NAMED_PRODUCTS:
                raise ValueError(
                    f"Saving a model whose basis uses the inner product {basis.inner_product.name!r} is not "
                    f"supported; use one of {NAMED_PRODUCTS}."
                )
            tree |= {f"element/{k}": v for k, v in element_tree(basis.V, what="models").items()}
    if basis is not None:
        V = basis.V
        layout = DofLayout(V)
        coordinates = layout.coordinates()
        modes = layout.gather(basis.modes)
        mesh_entries = gather_mesh(V.mesh)
        if comm.rank == 0:
            assert modes is not None and coordinates is not None
            tree |= mesh_entries
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
    with output_set(comm, [target], overwrite=overwrite) as tmp, collectively(comm):
        if comm.rank == 0:
            write_tree(tmp[target], tree, kind=FORMAT, version=VERSION)
    logger.info("Saved reduced dynamics (r = %d, terms %s) to %s", model.n_modes, model.terms, target)
    return target


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


def _validate(source: Path, tree: Tree) -> None:
    """Raise :class:`FileFormatError` unless every entry has the expected kind, shape, dtype and finite values."""

    def fail(message: str) -> None:
        raise FileFormatError(f"{source}: {message}.")

    def array(key: str, ndim: int, kind: str = "f") -> npt.NDArray:
        value = tree.get(key)
        if not isinstance(value, np.ndarray):
            fail(f"the entry {key!r} is missing or not an array")
        assert isinstance(value, np.ndarray)
        if value.ndim != ndim or value.dtype.kind not in kind:
            fail(f"the entry {key!r} has dtype {value.dtype} and {value.ndim} dimensions")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            fail(f"the entry {key!r} contains NaN or inf")
        return value

    def scalar(key: str, kind: type | tuple[type, ...]) -> Any:
        value = tree.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            fail(f"the entry {key!r} is missing or not a {kind}")
        return value

    terms = scalar("model/terms", str)
    if not terms or set(terms) - set(TERMS):
        fail(f"invalid terms {terms!r}")
    r = scalar("model/n_modes", int)
    m = scalar("model/n_inputs", int)
    bound = scalar("model/state_bound", (float, int))
    if r < 1 or m < 0 or not np.isfinite(bound) or bound <= 0:
        fail(f"invalid sizes or bound (r = {r}, m = {m}, bound = {bound})")
    names = json.loads(scalar("model/parameter_names", str))
    if not isinstance(names, list) or not all(isinstance(n, str) and n.isidentifier() for n in names):
        fail("invalid parameter names")
    widths = {"c": 1, "A": r, "H": r * (r + 1) // 2, "B": m}
    for k in terms:
        functions = json.loads(scalar(f"model/functions/{k}", str))
        if not isinstance(functions, list) or not functions or not all(isinstance(e, str) for e in functions):
            fail(f"invalid parameter functions of {k}")
        E = array(f"model/entries/{k}", 3)
        if E.shape != (len(functions), r, widths[k]):
            fail(f"operator {k} has shape {E.shape}, expected {(len(functions), r, widths[k])}")
    if "model/initial_states" in tree:
        states = array("model/initial_states", 2)
        if states.shape[1] != r:
            fail(f"initial states of shape {states.shape} for r = {r}")
        if names:
            params = array("model/initial_parameters", 2)
            if params.shape != (states.shape[0], len(names)):
                fail(f"initial parameters of shape {params.shape}")
    if scalar("has_basis", bool):
        keys = array("layout/keys", 1, "iu")
        coordinates = array("layout/coordinates", 2)
        modes = array("basis/modes", 2)
        array("basis/singular_values", 1)
        array("mesh/cells", 2, "iu")
        array("mesh/x", 2)
        if modes.shape != (r, keys.shape[0]) or coordinates.shape != (keys.shape[0], 3):
            fail(f"modes {modes.shape}, dof keys {keys.shape}, coordinates {coordinates.shape} are inconsistent")
        if scalar("basis/inner_product", str) not in NAMED_PRODUCTS:
            fail(f"unknown inner product {tree['basis/inner_product']!r}")
        for key in ("element/family", "element/signature", "mesh/cell_type"):
            scalar(key, str)
        for key in ("element/degree", "element/lagrange_variant", "mesh/degree", "mesh/lagrange_variant"):
            scalar(key, int)


def _model(small: dict[str, Any], basis: PODBasis | None) -> ReducedDynamics:
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
) -> ReducedDynamics:
    """Load a model saved by :func:`save` (collective).

    Args:
        path: The ``.femml`` file.
        V: Function space for the fields (same element and mesh as at saving, any number of ranks); if None and
            the file holds a basis, the mesh and space are rebuilt from the file on ``comm``.
        comm: Communicator (default ``MPI.COMM_WORLD``; with ``V``, its mesh's).

    Raises:
        FileFormatError: on every rank, for a missing, damaged, foreign, newer or invalid file.
        ValueError: on every rank, if ``V`` does not match the stored mesh or element.
    """
    if V is not None:
        comm = V.mesh.comm
    comm = MPI.COMM_WORLD if comm is None else comm
    source = Path(path)
    tree: Tree = {}
    small: dict[str, Any] = {}
    with collectively(comm):
        if comm.rank == 0:
            tree = read_tree(source, kind=FORMAT, version=VERSION, what="fem_ml reduced dynamics model")
            try:
                _validate(source, tree)
                _model(tree, None)  # the operators and parameter functions are valid
            except FileFormatError:
                raise
            except (ValueError, TypeError, KeyError) as err:
                raise FileFormatError(f"{source}: invalid model: {err}") from None
    big = ("mesh/cells", "mesh/x", "layout/keys", "layout/coordinates", "basis/modes")
    small = comm.bcast({k: v for k, v in tree.items() if k not in big}, root=0)
    basis = None
    if small["has_basis"]:
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
        product = assemble_inner_product(V, str(small["basis/inner_product"]))  # type: ignore[arg-type]
        basis = PODBasis(
            V, modes, np.asarray(small["basis/singular_values"]), product,
            float(small["basis/orthonormality_error"]),
            total_energy=float(small["basis/total_energy"]) if "basis/total_energy" in small else None,
        )  # fmt: skip
        drift = float(np.max(np.abs(product.gram(modes) - np.eye(r))))
        check_collectively(
            comm,
            None
            if drift <= max(1e-8, 100 * basis.orthonormality_error)
            else f"{source}: the modes are not orthonormal in their inner product ({drift:.2e}).",
            FileFormatError,
        )
    model = _model(small, basis)
    model.metadata = json.loads(str(small.get("metadata", "{}")))  # type: ignore[attr-defined]
    logger.info("Loaded reduced dynamics %r from %s on %d rank(s)", model, source, comm.size)
    return model


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """What a dynamics file holds (read, checksum-verified and validated; local).

    Raises:
        FileFormatError: for a missing, damaged, foreign, newer or invalid file.
    """
    source = Path(path)
    tree = read_tree(source, kind=FORMAT, version=VERSION, what="fem_ml reduced dynamics model")
    _validate(source, tree)
    model = _model(tree, None)
    return {
        "file": str(source),
        "n_modes": model.n_modes,
        "terms": model.terms,
        "parameters": list(model.parameter_names),
        "parameter_functions": {k: list(v) for k, v in model.parameter_functions.items()},
        "n_inputs": model.n_inputs,
        "has_basis": bool(tree["has_basis"]),
        "fit_report": {k: v for k, v in model.fit_report.items() if k != "candidates"},
        "saved_on_ranks": int(tree["saved_on_ranks"]),  # type: ignore[arg-type]
        "metadata": json.loads(str(tree["metadata"])),
    }
