# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
r"""Save a trained surrogate to one self-contained file and load it on any number of ranks.

:func:`save` and :func:`load` are a pair, the way adios4dolfinx pairs its writers and readers. A ``.femml`` file is
an HDF5 file (written by rank 0 through fem_ml's atomic writer, with a SHA-256 checksum) holding everything needed
to use the surrogate without the script that trained it:

======================  ====================================================================================
``mesh/``               cells in input order and node coordinates; cell type and coordinate element
``element/``            family, degree, Lagrange variant, value shape of the function space's element
``layout/``             canonical dof keys and dof coordinates (see :mod:`fem_ml._layout`)
``basis/``              :meth:`PODBasis.to_tree <fem_ml.pod.PODBasis.to_tree>`: modes in canonical dof order,
                        singular values, the inner product's name and, for a user-given product, its matrix
``network/``            :meth:`CoefficientNetwork.to_tree <fem_ml.networks.CoefficientNetwork.to_tree>`:
                        architecture, weights of each ensemble member, input and output scalers
``kernel/``             instead of ``network/``, for a kernel surrogate:
                        :meth:`KernelRegressor.to_tree <fem_ml.kernels.KernelRegressor.to_tree>`: method, kernel,
                        hyperparameters, training inputs, weights, scalers (format version 2)
``blend/``              instead of both, for a blend:
                        :meth:`BlendedRegressor.to_tree <fem_ml.blending.BlendedRegressor.to_tree>`: ``weights``
                        (kernel, network) and the members' entries under ``blend/kernel/`` and
                        ``blend/network/`` (format version 3)
``parameters/``         names and bounds
``training/``           :meth:`TrainingHistory.to_tree <fem_ml.networks.TrainingHistory.to_tree>` of each member
                        (``member_m/``) and the training points
``errors/``             :meth:`ErrorReport.to_tree <fem_ml.surrogate.ErrorReport.to_tree>` of the test set
root attributes         format tag and version, checksum (and signature), versions of fem_ml, DOLFINx, basix,
                        torch, NumPy; metadata
======================  ====================================================================================

This module keeps only the container, the mesh and the dof layout; each stage writes and reads its own entries.
Loading validates the file before reading its data (see :mod:`fem_ml._h5` and the schema in
:mod:`fem_ml._formats`): anything wrong is a :class:`~fem_ml._h5.FileFormatError` naming the file and the entry, on
every rank. Loading reads numbers and strings only: no pickle and no ``torch.load``, so a file cannot run code.
The modes are stored in a dof order that does not depend on the number of ranks, so a file saved on N ranks loads
on M ranks and rebuilds the same field. Loading onto a user's function space checks that it has the same element
and the same mesh (dof keys and coordinates); loading without one rebuilds the mesh and space from the file.

The checksum detects accidental damage only; with a key (``key=`` or the environment variable ``FEM_ML_KEY``)
files are signed with HMAC-SHA256 and loading refuses files without a valid signature (see :mod:`fem_ml._h5`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

import numpy as np
import numpy.typing as npt

from fem_ml._agree import check_same
from fem_ml._atomic import output_set
from fem_ml._formats import SURROGATE
from fem_ml._h5 import DEFAULT_MAX_BYTES, FileFormatError, Tree, read_tree, resolve_key, write_tree
from fem_ml._mpi import collectively
from fem_ml._records import ErrorReport
from fem_ml._serialize import prefixed, subtree
from fem_ml._spectrum import energy_curve
from fem_ml.blending import BlendedRegressor
from fem_ml.kernels import KernelRegressor
from fem_ml.networks import CoefficientNetwork, TrainingHistory
from fem_ml.parameters import ParameterSpace

if TYPE_CHECKING:  # DOLFINx only where a mesh is written or built: describe() reads a file without it
    from dolfinx import fem

    from fem_ml.pod import PODBasis
    from fem_ml.surrogate import CoefficientRegressor, Surrogate

__all__ = ["FORMAT", "VERSION", "describe", "load", "save", "versions"]

logger = logging.getLogger(__name__)

#: Format tag and newest version of surrogate files.
FORMAT, VERSION = SURROGATE.kind, SURROGATE.version
#: The file group of each regressor kind.
_GROUPS = {"network": "network", "kernel": "kernel", "blend": "blend"}
#: The format version of files without a blend (a blend needs version 3; older readers then say the file is newer).
_VERSION_WITHOUT_BLEND = 2
_BIG = ("mesh/cells", "mesh/x", "layout/keys", "layout/coordinates", "basis/modes")


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version  # a tenth of a second: only when saving

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of the packages a surrogate file depends on."""
    import basix
    import dolfinx

    return {
        "fem_ml": _version("fem-ml"),
        "dolfinx": dolfinx.__version__,
        "basix": basix.__version__,
        "torch": _version("torch"),  # without importing torch
        "numpy": np.__version__,
    }


