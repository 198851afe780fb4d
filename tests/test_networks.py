# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import itertools
import json
import math

from mpi4py import MPI

import numpy as np
import pytest
import torch

from fem_ml.networks import (
    LM_PATIENCE,
    MLP,
    AffineScaler,
    CoefficientNetwork,
    NormModel,
    TrainingHistory,
    TrainingOptions,
    _EarlyStopping,
    automatic_fields,
    resolve_device,
    resolve_options,
    stack_numpy,
    stack_torch,
    train_network,
)


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform([0.1, 1.0], [1.0, 3.0], size=(n, 2))
    y = np.stack([np.sin(3 * x[:, 0]) + x[:, 1], np.cos(x[:, 0] * x[:, 1]), 1.0 / x[:, 0]], axis=1)
    return x, y


FAST = {
    "n_networks": 1,
    "input_transform": "linear",
    "adam_epochs": 300,
    "lbfgs_iterations": 50,
    "patience": 100,
    "progress": False,
    "hidden_layers": (16, 16),
}


def _fit(x, y, lower=(0.1, 1.0), **options):
    """Train on the test data with FAST options plus ``options``, on COMM_WORLD."""
    return train_network(x, y, lower, [1.0, 3.0], options=TrainingOptions(**{**FAST, **options}), comm=MPI.COMM_WORLD)


def test_unknown_option_is_an_error():
    with pytest.raises(TypeError):
        TrainingOptions(hiden_layers=(8,))  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"hidden_layers": (8, 0)}, "hidden_layers"),
        ({"activation": "swish"}, "activation"),
        ({"loss": "l1"}, "loss"),
        ({"dtype": "float16"}, "dtype"),
        ({"adam_dtype": "float16"}, "adam_dtype"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"learning_rate": True}, "learning_rate"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"adam_epochs": 0, "lbfgs_iterations": 0}, "nothing would be trained"),
        ({"lbfgs_iterations": 10, "lm_iterations": 10}, "both set"),
        ({"polish": "l-bfgs", "lm_iterations": 10}, "would be ignored"),
        ({"polish": "levenberg-marquardt", "lbfgs_iterations": 10}, "would be ignored"),
        ({"adam_epochs": 0, "polish": "l-bfgs", "lbfgs_iterations": 0}, "nothing would be trained"),
        ({"adam_epochs": 0, "polish": "levenberg-marquardt", "lm_iterations": 0}, "nothing would be trained"),
        ({"polish": "newton"}, "polish"),
        ({"lm_iterations": -1}, "lm_iterations"),
        ({"n_networks": 0}, "n_networks"),
        ({"input_transform": "sqrt"}, "input_transform"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_option_values(option, match):
    with pytest.raises(ValueError, match=match):
        TrainingOptions(**option)


def test_scalers():
    s = AffineScaler.from_bounds([0.1, -2.0], [1.0, 2.0])
    np.testing.assert_allclose(s.transform(np.array([[0.1, -2.0], [1.0, 2.0]])), [[-1, -1], [1, 1]])
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 3))
    z = AffineScaler.standardize(data).transform(data)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-12)
    np.testing.assert_allclose(AffineScaler.standardize(data).inverse(z), data)


@pytest.mark.parametrize("activation", ["gelu", "tanh", "relu", "silu", "softplus"])
def test_numpy_forward_matches_torch(activation):
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(MLP(2, 3, hidden_layers=(8, 8), activation=activation).double())
    net = CoefficientNetwork(
        models, AffineScaler.from_bounds([0, 0], [30, 30]), AffineScaler(np.ones(3), 2 * np.ones(3))
    )
    x = np.random.default_rng(1).uniform(0, 30, size=(7, 2))
    np.testing.assert_allclose(net(x), net.torch_forward(x), rtol=1e-13, atol=1e-13)
    assert net.n_networks == 3 and net.n_params == 2 and net.n_coefficients == 3
    # Both stacked passes against the torch modules themselves, member by member.
    inputs = net.scale_inputs(x)
    with torch.no_grad():
        members = np.stack([m(torch.from_numpy(inputs)).numpy() for m in models])
    np.testing.assert_allclose(stack_numpy(models)(inputs), members, rtol=1e-13, atol=1e-13)
    stacked = stack_torch(models)
    with torch.no_grad():
        np.testing.assert_allclose(stacked(torch.from_numpy(inputs)).numpy(), members, rtol=1e-13, atol=1e-13)
    assert stacked.n_members == 3 and stacked.hidden(torch.from_numpy(inputs)).shape == (3, 7, 8)
    np.testing.assert_allclose(net.output_scaler.inverse(members.mean(axis=0)), net(x), rtol=1e-13, atol=1e-13)
    big = np.random.default_rng(2).uniform(0, 30, size=(net.torch_batch_threshold, 2))  # the torch path
    np.testing.assert_allclose(net(big), net.members(big).mean(axis=0), rtol=1e-13, atol=1e-13)


