# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
from mpi4py import MPI

import numpy as np
import pytest
import torch

from fem_ml.networks import (
    MLP,
    AffineScaler,
    CoefficientNetwork,
    TrainingHistory,
    TrainingOptions,
    _EarlyStopping,
    resolve_device,
    stack_numpy,
    stack_torch,
    train_network,
)


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform([0.1, 1.0], [1.0, 3.0], size=(n, 2))
    y = np.stack([np.sin(3 * x[:, 0]) + x[:, 1], np.cos(x[:, 0] * x[:, 1]), 1.0 / x[:, 0]], axis=1)
    return x, y


FAST = {"adam_epochs": 300, "lbfgs_iterations": 50, "patience": 100, "progress": False, "hidden_layers": (16, 16)}


def _fit(x, y, lower=(0.1, 1.0), **options):
    """Train on the test data with FAST options plus ``options``, on COMM_WORLD."""
    return train_network(x, y, lower, [1.0, 3.0], options=TrainingOptions(**FAST, **options), comm=MPI.COMM_WORLD)


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
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"adam_epochs": 0, "lbfgs_iterations": 0}, "nothing would be trained"),
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
    """The best weights are kept in one flat copy, replaced only on improvement, and restored exactly."""
    torch.manual_seed(0)
    model = MLP(2, 1, hidden_layers=(4,), activation="tanh").double()
    history = TrainingHistory()
    losses = iter([3.0, 1.0, 2.0, 5.0])
    stopping = _EarlyStopping(model, history, lambda: next(losses), patience=1)
    snapshots = []
    for step in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        snapshots.append([p.detach().clone() for p in model.parameters()])
        improved = stopping.record(10.0 - step)
        assert improved == (step in (0, 1))
    assert stopping.index == 1 and stopping.loss == 1.0 and stopping.since_best == 2 and stopping.exhausted
    assert history.train_loss == [10.0, 9.0, 8.0, 7.0] and history.validation_loss == [3.0, 1.0, 2.0, 5.0]
    stopping.restore()
    for p, best in zip(model.parameters(), snapshots[1], strict=True):
        assert torch.equal(p, best)
    # Without validation, every step is an improvement and patience never runs out.
    no_validation = _EarlyStopping(model, TrainingHistory(), None, patience=0)
    assert all(no_validation.record(v) for v in (1.0, 2.0, 3.0)) and not no_validation.exhausted
    assert no_validation.index == 2


def test_training_fits_learns_and_restores_best():
    x, y = _data()
    net, (history,) = _fit(x, y)
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


def test_training_is_reproducible_and_identical_on_all_ranks():
    comm = MPI.COMM_WORLD
    x, y = _data()
    a, _ = _fit(x, y, seed=7, n_networks=2, input_transform="log")
    b, histories = _fit(x, y, seed=7, n_networks=2, input_transform="log")
    assert len(histories) == 2
    np.testing.assert_array_equal(a(x), b(x))
    for other in comm.allgather(a(x)):
        np.testing.assert_array_equal(other, a(x))
    c, _ = _fit(x, y, seed=8)
    assert not np.allclose(a(x), c(x))


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
