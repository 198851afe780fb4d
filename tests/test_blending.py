# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The blend of a kernel regressor and a network: its maths, its files on any rank count, select_regressor's blend."""

from __future__ import annotations

from mpi4py import MPI

import numpy as np
import pytest
from conftest import SPACE, by_coordinates, forged_surrogate_files, raises_on_all_ranks

import fem_ml
from fem_ml.blending import BlendedRegressor, fit_weight
from fem_ml.selection import CandidateResult, _pick

MU = np.array([[0.3, 0.45, 0.8, 0.2], [0.9, 0.15, 0.5, 0.6], [0.12, 0.95, 0.33, 0.7]])
QUICK_GP = fem_ml.KernelOptions(method="gp", kernel="matern52", input_transform="log", restarts=0)
#: A small network on linear inputs (the GP's are log inputs: the blend evaluates one member from the parameters).
SMALL_NET = fem_ml.TrainingOptions(
    hidden_layers=(16,), adam_epochs=60, lbfgs_iterations=20, n_networks=2, input_transform="linear", progress=False
)
#: The network of select_regressor's tests: on these snapshots its blend with the GP has the lowest CV error.
SELECT_NET = fem_ml.TrainingOptions(
    hidden_layers=(16,), adam_epochs=200, lbfgs_iterations=100, input_transform="log", progress=False
)
WEIGHT = 0.4


@pytest.fixture(scope="module")
def basis(snapshots):
    b = fem_ml.pod(snapshots, "h1", n_modes=6)
    yield b
    b.destroy()


@pytest.fixture(scope="module")
def members(basis, snapshots):
    """A GP (log inputs) and an ensemble of two networks (linear inputs) on the same snapshots."""
    gp = fem_ml.fit_kernel_surrogate(basis, snapshots, SPACE, options=QUICK_GP)
    net = fem_ml.train_surrogate(basis, snapshots, SPACE, options=SMALL_NET)
    yield gp, net
    gp.destroy()
    net.destroy()


@pytest.fixture(scope="module")
def blended(basis, snapshots, members):
    gp, net = members
    regressor = BlendedRegressor(gp.regressor, net.regressor, WEIGHT)
    rom = fem_ml.Surrogate(SPACE, basis, regressor, history=net.history, training_parameters=snapshots.parameters)
    yield rom
    rom.destroy()


def test_blend_is_the_weighted_mean_of_its_members(members, blended):
    """With weight w the prediction is w * kernel + (1 - w) * network, whatever the members' input transforms."""
    gp, net = members
    regressor = blended.regressor
    assert regressor.kind == "blend" and regressor.weights == (WEIGHT, 1.0 - WEIGHT)
    assert regressor.input_transform == "log" and gp.regressor.input_transform == "log"
    assert net.regressor.input_transform == "linear"  # evaluated from the parameters the blend's inputs give back
    expected = WEIGHT * gp.coefficients(MU) + (1.0 - WEIGHT) * net.coefficients(MU)
    got = blended.coefficients(MU)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * np.abs(expected).max())
    np.testing.assert_allclose(regressor(MU), expected, rtol=0, atol=1e-13 * np.abs(expected).max())
    for w, member in ((1.0, gp), (0.0, net)):  # the ends are the members themselves
        end = BlendedRegressor(gp.regressor, net.regressor, w)
        np.testing.assert_allclose(end(MU), member.coefficients(MU), rtol=0, atol=1e-13 * np.abs(expected).max())
    # Pointwise, the blend's coefficient error is at most the weighted mean of its members' (triangle inequality).
    truth = gp.coefficients(MU) * 1.01
    blend_error = np.linalg.norm(got - truth, axis=1)
    bound = WEIGHT * np.linalg.norm(gp.coefficients(MU) - truth, axis=1)
    bound += (1.0 - WEIGHT) * np.linalg.norm(net.coefficients(MU) - truth, axis=1)
    assert np.all(blend_error <= bound * (1 + 1e-12))


