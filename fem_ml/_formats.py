# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The schemas of fem_ml's files: every entry a surrogate or snapshot-store file may hold, its shape and its values.

Each schema lists the allowed entries (anything else is refused), derives sizes from the header (dofs from the
dof keys, modes from the basis, layer widths from the network's header, the node count from the coordinates...)
so that every dataset's shape is checked before it is read, and checks values after reading: finite weights,
modes, coordinates and singular values; cell indices within the node count; COO indices within the dofs; known
activation, input transform, inner product, cell type and dtype names. ``check_mesh_and_basis`` checks the
mesh, layout, basis and element entries for the dynamics format too. Like :mod:`fem_ml._h5`, this module imports
only the standard library, NumPy and h5py (through :mod:`fem_ml._h5`), so tools outside fem_ml can reuse it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fem_ml._h5 import Declared, Field, Schema, Tree

__all__ = [
    "ACTIVATIONS",
    "BLEND_WEIGHT_TOLERANCE",
    "INPUT_TRANSFORMS",
    "KERNELS",
    "MAX_WARPING",
    "NAMED_PRODUCTS",
    "NORM_MODEL_BOUND",
    "SAMPLE",
    "STORE",
    "SURROGATE",
    "Format",
    "check_mesh_and_basis",
]

#: Activation functions a network file may name.
ACTIVATIONS = ("gelu", "relu", "silu", "softplus", "tanh")
#: Input transforms a network file may name.
INPUT_TRANSFORMS = ("linear", "log")
#: The largest :math:`|w_0| + \sum_j |w_j|` of a network's norm model (:class:`fem_ml.networks.NormModel`): its
#: factor :math:`\exp(w_0 + w^\top x)` stays within :math:`e^{\pm 300} \approx 10^{\pm 130}` in the box, far from
#: overflow even after multiplying outputs and squaring norms.
NORM_MODEL_BOUND = 300.0
#: The largest warping rate of a kernel regressor's inputs (:mod:`fem_ml.kernels`; far below exp's overflow).
MAX_WARPING = 100.0
#: The largest :math:`|w_k + w_n - 1|` of a blend's stored weights (:class:`fem_ml.blending.BlendedRegressor`).
BLEND_WEIGHT_TOLERANCE = 1e-12
#: Kernel regressors a surrogate file may hold, each method with its kernel names.
KERNELS = {"gp": ("gaussian", "matern32", "matern52"), "rbf": ("cubic", "linear", "thin_plate_spline")}
#: Inner products rebuilt by name, any other name coming with its matrix. It is the one table of named inner
#: products, also :data:`fem_ml._linalg.INNER_PRODUCT_NAMES` (kept here, where files are checked without DOLFINx).
NAMED_PRODUCTS: tuple[str, ...] = ("euclidean", "l2", "h1", "h1_semi")
_CELL_TYPES = ("interval", "triangle", "quadrilateral", "tetrahedron", "hexahedron", "prism")
_MAX_DEGREE = 10
_MAX_HIDDEN = 1024


class Format:
    """A file kind: its format tag, newest version, description and schema."""

    def __init__(self, kind: str, version: int, what: str, schema: Schema):
        self.kind, self.version, self.what, self.schema = kind, version, what, schema


def _nodes_per_cell(cell: str, degree: int) -> int:
    """Geometry nodes of a Lagrange cell of ``degree``."""
    d = degree
    return {
        "interval": d + 1,
        "triangle": (d + 1) * (d + 2) // 2,
        "quadrilateral": (d + 1) ** 2,
        "tetrahedron": (d + 1) * (d + 2) * (d + 3) // 6,
        "hexahedron": (d + 1) ** 3,
        "prism": (d + 1) ** 2 * (d + 2) // 2,
    }[cell]


def _shape(declared: Declared, name: str) -> tuple[int, ...]:
    value = declared.get(name)
    if not isinstance(value, tuple):
        raise ValueError(f"{name!r}: missing dataset")
    return tuple(value[1])


def _int(declared: Declared | Tree, name: str, low: int, high: int) -> int:
    value = declared.get(name)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name!r}: expected an integer, found {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name!r}: {value} is outside [{low}, {high}]")
    return int(value)


