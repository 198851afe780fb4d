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
from conftest import clean_env, on_root, paraview_files
from thermal_block import main

import fem_ml

KEYS = {
    "n_ranks", "n_dofs", "n_train", "n_test", "n_modes", "rel_error_l2_mean", "rel_error_l2_max",
    "rel_error_h1_mean", "proj_error_h1_mean", "t_snapshots_s", "t_pod_s", "t_train_s",
    "t_full_solve_median_s", "t_surrogate_median_s", "speedup_median",
}  # fmt: skip
PLOTS = ("pod_spectrum.png", "training_loss.png", "test_errors.png", "qoi.png")


def check_plots(out: Path) -> None:
    """Every demo writes the four plots as PNG files next to its summary."""
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def check_paraview(comm, out: Path, n_modes: int, comparison: dict[str, str], sweep: tuple[str, str, str]) -> dict:
    """Open every XDMF file in ``out`` in ParaView; check names, steps and value ranges of each.

    Args:
        comparison: ``{file name: field}``: files with ``<field>_truth``, ``_prediction`` and ``_error`` (or plain
            ``truth``, ``prediction``, ``error`` for an empty field).
        sweep: ``(file name, parameter, field)`` of the parameter sweep.
    """
    files = sorted(out.glob("*.xdmf"))
    results = {Path(k).name: v for k, v in paraview_files(comm, files).items()}
    assert set(comparison) | {"modes.xdmf", sweep[0]} <= set(results)
    for name, field in comparison.items():
        prefix = f"{field}_" if field else ""
        arrays = results[name]["arrays"]
        assert sorted(arrays) == sorted(f"{prefix}{k}" for k in ("error", "prediction", "truth"))
        meta = json.loads((out / f"{name}.json").read_text())
        assert set(meta["units"]) == set(arrays)
        for (t_lo, t_hi), (p_lo, p_hi), (e_lo, e_hi) in zip(
            arrays[f"{prefix}truth"], arrays[f"{prefix}prediction"], arrays[f"{prefix}error"], strict=True
        ):
            scale = max(abs(t_lo), abs(t_hi))
            assert scale > 0 and all(map(math.isfinite, (p_lo, p_hi, e_lo, e_hi)))
            assert max(abs(e_lo), abs(e_hi)) < scale  # an error field, smaller than the field itself
    modes = results["modes.xdmf"]
    assert modes["times"] == [float(k) for k in range(n_modes)]
    (mode_array,) = modes["arrays"].values()
    assert all(lo < hi for lo, hi in mode_array)
    meta = json.loads((out / "modes.xdmf.json").read_text())
    sigma = [step["singular_value"] for step in meta["steps"]]
    assert len(sigma) == n_modes and sigma == sorted(sigma, reverse=True) and sigma[-1] > 0
    name, parameter, field = sweep
    meta = json.loads((out / f"{name}.json").read_text())
    assert meta["swept_parameter"] == parameter and meta["units"][field]
    values = [step["parameters"][parameter] for step in meta["steps"]]
    assert results[name]["times"] == pytest.approx(values, rel=1e-12)
    assert all(lo < hi for lo, hi in results[name]["arrays"][field])
    return results


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
    for name in ("comparison.xdmf", "comparison.h5", "comparison.xdmf.json", "comparison.bp", "modes.xdmf"):
        assert (tmp_dir / name).exists()
    check_plots(tmp_dir)


