# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import json
import math
import subprocess
import sys
from pathlib import Path

from mpi4py import MPI

import h5py
import numpy as np
import pytest
from conftest import clean_env, on_root, paraview_arrays
from thermal_block import main

import fem_ml

KEYS = {
    "n_ranks", "n_dofs", "n_train", "n_test", "n_modes", "rel_error_l2_mean", "rel_error_l2_max",
    "rel_error_h1_mean", "proj_error_h1_mean", "t_snapshots_s", "t_pod_s", "t_train_s",
    "t_full_solve_median_s", "t_surrogate_median_s", "speedup_median",
}  # fmt: skip


def test_thermal_block_demo_small(comm, tmp_dir):
    summary = main(
        comm, n_cells=12, n_train=24, n_test=6, n_networks=2, hidden_layers=(16, 16), adam_epochs=200,
        lbfgs_iterations=20, out_dir=tmp_dir, progress=False,
    )  # fmt: skip
    written = json.loads((tmp_dir / "summary.json").read_text())
    assert KEYS <= set(written)
    assert written == summary
    assert written["n_ranks"] == comm.size and written["n_dofs"] == 13 * 13
    assert all(math.isfinite(v) for v in written.values() if not isinstance(v, str))
    assert written["n_failed_solves"] == 0 and Path(written["surrogate_file"]).exists()
    assert 0 <= written["proj_error_h1_mean"] <= written["rel_error_h1_mean"] < 0.5
    assert np.isclose(written["speedup_median"], written["t_full_solve_median_s"] / written["t_surrogate_median_s"])
    for name in ("comparison.xdmf", "comparison.h5", "comparison.xdmf.json", "comparison.bp"):
        assert (tmp_dir / name).exists()


def xdmf_field(path: Path, name: str) -> np.ndarray:
    """Values of a P1 field in a DOLFINx XDMF/HDF5 file, sorted by node coordinates."""
    with h5py.File(path.with_suffix(".h5"), "r") as f:
        x = f["Mesh/mesh/geometry"][()]
        values = f[f"Function/{name}/0"][()].reshape(-1)
    return values[np.lexsort((np.round(x[:, 1], 10), np.round(x[:, 0], 10)))]


def test_saved_demo_surrogate_predicts_the_same_on_three_ranks(comm, tmp_dir):
    """The demo saves its surrogate; `python -m fem_ml predict` under `mpirun -n 3` reproduces its prediction."""
    main(
        comm, n_cells=12, n_train=24, n_test=4, n_networks=2, hidden_layers=(16, 16), adam_epochs=100,
        lbfgs_iterations=10, out_dir=tmp_dir, n_output=1, progress=False,
    )  # fmt: skip

    def predict_on_three_ranks():
        mu = json.loads((tmp_dir / "comparison.xdmf.json").read_text())["steps"][0]["parameters"]
        point = ",".join(f"{k}={v!r}" for k, v in mu.items())
        mpirun = Path(sys.executable).with_name("mpirun")
        model = str(tmp_dir / "thermal_block.femml")
        command = [str(mpirun), "-n", "3", sys.executable, "-m", "fem_ml", "predict", model,
                   "--mu", point, "--name", "prediction", "-o", str(tmp_dir / "cli.xdmf")]  # fmt: skip
        run = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        demo = xdmf_field(tmp_dir / "comparison.xdmf", "prediction")
        cli = xdmf_field(tmp_dir / "cli.xdmf", "prediction")
        assert np.max(np.abs(cli - demo)) <= 1e-12 * np.max(np.abs(demo))

    on_root(comm, predict_on_three_ranks)


def test_elasticity_demo_small(comm, tmp_dir):
    """Vector P2 field, energy inner product, von Mises output, and the saved vector surrogate reloads."""
    from elasticity import SPACE as ELASTIC
    from elasticity import main as elasticity_main

    summary = elasticity_main(
        comm, n_cells=(6, 2, 2), n_train=16, n_test=3, n_networks=1, hidden_layers=(16, 16), adam_epochs=100,
        lbfgs_iterations=10, out_dir=tmp_dir, n_output=2, progress=False,
    )  # fmt: skip
    assert KEYS <= set(summary)
    assert summary["n_dofs"] == 3 * 13 * 5 * 5  # P2 vertices + edge midpoints of a 6 x 2 x 2 box, 3 components
    assert 0 <= summary["proj_error_h1_mean"] <= summary["rel_error_h1_mean"] < 1.0
    for name in ("displacement.xdmf", "von_mises.xdmf", "elasticity.femml", "summary.json"):
        assert (tmp_dir / name).exists()
    rom = fem_ml.load(tmp_dir / "elasticity.femml", comm=comm)
    assert rom.V.dofmap.index_map_bs == 3 and rom.V.ufl_element().reference_value_shape == (3,)
    u = rom(ELASTIC.sample(1, seed=4)[0])
    assert np.isfinite(u.x.array).all() and comm.allreduce(np.abs(u.x.array).max(), op=MPI.MAX) > 0
    rom.destroy()


