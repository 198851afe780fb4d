# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Kernel regressors behind Surrogate (RBF, GP), their files on any rank count, and select_regressor."""

from __future__ import annotations

from mpi4py import MPI

import numpy as np
import pytest
from conftest import SPACE, by_coordinates, forged_surrogate_files, raises_on_all_ranks
from dolfinx import fem

import fem_ml
from fem_ml.kernels import _newton_polish, _power_search, _warp, fit_kernel
from fem_ml.selection import CandidateResult, _pick

MU = np.array([[0.3, 0.45, 0.8, 0.2], [0.9, 0.15, 0.5, 0.6]])
#: A GP fitted quickly: one kernel and transform, no optimizer restarts.
QUICK_GP = fem_ml.KernelOptions(method="gp", kernel="matern52", input_transform="log", restarts=0)
#: The same GP on the Box-Cox power mu^(-1/2) of the parameters (warped log inputs).
POWER_GP = fem_ml.KernelOptions(method="gp", kernel="matern52", input_transform="power", power=-0.5, restarts=0)


@pytest.fixture(scope="module")
def basis(snapshots):
    return fem_ml.pod(snapshots, "h1", n_modes=6)


@pytest.fixture(scope="module")
def roms(basis, snapshots):
    out = {
        "rbf": fem_ml.fit_kernel_surrogate(basis, snapshots, SPACE, method="rbf"),
        "gp": fem_ml.fit_kernel_surrogate(basis, snapshots, SPACE, options=QUICK_GP),
        "gp_power": fem_ml.fit_kernel_surrogate(basis, snapshots, SPACE, options=POWER_GP),
    }
    yield out
    for rom in out.values():
        rom.destroy()


@pytest.mark.parametrize("method", ["rbf", "gp"])
def test_kernel_surrogate_fits_and_predicts_functions(basis, snapshots, test_snapshots, roms, method):
    """The kernel reproduces the training coefficients (RBF exactly when unsmoothed) and predicts well held out."""
    rom = roms[method]
    assert rom.regressor.kind == "kernel" and rom.regressor.method == method
    coefficients = basis.project(snapshots).T
    fitted = rom.coefficients(snapshots.parameters)
    misfit = np.linalg.norm(fitted - coefficients, axis=1) / np.linalg.norm(coefficients, axis=1)
    if method == "rbf" and rom.regressor.noise == 0:
        assert misfit.max() < 1e-8
    else:
        assert misfit.max() < 1e-2
    report = rom.errors(test_snapshots.parameters, test_snapshots)
    assert report.rel_error_h1.mean() < 0.1  # 40 snapshots: a few percent (GP and RBF alike)
    u = rom(MU[0])
    assert isinstance(u, fem.Function) and u.function_space is basis.V
    np.testing.assert_allclose(u.x.array[: len(rom.predict_values(MU[:1]))], rom.predict_values(MU[:1])[:, 0])


def test_gp_uncertainty_and_rbf_refusal(comm, roms):
    """A GP has a positive predictive deviation, zero-ish at a training point; RBF says it has none."""
    gp, rbf = roms["gp"], roms["rbf"]
    _, std = gp.uncertainty(MU[0])
    assert comm.allreduce(float(np.min(std.x.array)), op=MPI.MIN) >= 0
    assert comm.allreduce(float(np.max(std.x.array)), op=MPI.MAX) > 0
    far, near = gp.deviation(np.vstack([MU[:1], gp.training_parameters[:1]]))
    assert near < 0.1 * far
    raises_on_all_ranks(comm, ValueError, "no uncertainty", rbf.uncertainty, MU[0])
    raises_on_all_ranks(comm, ValueError, "no deviation", rbf.deviation, MU)
    raises_on_all_ranks(comm, TypeError, "not a network", lambda: rbf.network)


