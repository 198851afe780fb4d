# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The demos, run as scripts at small sizes (``python demos/<demo>.py --n-cells ...``), serially or, when the
tests run on several ranks, under ``mpirun`` with as many ranks; each demo runs once and its outputs are checked
by the tests below. No test imports a demo: the demos are tutorials, free to change."""

import json
import math
import subprocess
import sys
from pathlib import Path

from mpi4py import MPI

import h5py
import numpy as np
import pytest
from conftest import ROOT, clean_env, mpirun, on_root, paraview_arrays, paraview_files
from problems import hyperelastic_problem

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


def run_demo(comm: MPI.Comm, name: str, out: Path, **options) -> dict:
    """Run ``demos/<name>.py`` with ``--option value`` for each of ``options`` into ``out``; its summary.json.

    The script runs on rank 0's behalf, under ``mpirun -n <comm.size>`` when the tests run on several ranks, while
    the other ranks wait without spinning; a failure fails the test on every rank with the script's output.
    """
    command = [sys.executable, str(ROOT / "demos" / f"{name}.py"), "--out-dir", str(out), "--no-progress"]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", *map(str, value if isinstance(value, tuple) else (value,))]
    if comm.size > 1:
        command = [*mpirun(comm.size), *command]

    def run() -> None:
        done = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"

    on_root(comm, run)
    return json.loads((out / "summary.json").read_text())


def demo_dir(factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder for one demo's outputs, created on rank 0 and shared by all ranks."""
    comm = MPI.COMM_WORLD
    return Path(comm.bcast(str(factory.mktemp(name)) if comm.rank == 0 else None, root=0))


# The sizes of each run are those of the documentation build (docs/generate.py), so the pages show what the tests
# check.


@pytest.fixture(scope="module")
def thermal_block(tmp_path_factory) -> tuple[Path, dict]:
    out = demo_dir(tmp_path_factory, "thermal_block")
    summary = run_demo(
        MPI.COMM_WORLD, "thermal_block", out, n_cells=12, n_train=24, n_test=6, n_networks=2, hidden_layers=(16, 16),
        adam_epochs=200, lm_iterations=10,
    )  # fmt: skip
    return out, summary


@pytest.fixture(scope="module")
def elasticity(tmp_path_factory) -> tuple[Path, dict]:
    out = demo_dir(tmp_path_factory, "elasticity")
    summary = run_demo(
        MPI.COMM_WORLD, "elasticity", out, n_cells=(6, 2, 2), n_train=16, n_test=3, n_networks=1,
        hidden_layers=(16, 16), adam_epochs=100, lbfgs_iterations=10, n_output=2,
    )  # fmt: skip
    return out, summary


@pytest.fixture(scope="module")
def heat(tmp_path_factory) -> tuple[Path, dict]:
    out = demo_dir(tmp_path_factory, "heat")
    summary = run_demo(
        MPI.COMM_WORLD, "heat", out, n_cells=8, n_train=8, n_test=2, train_every=15, n_networks=1,
        hidden_layers=(16,), adam_epochs=50, lbfgs_iterations=5,
    )  # fmt: skip
    return out, summary


@pytest.fixture(scope="module")
def hyperelasticity(tmp_path_factory) -> tuple[Path, dict]:
    out = demo_dir(tmp_path_factory, "hyperelasticity")
    summary = run_demo(
        MPI.COMM_WORLD, "hyperelasticity", out, n_cells=(6, 2, 2), n_train=10, n_test=3, n_networks=1,
        hidden_layers=(16,), adam_epochs=50, lbfgs_iterations=5, n_output=1,
    )  # fmt: skip
    return out, summary


@pytest.fixture(scope="module")
def trust(tmp_path_factory) -> tuple[Path, dict]:
    out = demo_dir(tmp_path_factory, "trust_thermal_block")
    summary = run_demo(
        MPI.COMM_WORLD, "trust_thermal_block", out, n_cells=12, n_small=12, n_large=20, n_test=6, n_physics=100,
        n_ensemble=3, n_initial=6, batch_size=4, max_solves=14, n_folds=2, hidden_layers=(12,), adam_epochs=100,
        lbfgs_iterations=10,
    )  # fmt: skip
    return out, summary


@pytest.fixture(scope="module")
def inverse(tmp_path_factory) -> tuple[Path, dict]:
    out = demo_dir(tmp_path_factory, "inverse_thermal_block")
    summary = run_demo(
        MPI.COMM_WORLD, "inverse_thermal_block", out, n_cells=12, n_train=24, n_test=4, n_trials=2, n_sensors=8,
        n_starts=2, mcmc_samples=500, n_networks=1, hidden_layers=(16, 16), adam_epochs=100, lbfgs_iterations=10,
        n_output=2,
    )  # fmt: skip
    return out, summary