def _choice(tree: Declared | Tree, name: str, choices: Iterable[str]) -> str:
    value = tree.get(name)
    if value not in tuple(choices):
        raise ValueError(f"{name!r}: {value!r} is not one of {tuple(choices)}")
    return str(value)


def _finite(tree: Tree, name: str, *, low: float | None = None, nan: bool = False) -> npt.NDArray[Any]:
    array = np.asarray(tree[name])
    bad = ~np.isfinite(array) if not nan else np.isinf(array)
    if np.any(bad):
        raise ValueError(f"{name!r}: holds {'infinite' if nan else 'NaN or infinite'} values")
    if low is not None and array.size and np.nanmin(array) < low:
        raise ValueError(f"{name!r}: holds values below {low}")
    return array


def _float(tree: Tree, name: str, *, low: float = -np.inf) -> float:
    value = float(tree[name])  # type: ignore[arg-type]
    if not np.isfinite(value) or value < low:
        raise ValueError(f"{name!r}: {value} is not a finite number >= {low}")
    return value


def _json(tree: Tree, name: str) -> Any:
    try:
        return json.loads(str(tree[name]))
    except ValueError:
        raise ValueError(f"{name!r}: not valid JSON") from None


def _indices(tree: Tree, name: str, bound: int) -> None:
    array = np.asarray(tree[name])
    if array.size and (int(array.min()) < 0 or int(array.max()) >= bound):
        raise ValueError(f"{name!r}: indices outside [0, {bound})")


# --- surrogate -----------------------------------------------------------------------------------------------------

#: The regressor groups' prefixes: top level, or inside a blend (``blend/kernel/``, ``blend/network/``).
_NET, _KER = r"(?:blend/)?network/", r"(?:blend/)?kernel/"
_MEMBER = _NET + r"member_(\d+)/layers\.(\d+)\.(weight|bias)"
_HISTORY = r"training/member_(\d+)/"


def _is_blend(declared: Declared | Tree) -> bool:
    """A file with a blend of a kernel regressor and a network (``blend/...``)."""
    return any(name.startswith("blend/") for name in declared)


def _regressors(declared: Declared | Tree) -> list[tuple[str, str]]:
    """The regressor groups of a file as ``(kind, prefix)``: a network, a kernel regressor, or a blend's two members.

    Raises:
        ValueError: for a file that mixes them (a network and a kernel regressor, or a blend beside either).
    """
    network = any(name.startswith("network/") for name in declared)
    kernel = _is_kernel(declared)
    if _is_blend(declared):
        if network or kernel:
            raise ValueError("'blend/weights': a blend holds its members under 'blend/', beside no other regressor")
        return [("kernel", "blend/kernel/"), ("network", "blend/network/")]
    if kernel and network:
        raise ValueError("'kernel/method': a file holds a network or a kernel regressor, not both")
    return [("kernel", "kernel/")] if kernel else [("network", "network/")]


def _surrogate_dims(declared: Declared, read_small: Callable[[str], npt.NDArray[Any]]) -> dict[str, int]:
    n_dofs = _shape(declared, "layout/keys")[0]
    n_modes = _shape(declared, "basis/modes")[0]
    n_nodes, gdim = (*_shape(declared, "mesh/x"), 0)[:2]
    if not 1 <= gdim <= 3:
        raise ValueError(f"'mesh/x': {gdim} coordinates per node, expected 1 to 3")
    cell = _choice(declared, "mesh/cell_type", _CELL_TYPES)
    degree = _int(declared, "mesh/degree", 1, _MAX_DEGREE)
    p = _shape(declared, "parameters/lower")[0]
    dims = {
        "n_dofs": n_dofs,
        "n_modes": n_modes,
        "n_nodes": n_nodes,
        "gdim": gdim,
        "nodes_per_cell": _nodes_per_cell(cell, degree),
        "p": p,
    }
    for kind, prefix in _regressors(declared):
        # Every regressor (each member of a blend) maps the file's parameters to its modes.
        n_in = _int(declared, f"{prefix}n_in", 1, 1 << 20)
        n_out = _int(declared, f"{prefix}n_out", 0, 1 << 30)
        if n_in != p:
            raise ValueError(f"'{prefix}n_in': {n_in} inputs for {p} parameters")
        if n_out != n_modes:
            raise ValueError(f"'{prefix}n_out': {n_out} outputs for {n_modes} modes")
        if kind == "kernel":
            dims |= _kernel_dims(declared, p, prefix)
        else:
            dims |= _network_dims(declared, read_small, n_in, n_out, prefix)
    return _common_dims(declared, dims)