@pytest.mark.parametrize("method", ["rbf", "gp", "gp_power"])
def test_kernel_file_across_rank_counts(comm, tmp_dir, problem, serial_problem, basis, snapshots, roms, method):
    """Saved on all ranks, loaded on one rank and on all; saved on one rank, loaded on all: the same fields."""
    rom = roms[method]
    reference = by_coordinates(rom.V, rom.predict_values(MU))
    path = fem_ml.save(rom, tmp_dir / f"{method}.femml")
    Vs, _ = serial_problem
    for loaded in (fem_ml.load(path, problem[0]), fem_ml.load(path, Vs), fem_ml.load(path, comm=MPI.COMM_SELF)):
        got = by_coordinates(loaded.V, loaded.predict_values(MU))
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-12 * np.abs(reference).max())
        assert loaded.regressor.kind == "kernel" and loaded.regressor.method == method.removesuffix("_power")
        loaded.destroy()
    # Saved by rank 0 alone from a surrogate loaded on COMM_SELF, loaded again on every rank.
    alone = comm.bcast(str(tmp_dir / f"{method}_alone.femml") if comm.rank == 0 else None, root=0)
    if comm.rank == 0:
        solo = fem_ml.load(path, Vs)
        fem_ml.save(solo, alone)
        solo.destroy()
    comm.barrier()
    loaded = fem_ml.load(alone, problem[0])
    got = by_coordinates(loaded.V, loaded.predict_values(MU))
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-12 * np.abs(reference).max())
    info = fem_ml.archive.describe(alone)
    assert info["kernel"]["method"] == method.removesuffix("_power") and "network" not in info
    if rom.regressor.warping is not None:
        from fem_ml.cli import _format_info

        np.testing.assert_array_equal(info["kernel"]["warping"], rom.regressor.warping)
        assert "inputs warped by rates [" in _format_info(info)
    loaded.destroy()