def test_thermal_block_demo_small(comm, thermal_block):
    out, written = thermal_block
    assert KEYS <= set(written)
    assert written["n_ranks"] == comm.size and written["n_dofs"] == 13 * 13
    assert all(math.isfinite(v) for v in written.values() if not isinstance(v, str))
    assert written["n_failed_solves"] == 0 and Path(written["surrogate_file"]).exists()
    assert 0 <= written["proj_error_h1_mean"] <= written["rel_error_h1_mean"] < 0.5
    assert np.isclose(written["speedup_median"], written["t_full_solve_median_s"] / written["t_surrogate_median_s"])
    for name in ("comparison.xdmf", "comparison.h5", "comparison.xdmf.json", "comparison.bp", "modes.xdmf"):
        assert (out / name).exists()
    check_plots(out)


@pytest.mark.paraview
def test_thermal_block_outputs_open_in_paraview(comm, thermal_block):
    """Comparison, modes and the sweep of mu0 open in ParaView with the named arrays and sensible ranges."""
    out, summary = thermal_block
    results = check_paraview(
        comm, out, summary["n_modes"], {"comparison.xdmf": "temperature"}, ("sweep_mu0.xdmf", "mu0", "temperature")
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


def test_saved_demo_surrogate_predicts_the_same_on_three_ranks(comm, thermal_block, tmp_dir):
    """The demo saves its surrogate; `python -m fem_ml predict` under `mpirun -n 3` reproduces its prediction."""
    out, _ = thermal_block

    def predict_on_three_ranks():
        mu = json.loads((out / "comparison.xdmf.json").read_text())["steps"][0]["parameters"]
        point = ",".join(f"{k}={v!r}" for k, v in mu.items())
        model = str(out / "thermal_block.femml")
        command = [*mpirun(3), sys.executable, "-m", "fem_ml", "predict", model,
                   "--mu", point, "--name", "prediction", "-o", str(tmp_dir / "cli.xdmf")]  # fmt: skip
        run = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        demo = xdmf_field(out / "comparison.xdmf", "temperature_prediction")
        cli = xdmf_field(tmp_dir / "cli.xdmf", "prediction")
        assert np.max(np.abs(cli - demo)) <= 1e-12 * np.max(np.abs(demo))

    on_root(comm, predict_on_three_ranks)


def test_elasticity_demo_small(comm, elasticity):
    """Vector P2 field, energy inner product, von Mises output, and the saved vector surrogate reloads."""
    out, summary = elasticity
    assert KEYS <= set(summary)
    assert summary["n_dofs"] == 3 * 13 * 5 * 5  # P2 vertices + edge midpoints of a 6 x 2 x 2 box, 3 components
    assert 0 <= summary["proj_error_h1_mean"] <= summary["rel_error_h1_mean"] < 1.0
    for name in ("displacement.xdmf", "von_mises.xdmf", "elasticity.femml", "summary.json"):
        assert (out / name).exists()
    check_plots(out)
    rom = fem_ml.load(out / "elasticity.femml", comm=comm)
    assert rom.V.dofmap.index_map_bs == 3 and rom.V.ufl_element().reference_value_shape == (3,)
    u = rom(rom.space.sample(1, seed=4)[0])
    assert np.isfinite(u.x.array).all() and comm.allreduce(np.abs(u.x.array).max(), op=MPI.MAX) > 0
    rom.destroy()


@pytest.mark.paraview
def test_elasticity_outputs_open_in_paraview(comm, elasticity):
    """The vector displacement (P2 shown on the P1 geometry) and the DG0 von Mises stress open in ParaView."""
    out, summary = elasticity
    results = check_paraview(
        comm, out, summary["n_modes"], {"displacement.xdmf": ""}, ("sweep_theta.xdmf", "theta", "displacement")
    )
    assert results["displacement.xdmf"]["times"] == [0.0, 1.0]
    stress = results["von_mises.xdmf"]
    assert sorted(stress["cell_arrays"]) == ["von_mises_error", "von_mises_prediction", "von_mises_truth"]
    for lo, hi in stress["cell_arrays"]["von_mises_truth"]:
        assert 0 <= lo < hi and np.isfinite(hi)


@pytest.mark.paraview
def test_demo_models_open_in_the_paraview_plugin(comm, thermal_block, elasticity, tmp_dir):
    """The demos' saved models (P1 scalar temperature, P2 vector displacement) open in ``pvpython`` with the reader
    plugin and give ``python -m fem_ml predict``'s field at the mesh nodes to 1e-12 relative."""
    from fem_ml.paraview import plugin_path
    from fem_ml.paraview.runtime import SurrogateModel

    models = [thermal_block[0] / "thermal_block.femml", elasticity[0] / "elasticity.femml"]

    def run() -> int:
        points = []
        for model in models:
            m = SurrogateModel(model)
            points.append((0.3 * m.lower + 0.7 * m.upper, m.names, m.field_name))
        spec, result = tmp_dir / "cases.json", tmp_dir / "plugin_out.json"
        spec.write_text(
            json.dumps(
                [{"model": str(m), "parameters": mu.tolist()} for m, (mu, _, _) in zip(models, points, strict=True)]
            )
        )
        proc = subprocess.run(
            ["xvfb-run", "-a", "pvpython", str(Path(__file__).with_name("paraview_plugin_check.py")),
             str(plugin_path().parent), str(spec), str(result)],
            capture_output=True, text=True, timeout=300, env=clean_env(),
        )  # fmt: skip
        assert proc.returncode == 0 and "PLUGIN_CHECK_DONE" in proc.stdout, proc.stdout + proc.stderr
        for model, (mu, names, field), got in zip(models, points, json.loads(result.read_text()), strict=True):
            out = tmp_dir / f"{model.stem}_predict.xdmf"
            point = ",".join(f"{n}={float(v)!r}" for n, v in zip(names, mu, strict=True))
            command = [sys.executable, "-m", "fem_ml", "predict", str(model), "--mu", point, "-o", str(out)]
            run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=clean_env())
            assert run.returncode == 0, run.stderr
            with h5py.File(out.with_suffix(".h5"), "r") as f:
                x = f["Mesh/mesh/geometry"][()]
                group = f["Function"][next(iter(f["Function"]))]
                want = group[next(iter(group))][()]
            x = np.pad(x, ((0, 0), (0, 3 - x.shape[1])))
            plugin_points = np.asarray(got["points"])
            values = np.asarray(got["arrays"][field]).reshape(len(plugin_points), -1)
            index = {tuple(k): i for i, k in enumerate(np.round(plugin_points, 8))}
            at_nodes = values[[index[tuple(k)] for k in np.round(x, 8)]][:, : want.shape[1]]
            assert np.abs(at_nodes - want).max() <= 1e-12 * np.abs(want).max(), model.name
        return len(models)

    assert on_root(comm, run) == 2