def _network_dims(
    declared: Declared, read_small: Callable[[str], npt.NDArray[Any]], n_in: int, n_out: int, prefix: str
) -> dict[str, int]:
    """Sizes of a network: ensemble members, layers and their widths."""
    n_hidden = _int(declared, f"{prefix}n_hidden", 0, _MAX_HIDDEN)
    hidden = read_small(f"{prefix}hidden_layers").reshape(-1)
    if hidden.dtype.kind not in "iu" or hidden.size < n_hidden or np.any(hidden[:n_hidden] < 1):
        raise ValueError(f"'{prefix}hidden_layers': {hidden} does not give {n_hidden} positive widths")
    widths = [n_in, *(int(w) for w in hidden[:n_hidden]), n_out]
    dims = {"n_networks": _int(declared, f"{prefix}n_networks", 1, 1 << 16), "n_layers": len(widths) - 1}
    return dims | {f"width_{k}": w for k, w in enumerate(widths)}


def _is_kernel(declared: Declared | Tree) -> bool:
    """A file with a kernel regressor (``kernel/...``) instead of a network."""
    return any(name.startswith("kernel/") for name in declared)


def _kernel_dims(declared: Declared, p: int, prefix: str) -> dict[str, int]:
    """Sizes of a kernel regressor: training points, polynomial terms."""
    method = _choice(declared, f"{prefix}method", tuple(KERNELS))
    _choice(declared, f"{prefix}kernel", KERNELS[method])
    n_train = _shape(declared, f"{prefix}inputs")[0]
    if n_train < 1:
        raise ValueError(f"'{prefix}inputs': no training points")
    n_poly = _shape(declared, f"{prefix}polynomial")[0]
    if n_poly not in (0, 1, p + 1):
        raise ValueError(f"'{prefix}polynomial': {n_poly} terms, expected 0, 1 or {p + 1}")
    return {"n_train": n_train, "n_poly": n_poly}


def _common_dims(declared: Declared, dims: dict[str, int]) -> dict[str, int]:
    """The sizes shared by network and kernel files: sparse matrix, test errors, training histories."""
    if "basis/matrix/rows" in declared:
        dims["nnz"] = _shape(declared, "basis/matrix/rows")[0]
    if "errors/parameters" in declared:
        dims["n_test"] = _shape(declared, "errors/parameters")[0]
    m = 0
    while f"training/member_{m}/best_index" in declared:
        dims[f"losses_{m}"] = _shape(declared, f"training/member_{m}/train_loss")[0]
        m += 1
    dims["n_histories"] = m
    return dims


def _surrogate_expected(declared: Declared, dims: Mapping[str, int]) -> list[str]:
    names = ["blend/weights"] if _is_blend(declared) else []
    for kind, prefix in _regressors(declared):
        names += _kernel_expected(declared, prefix) if kind == "kernel" else _network_expected(declared, dims, prefix)
    return names + _common_expected(declared, dims)