def test_blend_spread_is_the_mixture_covariance(comm, basis, snapshots, members, blended):
    """F^T F = w Sigma_k + (1 - w) Sigma_n + w (1 - w) d d^T; the Functions of uncertainty() follow it."""
    gp, net = members
    w = WEIGHT
    mean, factors = blended.regressor.spread(MU)
    mk, fk = gp.regressor.spread(MU)
    mn, fn = net.regressor.spread(MU)
    np.testing.assert_allclose(mean, w * mk + (1 - w) * mn, rtol=0, atol=1e-13 * np.abs(mean).max())
    for i in range(len(MU)):
        d = mk[i] - mn[i]
        expected = w * fk[i].T @ fk[i] + (1 - w) * fn[i].T @ fn[i] + w * (1 - w) * np.outer(d, d)
        np.testing.assert_allclose(factors[i].T @ factors[i], expected, rtol=1e-10, atol=1e-14 * np.abs(expected).max())
    assert blended.regressor.has_spread
    _, std = blended.uncertainty(MU[0])
    assert comm.allreduce(float(np.max(std.x.array)), op=MPI.MAX) > 0
    assert np.all(blended.deviation(MU) > 0)
    single = fem_ml.train_surrogate(
        basis, snapshots, SPACE, options=SMALL_NET, n_networks=1, adam_epochs=5, lbfgs_iterations=0
    )
    rbf = fem_ml.fit_kernel_surrogate(basis, snapshots, SPACE, method="rbf")
    # RBF and a single network have no spread of their own: the blend's is the disagreement, none at the ends.
    assert BlendedRegressor(rbf.regressor, single.regressor, 0.5).has_spread
    lonely = fem_ml.Surrogate(SPACE, basis, BlendedRegressor(rbf.regressor, single.regressor, 1.0))
    raises_on_all_ranks(comm, ValueError, "blend has no uncertainty", lonely.uncertainty, MU[0])
    for rom in (single, rbf, lonely):
        rom.destroy()


def test_blend_checks_its_members(members, basis, snapshots):
    """Weights outside [0, 1], members of other sizes or other boxes, and other types are refused."""
    gp, net = members
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="within"):
            BlendedRegressor(gp.regressor, net.regressor, bad)
    with pytest.raises(TypeError, match="KernelRegressor and a CoefficientNetwork"):
        BlendedRegressor(net.regressor, gp.regressor, 0.5)
    fewer = fem_ml.pod(snapshots, "h1", n_modes=4)
    small = fem_ml.fit_kernel_surrogate(fewer, snapshots, SPACE, options=QUICK_GP)
    with pytest.raises(ValueError, match="different sizes"):
        BlendedRegressor(small.regressor, net.regressor, 0.5)
    wider = fem_ml.ParameterSpace({f"mu{i}": (0.1, 2.0) for i in range(4)})
    other = fem_ml.fit_kernel_surrogate(basis, snapshots, wider, options=QUICK_GP)
    with pytest.raises(ValueError, match="different parameter boxes"):
        BlendedRegressor(other.regressor, net.regressor, 0.5)
    for rom in (small, other):
        rom.destroy()
    fewer.destroy()


