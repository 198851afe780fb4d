# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import json
import os
from pathlib import Path

from mpi4py import MPI

import h5py
import numpy as np
import pytest
from conftest import SPACE, paraview_arrays, raises_on_all_ranks
from dolfinx import fem

import fem_ml


@pytest.fixture(scope="module")
def rom(snapshots):
    basis = fem_ml.pod(snapshots, inner_product="h1", n_modes=6)
    return fem_ml.train_surrogate(basis, snapshots, SPACE, adam_epochs=100, lbfgs_iterations=10, progress=False)


def _global_range(comm, values):
    return comm.allreduce(float(values.min()), op=MPI.MIN), comm.allreduce(float(values.max()), op=MPI.MAX)


def test_write_comparison_xdmf(comm, tmp_dir, rom, test_snapshots):
    path = fem_ml.write_comparison(
        tmp_dir / "cmp.xdmf", rom, test_snapshots.parameters[:2], test_snapshots.subset([0, 1])
    )
    assert path.exists() and path.with_suffix(".h5").exists()
    meta = json.loads(Path(str(path) + ".json").read_text())
    assert meta["parameter_names"] == list(SPACE.names)
    assert meta["steps"][1]["parameters"] == SPACE.to_dict(test_snapshots.parameters[1])
    # No temporary files are left behind.
    assert sorted(p.name for p in tmp_dir.iterdir()) == ["cmp.h5", "cmp.xdmf", "cmp.xdmf.json"]
    prediction = rom.predict_values(test_snapshots.parameters[:2])
    with h5py.File(path.with_suffix(".h5"), "r") as f:
        groups = sorted(f["Function"].keys())
        assert groups == ["error", "prediction", "truth"]
        steps = sorted(f["Function/error"].keys(), key=float)
        assert len(steps) == 2
        error_1 = f["Function/error"][steps[1]][...].ravel()
    lo, hi = _global_range(comm, prediction[:, 1] - test_snapshots.values[:, 1])
    assert error_1.min() == pytest.approx(lo, rel=1e-12, abs=1e-15)
    assert error_1.max() == pytest.approx(hi, rel=1e-12, abs=1e-15)


def test_write_vtx(comm, tmp_dir, rom, test_snapshots):
    path = fem_ml.write_comparison(
        tmp_dir / "cmp.bp", rom, test_snapshots.parameters[:2], test_snapshots.subset([0, 1])
    )
    assert path.is_dir() and (path / "md.idx").exists()
    assert sum(f.stat().st_size for f in path.iterdir()) > 0
    # Rewriting replaces the folder as a whole.
    fem_ml.write_comparison(path, rom, test_snapshots.parameters[:1], test_snapshots.subset([0]))
    assert path.is_dir() and not [p for p in tmp_dir.iterdir() if p.name.startswith(".")]


def test_write_fields_higher_degree_goes_through_interpolation(comm, tmp_dir, problem):
    V, _ = problem
    W = fem.functionspace(V.mesh, ("Lagrange", 2))
    f = fem.Function(W)
    f.interpolate(lambda x: x[0] ** 2)
    n = W.dofmap.index_map.size_local
    path = fem_ml.write_fields(tmp_dir / "p2.xdmf", W, [{"f": f.x.array[:n]}], times=[0.5])
    with h5py.File(path.with_suffix(".h5"), "r") as h5:
        values = h5["Function/f/0_5"][...].ravel()
    assert values.max() == pytest.approx(1.0) and values.min() == pytest.approx(0.0)


def test_bad_output_keeps_existing_files(comm, tmp_dir, rom, test_snapshots):
    good = fem_ml.write_comparison(
        tmp_dir / "keep.xdmf", rom, test_snapshots.parameters[:1], test_snapshots.subset([0])
    )
    before = good.read_bytes()
    comm.barrier()
    raises_on_all_ranks(
        comm,
        ValueError,
        "must end in .xdmf, .bp or a suffix meshio",
        fem_ml.write_fields,
        tmp_dir / "keep.txt",
        rom.V,
        [{"a": None}],
    )
    wrong = np.zeros((3, 1))
    raises_on_all_ranks(
        comm, ValueError, "Truth has shape", fem_ml.write_comparison, good, rom, test_snapshots.parameters[:1], wrong
    )
    raises_on_all_ranks(comm, ValueError, "outside its bounds", fem_ml.write_comparison, good, rom, [[2.0] * 4], wrong)
    assert good.read_bytes() == before