def _kernel_expected(declared: Declared, prefix: str) -> list[str]:
    names = [f"{prefix}{side}_scaler/{n}" for side in ("input", "output") for n in ("shift", "scale")]
    names += [f"{prefix}{n}" for n in ("method", "kernel", "input_transform", "n_in", "n_out", "amplitude")]
    names += [f"{prefix}{n}" for n in ("noise", "inputs", "weights", "polynomial", "length_scales")]
    if declared.get(f"{prefix}method") == "gp":
        names += [f"{prefix}cholesky", f"{prefix}output_variance"]
    elif f"{prefix}cholesky" in declared or f"{prefix}output_variance" in declared:
        raise ValueError(f"'{prefix}cholesky': only a Gaussian process has a Cholesky factor")
    return names


def _network_expected(declared: Declared, dims: Mapping[str, int], prefix: str) -> list[str]:
    names = [f"{prefix}{n}" for n in ("hidden_layers", "n_hidden", "activation", "input_transform", "n_in")]
    names += [f"{prefix}{n}" for n in ("n_out", "n_networks", "dtype")]
    n_weights = sum(1 for name in declared if name.startswith(f"{prefix}member_"))
    if n_weights != 2 * dims["n_networks"] * dims["n_layers"]:
        raise ValueError(
            f"'{prefix}n_networks': {dims['n_networks']} networks of {dims['n_layers']} layers need "
            f"{2 * dims['n_networks'] * dims['n_layers']} weight arrays, the file holds {n_weights}"
        )
    names += [f"{prefix}{side}_scaler/{n}" for side in ("input", "output") for n in ("shift", "scale")]
    members = [
        f"{prefix}member_{m}/layers.{2 * k}.{w}"
        for m in range(dims["n_networks"])
        for k in range(dims["n_layers"])
        for w in ("weight", "bias")
    ]
    # Every member name must belong to the declared ensemble and layers (no stray layers or members).
    known = set(members)
    for name in declared:
        if name.startswith(f"{prefix}member_") and name not in known:
            raise ValueError(f"{name!r}: not a layer of the {dims['n_networks']} declared networks")
    return names + members


def _common_expected(declared: Declared, dims: Mapping[str, int]) -> list[str]:
    names: list[str] = []
    for m in range(dims["n_histories"]):
        names += [
            f"training/member_{m}/{n}"
            for n in ("train_loss", "validation_loss", "train_indices", "validation_indices", "n_adam_epochs")
        ]
        names += [f"training/member_{m}/{n}" for n in ("n_lbfgs_iterations", "time_s", "device")]
    if declared.get("basis/inner_product") not in NAMED_PRODUCTS:
        names += ["basis/matrix/rows", "basis/matrix/columns", "basis/matrix/values"]
    if any(n.startswith("errors/") for n in declared):
        names += [f"errors/{n}" for n in ("parameters", "rel_error_l2", "rel_error_h1", "proj_error_l2")]
        names += ["errors/proj_error_h1"]
    for name in declared:
        if name.startswith("training/member_") and int(name.split("/")[1].removeprefix("member_")) >= max(
            dims["n_histories"], 0
        ):
            raise ValueError(f"{name!r}: training history without its best_index")
    return names


def _layer_shape(match: Any, dims: Mapping[str, int]) -> tuple[int, ...] | None:
    index = int(match.group(2))
    if index % 2 or index // 2 >= dims["n_layers"]:
        return (-1,)  # no such layer: never matches
    k = index // 2
    if match.group(3) == "weight":
        return (dims[f"width_{k + 1}"], dims[f"width_{k}"])
    return (dims[f"width_{k + 1}"],)


def _history_loss_shape(match: Any, dims: Mapping[str, int]) -> tuple[int, ...] | None:
    name = match.group(2)
    n = dims.get(f"losses_{match.group(1)}", -1)
    return (n,) if name == "train_loss" else None


