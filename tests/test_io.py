# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import json
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
        comm, ValueError, "must end in .xdmf or .bp", fem_ml.write_fields, tmp_dir / "keep.vtu", rom.V, [{"a": None}]
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
        comm, OSError, "Cannot write", fem_ml.write_json, tmp_dir / "t.json", {"a": object()}, comm=comm
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