def test_write_json(comm, tmp_dir):
    path = fem_ml.write_json(tmp_dir / "sub" / "s.json", {"a": 1.5}, comm=comm)
    assert json.loads(path.read_text()) == {"a": 1.5}
    raises_on_all_ranks(
        comm, TypeError, "Cannot write", fem_ml.write_json, tmp_dir / "t.json", {"a": object()}, comm=comm
    )
    assert not (tmp_dir / "t.json").exists()


@pytest.mark.paraview
def test_paraview_opens_xdmf(comm, tmp_dir, rom, test_snapshots):
    """ParaView 5.11's Xdmf3 reader opens our XDMF and finds the named arrays with the right ranges."""
    points = test_snapshots.parameters[:3]
    path = fem_ml.write_comparison(tmp_dir / "pv.xdmf", rom, points, test_snapshots.subset([0, 1, 2]))
    prediction = rom.predict_values(points)
    expected = {
        "truth": [_global_range(comm, test_snapshots.values[:, k]) for k in range(3)],
        "prediction": [_global_range(comm, prediction[:, k]) for k in range(3)],
        "error": [_global_range(comm, prediction[:, k] - test_snapshots.values[:, k]) for k in range(3)],
    }

    result = paraview_arrays(comm, path)
    assert result["times"] == [0.0, 1.0, 2.0]
    assert sorted(result["arrays"]) == ["error", "prediction", "truth"]
    for name, ranges in expected.items():
        for (lo, hi), (pv_lo, pv_hi) in zip(ranges, result["arrays"][name], strict=True):
            scale = max(abs(lo), abs(hi))
            assert pv_lo == pytest.approx(lo, abs=1e-6 * scale) and pv_hi == pytest.approx(hi, abs=1e-6 * scale)


def test_write_modes_holds_each_mode_and_its_energy(comm, tmp_dir, rom):
    path = fem_ml.write_modes(tmp_dir / "modes.xdmf", rom.basis, n_modes=3)
    meta = json.loads((tmp_dir / "modes.xdmf.json").read_text())
    assert [step["mode"] for step in meta["steps"]] == [0, 1, 2]
    sigma = rom.basis.singular_values
    total = np.sum(sigma**2) if rom.basis.total_energy is None else rom.basis.total_energy
    energies = [step["retained_energy"] for step in meta["steps"]]
    np.testing.assert_allclose(energies, np.cumsum(sigma[:3] ** 2) / total, rtol=1e-12)
    assert 0 < energies[0] < energies[1] < energies[2] <= rom.basis.retained_energy + 1e-14
    np.testing.assert_allclose([step["singular_value"] for step in meta["steps"]], sigma[:3], rtol=1e-14)
    with h5py.File(path.with_suffix(".h5"), "r") as f:
        stored = np.concatenate([f["Function/mode/2"][()].reshape(-1)])
    expected = np.concatenate(comm.allgather(rom.basis.modes[:, 2]))
    np.testing.assert_allclose(np.sort(stored), np.sort(expected), atol=1e-14)  # same values, any order
    raises_on_all_ranks(comm, ValueError, "n_modes must be in", fem_ml.write_modes, tmp_dir / "m.xdmf", rom.basis,
                        n_modes=99)  # fmt: skip