def _check_history(tree: Tree, prefix: str) -> None:
    """One ensemble member's training history, under ``prefix``."""
    n_loss = np.shape(tree[prefix + "train_loss"])[0]
    if np.shape(tree[prefix + "validation_loss"])[0] not in (0, n_loss):
        raise ValueError(f"'{prefix}validation_loss': {np.shape(tree[prefix + 'validation_loss'])[0]} values")
    _int(tree, prefix + "best_index", 0 if n_loss else -1, n_loss - 1 if n_loss else -1)
    _int(tree, prefix + "n_adam_epochs", 0, 1 << 40)
    _int(tree, prefix + "n_lbfgs_iterations", 0, 1 << 40)
    if prefix + "n_lm_iterations" in tree:
        _int(tree, prefix + "n_lm_iterations", 0, 1 << 40)
    _float(tree, prefix + "time_s", low=0.0)
    for name in ("train_indices", "validation_indices"):
        _indices(tree, prefix + name, 1 << 62)
    if prefix + "options" in tree:
        options = _json(tree, prefix + "options")
        if not isinstance(options, dict):
            raise ValueError(f"'{prefix}options': not a JSON object")
        automatic = options.get("automatic", [])
        if not isinstance(automatic, list) or not all(isinstance(name, str) for name in automatic):
            raise ValueError(f"'{prefix}options': 'automatic' is not a list of option names")


def check_mesh_and_basis(tree: Tree) -> None:
    """Check the values of the mesh, dof layout, POD basis and element entries of a model file (local).

    The entries that surrogate and dynamics files share: ``mesh/*`` (a known cell type and degree, cells of the
    matching node count with indices within the nodes, finite coordinates), ``layout/*`` (strictly increasing
    non-negative dof keys, finite coordinates), ``basis/*`` (finite modes, at least one non-negative singular value
    per mode, a finite orthonormality error and total energy >= 0, a named inner product or matrix triplets within
    the dofs with finite values) and ``element/*`` (a Lagrange element of degree <= 10 and value shape within 3).
    The arrays must be present with the right number of dimensions (the caller's schema checks that).

    Raises:
        ValueError: naming the first entry that is wrong.
    """
    n_dofs = np.shape(tree["layout/keys"])[0]
    n_modes = np.shape(tree["basis/modes"])[0]
    x = np.asarray(tree["mesh/x"])
    cells = np.asarray(tree["mesh/cells"])
    cell = _choice(tree, "mesh/cell_type", _CELL_TYPES)
    degree = _int(tree, "mesh/degree", 1, _MAX_DEGREE)
    if cells.ndim != 2 or cells.shape[1] != _nodes_per_cell(cell, degree):
        raise ValueError(f"'mesh/cells': shape {cells.shape} for {cell} cells of degree {degree}")
    if x.ndim != 2 or not 1 <= x.shape[1] <= 3:
        raise ValueError(f"'mesh/x': shape {x.shape}, expected (n_nodes, 1 to 3)")
    _indices(tree, "mesh/cells", x.shape[0])
    _finite(tree, "mesh/x")
    _int(tree, "mesh/lagrange_variant", 0, 64)
    keys = np.asarray(tree["layout/keys"])
    if keys.size and (keys[0] < 0 or np.any(np.diff(keys) <= 0)):
        raise ValueError("'layout/keys': not strictly increasing non-negative keys")
    _finite(tree, "layout/coordinates")
    _finite(tree, "basis/modes")
    sigma = _finite(tree, "basis/singular_values", low=0.0)
    if sigma.size < n_modes:
        raise ValueError(f"'basis/singular_values': {sigma.size} values for {n_modes} modes")
    _float(tree, "basis/orthonormality_error", low=0.0)
    if "basis/total_energy" in tree:
        _float(tree, "basis/total_energy", low=0.0)
    if tree["basis/inner_product"] not in NAMED_PRODUCTS:
        _indices(tree, "basis/matrix/rows", n_dofs)
        _indices(tree, "basis/matrix/columns", n_dofs)
        _finite(tree, "basis/matrix/values")
    _choice(tree, "element/family", ("P",))
    _int(tree, "element/degree", 0, _MAX_DEGREE)
    _int(tree, "element/lagrange_variant", -1, 64)
    shape = np.asarray(tree["element/shape"])
    if np.any(shape < 0) or np.any(shape > 3):
        raise ValueError("'element/shape': values outside [0, 3]")