def test_heat_demo_small(heat):
    """Time as an input: trajectories, a time series of truth/prediction/error, the same summary keys."""
    out, summary = heat
    assert KEYS <= set(summary)
    assert summary["n_test_times"] == 46 and summary["n_train_times"] == 4
    assert 0 <= summary["proj_error_h1_mean"] <= summary["rel_error_h1_mean"]
    meta = json.loads((out / "trajectory.xdmf.json").read_text())
    assert [step["time"] for step in meta["steps"]][:2] == pytest.approx([0.05, 0.06], abs=1e-12)
    check_plots(out)


@pytest.mark.paraview
def test_heat_time_series_opens_in_paraview(comm, heat):
    """The trajectory is one XDMF time series: 46 steps at the physical times, three named arrays."""
    out, summary = heat
    results = check_paraview(
        comm, out, summary["n_modes"], {"trajectory.xdmf": "temperature"},
        ("sweep_source_position.xdmf", "c", "temperature"),
    )  # fmt: skip
    result = results["trajectory.xdmf"]
    assert len(result["times"]) == 46 and result["times"][0] == pytest.approx(0.05)
    assert result["times"][-1] == pytest.approx(0.5)
    assert sorted(result["arrays"]) == ["temperature_error", "temperature_prediction", "temperature_truth"]
    for lo, hi in result["arrays"]["temperature_truth"]:
        assert lo < hi and hi > 0  # P1 heat solutions may undershoot slightly below 0


def test_hyperelasticity_demo_small(hyperelasticity):
    out, summary = hyperelasticity
    assert KEYS <= set(summary)
    assert summary["n_failed_solves"] == 0 and summary["max_tip_deflection"] > 0.1
    assert (out / "comparison.xdmf").exists() and (out / "hyperelasticity.femml").exists()
    check_plots(out)