def test_early_stopping_keeps_and_restores_the_best_weights():
    """Each member's best weights are kept in one flat copy, replaced only on improvement, and restored exactly."""
    flat = torch.zeros(6, dtype=torch.float64)
    member_of = torch.tensor([0, 0, 1, 1, 0, 1])
    histories = [TrainingHistory(), TrainingHistory()]
    losses = iter(np.array(v) for v in ([3.0, 3.0], [1.0, 4.0], [2.0, 2.0], [5.0, 1.0], [0.0, 0.5]))
    stopping = _EarlyStopping(flat, member_of, histories, lambda: next(losses), patience=1)
    snapshots = []
    improved = []
    for step in range(4):
        flat += 1.0
        snapshots.append(flat.clone())
        improved.append(stopping.record(np.array([10.0 - step, 20.0 - step])).tolist())
    # Member 0 improves at steps 0 and 1, then runs out of patience after step 3; member 1 at steps 0, 2 and 3.
    assert improved == [[True, True], [True, False], [False, True], [False, True]]
    assert stopping.index.tolist() == [1, 3] and stopping.loss.tolist() == [1.0, 1.0]
    assert stopping.active.tolist() == [False, True] and not stopping.exhausted
    assert histories[0].validation_loss == [3.0, 1.0, 2.0, 5.0] and histories[1].train_loss == [20.0, 19.0, 18.0, 17.0]
    stopping.restore()
    expected = torch.where(member_of == 0, snapshots[1], snapshots[3])
    assert torch.equal(flat, expected)
    # An exhausted member records nothing more.
    stopping.record(np.array([0.0, 0.0]))
    assert len(histories[0].train_loss) == 4 and len(histories[1].train_loss) == 5
    # Without validation, every step is an improvement and patience never runs out.
    no_validation = _EarlyStopping(flat, member_of, [TrainingHistory(), TrainingHistory()], None, patience=0)
    assert all(no_validation.record(np.array([v, v])).all() for v in (1.0, 2.0, 3.0)) and not no_validation.exhausted
    assert no_validation.index.tolist() == [2, 2]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_training_fits_learns_and_restores_best(backend):
    x, y = _data()
    net, (history,) = _fit(x, y, backend=backend)
    assert history.device == "cpu" and json.loads(history.options)["backend"] == backend
    assert history.train_loss[0] > 10 * history.best_train_loss
    best = int(np.argmin(history.validation_loss))
    assert history.best_index == best
    assert history.best_validation_loss == min(history.validation_loss)
    assert len(history.validation_indices) == 12 and len(history.train_indices) == 48
    assert history.n_adam_epochs + history.n_lbfgs_iterations > 0
    # The restored network reproduces its recorded validation loss (relative loss on held-out samples).
    val = history.validation_indices
    pred = net(x[val])
    rel = np.mean(np.sum((pred - y[val]) ** 2, axis=1) / np.sum(y[val] ** 2, axis=1))
    assert rel == pytest.approx(history.best_validation_loss, rel=1e-8)
    x_test, y_test = _data(20, seed=5)
    err = np.linalg.norm(net(x_test) - y_test, axis=1) / np.linalg.norm(y_test, axis=1)
    assert err.mean() < 0.05


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_training_is_reproducible_and_identical_on_all_ranks(backend):
    comm = MPI.COMM_WORLD
    x, y = _data()
    a, _ = _fit(x, y, seed=7, n_networks=2, input_transform="log", backend=backend)
    b, histories = _fit(x, y, seed=7, n_networks=2, input_transform="log", backend=backend)
    assert len(histories) == 2
    np.testing.assert_array_equal(a(x), b(x))
    for other in comm.allgather(a(x)):
        np.testing.assert_array_equal(other, a(x))
    # The same ensemble trained by each rank alone: the batched training does not depend on the rank count.
    options = TrainingOptions(**{**FAST, "seed": 7, "n_networks": 2, "input_transform": "log", "backend": backend})
    alone, _ = train_network(x, y, (0.1, 1.0), [1.0, 3.0], options=options, comm=MPI.COMM_SELF)
    np.testing.assert_array_equal(alone(x), a(x))
    c, _ = _fit(x, y, seed=8, backend=backend)
    assert not np.allclose(a(x), c(x))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_mini_batches_weight_decay_and_no_validation_split(backend):
    """Mini-batch Adam with weight decay, then L-BFGS, without a validation split: the last weights are kept."""
    x, y = _data()
    net, (history,) = _fit(
        x, y, backend=backend, batch_size=7, weight_decay=1e-4, validation_fraction=0.0, lbfgs_iterations=20
    )
    assert history.validation_loss == [] and len(history.train_indices) == len(x)
    assert history.best_index == len(history.train_loss) - 1 and history.n_lbfgs_iterations > 0
    assert history.train_loss[-1] < 0.1 * history.train_loss[0]
    # The last record is the full-batch data loss at the returned weights (every sample trains).
    rel = np.mean(np.sum((net(x) - y) ** 2, axis=1) / np.sum(y**2, axis=1))
    assert rel == pytest.approx(history.train_loss[-1], rel=1e-8)