def _forgeries(tree: dict):
    """Kernel entries made inconsistent or non-finite; each yields (label, forged tree)."""
    kernel = sorted(k for k in tree if k.startswith("kernel/"))
    for name in kernel:
        out = dict(tree)
        del out[name]
        if name != "kernel/warping":  # optional: without it the inputs are not warped
            yield f"{name}: removed", out
        value = tree[name]
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size:
            bad = value.copy()
            bad.flat[bad.size // 2] = np.nan
            yield f"{name}: nan", {**tree, name: bad}
            yield f"{name}: one more row", {**tree, name: np.concatenate([value, value[:1]])}
        elif isinstance(value, str):
            yield f"{name}: bogus", {**tree, name: "bogus"}
    yield "length scale negative", {**tree, "kernel/length_scales": -tree["kernel/length_scales"]}
    upper = tree["kernel/cholesky"].copy()
    upper[0, -1] = 1.0
    yield "cholesky not triangular", {**tree, "kernel/cholesky": upper}
    yield "network and kernel", {**tree, "network/n_in": 4}
    yield "warping too strong", {**tree, "kernel/warping": np.full_like(tree["kernel/warping"], 101.0)}


def test_forged_kernel_files_are_refused(comm, tmp_dir, roms):
    """Every forged kernel entry, with a valid checksum, is a FileFormatError naming the file, on every rank."""
    path = fem_ml.save(roms["gp_power"], tmp_dir / "gp_forge.femml")
    cases = forged_surrogate_files(comm, path, _forgeries, tmp_dir, "forged_kernel")
    assert len(cases) > 20
    for label, target in cases:
        with pytest.raises(fem_ml.FileFormatError, match="forged_kernel") as err:
            fem_ml.load(target, comm=comm)
        assert target in str(err.value), label


def test_warping_is_the_box_cox_power():
    """The warping maps [-1, 1] onto itself monotonically; on log inputs, rates lambda h make it affine in mu^lambda."""
    x = np.linspace(-1.0, 1.0, 41)[:, None] * np.ones((1, 3))
    rates = np.array([-3.0, 0.0, 0.7])
    z = _warp(x, rates)
    np.testing.assert_allclose(z[[0, -1]], x[[0, -1]], atol=1e-14)
    assert np.all(np.diff(z, axis=0) > 0)
    np.testing.assert_array_equal(z[:, 1], x[:, 1])
    np.testing.assert_array_equal(_warp(x, None), x)
    lower, upper = np.array([0.1, 1e-4]), np.array([1.0, 1e2])
    mu = np.exp(np.linspace(np.log(lower), np.log(upper), 25))
    h, c = 0.5 * np.log(upper / lower), 0.5 * np.log(upper * lower)
    for power in (-1.0, -0.25, 0.5):
        z = _warp((np.log(mu) - c) / h, power * h)
        for d in range(2):  # z_d = alpha + beta mu_d^power, exactly
            design = np.column_stack([np.ones(len(mu)), mu[:, d] ** power])
            fit = np.linalg.lstsq(design, z[:, d], rcond=None)[0]
            np.testing.assert_allclose(design @ fit, z[:, d], atol=1e-10)


def test_power_search_climbs_to_the_best_exponent():
    """The exponent search starts at log and linear, climbs in steps of 1/4, refines by 1/8, scores each once."""
    calls = []

    def score(center):
        def f(q):
            calls.append(q)
            return -((q - center) ** 2)

        return f

    assert _power_search(score(-0.3)) == -0.25
    assert len(calls) == len(set(calls)) and set(calls) == {0.0, 1.0, -0.25, 0.25, -0.5, -0.125, -0.375}
    assert _power_search(score(0.9)) == 0.875
    assert _power_search(score(-7.0)) == -2.0  # the range's end
    assert _power_search(lambda q: -abs(q - 1.6)) == 1.625
    assert _power_search(score(-7.0), limit=0.6) == -0.5  # bounds so wide that larger exponents warp too much
    assert _power_search(score(3.0), limit=0.6) == 1.0  # linear inputs, no warping: a candidate for any limit


@pytest.mark.parametrize("method", ["gp", "rbf"])
def test_power_inputs_are_the_fit_on_the_powered_parameters(comm, basis, snapshots, method):
    """A fit on mu^lambda through warped log inputs equals a fit on linear inputs mu' = mu^lambda (same on all ranks).

    The warped inputs are the linear inputs of mu' reflected (lambda < 0), which neither an ARD kernel nor a linear
    tail sees; exponents 0 and 1 are the log and linear fits themselves.
    """
    mu, c = snapshots.parameters, basis.project(snapshots).T
    lo, hi = SPACE.lower, SPACE.upper
    kernel = {"gp": "matern52", "rbf": "cubic"}[method]

    smoothing = 0.0 if method == "rbf" else None

    def options(**kw):
        return fem_ml.KernelOptions(method=method, kernel=kernel, restarts=0, smoothing=smoothing, **kw)

    warped = fit_kernel(mu, c, lo, hi, options=options(input_transform="power", power=-0.5), comm=comm)
    np.testing.assert_allclose(warped.warping, -0.5 * warped.input_scaler.scale, rtol=1e-15)
    powered = fit_kernel(mu**-0.5, c, hi**-0.5, lo**-0.5, options=options(input_transform="linear"), comm=comm)
    assert powered.warping is None
    test = SPACE.sample(10, method="uniform", seed=3)
    np.testing.assert_allclose(warped(test), powered(test**-0.5), rtol=0, atol=1e-6 * np.abs(c).max())
    if method == "gp":
        np.testing.assert_allclose(warped.length_scales, powered.length_scales, rtol=1e-4)
    for power, transform in ((0.0, "log"), (1.0, "linear")):
        a = fit_kernel(mu, c, lo, hi, options=options(input_transform="power", power=power), comm=comm)
        b = fit_kernel(mu, c, lo, hi, options=options(input_transform=transform), comm=comm)
        assert a.warping is None and a.input_transform == transform
        np.testing.assert_array_equal(a(test), b(test))
    chosen = fit_kernel(mu, c, lo, hi, options=options(), comm=comm)
    exponent = 1.0 if chosen.warping is None and chosen.input_transform == "linear" else 0.0
    if chosen.warping is not None:
        exponent = float(np.mean(chosen.warping / chosen.input_scaler.scale))
    assert -2 <= exponent <= 2 and exponent * 8 == round(exponent * 8)
    gathered = comm.allgather(chosen(test))
    assert all(np.array_equal(g, gathered[0]) for g in gathered)


def test_power_options_are_checked(comm, basis, snapshots):
    """An exponent needs input_transform='power' and |lambda| <= 4; 'power' and 'log' need positive bounds."""
    raises_on_all_ranks(comm, ValueError, "power must be", fem_ml.KernelOptions, power=0.5)
    raises_on_all_ranks(comm, ValueError, "power must be", fem_ml.KernelOptions, input_transform="power", power=4.5)
    raises_on_all_ranks(comm, ValueError, "power must be", fem_ml.KernelOptions, input_transform="power",
                        power=float("nan"))  # fmt: skip
    mu, c = snapshots.parameters, basis.project(snapshots).T
    shifted, lower = mu - 0.5, SPACE.lower - 0.5
    for transform in ("power", "log"):
        options = fem_ml.KernelOptions(input_transform=transform)
        raises_on_all_ranks(comm, ValueError, "positive lower bounds", fit_kernel, shifted, c, lower, SPACE.upper,
                            options=options, comm=comm)  # fmt: skip
    auto = fem_ml.KernelOptions(kernel="matern52", restarts=0)
    # Degenerate or mismatched bounds are a clear error on every rank (the search divides by their width).
    raises_on_all_ranks(comm, ValueError, "must exceed", fit_kernel, mu, c, SPACE.upper, SPACE.upper, options=auto,
                        comm=comm)  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "finite values", fit_kernel, mu, c, SPACE.lower[:2], SPACE.upper,
                        options=auto, comm=comm)  # fmt: skip
    linear = fit_kernel(shifted, c, lower, SPACE.upper, options=auto, comm=comm)
    assert linear.input_transform == "linear" and linear.warping is None
    regressor = fit_kernel(mu, c, SPACE.lower, SPACE.upper, options=POWER_GP, comm=comm)
    with pytest.raises(ValueError, match="Warping rates"):
        fem_ml.KernelRegressor.from_tree({**regressor.to_tree(), "warping": np.zeros(3)})