def save(
    rom: Surrogate,
    path: str | os.PathLike,
    *,
    test_errors: ErrorReport | None = None,
    metadata: dict[str, Any] | None = None,
    key: bytes | str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a surrogate to one file (collective on the surrogate's communicator; rank 0 writes).

    Args:
        rom: The surrogate.
        path: Destination, conventionally ``*.femml``; a file fem_ml wrote there is replaced atomically.
        test_errors: Test-set errors to store (default: ``rom.test_errors``).
        metadata: JSON-serialisable user data (units, field name, provenance...; default ``rom.metadata``).
        key: Sign the file with HMAC-SHA256 under this key (default: the environment variable ``FEM_ML_KEY``, if
            set); :func:`load` with the same key then refuses any file not signed with it.
        overwrite: Replace an existing file at ``path`` that fem_ml did not write.

    Returns:
        The path written.

    Raises:
        ValueError: on every rank, for a surrogate that cannot be stored (mixed element, metadata that is not
            JSON) or a destination that must not be replaced.
        OSError: on every rank, if the file cannot be written.
    """
    from fem_ml._layout import DofLayout
    from fem_ml._mesh import element_tree, gather_mesh

    V = rom.V
    comm: MPI.Comm = V.mesh.comm
    target = Path(path)
    with collectively(comm):
        element = element_tree(V)
        meta = json.dumps(rom.metadata if metadata is None else metadata, allow_nan=False)
        secret = resolve_key(key)
    layout = DofLayout(V)
    coordinates = layout.coordinates()
    mesh_entries = gather_mesh(V.mesh)
    basis = rom.basis.to_tree(layout)
    report = test_errors if test_errors is not None else rom.test_errors
    with output_set(comm, [target], overwrite=overwrite) as tmp, collectively(comm):
        if comm.rank == 0:
            assert coordinates is not None
            tree: Tree = prefixed("element", element) | mesh_entries
            tree |= {
                "layout/keys": layout.keys,
                "layout/coordinates": coordinates,
                "parameters/names": json.dumps(list(rom.space.names)),
                "parameters/lower": np.asarray(rom.space.lower, dtype=np.float64),
                "parameters/upper": np.asarray(rom.space.upper, dtype=np.float64),
                "metadata": meta,
                "saved_on_ranks": int(comm.size),
            }
            tree |= prefixed("versions", versions())
            tree |= prefixed("basis", basis)
            tree |= prefixed(_GROUPS[rom.regressor.kind], rom.regressor.to_tree())
            for m, history in enumerate(rom.history or []):
                tree |= prefixed(f"training/member_{m}", history.to_tree())
            if report is not None:
                tree |= prefixed("errors", report.to_tree())
            if rom.training_parameters is not None:
                tree["training/parameters"] = np.asarray(rom.training_parameters, dtype=np.float64)
            # Version 2 for networks too: their files now record the resolved training options, an entry that
            # readers of version 1 would refuse as unknown; with version 2 they say that the file is newer. Version
            # 3 only for a blend, which readers of version 2 cannot read: other files stay readable by them.
            version = VERSION if rom.regressor.kind == "blend" else _VERSION_WITHOUT_BLEND
            write_tree(tmp[target], tree, kind=FORMAT, version=version, key=secret)
    logger.info("Saved surrogate (%d modes, %d dofs) to %s", rom.n_modes, layout.n_global, target)
    return target


def _read(source: Path, key: bytes | str | None, max_bytes: int) -> Tree:
    """Read and validate a surrogate file (local)."""
    return read_tree(
        source,
        kind=FORMAT,
        version=VERSION,
        what=SURROGATE.what,
        schema=SURROGATE.schema,
        key=resolve_key(key),
        max_bytes=max_bytes,
    )


def load(
    path: str | os.PathLike,
    V: fem.FunctionSpace | None = None,
    *,
    comm: MPI.Comm | None = None,
    key: bytes | str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Surrogate:
    """Load a surrogate saved by :func:`save` (collective).

    Args:
        path: The ``.femml`` file.
        V: The function space to predict on. It must have the element and mesh the surrogate was trained on
            (same input cell ordering and coordinates, any number of ranks). If None, the mesh and space are
            rebuilt from the file on ``comm``.
        comm: Communicator for a standalone load (default ``MPI.COMM_WORLD``); with ``V``, its mesh's.
        key: Require a valid HMAC-SHA256 signature under this key (default: the environment variable
            ``FEM_ML_KEY``, if set).
        max_bytes: Memory budget: the file's datasets may hold at most this many bytes together.

    Returns:
        The surrogate, distributed over the ranks of the communicator.

    Raises:
        FileFormatError: on every rank, naming the file and the entry, if it is missing, truncated, corrupted,
            forged, not a fem_ml surrogate or from a newer format version.
        ValueError: on every rank, if ``V`` has another element or mesh than the surrogate, or the path or options
            differ between ranks.
    """
    from dolfinx import fem

    from fem_ml._fem import element_signature
    from fem_ml._layout import DofLayout
    from fem_ml._mesh import element_from_tree, mesh_from_tree
    from fem_ml.pod import PODBasis

    if V is not None:
        if comm is not None and comm is not V.mesh.comm and comm != V.mesh.comm:
            raise ValueError("comm differs from the function space's communicator; leave comm out when giving V.")
        comm = V.mesh.comm
    comm = MPI.COMM_WORLD if comm is None else comm
    source = Path(path)
    check_same(comm, "The path or options of load", str(source), max_bytes, key is None)

    tree: Tree = {}
    with collectively(comm):
        if comm.rank == 0:
            tree = _read(source, key, max_bytes)
    small = comm.bcast({k: v for k, v in tree.items() if k not in _BIG and not k.startswith("basis/matrix/")}, root=0)
    with collectively(comm):
        element = _stage(source, "element", lambda: element_from_tree(small))
        if V is not None and element_signature(V) != f"{element!s} on {small['mesh/cell_type']}":
            raise ValueError(
                f"{source}: the surrogate was trained on {element!s} on {small['mesh/cell_type']}; the given "
                f"function space has {element_signature(V)}."
            )
    rebuilt = V is None
    if V is None:
        V = fem.functionspace(_stage(source, "mesh", lambda: mesh_from_tree(comm, tree, small)), element)

    layout = DofLayout(V)
    problem = layout.mismatch(tree.get("layout/keys"), tree.get("layout/coordinates"))  # type: ignore[arg-type]
    if problem is not None:
        if rebuilt:  # the file's own mesh does not give the file's dof layout: the file is inconsistent
            raise FileFormatError(f"{source} is not a valid {SURROGATE.what}: 'layout/keys': {problem}.")
        raise ValueError(f"{source}: the function space is not on the surrogate's mesh: {problem}.")
    basis_tree = subtree(tree if comm.rank == 0 else small, "basis")
    try:
        basis = PODBasis.from_tree(V, basis_tree, layout)
    except ValueError as err:  # raised on every rank: the check is on replicated values
        raise FileFormatError(f"{source} is not a valid {SURROGATE.what}: 'basis/modes': {err}.") from None
    try:
        with collectively(comm):
            rom = _stage(source, _group(small), lambda: _surrogate(small, basis))
    except BaseException:
        basis.inner_product.destroy()
        raise
    logger.info("Loaded surrogate from %s on %d rank(s)", source, comm.size)
    return rom


def _stage[T](source: Path, group: str, build: Callable[[], T]) -> T:
    """``build()``, with any error turned into a :class:`FileFormatError` naming the file and the group."""
    try:
        return build()
    except Exception as err:
        raise FileFormatError(f"{source} is not a valid {SURROGATE.what}: {group!r}: {err}.") from err


def _group(tree: Tree) -> str:
    """The file group of a validated file's regressor: ``"blend"``, ``"kernel"`` or ``"network"``."""
    if "blend/weights" in tree:
        return "blend"
    return "kernel" if "kernel/method" in tree else "network"


def _surrogate(small: Tree, basis: PODBasis) -> Surrogate:
    """The surrogate from the small entries of a validated file and its basis (local)."""
    from fem_ml.surrogate import Surrogate

    names = json.loads(str(small["parameters/names"]))
    lower, upper = np.asarray(small["parameters/lower"]), np.asarray(small["parameters/upper"])
    space = ParameterSpace({n: (float(a), float(b)) for n, a, b in zip(names, lower, upper, strict=True)})
    histories = [TrainingHistory.from_tree(subtree(small, f"training/member_{m}")) for m in range(_n_histories(small))]
    report = ErrorReport.from_tree(subtree(small, "errors")) if "errors/parameters" in small else None
    regressor: CoefficientRegressor
    group = _group(small)
    if group == "blend":
        regressor = BlendedRegressor.from_tree(subtree(small, "blend"))
    elif group == "kernel":
        regressor = KernelRegressor.from_tree(subtree(small, "kernel"))
    else:
        regressor = CoefficientNetwork.from_tree(subtree(small, "network"))
    rom = Surrogate(
        space,
        basis,
        regressor,
        history=histories or None,
        test_errors=report,
        training_parameters=np.asarray(small["training/parameters"]) if "training/parameters" in small else None,
        owns_basis=True,
    )
    rom.metadata = json.loads(str(small.get("metadata", "{}")))
    rom.versions = {k: str(v) for k, v in subtree(small, "versions").items()}
    return rom


def _n_histories(tree: Tree) -> int:
    m = 0
    while f"training/member_{m}/best_index" in tree:
        m += 1
    return m


def describe(
    path: str | os.PathLike, *, key: bytes | str | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, Any]:
    """What a surrogate file holds, read and validated without building a mesh (local).

    (Over 80 lines: one entry of the summary after the other, each read from the validated tree.)

    Args:
        path: The ``.femml`` file.
        key: Require a valid signature under this key (default: ``FEM_ML_KEY``, if set).
        max_bytes: Memory budget of the file's datasets.

    Returns:
        A JSON-serialisable summary: parameters and bounds, modes, dofs, element, mesh size, inner product, the
        regressor (``network``: architecture; ``kernel``: method and hyperparameters; a blend: ``blend`` with its
        weights, and both), training and test errors, versions and user metadata.

    Raises:
        FileFormatError: for a missing, damaged, forged, foreign or newer-format file.
    """
    source = Path(path)
    tree = _read(source, key, max_bytes)
    names = json.loads(str(tree["parameters/names"]))
    lower, upper = np.asarray(tree["parameters/lower"]), np.asarray(tree["parameters/upper"])
    sigma = np.asarray(tree["basis/singular_values"])
    modes = np.asarray(tree["basis/modes"])
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
        "saved_on_ranks": int(tree["saved_on_ranks"]),  # type: ignore[arg-type]
        "versions": {k: str(v) for k, v in subtree(tree, "versions").items()},
        "metadata": json.loads(str(tree["metadata"])),
    }
    group = _group(tree)
    regressors = subtree(tree, "blend") if group == "blend" else tree
    if group == "blend":
        weights = np.asarray(tree["blend/weights"])
        info["blend"] = {"kernel_weight": float(weights[0]), "network_weight": float(weights[1])}
    if "kernel/method" in regressors:
        kernel = subtree(regressors, "kernel")
        info["kernel"] = {
            "method": str(kernel["method"]),
            "kernel": str(kernel["kernel"]),
            "input_transform": str(kernel["input_transform"]),
            "n_train": int(np.shape(kernel["inputs"])[0]),
            "length_scales": [float(v) for v in np.asarray(kernel["length_scales"])],
            "amplitude": float(kernel["amplitude"]),  # type: ignore[arg-type]
            "noise": float(kernel["noise"]),  # type: ignore[arg-type]
        }
        if "warping" in kernel:
            info["kernel"]["warping"] = [float(v) for v in np.asarray(kernel["warping"])]
    if "network/n_networks" in regressors:
        network = subtree(regressors, "network")
        info["network"] = {
            "hidden_layers": [int(w) for w in np.asarray(network["hidden_layers"])[: int(network["n_hidden"])]],
            "activation": str(network["activation"]),
            "input_transform": str(network["input_transform"]),
            "n_networks": int(network["n_networks"]),
        }
        if "norm_model/slopes" in network:
            info["network"]["norm_model"] = {
                "intercept": float(np.asarray(network["norm_model/intercept"])),
                "slopes": [float(v) for v in np.asarray(network["norm_model/slopes"])],
            }
    training = []
    for m in range(_n_histories(tree)):
        member = subtree(tree, f"training/member_{m}")
        history: TrainingHistory = _stage(source, f"training/member_{m}", partial(TrainingHistory.from_tree, member))
        training.append(
            {
                "best_train_loss": history.best_train_loss,
                "best_validation_loss": history.best_validation_loss,
                "adam_epochs": history.n_adam_epochs,
                "lbfgs_iterations": history.n_lbfgs_iterations,
                "lm_iterations": history.n_lm_iterations,
                "time_s": history.time_s,
                "options": json.loads(history.options) if history.options else None,
            }
        )
    info["training"] = training
    if "errors/parameters" in tree:
        report = _stage(source, "errors", lambda: ErrorReport.from_tree(subtree(tree, "errors")))
        info["test_errors"] = {"n_test": int(report.parameters.shape[0]), **report.summary()}
    return info


def _retained(sigma: npt.NDArray[np.float64], r: int, total: Any) -> float:
    """Retained energy of ``r`` modes, the formula of :attr:`~fem_ml.pod.PODBasis.retained_energy`."""
    return float(energy_curve(sigma, None if total is None else float(total))[r - 1]) if r else 0.0