def _check_surrogate(tree: Tree) -> None:
    check_mesh_and_basis(tree)
    names = _json(tree, "parameters/names")
    p = np.shape(tree["parameters/lower"])[0]
    if (
        not isinstance(names, list)
        or len(names) != p
        or not all(isinstance(n, str) and n for n in names)
        or len(set(names)) != p
    ):
        raise ValueError(f"'parameters/names': expected {p} distinct non-empty names, found {names!r}")
    lower, upper = _finite(tree, "parameters/lower"), _finite(tree, "parameters/upper")
    if np.any(lower >= upper):
        raise ValueError("'parameters/upper': not above 'parameters/lower'")
    for kind, prefix in _regressors(tree):
        if _choice(tree, f"{prefix}input_transform", INPUT_TRANSFORMS) == "log" and np.any(lower <= 0):
            raise ValueError(f"'{prefix}input_transform': 'log' with non-positive parameter bounds")
        if kind == "kernel":
            _check_kernel(tree, prefix)
        else:
            _check_network(tree, prefix)
        for side in ("input", "output"):
            _finite(tree, f"{prefix}{side}_scaler/shift")
            scale = _finite(tree, f"{prefix}{side}_scaler/scale")
            if np.any(scale <= 0):
                raise ValueError(f"'{prefix}{side}_scaler/scale': not positive")
    if _is_blend(tree):
        _check_blend(tree)
    m = 0
    while f"training/member_{m}/best_index" in tree:
        _check_history(tree, f"training/member_{m}/")
        m += 1
    if "training/parameters" in tree:
        _finite(tree, "training/parameters")
    if "errors/parameters" in tree:
        _finite(tree, "errors/parameters")
        for name in ("rel_error_l2", "rel_error_h1", "proj_error_l2", "proj_error_h1", "network_error"):
            if f"errors/{name}" in tree:
                _finite(tree, f"errors/{name}", low=0.0, nan=True)
    if not isinstance(_json(tree, "metadata"), dict):
        raise ValueError("'metadata': not a JSON object")
    _int(tree, "saved_on_ranks", 1, 1 << 30)


def _check_network(tree: Tree, prefix: str) -> None:
    _choice(tree, f"{prefix}activation", ACTIVATIONS)
    parts = [f"{prefix}norm_model/{n}" in tree for n in ("intercept", "slopes")]
    if any(parts):
        if not all(parts):
            raise ValueError(f"'{prefix}norm_model': needs both its intercept and its slopes")
        size = abs(_float(tree, f"{prefix}norm_model/intercept"))
        size += float(np.sum(np.abs(_finite(tree, f"{prefix}norm_model/slopes"))))
        if size > NORM_MODEL_BOUND:
            raise ValueError(f"'{prefix}norm_model': |w_0| + sum |w_j| = {size:.3g} beyond {NORM_MODEL_BOUND}")
    dtype = _choice(tree, f"{prefix}dtype", ("float32", "float64"))
    for name, value in tree.items():
        if name.startswith(f"{prefix}member_"):
            if np.asarray(value).dtype != np.dtype(dtype):
                raise ValueError(f"{name!r}: dtype {np.asarray(value).dtype}, the header says {dtype}")
            _finite(tree, name)


def _check_kernel(tree: Tree, prefix: str) -> None:
    method = _choice(tree, f"{prefix}method", tuple(KERNELS))
    _choice(tree, f"{prefix}kernel", KERNELS[method])
    for name in ("inputs", "weights", "polynomial"):
        _finite(tree, f"{prefix}{name}")
    scales = _finite(tree, f"{prefix}length_scales")
    if np.any(scales <= 0):
        raise ValueError(f"'{prefix}length_scales': not positive")
    if method == "gp" and _float(tree, f"{prefix}amplitude") <= 0:
        raise ValueError(f"'{prefix}amplitude': not positive")
    _float(tree, f"{prefix}amplitude")
    _float(tree, f"{prefix}noise", low=0.0)
    if method == "gp":
        L = _finite(tree, f"{prefix}cholesky")
        if np.any(np.triu(L, 1) != 0) or np.any(np.diag(L) <= 0):
            raise ValueError(f"'{prefix}cholesky': not lower triangular with a positive diagonal")
        _finite(tree, f"{prefix}output_variance", low=0.0)
    if f"{prefix}warping" in tree:
        rates = _finite(tree, f"{prefix}warping")
        if np.any(np.abs(rates) > MAX_WARPING):
            raise ValueError(f"'{prefix}warping': rates beyond +-{MAX_WARPING}")