def test_norm_model_fit_and_every_evaluation_path():
    """The log-linear norm model is the least-squares fit; every path of the network multiplies by its factor."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1.0, 1.0, (40, 3))
    norms = np.exp(0.5 + x @ np.array([1.0, -2.0, 0.25]))
    direction = rng.standard_normal(5)
    model = NormModel.fit(x, norms[:, None] * direction / np.linalg.norm(direction))
    assert model.intercept == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_allclose(model.slopes, [1.0, -2.0, 0.25], atol=1e-12)
    np.testing.assert_allclose(model(x), norms, rtol=1e-12)
    again = NormModel.from_tree(model.to_tree())
    assert again.intercept == model.intercept and np.array_equal(again.slopes, model.slopes)
    with pytest.raises(ValueError, match="positive norm"):
        NormModel.fit(x, np.zeros((40, 2)))
    for weights in ((800.0, np.zeros(3)), (0.0, np.array([np.nan, 0.0, 0.0]))):
        with pytest.raises(ValueError, match="NormModel weights"):
            NormModel(*weights)
    steep = NormModel(10.0, np.array([200.0, -50.0, 0.0]))
    far = steep(np.array([[1e6, 0.0, 0.0], [-1e6, 0.0, 0.0]]))  # far outside the box: clipped, finite
    assert np.all(np.isfinite(far)) and far[1] > 0
    xs, ys = _data()
    net, _ = _fit(xs, ys, n_networks=2)
    assert net.norm_model is not None
    inputs = net.scale_inputs(xs)
    factor = net.norm_model(inputs)
    members = net.members(xs)
    np.testing.assert_allclose(members, net.output_scaler.inverse(net.stacked(inputs)) * factor[None, :, None],
                               rtol=1e-13)  # fmt: skip
    np.testing.assert_allclose(net(xs), members.mean(axis=0), rtol=1e-13, atol=1e-15)
    big = np.random.default_rng(2).uniform([0.1, 1.0], [1.0, 3.0], size=(net.torch_batch_threshold, 2))
    np.testing.assert_allclose(net(big), net.members(big).mean(axis=0), rtol=1e-12)  # torch's pass, times f
    loaded = CoefficientNetwork.from_tree(net.to_tree())
    np.testing.assert_array_equal(loaded(xs), net(xs))
    mean, deviations = net.spread(xs)
    np.testing.assert_allclose(mean, net(xs), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(deviations, np.transpose(members - mean, (1, 0, 2)) / np.sqrt(2), rtol=1e-12)
    plain, _ = _fit(xs, ys, output_norm="none")
    assert plain.norm_model is None and not any("norm_model" in k for k in plain.to_tree())


def test_log_transform_needs_positive_bounds():
    x, y = _data()
    with pytest.raises(ValueError, match="positive lower bounds"):
        _fit(x, y, lower=(0.0, 1.0), input_transform="log")


def test_float32_training():
    x, y = _data()
    net, _ = _fit(x, y, dtype="float32")
    assert net.models[0].layers[0].weight.dtype == torch.float32
    assert net(x).dtype == np.float64


def test_failure_on_one_rank_is_raised_everywhere():
    """A training task that fails on rank 0 (here: an unusable device) raises on every rank, no hang."""
    x, y = _data()
    with pytest.raises(RuntimeError, match="task 0 on rank 0 failed"):
        _fit(x, y, device="cuda:99")


def test_device_auto():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_ensemble_members_train_as_alone(backend):
    """An ensemble member has the initialization, split and Adam path of a network trained alone."""
    x, y = _data()
    alone, (history,) = _fit(x, y, seed=4, lbfgs_iterations=0, backend=backend)
    ensemble, histories = _fit(x, y, seed=3, n_networks=2, lbfgs_iterations=0, backend=backend)
    np.testing.assert_array_equal(histories[1].validation_indices, history.validation_indices)
    np.testing.assert_allclose(histories[1].train_loss, history.train_loss, rtol=1e-9)
    np.testing.assert_allclose(ensemble.members(x)[1], alone(x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_lbfgs_polish_reduces_the_loss_and_restores_the_best_weights(backend):
    x, y = _data()
    net, (history,) = _fit(x, y, adam_epochs=50, lbfgs_iterations=60, backend=backend)
    assert history.n_adam_epochs == 50 and 0 < history.n_lbfgs_iterations <= 60
    assert len(history.train_loss) == history.n_adam_epochs + math.ceil(history.n_lbfgs_iterations / 10)  # chunks
    assert min(history.validation_loss[50:]) < 0.5 * min(history.validation_loss[:50])
    assert history.best_index >= 50
    val = history.validation_indices
    rel = np.mean(np.sum((net(x[val]) - y[val]) ** 2, axis=1) / np.sum(y[val] ** 2, axis=1))
    assert rel == pytest.approx(history.best_validation_loss, rel=1e-8)


def test_thread_count_is_set_and_restored():
    x, y = _data()
    before = torch.get_num_threads()
    _fit(x, y, adam_epochs=5, lbfgs_iterations=0, threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        TrainingOptions(threads=0)


def test_float32_adam_then_float64_polish():
    x, y = _data()
    net, _ = _fit(x, y, adam_dtype="float32")
    assert net.models[0].layers[0].weight.dtype == torch.float64
    x_test, y_test = _data(20, seed=5)
    assert np.mean(np.linalg.norm(net(x_test) - y_test, axis=1) / np.linalg.norm(y_test, axis=1)) < 0.05


PROBLEM = {"n_samples": 100, "n_outputs": 13, "lower": [0.1, 1.0], "upper": [1.0, 3.0]}


def test_auto_options_resolve_from_the_data_and_are_recorded():
    """``"auto"`` fields follow the documented rules; the resolved options are recorded in every history."""
    auto = TrainingOptions()
    wide = resolve_options(auto, n_samples=100, n_outputs=13, lower=[1e-4, 1e-4], upper=[1e2, 1e2])
    assert wide.input_transform == "log" and wide.hidden_layers == (128, 128, 128) and wide.n_networks == 2
    assert (wide.adam_epochs, wide.polish, wide.lm_iterations, wide.patience) == (2000, "levenberg-marquardt", 50, 1000)
    assert wide.learning_rate == 1e-2
    assert wide.lbfgs_iterations == 0  # the polish that does not run
    assert wide.adam_dtype == "float64"  # float32 would tie the network to the rank count at about 1e-7
    middle = resolve_options(auto, n_samples=60, n_outputs=13, lower=[0.3, 1.0], upper=[0.7, 2.0])
    assert middle.hidden_layers == (64, 64, 64)
    narrow = resolve_options(auto, n_samples=30, n_outputs=50, lower=[0.3, 1.0], upper=[0.7, 2.0])
    assert narrow.input_transform == "linear" and narrow.hidden_layers == (128, 128, 128)
    signed = resolve_options(auto, n_samples=2000, n_outputs=3, lower=[-1.0, 1e-3], upper=[1.0, 1.0])
    assert signed.input_transform == "linear" and signed.hidden_layers == (128,) * 3 and signed.n_networks == 1
    # 1600 training samples x 3 outputs > LM_MAX_RESIDUALS: L-BFGS; so with a physics term or in float32.
    assert (signed.polish, signed.lbfgs_iterations, signed.lm_iterations) == ("l-bfgs", 1000, 0)
    assert (signed.adam_epochs, signed.learning_rate) == (3000, 3e-3)
    assert resolve_options(auto, physics=True, **PROBLEM).polish == "l-bfgs"
    assert resolve_options(TrainingOptions(dtype="float32"), **PROBLEM).polish == "l-bfgs"
    # The polish whose iteration count is given runs.
    assert resolve_options(TrainingOptions(lbfgs_iterations=20), **PROBLEM).polish == "l-bfgs"
    assert resolve_options(TrainingOptions(lm_iterations=0, adam_epochs=10), **PROBLEM).polish == "levenberg-marquardt"
    # No polish runs: Adam as before L-BFGS. The Levenberg-Marquardt polish fits no physics term.
    unpolished = resolve_options(TrainingOptions(lm_iterations=0), **PROBLEM)
    assert (unpolished.adam_epochs, unpolished.learning_rate) == (3000, 3e-3)
    with pytest.raises(ValueError, match="physics"):
        resolve_options(TrainingOptions(polish="levenberg-marquardt"), physics=True, **PROBLEM)
    assert TrainingOptions(learning_rate=np.float32(0.01)).learning_rate == np.float32(0.01)
    chosen = resolve_options(TrainingOptions(hidden_layers=(8,), input_transform="linear"), n_samples=100,
                             n_outputs=13, lower=[1e-4], upper=[1e2])  # fmt: skip
    assert chosen.hidden_layers == (8,) and chosen.input_transform == "linear"
    assert automatic_fields(TrainingOptions(n_networks=1)) == [
        "hidden_layers", "input_transform", "output_norm", "adam_epochs", "learning_rate", "polish",
        "lbfgs_iterations", "lm_iterations", "patience", "adam_dtype", "backend",
    ]  # fmt: skip
    # The norm model: with the relative loss, without physics and zero coefficient vectors.
    assert wide.output_norm == "log-linear"
    assert resolve_options(TrainingOptions(loss="mse"), **PROBLEM).output_norm == "none"
    assert resolve_options(auto, physics=True, **PROBLEM).output_norm == "none"
    assert resolve_options(auto, zero_norms=True, **PROBLEM).output_norm == "none"
    for case in ({"physics": True}, {"zero_norms": True}):
        with pytest.raises(ValueError, match="output_norm='log-linear' cannot"):
            resolve_options(TrainingOptions(output_norm="log-linear", polish="l-bfgs"), **case, **PROBLEM)
    with pytest.raises(ValueError, match="loss='mse'"):
        resolve_options(TrainingOptions(output_norm="log-linear", loss="mse"), **PROBLEM)
    with pytest.raises(ValueError, match="output_norm"):
        TrainingOptions(output_norm="log")  # type: ignore[arg-type]
    # The NumPy backend trains float64 data fits on the CPU; torch the rest.
    assert wide.backend == signed.backend == "numpy"
    for torch_only in ({"dtype": "float32"}, {"adam_dtype": "float32"}, {"device": "cuda"}):
        assert resolve_options(TrainingOptions(**torch_only), **PROBLEM).backend == "torch"
        with pytest.raises(ValueError, match="backend='numpy'"):
            TrainingOptions(backend="numpy", **torch_only)
    assert resolve_options(auto, physics=True, **PROBLEM).backend == "torch"
    with pytest.raises(ValueError, match="backend='numpy' fits the data only"):
        resolve_options(TrainingOptions(backend="numpy"), physics=True, **PROBLEM)
    with pytest.raises(ValueError, match="backend"):
        TrainingOptions(backend="jax")  # type: ignore[arg-type]
    x, y = _data()
    _, histories = _fit(x, y, input_transform="auto", n_networks="auto")
    for history in histories:
        recorded = json.loads(history.options)
        assert recorded["input_transform"] == "log" and recorded["n_networks"] == 2  # bounds [0.1, 1] x [1, 3]
        assert recorded["automatic"] == [
            "input_transform", "n_networks", "output_norm", "learning_rate", "polish", "lm_iterations", "adam_dtype",
            "backend",
        ]  # fmt: skip
        assert recorded["learning_rate"] == 3e-3  # before L-BFGS
    with pytest.raises(ValueError, match="n_networks"):
        TrainingOptions(n_networks="many")  # type: ignore[arg-type]


def test_levenberg_marquardt_normal_matrix_and_steps():
    """The assembled J J^T equals the product of torch's Jacobian of the residuals; each step lowers the loss."""
    from fem_ml._levenberg import LevenbergMarquardt

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    mlp = MLP(3, 4, hidden_layers=(7, 5), activation="gelu").double()
    linear = [layer for layer in mlp.layers if isinstance(layer, torch.nn.Linear)]
    layers = [(lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy()) for lin in linear]
    x, targets, weights = rng.normal(size=(6, 3)), rng.normal(size=(6, 4)), rng.uniform(0.5, 2.0, size=(6, 4))
    solver = LevenbergMarquardt(layers, x, targets, weights, activation="gelu")

    def residuals(*params):
        h = torch.from_numpy(x)
        for k in range(len(params) // 2):
            h = h @ params[2 * k] + params[2 * k + 1]
            if k < len(params) // 2 - 1:
                h = torch.nn.functional.gelu(h)
        return (torch.from_numpy(weights) * (h - torch.from_numpy(targets))).reshape(-1)

    params = tuple(torch.from_numpy(a) for layer in layers for a in layer)
    J = torch.cat([j.reshape(24, -1) for j in torch.autograd.functional.jacobian(residuals, params)], dim=1).numpy()
    gram, _ = solver.normal_matrix()
    np.testing.assert_allclose(gram, J @ J.T, rtol=1e-12, atol=1e-12 * np.abs(gram).max())
    np.testing.assert_allclose(solver.residuals.reshape(-1), residuals(*params).numpy(), rtol=1e-13)
    losses = [solver.loss]
    for _ in range(12):
        assert solver.step()
        losses.append(solver.loss)
    # 92 weights, 24 residuals: Gauss-Newton interpolates the data, converging quadratically at the end.
    assert all(b < a for a, b in itertools.pairwise(losses)) and losses[-1] < 1e-20 * losses[0], losses
    # The layers were updated in place, and the loss is that of the new weights.
    params = tuple(torch.from_numpy(a) for layer in layers for a in layer)
    assert float(torch.sum(residuals(*params) ** 2)) == pytest.approx(solver.loss, rel=1e-12)


@pytest.mark.parametrize("adam_epochs", [0, 10, 50])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_levenberg_marquardt_polish(adam_epochs, backend):
    """The polish lowers the validation loss, stops on its patience and restores the best weights."""
    x, y = _data()
    options = {**FAST, "lbfgs_iterations": "auto", "polish": "levenberg-marquardt", "lm_iterations": 40}
    options["backend"] = backend
    net, (history,) = train_network(
        x, y, (0.1, 1.0), [1.0, 3.0], options=TrainingOptions(**{**options, "adam_epochs": adam_epochs}),
        comm=MPI.COMM_WORLD,
    )  # fmt: skip
    assert history.n_adam_epochs == adam_epochs and 0 < history.n_lm_iterations <= 40
    assert history.n_lbfgs_iterations == 0 and json.loads(history.options)["lbfgs_iterations"] == 0
    assert len(history.train_loss) == adam_epochs + history.n_lm_iterations
    assert history.best_index >= adam_epochs
    if adam_epochs:
        assert min(history.validation_loss[adam_epochs:]) < 0.5 * min(history.validation_loss[:adam_epochs])
    # It ran at most LM_PATIENCE + 1 iterations past its best, unless it stopped on its iteration count.
    assert history.n_lm_iterations == 40 or len(history.train_loss) - 1 - history.best_index <= LM_PATIENCE + 1
    val = history.validation_indices
    rel = np.mean(np.sum((net(x[val]) - y[val]) ** 2, axis=1) / np.sum(y[val] ** 2, axis=1))
    assert rel == pytest.approx(history.best_validation_loss, rel=1e-8)
    x_test, y_test = _data(20, seed=5)
    assert np.mean(np.linalg.norm(net(x_test) - y_test, axis=1) / np.linalg.norm(y_test, axis=1)) < 0.05


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_levenberg_marquardt_training_is_identical_on_all_ranks(backend):
    """Two members polished by Levenberg-Marquardt: the same networks on any rank count."""
    comm = MPI.COMM_WORLD
    x, y = _data()
    fields = {"lbfgs_iterations": "auto", "seed": 7, "n_networks": 2, "lm_iterations": 20, "backend": backend}
    options = TrainingOptions(**{**FAST, **fields})
    a, histories = train_network(x, y, (0.1, 1.0), [1.0, 3.0], options=options, comm=comm)
    assert all(h.n_lm_iterations > 0 for h in histories)
    for other in comm.allgather(a(x)):
        np.testing.assert_array_equal(other, a(x))
    alone, _ = train_network(x, y, (0.1, 1.0), [1.0, 3.0], options=options, comm=MPI.COMM_SELF)
    np.testing.assert_array_equal(alone(x), a(x))