@pytest.mark.paraview
def test_elasticity_outputs_open_in_paraview(comm, tmp_dir):
    """The vector displacement (P2 shown on the P1 geometry) and the DG0 von Mises stress open in ParaView."""
    from elasticity import main as elasticity_main

    elasticity_main(
        comm, n_cells=(6, 2, 2), n_train=12, n_test=2, n_networks=1, hidden_layers=(8,), adam_epochs=20,
        lbfgs_iterations=0, out_dir=tmp_dir, n_output=2, progress=False,
    )  # fmt: skip
    displacement = paraview_arrays(comm, tmp_dir / "displacement.xdmf")
    assert displacement["times"] == [0.0, 1.0]
    assert sorted(displacement["arrays"]) == ["error", "prediction", "truth"]
    stress = paraview_arrays(comm, tmp_dir / "von_mises.xdmf")
    assert sorted(stress["cell_arrays"]) == ["von_mises_error", "von_mises_prediction", "von_mises_truth"]
    for lo, hi in stress["cell_arrays"]["von_mises_truth"]:
        assert 0 <= lo < hi and np.isfinite(hi)


def test_heat_demo_small(comm, tmp_dir):
    """Time as an input: trajectories, a time series of truth/prediction/error, the same summary keys."""
    from heat import main as heat_main

    summary = heat_main(
        comm, n_cells=8, n_train=8, n_test=2, train_every=15, n_networks=1, hidden_layers=(16,), adam_epochs=50,
        lbfgs_iterations=5, out_dir=tmp_dir, progress=False,
    )  # fmt: skip
    assert KEYS <= set(summary)
    assert summary["n_test_times"] == 46 and summary["n_train_times"] == 4
    assert 0 <= summary["proj_error_h1_mean"] <= summary["rel_error_h1_mean"]
    meta = json.loads((tmp_dir / "trajectory.xdmf.json").read_text())
    assert [step["time"] for step in meta["steps"]][:2] == pytest.approx([0.05, 0.06], abs=1e-12)


@pytest.mark.paraview
def test_heat_time_series_opens_in_paraview(comm, tmp_dir):
    """The trajectory is one XDMF time series: 46 steps at the physical times, three named arrays."""
    from heat import main as heat_main

    heat_main(
        comm, n_cells=8, n_train=6, n_test=1, train_every=15, n_networks=1, hidden_layers=(8,), adam_epochs=20,
        lbfgs_iterations=0, out_dir=tmp_dir, progress=False,
    )  # fmt: skip
    result = paraview_arrays(comm, tmp_dir / "trajectory.xdmf")
    assert len(result["times"]) == 46 and result["times"][0] == pytest.approx(0.05)
    assert result["times"][-1] == pytest.approx(0.5)
    assert sorted(result["arrays"]) == ["temperature_error", "temperature_prediction", "temperature_truth"]
    for lo, hi in result["arrays"]["temperature_truth"]:
        assert lo < hi and hi > 0  # P1 heat solutions may undershoot slightly below 0


def test_hyperelasticity_demo_small(comm, tmp_dir):
    from hyperelasticity import main as hyper_main

    summary = hyper_main(
        comm, n_cells=(6, 2, 2), n_train=10, n_test=3, n_networks=1, hidden_layers=(16,), adam_epochs=50,
        lbfgs_iterations=5, out_dir=tmp_dir, n_output=1, progress=False,
    )  # fmt: skip
    assert KEYS <= set(summary)
    assert summary["n_failed_solves"] == 0 and summary["max_tip_deflection"] > 0.1
    assert (tmp_dir / "comparison.xdmf").exists() and (tmp_dir / "hyperelasticity.femml").exists()


def test_failed_newton_solve_is_reported_not_fatal(comm, monkeypatch):
    """The full load in one Newton solve diverges; the sample is recorded as failed and the run goes on."""
    import hyperelasticity

    monkeypatch.setattr(hyperelasticity, "LOAD_STEPS", 1)
    V, solve = hyperelasticity.build_problem(comm, (6, 2, 2))
    result = fem_ml.collect_snapshots(solve, [[4.0, 0.005], [1.0, 0.06]], V, progress=False)
    assert [f.index for f in result.failures] == [1]
    assert "Newton (load step 1) diverged" in result.failures[0].message
    np.testing.assert_array_equal(result.indices, [0])