def _check_blend(tree: Tree) -> None:
    """A blend's weights: the kernel's and the network's, finite, within [0, 1], summing to 1."""
    weights = _finite(tree, "blend/weights")
    if np.any(weights < 0) or np.any(weights > 1):
        raise ValueError(f"'blend/weights': {weights} outside [0, 1]")
    if abs(float(np.sum(weights)) - 1.0) > BLEND_WEIGHT_TOLERANCE:
        raise ValueError(f"'blend/weights': {weights} do not sum to 1")


_SURROGATE_FIELDS = [
    Field("mesh/cells", dtype="iu", shape=("*", "nodes_per_cell")),
    Field("mesh/x", shape=("n_nodes", "gdim")),
    Field("mesh/cell_type", "str"),
    Field("mesh/degree", "int"),
    Field("mesh/lagrange_variant", "int"),
    Field("layout/keys", dtype="iu", shape=("n_dofs",)),
    Field("layout/coordinates", shape=("n_dofs", 3)),
    Field("basis/modes", shape=("n_modes", "n_dofs")),
    Field("basis/singular_values", ndim=1),
    Field("basis/orthonormality_error", "float"),
    Field("basis/total_energy", "float", required=False),
    Field("basis/inner_product", "str"),
    Field(r"basis/matrix/(rows|columns)", dtype="iu", shape=("nnz",)),
    Field("basis/matrix/values", shape=("nnz",), required=False),
    Field("parameters/names", "str"),
    Field("parameters/lower", ndim=1),
    Field("parameters/upper", shape=("p",)),
    Field("metadata", "str"),
    Field("saved_on_ranks", "int"),
    Field(r"versions/[A-Za-z0-9_.-]+", "str"),
    Field("element/family", "str"),
    Field("element/degree", "int"),
    Field("element/lagrange_variant", "int"),
    Field("element/discontinuous", "bool"),
    Field("element/shape", dtype="iu", ndim=1),
    Field("element/scalar", "bool"),
    Field("element/signature", "str"),
    Field(_NET + "hidden_layers", dtype="iu", ndim=1, required=False),
    Field(_NET + "n_hidden", "int", required=False),
    Field(_NET + "activation", "str", required=False),
    Field(_NET + "input_transform", "str", required=False),
    Field(_NET + "n_in", "int", required=False),
    Field(_NET + "n_out", "int", required=False),
    Field(_NET + "n_networks", "int", required=False),
    Field(_NET + "dtype", "str", required=False),
    Field(_NET + "input_scaler/(shift|scale)", shape=("p",)),
    Field(_NET + "output_scaler/(shift|scale)", shape=("n_modes",)),
    Field(_NET + "norm_model/intercept", "float", required=False),
    Field(_NET + "norm_model/slopes", shape=("p",), required=False),
    Field(_MEMBER, shape=_layer_shape),
    Field(_KER + "(method|kernel|input_transform)", "str"),
    Field(_KER + "(n_in|n_out)", "int"),
    Field(_KER + "(amplitude|noise)", "float"),
    Field(_KER + "inputs", shape=("n_train", "p"), required=False),
    Field(_KER + "weights", shape=("n_train", "n_modes"), required=False),
    Field(_KER + "polynomial", shape=("n_poly", "n_modes"), required=False),
    Field(_KER + "length_scales", shape=("p",), required=False),
    Field(_KER + "cholesky", shape=("n_train", "n_train"), required=False),
    Field(_KER + "output_variance", shape=("n_modes",), required=False),
    Field(_KER + "warping", shape=("p",), required=False),
    Field(_KER + "input_scaler/(shift|scale)", shape=("p",)),
    Field(_KER + "output_scaler/(shift|scale)", shape=("n_modes",)),
    Field("blend/weights", shape=(2,), required=False),
    Field(_HISTORY + "(train_loss|validation_loss)", shape=_history_loss_shape, ndim=1),
    Field(_HISTORY + "(train_indices|validation_indices)", dtype="iu", ndim=1),
    Field(_HISTORY + "(best_index|n_adam_epochs|n_lbfgs_iterations)", "int"),
    Field(_HISTORY + "n_lm_iterations", "int", required=False),
    Field(_HISTORY + "time_s", "float"),
    Field(_HISTORY + "device", "str"),
    Field(_HISTORY + "options", "str", required=False),
    Field("training/parameters", shape=("*", "p"), required=False),
    Field("errors/parameters", shape=("n_test", "p"), required=False),
    Field("errors/(rel_error_l2|rel_error_h1|proj_error_l2|proj_error_h1|network_error)", shape=("n_test",)),
]