def test_blend_file_across_rank_counts(comm, tmp_dir, problem, serial_problem, blended):
    """Saved on all ranks (format version 3), loaded on all and on one: the same predictions; info shows it."""
    from fem_ml.cli import _format_info

    reference = by_coordinates(blended.V, blended.predict_values(MU))
    path = fem_ml.save(blended, tmp_dir / "blend.femml")
    Vs, _ = serial_problem
    for loaded in (fem_ml.load(path, problem[0]), fem_ml.load(path, Vs), fem_ml.load(path, comm=MPI.COMM_SELF)):
        got = by_coordinates(loaded.V, loaded.predict_values(MU))
        np.testing.assert_allclose(got, reference, rtol=0, atol=1e-12 * np.abs(reference).max())
        assert loaded.regressor.kind == "blend" and loaded.regressor.weights == (WEIGHT, 1.0 - WEIGHT)
        assert len(loaded.history) == 2  # the network's members' training histories
        loaded.destroy()
    info = fem_ml.archive.describe(path)
    assert info["blend"] == {"kernel_weight": WEIGHT, "network_weight": 1.0 - WEIGHT}
    assert info["kernel"]["method"] == "gp" and info["network"]["n_networks"] == 2
    text = _format_info(info)
    assert "blend: 0.4 x kernel regressor + 0.6 x network" in text and "kernel regressor: gp" in text
    assert "network: 2 x MLP [16]" in text
    if comm.rank == 0:
        import h5py

        with h5py.File(path, "r") as f:
            assert int(f.attrs["format_version"]) == 3
    # A network alone is still written as version 2 (readable by fem_ml before the blend).
    network_only = fem_ml.Surrogate(SPACE, blended.basis, blended.regressor.network)
    plain = fem_ml.save(network_only, tmp_dir / "network.femml")
    if comm.rank == 0:
        import h5py

        with h5py.File(plain, "r") as f:
            assert int(f.attrs["format_version"]) == 2
    network_only.destroy()


def _forgeries(tree: dict):
    """Blend entries made invalid; each yields (label, forged tree)."""
    weights = tree["blend/weights"]
    yield "weight nan", {**tree, "blend/weights": np.array([np.nan, 0.5])}
    yield "weights sum 1.2", {**tree, "blend/weights": np.array([0.6, 0.6])}
    yield "weight negative", {**tree, "blend/weights": np.array([1.2, -0.2])}
    yield "three weights", {**tree, "blend/weights": np.array([0.2, 0.3, 0.5])}
    yield "weights integers", {**tree, "blend/weights": np.array([1, 0])}
    yield "weights removed", {k: v for k, v in tree.items() if k != "blend/weights"}
    yield "kernel n_out", {**tree, "blend/kernel/n_out": int(tree["blend/kernel/n_out"]) - 1}
    yield "network n_out", {**tree, "blend/network/n_out": int(tree["blend/network/n_out"]) + 1}
    yield "network n_in", {**tree, "blend/network/n_in": 3}
    kernel_w = tree["blend/kernel/weights"]
    yield "kernel weights wider", {**tree, "blend/kernel/weights": np.hstack([kernel_w, kernel_w[:, :1]])}
    yield "kernel removed", {k: v for k, v in tree.items() if not k.startswith("blend/kernel/")}
    yield "network removed", {k: v for k, v in tree.items() if not k.startswith("blend/network/")}
    layer = "blend/network/member_1/layers.0.weight"
    yield "member layer removed", {k: v for k, v in tree.items() if k != layer}
    bad = tree[layer].copy()
    bad[0, 0] = np.inf
    yield "member layer inf", {**tree, layer: bad}
    yield "kernel cholesky nan", {**tree, "blend/kernel/cholesky": tree["blend/kernel/cholesky"] * np.nan}
    shift = tree["blend/network/input_scaler/shift"]
    yield "network on another box", {**tree, "blend/network/input_scaler/shift": shift + 0.1}
    yield "a network beside", {**tree, "network/n_in": 4}
    yield "a kernel beside", {**tree, "kernel/method": "gp"}
    yield "unknown blend entry", {**tree, "blend/bias": weights}