def test_select_regressor_reports_every_candidate(comm, basis, snapshots):
    """The pick follows the one-standard-error rule, the same on every rank; the report lists every candidate."""
    candidates = {
        "network": fem_ml.TrainingOptions(hidden_layers=(8,), adam_epochs=30, lbfgs_iterations=0, progress=False),
        "rbf": fem_ml.KernelOptions(method="rbf"),
        "gp": QUICK_GP,
    }
    # Without the blend (tests/test_blending.py checks it): the one-standard-error rule among single regressors.
    rom, selection = fem_ml.select_regressor(
        basis, snapshots, SPACE, candidates=candidates, folds=3, seed=1, blend=False
    )
    names = [c.name for c in selection.candidates]
    assert names == ["network", "rbf", "gp"]
    errors = [c.cv_error_mean for c in selection.candidates]
    lowest = selection.candidates[int(np.argmin(errors))]
    bound = min(errors) + np.std(lowest.cv_error, ddof=1) / np.sqrt(len(snapshots))
    tied = [name for name, error in zip(names, errors, strict=True) if error <= bound]
    kernels = [name for name in tied if name != "network"]
    assert selection.selected == min(kernels or tied, key=lambda name: errors[names.index(name)])
    assert selection.selected in selection.reason and all(np.isfinite(errors))
    assert all(c.cv_error.shape == (len(snapshots),) for c in selection.candidates)
    assert all(c.cv_error_mean >= selection.projection_error_mean for c in selection.candidates)
    # Identical on every rank, and to a run on this rank alone.
    assert comm.allgather((selection.selected, errors)) == [(selection.selected, errors)] * comm.size
    assert rom.regressor.kind == ("network" if selection.selected == "network" else "kernel")
    rom.destroy()


def test_select_regressor_same_on_one_rank(comm, serial_problem, snapshots):
    """The choice and the CV errors on one rank (COMM_SELF) equal those of all ranks together."""
    Vs, solve = serial_problem
    candidates = {"rbf": fem_ml.KernelOptions(method="rbf"), "gp": QUICK_GP}
    world = fem_ml.pod(snapshots, "h1", n_modes=6)
    _, together = fem_ml.select_regressor(world, snapshots, SPACE, candidates=candidates, folds=3)
    alone = fem_ml.collect_snapshots(solve, snapshots.parameters, Vs, space=SPACE, progress=False)
    serial = fem_ml.pod(alone, "h1", n_modes=6)
    _, single = fem_ml.select_regressor(serial, alone, SPACE, candidates=candidates, folds=3)
    assert single.selected == together.selected
    for a, b in zip(single.candidates, together.candidates, strict=True):
        np.testing.assert_allclose(a.cv_error, b.cv_error, rtol=1e-6)
    world.destroy()
    serial.destroy()


def test_options_reject_unknown_names(comm, basis, snapshots):
    """Unknown option names are TypeErrors; unknown values and candidates are ValueErrors, on every rank."""
    with pytest.raises(TypeError):
        fem_ml.KernelOptions(methd="gp")  # type: ignore[call-arg]
    raises_on_all_ranks(comm, TypeError, "bogus", fem_ml.fit_kernel_surrogate, basis, snapshots, SPACE, bogus=1)
    raises_on_all_ranks(comm, ValueError, "Unknown kernel", fem_ml.KernelOptions, method="rbf", kernel="matern52")
    raises_on_all_ranks(comm, ValueError, "Unknown method", fem_ml.KernelOptions, method="knn")
    raises_on_all_ranks(comm, ValueError, "Unknown candidate", fem_ml.select_regressor, basis, snapshots, SPACE,
                        candidates=("rbf", "svm"))  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "folds", fem_ml.select_regressor, basis, snapshots, SPACE, folds=1)
    with pytest.raises(TypeError):
        fem_ml.select_regressor(basis, snapshots, SPACE, fold=3)  # type: ignore[call-arg]