#: Surrogate files (``.femml``): format version 1 holds a network, version 2 a network (with its resolved training
#: options) or a kernel regressor (``kernel/``), version 3 also a blend of the two (``blend/``); fem_ml reads every
#: version and writes the lowest that holds the surrogate (3 for a blend only, else 2).
SURROGATE = Format(
    "fem_ml.surrogate",
    3,
    "fem_ml surrogate",
    Schema(_SURROGATE_FIELDS, dimensions=_surrogate_dims, check=_check_surrogate, expected=_surrogate_expected),
)


# --- snapshot store ------------------------------------------------------------------------------------------------


def _check_store(tree: Tree) -> None:
    keys = np.asarray(tree["layout/keys"])
    if keys.size and (keys[0] < 0 or np.any(np.diff(keys) <= 0)):
        raise ValueError("'layout/keys': not strictly increasing non-negative keys")
    _finite(tree, "layout/coordinates")
    if _int(tree, "n_dofs", 0, 1 << 40) != keys.size:
        raise ValueError(f"'n_dofs': {tree['n_dofs']}, but {keys.size} dof keys")
    bounds = _json(tree, "parameter_space")
    if not isinstance(bounds, dict):
        raise ValueError("'parameter_space': not a JSON object")
    _int(tree, "written_on_ranks", 1, 1 << 30)


#: The header ``store.h5`` of a snapshot store.
STORE = Format(
    "fem_ml.snapshot_store",
    1,
    "fem_ml snapshot store",
    Schema(
        [
            Field("layout/keys", dtype="iu", shape=("n_dofs",)),
            Field("layout/coordinates", shape=("n_dofs", 3)),
            Field("element", "str"),
            Field("n_dofs", "int"),
            Field("parameter_space", "str"),
            Field("written_on_ranks", "int"),
        ],
        dimensions=lambda declared, read_small: {"n_dofs": _shape(declared, "layout/keys")[0]},
        check=_check_store,
    ),
)


def _check_sample(tree: Tree) -> None:
    _int(tree, "index", 0, 1 << 40)
    _finite(tree, "parameters")
    _float(tree, "solve_time", low=0.0)
    if tree["ok"] and "values" not in tree:
        raise ValueError("'values': missing for a successful solve")


#: One entry ``samples/NNNNNN.h5`` of a snapshot store (``dims={"n_dofs": ...}`` from the store's header).
SAMPLE = Format(
    "fem_ml.snapshot",
    1,
    "fem_ml snapshot entry",
    Schema(
        [
            Field("index", "int"),
            Field("parameters", ndim=1),
            Field("ok", "bool"),
            Field("message", "str"),
            Field("solve_time", "float"),
            Field("values", shape=("n_dofs",), required=False),
        ],
        check=_check_sample,
    ),
)