def test_write_sweep_steps_through_one_parameter(comm, tmp_dir, rom):
    values = np.linspace(0.2, 0.9, 4)
    fem_ml.write_sweep(tmp_dir / "sweep.xdmf", rom, "mu2", values, at={n: 0.5 for n in SPACE.names}, unit="K")
    meta = json.loads((tmp_dir / "sweep.xdmf.json").read_text())
    assert meta["units"] == {"prediction": "K"} and meta["swept_parameter"] == "mu2"
    points = np.array([[step["parameters"][n] for n in SPACE.names] for step in meta["steps"]])
    np.testing.assert_allclose(points[:, 2], values)
    np.testing.assert_allclose(points[:, [0, 1, 3]], 0.5)
    with h5py.File(tmp_dir / "sweep.h5", "r") as f:
        steps = sorted(f["Function/prediction"], key=lambda key: float(key.replace("_", ".")))
        assert len(steps) == 4
        stored = f[f"Function/prediction/{steps[3]}"][()].reshape(-1)
    expected = np.concatenate(comm.allgather(rom.predict_values(points[3])[:, 0]))
    np.testing.assert_allclose(np.sort(stored), np.sort(expected), rtol=1e-12, atol=1e-14)
    for bad, match in (
        (dict(parameter="nope", values=values), "Unknown parameter"),
        (dict(parameter="mu0", values=values[::-1]), "strictly increasing"),
        (dict(parameter="mu0", values=[0.5, 2.0]), "bounds"),
    ):
        raises_on_all_ranks(comm, ValueError, match, fem_ml.write_sweep, tmp_dir / "bad.xdmf", rom, **bad)
    assert not (tmp_dir / "bad.xdmf").exists()
    raises_on_all_ranks(comm, ValueError, "Units given for", fem_ml.write_fields, tmp_dir / "bad.xdmf", rom.V,
                        [{"u": rom.basis.modes[:, 0]}], units={"v": "m"})  # fmt: skip


def test_write_vtu_through_meshio(comm, tmp_dir, rom, test_snapshots):
    """``.vtu`` goes through meshio on rank 0: one array per field and step, the same values as the prediction."""
    import meshio

    path = fem_ml.write_comparison(
        tmp_dir / "cmp.vtu", rom, test_snapshots.parameters[:2], test_snapshots.subset([0, 1])
    )
    prediction = rom.predict_values(test_snapshots.parameters[:2])
    lo, hi = _global_range(comm, prediction[:, 1])
    if comm.rank == 0:
        mesh = meshio.read(path)
        assert sorted(mesh.point_data) == sorted(
            f"{n}_{k:04d}" for n in ("error", "prediction", "truth") for k in (0, 1)
        )
        values = mesh.point_data["prediction_0001"]
        assert values.min() == pytest.approx(lo, rel=1e-12) and values.max() == pytest.approx(hi, rel=1e-12)
        assert mesh.cells[0].type == "triangle"
    assert sorted(p.name for p in tmp_dir.iterdir()) == ["cmp.vtu", "cmp.vtu.json"]


def test_outputs_never_replace_foreign_files(comm, tmp_dir, rom):
    """An existing file fem_ml did not write is kept unless overwrite=True; fem_ml's own outputs are replaced."""
    values = [{"u": rom.basis.modes[:, 0]}]
    user = tmp_dir / "user.h5"
    if comm.rank == 0:
        user.write_bytes(b"precious")
    comm.barrier()
    raises_on_all_ranks(
        comm, ValueError, "not written by fem_ml", fem_ml.write_fields, tmp_dir / "user.xdmf", rom.V, values
    )
    assert user.read_bytes() == b"precious" and not (tmp_dir / "user.xdmf").exists()
    fem_ml.write_fields(tmp_dir / "user.xdmf", rom.V, values, overwrite=True)
    fem_ml.write_fields(tmp_dir / "user.xdmf", rom.V, values)  # now fem_ml's own: replaced without asking
    assert h5py.is_hdf5(user)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("user.xdmf", "user.h5"):
        assert (tmp_dir / name).stat().st_mode & 0o777 == 0o666 & ~mask
    raises_on_all_ranks(
        comm, ValueError, "it is the input file", fem_ml.write_fields, tmp_dir / "user.xdmf", rom.V, values,
        protect=[tmp_dir / "user.h5"],
    )  # fmt: skip
    assert not [p for p in tmp_dir.iterdir() if p.name.startswith(".")]