@pytest.mark.paraview
def test_hyperelasticity_outputs_open_in_paraview(comm, hyperelasticity):
    out, summary = hyperelasticity
    results = check_paraview(
        comm, out, summary["n_modes"], {"comparison.xdmf": "displacement"}, ("sweep_load.xdmf", "g", "displacement")
    )
    assert results["sweep_load.xdmf"]["times"] == pytest.approx(np.linspace(0.01, 0.06, 6))


def test_failed_newton_solve_is_reported_not_fatal(comm):
    """The full load in one Newton solve diverges; the sample is recorded as failed and the run goes on."""
    V, solve = hyperelastic_problem(comm, (6, 2, 2), load_steps=1)
    result = fem_ml.collect_snapshots(solve, [[4.0, 0.005], [1.0, 0.06]], V, progress=False)
    assert [f.index for f in result.failures] == [1]
    assert "Newton (load step 1) diverged" in result.failures[0].message
    np.testing.assert_array_equal(result.indices, [0])


def test_trust_demo_small(trust):
    out, written = trust
    keys = {"error_data_only_20", "error_physics_20", "spearman_std_vs_error", "adaptive_solves_to_match_lhs100",
            "residual_truth", "residual_surrogate_mean"}  # fmt: skip
    assert keys <= set(written)
    assert written["residual_truth"] < 1e-10 and written["n_flagged_untrained"] == 6
    assert written["extrapolation_warnings"] == 1 and written["extrapolation_strict_raises"] == 1
    assert -1 <= written["spearman_std_vs_error"] <= 1
    for name in ("uncertainty.xdmf", "residual.xdmf"):
        assert (out / name).exists()
    for name in ("physics_vs_data.png", "deviation_vs_error.png", "adaptive.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.paraview
def test_trust_fields_open_in_paraview(comm, trust):
    """The uncertainty and residual fields open in ParaView: a non-negative deviation, residual representatives."""
    out, _ = trust
    results = paraview_files(comm, [out / "uncertainty.xdmf", out / "residual.xdmf"])
    uncertainty = results[str(out / "uncertainty.xdmf")]
    assert sorted(uncertainty["arrays"]) == ["temperature_error", "temperature_mean", "temperature_std"]
    assert len(uncertainty["times"]) == 3
    for (lo, hi), (_, m_hi) in zip(
        uncertainty["arrays"]["temperature_std"], uncertainty["arrays"]["temperature_mean"], strict=True
    ):
        assert 0 <= lo < hi < m_hi  # a deviation: non-negative, not zero everywhere, smaller than the field
    residual = results[str(out / "residual.xdmf")]
    assert sorted(residual["arrays"]) == ["residual_prediction", "residual_untrained"]
    for (p_lo, p_hi), (u_lo, u_hi) in zip(
        residual["arrays"]["residual_prediction"], residual["arrays"]["residual_untrained"], strict=True
    ):
        assert max(abs(p_lo), abs(p_hi)) > 0 and max(abs(u_lo), abs(u_hi)) > 0


def test_inverse_demo_small(inverse):
    out, written = inverse
    keys = {"n_trials", "n_success", "rel_param_error_median", "rel_param_error_max", "t_identify_median_s",
            "fe_over_surrogate_time_ratio"}  # fmt: skip
    assert keys <= set(written)
    assert written["n_trials"] == len(written["trials"]) == 2 and 0 <= written["n_success"] <= 2
    assert written["fe_over_surrogate_time_ratio"] > 0 and written["rel_param_error_max"] >= 0
    (same,) = written["fe_same_starts_identification"]  # full solves from the surrogate's own 2 starts
    assert same["n_starts"] == 2 and same["ratio"] == written["fe_over_surrogate_same_starts_time_ratio"] > 0
    assert sum(written["sensors_per_rank"]) == 8 and written["estimate_one_rank_vs_n_ranks_max_rel_diff"] < 1e-8
    for name in ("fields.xdmf", "fields.h5", "fields.xdmf.json", "surrogate.femml"):
        assert (out / name).exists()
    for name in ("estimates.png", "posterior.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.paraview
def test_inverse_fields_open_in_paraview(comm, inverse):
    """The observed field, the prediction at the estimate and their difference open in ParaView."""
    out, _ = inverse
    result = paraview_arrays(comm, out / "fields.xdmf")
    assert sorted(result["arrays"]) == ["difference", "observed", "prediction"] and len(result["times"]) == 2
    for (o_lo, o_hi), (d_lo, d_hi) in zip(result["arrays"]["observed"], result["arrays"]["difference"], strict=True):
        assert o_lo >= -1e-12 and o_hi > 0  # a temperature with f = 1 > 0 and u = 0 on the boundary
        assert max(abs(d_lo), abs(d_hi)) < o_hi