#: What refuses each forgery of :func:`_forgeries`: the entry named and the reason.
REFUSALS = {
    "weight nan": "'blend/weights': holds NaN",
    "weights sum 1.2": "'blend/weights': .* do not sum to 1",
    "weight negative": "'blend/weights': .* outside \\[0, 1\\]",
    "three weights": "'blend/weights': shape \\(3,\\)",
    "weights integers": "'blend/weights': dtype int64",
    "weights removed": "'blend/weights': missing entry",
    "kernel n_out": "'blend/kernel/n_out': 5 outputs for 6 modes",
    "network n_out": "'blend/network/n_out': 7 outputs for 6 modes",
    "network n_in": "'blend/network/n_in': 3 inputs for 4 parameters",
    "kernel weights wider": "'blend/kernel/weights': shape \\(40, 7\\)",
    "kernel removed": "'blend/kernel/n_in': expected an integer",
    "network removed": "'blend/network/n_in': expected an integer",
    "member layer removed": "'blend/network/n_networks': .* the file holds 7",
    "member layer inf": "'blend/network/member_1/layers.0.weight': holds NaN",
    "kernel cholesky nan": "'blend/kernel/cholesky': holds NaN",
    "network on another box": "'blend': The members were fitted on different parameter boxes",
    "a network beside": "beside no other regressor",
    "a kernel beside": "beside no other regressor",
    "unknown blend entry": "'blend/bias': unknown entry",
}


def test_forged_blend_files_are_refused(comm, tmp_dir, blended):
    """Every forged blend entry, with a valid checksum, is a FileFormatError naming the file and the reason."""
    path = fem_ml.save(blended, tmp_dir / "blend_forge.femml")
    cases = forged_surrogate_files(comm, path, _forgeries, tmp_dir, "forged_blend")
    assert sorted(label for label, _ in cases) == sorted(REFUSALS)
    for label, target in cases:
        with pytest.raises(fem_ml.FileFormatError, match=REFUSALS[label]) as err:
            fem_ml.load(target, comm=comm)
        assert target in str(err.value), label
        assert comm.allreduce(1) == comm.size  # every rank raised, none is left waiting


def test_network_only_features_refuse_a_blend(comm, tmp_dir, blended):
    """The inverse problems and the ParaView runtime refuse a blend clearly, on every rank."""
    from fem_ml.paraview.runtime import SurrogateModel

    sensors = fem_ml.Sensors(blended, np.array([[0.25, 0.25, 0.0], [0.75, 0.5, 0.0]]))
    data = sensors.matrix @ blended.coefficients(MU[:1])[0]
    observations = sensors.observe(data, noise_std=1e-3 * float(np.sqrt(np.mean(data**2))))
    raises_on_all_ranks(comm, TypeError, "blend regressor, not a network.*rom.regressor.network", fem_ml.identify,
                        blended, observations, n_starts=1)  # fmt: skip
    path = fem_ml.save(blended, tmp_dir / "blend_for_paraview.femml")
    with pytest.raises(ValueError, match=r"a blend of a kernel regressor \(gp\) and a network"):
        SurrogateModel(path)


