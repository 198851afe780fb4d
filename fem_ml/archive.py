# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Save a trained surrogate to one self-contained file and load it on any number of ranks.

A ``.femml`` file is an HDF5 file (written by rank 0, atomically, with a SHA-256 checksum) holding everything
needed to use the surrogate without the script that trained it:

======================  ====================================================================================
``mesh/``               cells in input order and node coordinates; cell type and coordinate element
``element/``            family, degree, Lagrange variant, value shape of the function space's element
``layout/``             canonical dof keys and dof coordinates (see :mod:`fem_ml._layout`)
``basis/``              POD modes in canonical dof order, all singular values, the inner product's name and,
                        for a user-given product, its matrix as canonical COO triplets
``network/``            architecture (layer widths, activation, input transform), weights of each ensemble
                        member as float arrays, input and output scalers
``parameters/``         names and bounds
``training/``           loss curves, early-stopping point and timing of each member
``errors/``             the test-set :class:`~fem_ml.surrogate.ErrorReport`, when one was saved
root attributes         format tag and version, versions of fem_ml, DOLFINx, basix, torch, NumPy; metadata
======================  ====================================================================================

Loading reads numbers and strings only: no pickle and no ``torch.load``, so a file cannot run code. The modes
are stored in a dof order that does not depend on the number of ranks, so a file saved on N ranks loads on M
ranks and rebuilds the same field. Loading onto a user's function space checks that it has the same element and
the same mesh (dof keys and coordinates); loading without one rebuilds the mesh and space from the file.
"""

from __future__ import annotations

import json
import logging
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mpi4py import MPI
from petsc4py import PETSc

import basix
import basix.ufl
import dolfinx
import numpy as np
import numpy.typing as npt
import torch
from dolfinx import fem, mesh

from fem_ml._h5 import FileFormatError, Tree, read_tree, write_tree
from fem_ml._layout import DofLayout
from fem_ml._mpi import check_collectively
from fem_ml.networks import MLP, AffineScaler, CoefficientNetwork, TrainingHistory
from fem_ml.parameters import ParameterSpace
from fem_ml.pod import InnerProduct, PODBasis, assemble_inner_product
from fem_ml.store import element_signature
from fem_ml.surrogate import ErrorReport, Surrogate

__all__ = ["describe", "load", "save", "versions"]

logger = logging.getLogger(__name__)

FORMAT, VERSION = "fem_ml.surrogate", 1
_NAMED_PRODUCTS = ("euclidean", "l2", "h1", "h1_semi")
_HISTORY_ARRAYS = ("train_loss", "validation_loss", "train_indices", "validation_indices")
_HISTORY_SCALARS = ("n_adam_epochs", "n_lbfgs_iterations", "best_index", "time_s", "device")
_REPORT_ARRAYS = ("parameters", "rel_error_l2", "rel_error_h1", "proj_error_l2", "proj_error_h1")
_REPORT_OPTIONAL = ("network_error",)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of the packages a surrogate file depends on."""
    return {
        "fem_ml": _version("fem-ml"),
        "dolfinx": dolfinx.__version__,
        "basix": basix.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def save(
    rom: Surrogate,
    path: str | os.PathLike,
    *,
    test_errors: ErrorReport | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the surrogate to one file (collective on the surrogate's communicator; rank 0 writes).

    Args:
        rom: The surrogate.
        path: Destination, conventionally ``*.femml``; replaced atomically if it exists.
        test_errors: Test-set errors to store (default: ``rom.test_errors``).
        metadata: JSON-serialisable user data (units, field name, provenance...).

    Returns:
        The path written.
    """
    V = rom.V
    comm: MPI.Comm = V.mesh.comm
    target = Path(path)
    error: str | None = None
    try:
        element = _element_tree(V)
        meta = json.dumps(metadata or {})
    except (TypeError, ValueError) as err:
        error = f"Cannot save this surrogate: {err}"
    check_collectively(comm, error)

    layout = DofLayout(V)
    coordinates = layout.coordinates()
    modes = layout.gather(rom.basis.modes)
    cells, nodes = _gather_mesh(V.mesh)
    product = rom.basis.inner_product
    coo = None if product.name in _NAMED_PRODUCTS else _gather_matrix(product, layout)
    report = test_errors if test_errors is not None else rom.test_errors

    if comm.rank == 0:
        try:
            assert modes is not None and coordinates is not None and cells is not None and nodes is not None
            tree: Tree = {f"element/{k}": v for k, v in element.items()}
            cmap = V.mesh.geometry.cmaps[0]
            tree |= {
                "mesh/cells": cells,
                "mesh/x": nodes,
                "mesh/cell_type": V.mesh.topology.cell_name(),
                "mesh/degree": int(cmap.degree),
                "mesh/lagrange_variant": int(cmap.variant),
                "layout/keys": layout.keys,
                "layout/coordinates": coordinates,
                "basis/modes": np.ascontiguousarray(modes.T),
                "basis/singular_values": np.asarray(rom.basis.singular_values, dtype=np.float64),
                "basis/orthonormality_error": float(rom.basis.orthonormality_error),
                "basis/inner_product": product.name,
                "parameters/names": json.dumps(list(rom.space.names)),
                "parameters/lower": np.asarray(rom.space.lower),
                "parameters/upper": np.asarray(rom.space.upper),
                "metadata": meta,
                "saved_on_ranks": int(comm.size),
            }
            tree |= {f"versions/{k}": v for k, v in versions().items()}
            if coo is not None:
                tree |= {f"basis/matrix/{k}": v for k, v in coo.items()}
            if rom.basis.total_energy is not None:
                tree["basis/total_energy"] = float(rom.basis.total_energy)
            tree |= _network_tree(rom.network)
            for m, history in enumerate(rom.history or []):
                for name in _HISTORY_ARRAYS:
                    tree[f"training/member_{m}/{name}"] = np.asarray(getattr(history, name))
                for name in _HISTORY_SCALARS:
                    tree[f"training/member_{m}/{name}"] = getattr(history, name)
            if report is not None:
                for name in _REPORT_ARRAYS + _REPORT_OPTIONAL:
                    if getattr(report, name) is not None:
                        tree[f"errors/{name}"] = np.asarray(getattr(report, name), dtype=np.float64)
            if rom.training_parameters is not None:
                tree["training/parameters"] = np.asarray(rom.training_parameters, dtype=np.float64)
            write_tree(target, tree, kind=FORMAT, version=VERSION)
        except Exception as err:  # reported on every rank: the others wait in check_collectively
            error = f"Could not write {target}: {type(err).__name__}: {err}"
    check_collectively(comm, error, OSError)
    logger.info("Saved surrogate (%d modes, %d dofs) to %s", rom.n_modes, layout.n_global, target)
    return target


def load(
    path: str | os.PathLike,
    V: fem.FunctionSpace | None = None,
    *,
    comm: MPI.Comm | None = None,
) -> Surrogate:
    """Load a surrogate saved by :func:`save` (collective).

    Args:
        path: The ``.femml`` file.
        V: The function space to predict on. It must have the element and mesh the surrogate was trained on
            (same input cell ordering and coordinates, any number of ranks). If None, the mesh and space are
            rebuilt from the file on ``comm``.
        comm: Communicator for a standalone load (default ``MPI.COMM_WORLD``); with ``V``, its mesh's.

    Returns:
        The surrogate, distributed over the ranks of the communicator.

    Raises:
        FileFormatError: on every rank, naming the file, if it is missing, truncated, corrupted, not a fem_ml
            surrogate or from a newer format version.
        ValueError: on every rank, if ``V`` has another element or mesh than the surrogate.
    """
    if V is not None:
        if comm is not None and comm is not V.mesh.comm and comm != V.mesh.comm:
            raise ValueError("comm differs from the function space's communicator; leave comm out when giving V.")
        comm = V.mesh.comm
    comm = MPI.COMM_WORLD if comm is None else comm
    source = Path(path)

    tree: Tree = {}
    error: str | None = None
    if comm.rank == 0:
        try:
            tree = read_tree(source, kind=FORMAT, version=VERSION, what="fem_ml surrogate")
            _check_entries(source, tree)
        except FileFormatError as err:
            error = str(err)
    check_collectively(comm, error, FileFormatError)
    # Everything but the big arrays goes to every rank.
    big = ("mesh/cells", "mesh/x", "layout/keys", "layout/coordinates", "basis/modes")
    small = comm.bcast({k: v for k, v in tree.items() if k not in big and not k.startswith("basis/matrix/")}, root=0)

    error = None
    try:
        element = _element_from_tree(small)
        if V is not None:
            expected = f"{element!s} on {small['mesh/cell_type']}"
            if element_signature(V) != expected:
                raise ValueError(
                    f"{source}: the surrogate was trained on {expected}; the given function space has "
                    f"{element_signature(V)}."
                )
    except (KeyError, ValueError, TypeError) as err:
        error = str(err) if isinstance(err, ValueError) else f"{source} is missing an entry: {err}"
    check_collectively(comm, error)
    if V is None:
        V = fem.functionspace(_mesh_from_tree(comm, tree, small), element)

    layout = DofLayout(V)
    keys = tree.get("layout/keys") if comm.rank == 0 else None
    coordinates = tree.get("layout/coordinates") if comm.rank == 0 else None
    problem = layout.mismatch(keys, coordinates)  # type: ignore[arg-type]
    if problem is not None:
        raise ValueError(f"{source}: the function space is not on the surrogate's mesh: {problem}.")

    n_modes = int(comm.bcast(np.shape(tree["basis/modes"])[0] if comm.rank == 0 else None, root=0))
    modes_canonical = np.asarray(tree["basis/modes"]).T if comm.rank == 0 else None
    modes = layout.scatter(modes_canonical, width=n_modes)
    product = _inner_product(V, str(small["basis/inner_product"]), tree, layout)
    basis = PODBasis(
        V,
        modes,
        np.asarray(small["basis/singular_values"]),
        product,
        float(small["basis/orthonormality_error"]),  # type: ignore[arg-type]
        total_energy=float(small["basis/total_energy"]) if "basis/total_energy" in small else None,  # type: ignore[arg-type]
    )
    drift = float(np.max(np.abs(product.gram(modes) - np.eye(n_modes)))) if n_modes else 0.0
    if drift > max(1e-8, 100 * basis.orthonormality_error):
        raise FileFormatError(f"{source}: the stored modes are not orthonormal in their inner product ({drift:.2e}).")

    names = json.loads(str(small["parameters/names"]))
    lower, upper = np.asarray(small["parameters/lower"]), np.asarray(small["parameters/upper"])
    space = ParameterSpace({n: (float(a), float(b)) for n, a, b in zip(names, lower, upper, strict=True)})
    network = _network_from_tree(small)
    histories = _histories_from_tree(small)
    report = _report_from_tree(small)
    training = np.asarray(small["training/parameters"]) if "training/parameters" in small else None
    rom = Surrogate(space, basis, network, history=histories or None, test_errors=report, training_parameters=training)
    rom.metadata = json.loads(str(small.get("metadata", "{}")))
    rom.versions = {k.removeprefix("versions/"): str(v) for k, v in small.items() if k.startswith("versions/")}
    logger.info("Loaded surrogate from %s on %d rank(s)", source, comm.size)
    return rom


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """What a surrogate file holds, read and checksum-verified without building a mesh (local).

    Returns:
        A JSON-serialisable summary: parameters and bounds, modes, dofs, element, mesh size, inner product,
        network architecture, training and test errors, versions and user metadata.

    Raises:
        FileFormatError: for a missing, damaged, foreign or newer-format file.
    """
    tree = read_tree(path, kind=FORMAT, version=VERSION, what="fem_ml surrogate")
    names = json.loads(str(tree["parameters/names"]))
    lower, upper = np.asarray(tree["parameters/lower"]), np.asarray(tree["parameters/upper"])
    sigma = np.asarray(tree["basis/singular_values"])
    modes = np.asarray(tree["basis/modes"])
    n_hidden = int(tree["network/n_hidden"])  # type: ignore[arg-type]
    info: dict[str, Any] = {
        "file": str(path),
        "parameters": {n: [float(a), float(b)] for n, a, b in zip(names, lower, upper, strict=True)},
        "n_modes": int(modes.shape[0]),
        "n_dofs": int(modes.shape[1]),
        "retained_energy": _retained(sigma, modes.shape[0], tree.get("basis/total_energy")),
        "element": str(tree["element/signature"]),
        "mesh_cells": int(np.shape(tree["mesh/cells"])[0]),
        "mesh_nodes": int(np.shape(tree["mesh/x"])[0]),
        "inner_product": str(tree["basis/inner_product"]),
        "network": {
            "hidden_layers": [int(w) for w in np.asarray(tree["network/hidden_layers"])[:n_hidden]],
            "activation": str(tree["network/activation"]),
            "input_transform": str(tree["network/input_transform"]),
            "n_networks": int(tree["network/n_networks"]),  # type: ignore[arg-type]
        },
        "saved_on_ranks": int(tree["saved_on_ranks"]),  # type: ignore[arg-type]
        "versions": {k.removeprefix("versions/"): str(v) for k, v in tree.items() if k.startswith("versions/")},
        "metadata": json.loads(str(tree["metadata"])),
    }
    training = []
    for history in _histories_from_tree(tree):
        training.append(
            {
                "best_train_loss": history.best_train_loss,
                "best_validation_loss": history.best_validation_loss,
                "adam_epochs": history.n_adam_epochs,
                "lbfgs_iterations": history.n_lbfgs_iterations,
                "time_s": history.time_s,
            }
        )
    info["training"] = training
    if "errors/parameters" in tree:
        report = _report_from_tree(tree)
        assert report is not None
        info["test_errors"] = {"n_test": int(report.parameters.shape[0]), **report.summary()}
    return info


_REQUIRED = (
    "mesh/cells", "mesh/x", "mesh/cell_type", "mesh/degree", "mesh/lagrange_variant", "layout/keys",
    "layout/coordinates", "basis/modes", "basis/singular_values", "basis/orthonormality_error",
    "basis/inner_product", "parameters/names", "parameters/lower", "parameters/upper", "network/n_hidden",
    "network/hidden_layers", "network/activation", "network/input_transform", "network/n_in", "network/n_out",
    "network/n_networks", "network/dtype", "element/family", "element/degree", "element/lagrange_variant",
    "element/discontinuous", "element/shape", "element/scalar",
)  # fmt: skip


def _retained(sigma: npt.NDArray[np.float64], r: int, total: Any) -> float:
    """Retained energy of ``r`` modes, as :attr:`~fem_ml.pod.PODBasis.retained_energy` computes it."""
    energy = float(np.sum(sigma**2)) if total is None else float(total)
    return float(np.sum(sigma[:r] ** 2) / energy) if energy > 0 else 1.0


def _report_from_tree(tree: Tree) -> ErrorReport | None:
    """The stored test-set errors, if any."""
    if "errors/parameters" not in tree:
        return None
    arrays = {name: np.asarray(tree[f"errors/{name}"]) for name in _REPORT_ARRAYS}
    optional = {name: np.asarray(tree[f"errors/{name}"]) for name in _REPORT_OPTIONAL if f"errors/{name}" in tree}
    return ErrorReport(**arrays, **optional)


def _check_entries(source: Path, tree: Tree) -> None:
    """Raise :class:`FileFormatError` if a checksum-valid file lacks entries or holds inconsistent shapes."""
    missing = [key for key in _REQUIRED if key not in tree]
    if str(tree.get("basis/inner_product", "")) not in _NAMED_PRODUCTS:
        missing += [f"basis/matrix/{k}" for k in ("rows", "columns", "values") if f"basis/matrix/{k}" not in tree]
    if missing:
        raise FileFormatError(f"{source} lacks the entries {missing}.")
    modes, keys = np.shape(tree["basis/modes"]), np.shape(tree["layout/keys"])
    coordinates = np.shape(tree["layout/coordinates"])
    if len(modes) != 2 or modes[1] != keys[0] or coordinates != (keys[0], 3):
        raise FileFormatError(
            f"{source} is inconsistent: modes {modes}, dof keys {keys}, dof coordinates {coordinates}."
        )


# --- element -------------------------------------------------------------------------------------------------------


def _element_tree(V: fem.FunctionSpace) -> dict[str, Any]:
    """Describe ``V``'s element well enough to rebuild it."""
    e = V.ufl_element()
    shape = tuple(e.reference_value_shape)
    base = e.sub_elements[0] if shape else e
    if getattr(e, "is_mixed", False) or (shape and len(e.sub_elements) != int(np.prod(shape))):
        raise ValueError(f"saving surrogates on the mixed element {e} is not supported; save a collapsed sub-space")
    family = base.element_family
    if family not in (basix.ElementFamily.P,):
        raise ValueError(f"saving surrogates on {family.name} elements is not supported (Lagrange/DG only)")
    return {
        "family": family.name,
        "degree": int(base.degree),
        "lagrange_variant": int(base.lagrange_variant),
        "discontinuous": bool(base.discontinuous),
        "shape": np.asarray(shape if shape else (0,), dtype=np.int64),
        "scalar": not shape,
        "signature": element_signature(V),
    }


def _element_from_tree(small: dict[str, Any]) -> basix.ufl._ElementBase:
    shape = None if small["element/scalar"] else tuple(int(s) for s in small["element/shape"])
    return basix.ufl.element(
        basix.ElementFamily[str(small["element/family"])],
        str(small["mesh/cell_type"]),
        int(small["element/degree"]),
        lagrange_variant=basix.LagrangeVariant(int(small["element/lagrange_variant"])),
        discontinuous=bool(small["element/discontinuous"]),
        shape=shape,
        dtype=np.float64,
    )


# --- mesh ----------------------------------------------------------------------------------------------------------


def _gather_mesh(msh: mesh.Mesh) -> tuple[npt.NDArray[np.int64] | None, npt.NDArray[np.float64] | None]:
    """Cells (rows in input cell order, input node numbers) and node coordinates on rank 0 (collective)."""
    comm = msh.comm
    tdim = msh.topology.dim
    n_cells = msh.topology.index_map(tdim).size_local
    geometry = msh.geometry
    input_ids = np.asarray(geometry.input_global_indices, dtype=np.int64)
    cells = input_ids[geometry.dofmaps[0][:n_cells]]
    original = np.asarray(msh.topology.original_cell_index[:n_cells], dtype=np.int64)
    n_nodes = geometry.index_map().size_local
    x = geometry.x[:n_nodes, : geometry.dim]
    parts = comm.gather((original, cells, input_ids[:n_nodes], x), root=0)
    problem: str | None = None
    result: tuple[npt.NDArray[np.int64] | None, npt.NDArray[np.float64] | None] = (None, None)
    if comm.rank == 0:
        assert parts is not None
        original = np.concatenate([p[0] for p in parts])
        cells = np.vstack([p[1] for p in parts])
        ids = np.concatenate([p[2] for p in parts])
        x = np.vstack([p[3] for p in parts])
        if not np.array_equal(np.sort(original), np.arange(original.size)):
            problem = "the mesh's original cell indices are not a permutation of 0..n-1"
        else:
            unique_ids, first = np.unique(ids, return_index=True)
            cells_out = np.empty_like(cells)
            cells_out[original] = np.searchsorted(unique_ids, cells)
            result = (cells_out, np.ascontiguousarray(x[first], dtype=np.float64))
    problem = comm.bcast(problem, root=0) if comm.size > 1 else problem
    if problem is not None:
        raise ValueError(f"Cannot store the mesh: {problem}.")
    return result


def _mesh_from_tree(comm: MPI.Comm, tree: Tree, small: dict[str, Any]) -> mesh.Mesh:
    """Rebuild the mesh from the file (collective; rank 0 passes all cells, DOLFINx distributes them)."""
    cell_type = str(small["mesh/cell_type"])
    degree = int(small["mesh/degree"])
    variant = basix.LagrangeVariant(int(small["mesh/lagrange_variant"]))
    shape = comm.bcast((np.shape(tree["mesh/cells"])[1], np.shape(tree["mesh/x"])[1]) if comm.rank == 0 else None)
    cells = np.asarray(tree["mesh/cells"], dtype=np.int64) if comm.rank == 0 else np.empty((0, shape[0]), np.int64)
    x = np.asarray(tree["mesh/x"], dtype=np.float64) if comm.rank == 0 else np.empty((0, shape[1]), np.float64)
    coordinate_element = basix.ufl.element(
        "Lagrange", cell_type, degree, lagrange_variant=variant, shape=(shape[1],), dtype=np.float64
    )
    return mesh.create_mesh(comm, cells, coordinate_element, x)  # type: ignore[arg-type]


# --- inner product -------------------------------------------------------------------------------------------------


def _gather_matrix(product: InnerProduct, layout: DofLayout) -> dict[str, npt.NDArray] | None:
    """The inner-product matrix as canonical COO triplets on rank 0 (collective)."""
    matrix = product.matrix
    assert matrix is not None
    indptr, columns, values = matrix.getValuesCSR()
    start = matrix.getOwnershipRange()[0]
    rows = start + np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    parts = layout.comm.gather((rows, np.asarray(columns, dtype=np.int64), np.asarray(values)), root=0)
    if layout.comm.rank != 0:
        return None
    assert parts is not None
    canonical = layout.canonical_positions()
    return {
        "rows": canonical[np.concatenate([p[0] for p in parts])],
        "columns": canonical[np.concatenate([p[1] for p in parts])],
        "values": np.concatenate([p[2] for p in parts]).astype(np.float64),
    }


def _inner_product(V: fem.FunctionSpace, name: str, tree: Tree, layout: DofLayout) -> InnerProduct:
    """Reassemble a named inner product, or rebuild a stored matrix in the new layout (collective)."""
    if name in _NAMED_PRODUCTS:
        return assemble_inner_product(V, name)  # type: ignore[arg-type]
    comm = layout.comm
    n = layout.n_global
    rows = columns = np.empty(0, dtype=np.int32)
    values = np.empty(0, dtype=np.float64)
    if comm.rank == 0:
        order = layout.global_positions()
        rows = order[np.asarray(tree["basis/matrix/rows"])].astype(PETSc.IntType)
        columns = order[np.asarray(tree["basis/matrix/columns"])].astype(PETSc.IntType)
        values = np.asarray(tree["basis/matrix/values"], dtype=PETSc.ScalarType)
    matrix = PETSc.Mat().create(comm=comm)  # type: ignore[arg-type]
    matrix.setSizes(((layout.n_owned, n), (layout.n_owned, n)))
    matrix.setType(PETSc.Mat.Type.AIJ)
    matrix.setPreallocationCOO(rows, columns)  # type: ignore[arg-type]
    matrix.setValuesCOO(values)  # type: ignore[arg-type]
    matrix.assemble()
    return InnerProduct(V, matrix, name=name, owns_matrix=True)


# --- network -------------------------------------------------------------------------------------------------------


def _network_tree(network: CoefficientNetwork) -> Tree:
    first = network.models[0]
    tree: Tree = {
        "network/hidden_layers": np.asarray(first.hidden_layers, dtype=np.int64).reshape(-1),
        "network/n_hidden": len(first.hidden_layers),
        "network/activation": first.activation,
        "network/input_transform": network.input_transform,
        "network/n_in": int(first.n_in),
        "network/n_out": int(first.n_out),
        "network/n_networks": network.n_networks,
        "network/dtype": str(next(first.parameters()).dtype).removeprefix("torch."),
        "network/input_scaler/shift": np.asarray(network.input_scaler.shift, dtype=np.float64),
        "network/input_scaler/scale": np.asarray(network.input_scaler.scale, dtype=np.float64),
        "network/output_scaler/shift": np.asarray(network.output_scaler.shift, dtype=np.float64),
        "network/output_scaler/scale": np.asarray(network.output_scaler.scale, dtype=np.float64),
    }
    for m, model in enumerate(network.models):
        for name, tensor in model.state_dict().items():
            tree[f"network/member_{m}/{name}"] = tensor.detach().cpu().numpy().copy()
    return tree


def _network_from_tree(small: dict[str, Any]) -> CoefficientNetwork:
    n_hidden = int(small["network/n_hidden"])
    hidden = tuple(int(w) for w in np.asarray(small["network/hidden_layers"])[:n_hidden])
    dtype = {"float64": torch.float64, "float32": torch.float32}[str(small["network/dtype"])]
    models = []
    for m in range(int(small["network/n_networks"])):
        model = MLP(
            int(small["network/n_in"]),
            int(small["network/n_out"]),
            hidden_layers=hidden,
            activation=str(small["network/activation"]),  # type: ignore[arg-type]
        ).to(dtype)
        prefix = f"network/member_{m}/"
        state = {
            k.removeprefix(prefix): torch.from_numpy(np.array(v)) for k, v in small.items() if k.startswith(prefix)
        }
        model.load_state_dict(state, strict=True)
        models.append(model)
    return CoefficientNetwork(
        models,
        AffineScaler(np.asarray(small["network/input_scaler/shift"]), np.asarray(small["network/input_scaler/scale"])),
        AffineScaler(
            np.asarray(small["network/output_scaler/shift"]), np.asarray(small["network/output_scaler/scale"])
        ),
        input_transform=str(small["network/input_transform"]),  # type: ignore[arg-type]
    )


def _histories_from_tree(small: dict[str, Any]) -> list[TrainingHistory]:
    histories = []
    m = 0
    while f"training/member_{m}/best_index" in small:
        prefix = f"training/member_{m}/"
        histories.append(
            TrainingHistory(
                train_loss=[float(v) for v in small[prefix + "train_loss"]],
                validation_loss=[float(v) for v in small[prefix + "validation_loss"]],
                n_adam_epochs=int(small[prefix + "n_adam_epochs"]),
                n_lbfgs_iterations=int(small[prefix + "n_lbfgs_iterations"]),
                best_index=int(small[prefix + "best_index"]),
                train_indices=np.asarray(small[prefix + "train_indices"], dtype=np.int64),
                validation_indices=np.asarray(small[prefix + "validation_indices"], dtype=np.int64),
                time_s=float(small[prefix + "time_s"]),
                device=str(small[prefix + "device"]),
            )
        )
        m += 1
    return histories