def test_network_only_features_refuse_a_kernel_surrogate(comm, tmp_dir, roms):
    """The inverse problems (through torch) and the ParaView runtime refuse a kernel surrogate clearly."""
    from fem_ml.paraview.runtime import SurrogateModel

    rom = roms["gp"]
    sensors = fem_ml.Sensors(rom, np.array([[0.25, 0.25, 0.0], [0.75, 0.5, 0.0]]))
    data = sensors.matrix @ rom.coefficients(MU[:1])[0]
    observations = sensors.observe(data, noise_std=1e-3 * float(np.sqrt(np.mean(data**2))))
    raises_on_all_ranks(comm, TypeError, "not a network", fem_ml.identify, rom, observations, n_starts=1)
    path = fem_ml.save(rom, tmp_dir / "for_paraview.femml")
    with pytest.raises(ValueError, match="evaluates network surrogates only"):
        SurrogateModel(path)


def _result(name, errors):
    errors = np.asarray(errors, dtype=float)
    return CandidateResult(name=name, cv_error=errors, regressor_error=errors, time_s=0.0, description=name)


def test_pick_prefers_a_kernel_within_one_standard_error():
    """A kernel regressor tied with a network (within one standard error of the lowest mean) is picked."""
    noisy = np.array([0.05, 0.15, 0.05, 0.15])  # mean 0.1, standard error of the mean 0.0289
    kinds = {"network": "network", "gp": "kernel", "rbf": "kernel"}
    tied = [_result("network", noisy), _result("gp", noisy + 0.02), _result("rbf", noisy + 0.05)]
    best, reason = _pick(tied, kinds, folds=2)
    assert best.name == "gp" and "one standard error" in reason
    clear = [_result("network", noisy), _result("gp", noisy + 0.05)]
    best, reason = _pick(clear, kinds, folds=2)
    assert best.name == "network" and "lowest mean" in reason
    exact = [_result("network", np.full(4, 0.1)), _result("gp", np.full(4, 0.1 + 1e-9))]
    assert _pick(exact, kinds, folds=2)[0].name == "network"  # no spread: no tie beyond the lowest
    failed = [_result("network", [np.nan, 0.1]), _result("rbf", [0.1, 0.2]), _result("gp", [0.3, 0.3])]
    assert _pick(failed, kinds, folds=2)[0].name == "rbf"  # a NaN error never wins
    with pytest.raises(ValueError, match="finite"):
        _pick([_result("network", [np.inf, np.inf]), _result("gp", [np.inf, np.inf])], kinds, folds=2)


def test_newton_polish_converges_within_bounds_and_refuses_bad_curvature():
    # A convex quadratic, minimum at (0.3, -0.2, 0.5); the third variable's bound cuts it at 0.4.
    A = np.array([[3.0, 0.5, 0.2], [0.5, 2.0, 0.1], [0.2, 0.1, 1.0]])
    centre = np.array([0.3, -0.2, 0.5])

    def quadratic(x):
        d = x - centre
        return 0.5 * d @ A @ d, A @ d

    bounds = np.array([[-1.0, 1.0], [-1.0, 1.0], [-1.0, 0.4]])
    start = np.array([0.3 + 1e-3, -0.2 - 2e-3, 0.4])  # near the optimum, the third variable at its bound
    x, f = _newton_polish(quadratic, start, bounds)
    assert x[2] == 0.4  # at a bound it stays
    # The others: the minimum of the quadratic with x[2] = 0.4 fixed, to far better than the start.
    free = A[:2, :2]
    expected = centre[:2] - np.linalg.solve(free, A[:2, 2] * (0.4 - centre[2]))
    np.testing.assert_allclose(x[:2], expected, rtol=0, atol=1e-10)
    assert f == pytest.approx(quadratic(x)[0], rel=1e-14) and f < quadratic(start)[0]
    # Every variable at a bound: nothing to do.
    corner = np.array([1.0, -1.0, 0.4])
    np.testing.assert_array_equal(_newton_polish(quadratic, corner, bounds)[0], corner)
    # Negative curvature (a saddle): no step is taken.
    saddle = lambda x: (x[0] ** 2 - x[1] ** 2, np.array([2 * x[0], -2 * x[1]]))  # noqa: E731
    near = np.array([0.1, 0.1])
    np.testing.assert_array_equal(_newton_polish(saddle, near, np.array([[-1.0, 1.0]] * 2))[0], near)
    # A forward difference step past the upper bound is taken backwards instead (the objective is not called
    # outside the bounds).
    seen = []

    def recording(x):
        seen.append(x.copy())
        return quadratic(x)

    _newton_polish(recording, np.array([0.3, -0.2, 0.4 - 1e-5]), bounds)
    assert all(np.all(p <= bounds[:, 1]) and np.all(p >= bounds[:, 0]) for p in seen)
