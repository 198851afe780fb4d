# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The ParaView plugin: the same field as fem_ml itself, bounded parameters, clear errors for damaged files.

The runtime (NumPy and h5py only) is tested on 1 and 2 ranks against the surrogate; the plugins themselves in
``pvpython`` (tests marked ``paraview``), against ``python -m fem_ml predict`` and the surrogate's own values.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from mpi4py import MPI

import h5py
import numpy as np
import pytest
import ufl
from conftest import SPACE, clean_env, on_root
from dolfinx import fem, mesh
from dolfinx.fem.petsc import LinearProblem

import fem_ml
from fem_ml.paraview import load_script, plugin_path, write_model_plugin
from fem_ml.paraview.runtime import SurrogateModel

TRAIN = {"adam_epochs": 60, "lbfgs_iterations": 5, "hidden_layers": (16, 16), "n_networks": 2, "progress": False}
ELASTIC_SPACE = fem_ml.ParameterSpace({"theta": (0.0, 1.5), "g": (0.5, 1.0)})


def _elasticity(comm: MPI.Comm):
    """A P2 vector cantilever on tetrahedra under a traction of angle ``theta`` and size ``g``: ``(V, solve)``."""
    domain = mesh.create_box(comm, [np.zeros(3), np.array([2.0, 0.5, 0.5])], [4, 1, 1], mesh.CellType.tetrahedron)
    V = fem.functionspace(domain, ("Lagrange", 2, (3,)))
    traction = fem.Constant(domain, np.zeros(3))
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    eps = ufl.sym(ufl.grad(u))
    a = ufl.inner(2.0 * eps + 1.25 * ufl.tr(eps) * ufl.Identity(3), ufl.grad(v)) * ufl.dx
    L = ufl.inner(traction, v) * ufl.ds
    fdim = domain.topology.dim - 1
    clamped = fem.locate_dofs_topological(
        V, fdim, mesh.locate_entities_boundary(domain, fdim, lambda x: np.isclose(x[0], 0.0))
    )
    uh = fem.Function(V, name="displacement")
    problem = LinearProblem(
        a, L, bcs=[fem.dirichletbc(np.zeros(3), clamped, V)], u=uh, petsc_options_prefix="plugin_elasticity_",
        petsc_options={"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    )  # fmt: skip

    def solve(p: np.ndarray) -> fem.Function:
        theta, g = p
        traction.value[:] = (0.0, g * np.cos(theta), g * np.sin(theta))
        problem.solve()
        return uh

    return V, solve


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    comm = MPI.COMM_WORLD
    path = str(tmp_path_factory.mktemp("plugin")) if comm.rank == 0 else None
    return Path(comm.bcast(path, root=0))


@pytest.fixture(scope="module")
def thermal(snapshots, folder):
    """A P1 scalar surrogate (ensemble of 2) of the thermal block, saved: ``(rom, path)``."""
    basis = fem_ml.pod(snapshots, inner_product="h1", n_modes=6)
    rom = fem_ml.train_surrogate(basis, snapshots, SPACE, seed=0, **TRAIN)
    path = folder / "thermal.femml"
    fem_ml.save(rom, path)
    return rom, path


@pytest.fixture(scope="module")
def elastic(folder):
    """A P2 vector surrogate (ensemble of 2) of a small cantilever, saved: ``(rom, path)``."""
    V, solve = _elasticity(MPI.COMM_WORLD)
    train = ELASTIC_SPACE.sample(12, method="lhs", seed=0)
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=ELASTIC_SPACE, progress=False)
    basis = fem_ml.pod(snapshots, inner_product="l2", n_modes=5)
    rom = fem_ml.train_surrogate(basis, snapshots, ELASTIC_SPACE, seed=0, **TRAIN)
    path = folder / "elastic.femml"
    fem_ml.save(rom, path)
    return rom, path


WAVE_SPACE = fem_ml.ParameterSpace({"a": (0.5, 2.0), "b": (0.0, 1.0)})


def _wave(comm: MPI.Comm, element: tuple) -> tuple[fem.FunctionSpace, object]:
    """A scalar field ``sin(a x) cos(b y) + a b x y`` on a 6 x 6 unit square in ``element``: ``(V, solve)``."""
    V = fem.functionspace(mesh.create_unit_square(comm, 6, 6), element)
    u = fem.Function(V, name="wave")

    def solve(p: np.ndarray) -> fem.Function:
        a, b = p
        u.interpolate(lambda x: np.sin(a * x[0]) * np.cos(b * x[1]) + a * b * x[0] * x[1])
        return u

    return V, solve


def _wave_model(path: Path, element: tuple) -> fem_ml.Surrogate:
    """Train a small surrogate of :func:`_wave` in ``element`` and save it to ``path``."""
    V, solve = _wave(MPI.COMM_WORLD, element)
    snapshots = fem_ml.collect_snapshots(solve, WAVE_SPACE.sample(12, method="lhs", seed=0), V, progress=False)
    rom = fem_ml.train_surrogate(fem_ml.pod(snapshots, inner_product="l2", n_modes=4), snapshots, WAVE_SPACE, seed=0,
                                 **TRAIN)  # fmt: skip
    fem_ml.save(rom, path)
    return rom


@pytest.fixture(scope="module")
def scalar_p2(folder):
    """A P2 scalar surrogate (ensemble of 2) on triangles, saved: ``(rom, path)``."""
    path = folder / "scalar_p2.femml"
    return _wave_model(path, ("Lagrange", 2)), path


def _by_coordinates(points: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``values`` (one row per point of ``points``) at the points ``at`` (each one of ``points``)."""
    scale = 1e-8 * max(1.0, float(np.abs(points).max()))
    index = {tuple(k): i for i, k in enumerate(np.round(points / scale).astype(np.int64))}
    rows = [index[tuple(k)] for k in np.round(at / scale).astype(np.int64)]
    return values[rows]


def _surrogate_values(rom, mu) -> tuple[np.ndarray, np.ndarray]:
    """The surrogate's field at ``mu`` at every dof point of the mesh, on every rank: ``(points, values)``."""
    V = rom.V
    bs = V.dofmap.index_map_bs
    n = V.dofmap.index_map.size_local
    values = rom.predict_values(np.atleast_2d(mu))[:, 0].reshape(n, bs)
    x = V.tabulate_dof_coordinates()[:n]
    comm = V.mesh.comm
    return np.vstack(comm.allgather(x)), np.vstack(comm.allgather(values))


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("case", ["thermal", "elastic", "scalar_p2"])
def test_runtime_matches_surrogate(case, request):
    """The plugin's engine (no DOLFINx, no torch) gives the surrogate's field and its ensemble deviation."""
    rom, path = request.getfixturevalue(case)
    model = SurrogateModel(path)
    mu = 0.3 * rom.space.lower + 0.7 * rom.space.upper
    mean, deviation = model.evaluate(mu)
    points, values = _surrogate_values(rom, mu)
    bs = values.shape[1]
    assert model.points.shape == points.shape and model.n_components == (1 if bs == 1 else 3)
    assert _relative(_by_coordinates(model.points, mean, points)[:, :bs], values) < 1e-12
    members = rom.network.members(mu[None, :])[:, 0, :]
    fields = np.stack([rom.basis.reconstruct(c) for c in members])
    n = rom.V.dofmap.index_map.size_local
    std = np.sqrt(np.mean((fields - fields.mean(axis=0)) ** 2, axis=0)).reshape(n, bs)
    std = np.vstack(rom.V.mesh.comm.allgather(std))
    assert deviation is not None and _relative(_by_coordinates(model.points, deviation, points)[:, :bs], std) < 1e-10
    expected_cells = {"thermal": rom.V.mesh.topology.index_map(2).size_global, "elastic": 4 * 6, "scalar_p2": 72}
    assert model.cells.shape == (expected_cells[case], {"thermal": 3, "elastic": 10, "scalar_p2": 6}[case])


@pytest.mark.parametrize(
    ("element", "match"),
    [(("Lagrange", 3), "supports P1/P2 .* not degree 3 on triangle"), (("DG", 1), "not DG1")],
)
def test_runtime_refuses_other_elements(element, match, folder):
    """A valid surrogate in an element the grid cannot show (P3, discontinuous) is refused with a message."""
    path = folder / f"{element[0]}{element[1]}.femml"
    _wave_model(path, element).destroy()
    with pytest.raises(ValueError, match=match):
        SurrogateModel(path)


def test_runtime_refuses_bad_points_and_files(thermal, folder):
    _, path = thermal
    model = SurrogateModel(path)
    with pytest.raises(ValueError, match=r"mu0 = 5\.0 is outside its bounds"):
        model.evaluate([5.0, 0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="expected 4"):
        model.evaluate([0.5, 0.5])

    def damaged() -> Path:
        target = folder / "damaged.femml"
        data = bytearray(path.read_bytes())
        with h5py.File(path, "r") as f:
            offset = f["basis/modes"].id.get_offset()
        data[offset + 8] ^= 0xFF
        target.write_bytes(bytes(data))
        return target

    target = Path(on_root(MPI.COMM_WORLD, lambda: str(damaged())))
    with pytest.raises(fem_ml.FileFormatError, match="checksum"):
        SurrogateModel(target)


def test_model_plugin_and_cli(thermal, folder):
    _, path = thermal

    def run() -> str:
        written = write_model_plugin(path, folder / "plugins")
        text = written.read_text()
        compile(text, str(written), "exec")  # valid Python
        # Written by fem_ml's atomic writer: its permission rule, nothing left beside it, replaced when written again.
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask
        written.write_text("# an older plugin\n")
        assert write_model_plugin(path, folder / "plugins") == written and written.read_text() == text
        assert sorted(p.name for p in written.parent.iterdir()) == [written.name]
        proc = subprocess.run(
            [sys.executable, "-m", "fem_ml", "paraview-plugin", str(path), "-o", str(folder / "cli")],
            capture_output=True, text=True, timeout=120, env=clean_env(),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert str(plugin_path()) in proc.stdout and str(load_script().parent) in proc.stdout
        assert (folder / "cli" / "femml_thermal.py").read_text() == text
        return text

    text = on_root(MPI.COMM_WORLD, run)
    for name, lo, hi in zip(SPACE.names, SPACE.lower, SPACE.upper, strict=True):
        assert f"name={name!r}" in text and f"min={float(lo)!r}, max={float(hi)!r}" in text


def _pvpython(folder: Path, cases: list[dict]) -> tuple[list, str]:
    spec, out = folder / "cases.json", folder / "plugin_out.json"
    spec.write_text(json.dumps(cases))
    script = Path(__file__).with_name("paraview_plugin_check.py")
    proc = subprocess.run(
        ["xvfb-run", "-a", "pvpython", str(script), str(plugin_path().parent), str(spec), str(out)],
        capture_output=True, text=True, timeout=300, env=clean_env(),
    )  # fmt: skip
    assert proc.returncode == 0 and "PLUGIN_CHECK_DONE" in proc.stdout, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stderr


def _predict_xdmf(model: Path, names: list[str], mu: np.ndarray, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """``python -m fem_ml predict`` at ``mu``: the geometry and the values it wrote."""
    point = ",".join(f"{n}={float(v)!r}" for n, v in zip(names, mu, strict=True))
    proc = subprocess.run(
        [sys.executable, "-m", "fem_ml", "predict", str(model), "--mu", point, "-o", str(out)],
        capture_output=True, text=True, timeout=300, env=clean_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out.with_suffix(".h5"), "r") as f:
        geometry = f["Mesh/mesh/geometry"][()]
        group = f["Function"][next(iter(f["Function"]))]
        values = group[next(iter(group))][()]
    return np.pad(geometry, ((0, 0), (0, 3 - geometry.shape[1]))), values


@pytest.mark.paraview
def test_plugin_in_paraview(thermal, elastic, scalar_p2, folder):
    """In pvpython: the reader and a model's sliders give predict's field to 1e-12 (P1 and P2 scalar, P2 vector);
    bounds, damage and other elements refused with a message."""
    comm = MPI.COMM_WORLD
    (rom_t, path_t), (rom_e, path_e), (rom_s, path_s) = thermal, elastic, scalar_p2
    mu_t = np.array([0.3, 0.7, 0.45, 0.9])
    mu_e = np.array([0.4, 0.8])
    mu_s = np.array([1.3, 0.6])
    expected = [_surrogate_values(rom, mu) for rom, mu in ((rom_t, mu_t), (rom_e, mu_e), (rom_s, mu_s))]
    path_p3 = folder / "p3_pv.femml"
    _wave_model(path_p3, ("Lagrange", 3)).destroy()

    def run() -> None:
        plugin = write_model_plugin(path_t, folder / "plugins")
        damaged = folder / "damaged_pv.femml"
        data = bytearray(path_t.read_bytes())
        # Damage metadata the plugin must read (the object header of the modes): zeroed raw values would be valid.
        with h5py.File(path_t, "r") as f:
            header = h5py.h5o.get_info(f["basis/modes"].id).addr
        data[header : header + 64] = bytes(64)
        damaged.write_bytes(bytes(data))
        cases = [
            {"model": str(path_t), "parameters": mu_t.tolist()},
            {"model": str(path_e), "parameters": mu_e.tolist()},
            {"model": str(path_s), "parameters": mu_s.tolist()},
            {"model": str(path_t), "parameters": mu_t.tolist(), "plugin": str(plugin), "names": list(SPACE.names)},
            {"model": str(path_t), "parameters": [5.0, 0.5, 0.5, 0.5]},
            {"model": str(damaged), "parameters": mu_t.tolist()},
            {"model": str(path_p3), "parameters": mu_s.tolist()},
        ]
        results, stderr = _pvpython(folder, cases)
        reader_t, reader_e, reader_s, sliders, out_of_bounds, broken, p3 = results
        for result, (points, values) in zip((reader_t, reader_e, reader_s), expected, strict=True):
            got = np.asarray(result["arrays"]["prediction"]).reshape(len(result["points"]), -1)
            bs = values.shape[1]
            assert _relative(_by_coordinates(np.asarray(result["points"]), got, points)[:, :bs], values) < 1e-12
            assert "deviation" in result["arrays"]
        # Triangles, quadratic tetrahedra, quadratic triangles.
        assert reader_t["cell_types"] == [5] and reader_e["cell_types"] == [24] and reader_s["cell_types"] == [22]
        assert reader_t["field"] == dict(zip(SPACE.names, mu_t.tolist(), strict=True))
        # The model's plugin: one slider per parameter, named and bounded like it, the same field.
        assert sliders["sliders"] == {
            n: [lo, hi] for n, lo, hi in zip(SPACE.names, SPACE.lower, SPACE.upper, strict=True)
        }
        assert sliders["arrays"]["prediction"] == reader_t["arrays"]["prediction"]
        # predict writes P1 values at the mesh nodes: the plugin has the same there, to 1e-12.
        for model, names, mu, result in (
            (path_t, SPACE.names, mu_t, reader_t),
            (path_e, ELASTIC_SPACE.names, mu_e, reader_e),
            (path_s, WAVE_SPACE.names, mu_s, reader_s),
        ):
            geometry, values = _predict_xdmf(model, list(names), mu, folder / f"{model.stem}_predict.xdmf")
            got = np.asarray(result["arrays"]["prediction"]).reshape(len(result["points"]), -1)
            assert _relative(_by_coordinates(np.asarray(result["points"]), got, geometry), values) < 1e-12
        assert out_of_bounds is None and "mu0 = 5.0 is outside its bounds" in stderr
        assert broken is None and f"fem_ml: {damaged}" in stderr
        assert p3 is None and f"fem_ml: {path_p3}" in stderr and "not degree 3 on triangle" in stderr

    on_root(comm, run)