@pytest.mark.paraview
def test_thermal_block_outputs_open_in_paraview(comm, tmp_dir):
    """Comparison, modes and the sweep of mu0 open in ParaView with the named arrays and sensible ranges."""
    summary = main(
        comm, n_cells=12, n_train=24, n_test=3, n_networks=1, hidden_layers=(16, 16), adam_epochs=200,
        lbfgs_iterations=20, out_dir=tmp_dir, progress=False,
    )  # fmt: skip
    results = check_paraview(
        comm, tmp_dir, summary["n_modes"], {"comparison.xdmf": "temperature"}, ("sweep_mu0.xdmf", "mu0", "temperature")
    )
    for lo, hi in results["comparison.xdmf"]["arrays"]["temperature_truth"]:
        assert lo >= -1e-12 and hi > 0  # f = 1 > 0 and u = 0 on the boundary: u >= 0
    assert results["sweep_mu0.xdmf"]["times"] == pytest.approx(np.linspace(0.1, 1.0, 10))


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
        demo = xdmf_field(tmp_dir / "comparison.xdmf", "temperature_prediction")
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
    check_plots(tmp_dir)
    rom = fem_ml.load(tmp_dir / "elasticity.femml", comm=comm)
    assert rom.V.dofmap.index_map_bs == 3 and rom.V.ufl_element().reference_value_shape == (3,)
    u = rom(ELASTIC.sample(1, seed=4)[0])
    assert np.isfinite(u.x.array).all() and comm.allreduce(np.abs(u.x.array).max(), op=MPI.MAX) > 0
    rom.destroy()


@pytest.mark.paraview
def test_elasticity_outputs_open_in_paraview(comm, tmp_dir):
    """The vector displacement (P2 shown on the P1 geometry) and the DG0 von Mises stress open in ParaView."""
    from elasticity import main as elasticity_main

    summary = elasticity_main(
        comm, n_cells=(6, 2, 2), n_train=12, n_test=2, n_networks=1, hidden_layers=(16,), adam_epochs=100,
        lbfgs_iterations=10, out_dir=tmp_dir, n_output=2, progress=False,
    )  # fmt: skip
    results = check_paraview(
        comm, tmp_dir, summary["n_modes"], {"displacement.xdmf": ""}, ("sweep_theta.xdmf", "theta", "displacement")
    )
    assert results["displacement.xdmf"]["times"] == [0.0, 1.0]
    stress = results["von_mises.xdmf"]
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
    check_plots(tmp_dir)


@pytest.mark.paraview
def test_heat_time_series_opens_in_paraview(comm, tmp_dir):
    """The trajectory is one XDMF time series: 46 steps at the physical times, three named arrays."""
    from heat import main as heat_main

    summary = heat_main(
        comm, n_cells=8, n_train=8, n_test=1, train_every=15, n_networks=1, hidden_layers=(16,), adam_epochs=100,
        lbfgs_iterations=10, out_dir=tmp_dir, progress=False,
    )  # fmt: skip
    results = check_paraview(
        comm, tmp_dir, summary["n_modes"], {"trajectory.xdmf": "temperature"},
        ("sweep_source_position.xdmf", "c", "temperature"),
    )  # fmt: skip
    result = results["trajectory.xdmf"]
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
    check_plots(tmp_dir)


@pytest.mark.paraview
def test_hyperelasticity_outputs_open_in_paraview(comm, tmp_dir):
    from hyperelasticity import main as hyper_main

    summary = hyper_main(
        comm, n_cells=(6, 2, 2), n_train=10, n_test=2, n_networks=1, hidden_layers=(16,), adam_epochs=100,
        lbfgs_iterations=10, out_dir=tmp_dir, n_output=2, progress=False,
    )  # fmt: skip
    results = check_paraview(
        comm, tmp_dir, summary["n_modes"], {"comparison.xdmf": "displacement"}, ("sweep_load.xdmf", "g", "displacement")
    )
    assert results["sweep_load.xdmf"]["times"] == pytest.approx(np.linspace(0.01, 0.06, 6))


def test_failed_newton_solve_is_reported_not_fatal(comm, monkeypatch):
    """The full load in one Newton solve diverges; the sample is recorded as failed and the run goes on."""
    import hyperelasticity

    monkeypatch.setattr(hyperelasticity, "LOAD_STEPS", 1)
    V, solve = hyperelasticity.build_problem(comm, (6, 2, 2))
    result = fem_ml.collect_snapshots(solve, [[4.0, 0.005], [1.0, 0.06]], V, progress=False)
    assert [f.index for f in result.failures] == [1]
    assert "Newton (load step 1) diverged" in result.failures[0].message
    np.testing.assert_array_equal(result.indices, [0])