def test_fit_weight():
    """The weight recovers an exact mixture, reaches both ends, is 1/2 for identical members and minimizes E(w)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    norms = rng.uniform(0.5, 2.0, size=30)
    assert fit_weight(a, b, 0.3 * a + 0.7 * b, norms) == pytest.approx(0.3, abs=1e-6)
    assert fit_weight(a, b, a + 0.5 * (a - b), norms) == 1.0
    assert fit_weight(a, b, b - 0.5 * (a - b), norms) == 0.0
    assert fit_weight(a, a, b, norms) == 0.5
    # The minimizer of the mean relative error (with projection errors): no weight on a fine grid does better.
    c, p = rng.normal(size=(30, 5)), rng.uniform(0.0, 1.0, size=30)
    w = fit_weight(a, b, c, norms, p)

    def mean_error(v):
        return np.mean(np.sqrt(p + np.sum((v * a + (1 - v) * b - c) ** 2, axis=1)) / norms)

    assert all(mean_error(w) <= mean_error(v) + 1e-12 for v in np.linspace(0, 1, 1001))


def _result(name, errors):
    errors = np.asarray(errors, dtype=float)
    return CandidateResult(name=name, cv_error=errors, regressor_error=errors, time_s=0.0, description=name)


def test_pick_takes_the_blend_only_when_it_is_lowest():
    """The blend wins only with the lowest mean error; tied but not lowest, it ranks after kernels and networks."""
    noisy = np.array([0.05, 0.15, 0.05, 0.15])  # mean 0.1, standard error 0.0289
    kinds = {"network": "network", "gp": "kernel", "blend": "blend"}
    lowest = [_result("network", noisy + 0.01), _result("gp", noisy + 0.02), _result("blend", noisy)]
    best, reason = _pick(lowest, kinds, folds=2)
    assert best.name == "blend" and "lowest mean" in reason and "blend of lowest error" in reason
    tied = [_result("network", noisy), _result("gp", noisy + 0.02), _result("blend", noisy + 0.01)]
    assert _pick(tied, kinds, folds=2)[0].name == "gp"  # the one-standard-error rule, as without the blend
    only_networks = [_result("network", noisy), _result("blend", noisy + 0.01)]
    assert _pick(only_networks, kinds, folds=2)[0].name == "network"
    failed = [_result("network", noisy), _result("gp", noisy + 0.02), _result("blend", [np.nan] * 4)]
    assert _pick(failed, kinds, folds=2)[0].name == "gp"


@pytest.fixture(scope="module")
def selections(basis, snapshots):
    """select_regressor with the blend (fitted weight), with a fixed weight 1/2, and without it."""
    candidates = {"rbf": fem_ml.KernelOptions(method="rbf"), "gp": QUICK_GP, "network": SELECT_NET}
    out = {}
    for label, options in (("fitted", {}), ("half", {"blend_weight": 0.5}), ("off", {"blend": False})):
        out[label] = fem_ml.select_regressor(basis, snapshots, SPACE, candidates=candidates, folds=3, seed=2, **options)
    yield out
    for rom, _ in out.values():
        rom.destroy()


def _by_hand(basis, snapshots, kernel, network, fold, weights):
    """The blend's held-out errors from its members' held-out predictions, computed here from the definition."""
    c = basis.project(snapshots).T
    norms = basis.inner_product.norms(snapshots.values)
    projection = basis.inner_product.norms(snapshots.values - basis.reconstruct(c.T))
    w = np.asarray(weights)[fold]
    blend = w[:, None] * kernel.predictions + (1 - w[:, None]) * network.predictions
    return np.sqrt(projection**2 + np.sum((blend - c) ** 2, axis=1)) / norms


def _folds(n, folds, seed):
    fold = np.empty(n, dtype=np.int64)
    for f, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), folds)):
        fold[part] = f
    return fold


def test_select_regressor_blends_the_best_kernel_and_network(comm, basis, snapshots, selections):
    """The blend's CV error is that of the weighted mean of its members' held-out predictions, by hand."""
    _, fitted = selections["fitted"]
    _, half = selections["half"]
    _, off = selections["off"]
    names = [c.name for c in fitted.candidates]
    assert names == ["rbf", "gp", "network", "blend"] and [c.name for c in off.candidates] == names[:-1]
    results = {c.name: c for c in fitted.candidates}
    kernel = min((results["rbf"], results["gp"]), key=lambda r: r.cv_error_mean)
    assert fitted.blend_members == (kernel.name, "network") and off.blend_members is None
    fold = _folds(len(snapshots), 3, 2)
    # Fixed weight 1/2: the blend's held-out prediction is the mean of its members'.
    expected = _by_hand(basis, snapshots, kernel, results["network"], fold, [0.5] * 3)
    np.testing.assert_allclose(half.candidates[-1].cv_error, expected, rtol=1e-10)
    assert half.blend_weight == 0.5
    # Fitted weight: on fold f, the minimizer of the other folds' mean held-out error (by hand: a fine grid).
    c = basis.project(snapshots).T
    both = basis.inner_product.norms(np.hstack([snapshots.values, snapshots.values - basis.reconstruct(c.T)]))
    norms, p = both[: len(fold)], both[len(fold) :] ** 2
    a, b = kernel.predictions, results["network"].predictions
    grid = np.linspace(0.0, 1.0, 20001)

    def by_grid(rows):
        d, e = (a - b)[rows], (b - c)[rows]
        # E(w) on the grid, from sum_k (e + w d)^2 = |e|^2 + 2 w e.d + w^2 |d|^2 per snapshot.
        ee, ed, dd = np.sum(e * e, axis=1), np.sum(e * d, axis=1), np.sum(d * d, axis=1)
        sq = p[rows][:, None] + ee[:, None] + 2 * grid * ed[:, None] + grid**2 * dd[:, None]
        return float(grid[np.argmin(np.mean(np.sqrt(np.maximum(sq, 0.0)) / norms[rows, None], axis=0))])

    weights = [by_grid(fold != f) for f in range(3)]
    np.testing.assert_allclose(
        results["blend"].cv_error, _by_hand(basis, snapshots, kernel, results["network"], fold, weights), rtol=1e-4
    )
    assert fitted.blend_weight == pytest.approx(by_grid(np.ones(len(fold), dtype=bool)), abs=1e-4)
    assert "blend = " in fitted.table() and "blend" in [c["name"] for c in fitted.summary()["candidates"]]
    # The same everywhere, and the same pick as the rule says.
    gathered = comm.allgather((fitted.selected, fitted.blend_weight, [c.cv_error_mean for c in fitted.candidates]))
    assert all(g == gathered[0] for g in gathered)
    means = {c.name: c.cv_error_mean for c in fitted.candidates}
    assert (fitted.selected == "blend") == (min(means, key=means.get) == "blend")


def test_select_regressor_returns_the_refit_blend(comm, basis, snapshots, selections):
    """A picked blend has both members refit on all snapshots, blended with the reported weight.

    On these snapshots (seed 2), the blend of the GP and the network has the lowest CV error (4.9e-2 against 5.1e-2
    for the network and 5.2e-2 for the GP, with either weight), so the rule picks it.
    """
    for label in ("fitted", "half"):
        rom, selection = selections[label]
        assert selection.selected == "blend" and selection.blend_members == ("gp", "network")
        assert "blend of lowest error" in selection.reason
        assert isinstance(rom.regressor, BlendedRegressor) and rom.regressor.weight == selection.blend_weight
        assert rom.history is not None and len(rom.history) == rom.regressor.network.n_networks  # its members
    rom = selections["half"][0]
    kernel = fem_ml.fit_kernel_surrogate(basis, snapshots, SPACE, options=QUICK_GP)
    network = fem_ml.train_surrogate(basis, snapshots, SPACE, options=SELECT_NET)
    expected = 0.5 * kernel.coefficients(MU) + 0.5 * network.coefficients(MU)
    np.testing.assert_allclose(rom.coefficients(MU), expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    kernel.destroy()
    network.destroy()


def test_select_regressor_blend_options(comm, basis, snapshots):
    """blend is a bool; blend_weight in [0, 1], only with blend; 'blend' is reserved; kernels only: no blend."""
    candidates = {"rbf": fem_ml.KernelOptions(method="rbf"), "gp": QUICK_GP}
    raises_on_all_ranks(comm, TypeError, "blend must be", fem_ml.select_regressor, basis, snapshots, SPACE,
                        candidates=candidates, blend="yes")  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "blend_weight", fem_ml.select_regressor, basis, snapshots, SPACE,
                        candidates=candidates, blend_weight=1.5)  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "would be ignored", fem_ml.select_regressor, basis, snapshots, SPACE,
                        candidates=candidates, blend=False, blend_weight=0.5)  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "name of the blended candidate", fem_ml.select_regressor, basis, snapshots,
                        SPACE, candidates={"blend": QUICK_GP, "rbf": fem_ml.KernelOptions(method="rbf")})  # fmt: skip
    with pytest.raises(TypeError):
        fem_ml.select_regressor(basis, snapshots, SPACE, blending=True)  # type: ignore[call-arg]
    rom, selection = fem_ml.select_regressor(basis, snapshots, SPACE, candidates=candidates, folds=2)
    assert selection.blend_members is None and "blend" not in [c.name for c in selection.candidates]
    rom.destroy()
