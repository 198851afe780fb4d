# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The NumPy training backend: its pass against torch's autograd, its Adam against torch's, its L-BFGS on known
minimizers."""

import itertools
import math

import numpy as np
import pytest
import torch

from fem_ml._flatnet import LBFGS, Adam, FlatNetwork
from fem_ml._mlp import MLP


def _network(activation="gelu", widths=(3, 16, 8, 5), seed=0):
    return FlatNetwork(widths, activation, np.random.default_rng(seed))


def _torch_mlp(net: FlatNetwork, activation: str) -> MLP:
    model = MLP(net.widths[0], net.widths[-1], hidden_layers=net.widths[1:-1], activation=activation).double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in net.state_dict().items()})
    return model


@pytest.mark.parametrize("activation", ["gelu", "relu", "silu", "softplus", "tanh"])
def test_loss_and_gradient_match_torch_autograd(activation):
    """The loss of weighted residuals and its back-propagated gradient equal torch's, for every activation."""
    rng = np.random.default_rng(1)
    net = _network(activation)
    x, targets, c = rng.standard_normal((7, 3)), rng.standard_normal((7, 5)), rng.uniform(0.5, 2.0, (7, 5))
    model = _torch_mlp(net, activation)
    residuals = torch.from_numpy(c) * (model(torch.from_numpy(x)) - torch.from_numpy(targets))
    expected = torch.sum(residuals**2)
    expected.backward()
    loss = net.loss_and_gradient(x, targets, c)
    assert loss == pytest.approx(expected.item(), rel=1e-13)
    assert net.loss(x, targets, c) == pytest.approx(loss, rel=1e-14)
    np.testing.assert_allclose(net.outputs(x), model(torch.from_numpy(x)).detach().numpy(), rtol=1e-13, atol=1e-15)
    for k, (g_W, g_b) in enumerate(net.grad_layers):
        linear = model.layers[2 * k]
        np.testing.assert_allclose(g_W, linear.weight.grad.numpy().T, rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(g_b, linear.bias.grad.numpy(), rtol=1e-11, atol=1e-14)
    # The gradient lives in the flat vector, laid out as the weights.
    assert np.shares_memory(net.grad_layers[0][0], net.grad) and np.shares_memory(net.layers[-1][1], net.flat)


def test_initialization_and_member_interface():
    """Weights uniform within torch's nn.Linear bounds, reproducible from the generator; one member's layers."""
    a, b, c = _network(seed=3), _network(seed=3), _network(seed=4)
    np.testing.assert_array_equal(a.flat, b.flat)
    assert not np.array_equal(a.flat, c.flat)
    for (W, bias), fan_in in zip(a.layers, a.widths, strict=False):
        assert np.max(np.abs(W)) <= 1 / math.sqrt(fan_in) and np.max(np.abs(bias)) <= 1 / math.sqrt(fan_in)
    layers = c.member_layers(0)
    a.set_member_layers(0, layers)
    np.testing.assert_array_equal(a.flat, c.flat)
    layers[0][0][...] = 0.0  # copies: the network is unchanged
    assert np.array_equal(a.flat, c.flat) and a.member_of.shape == a.flat.shape and not a.member_of.any()
    with pytest.raises(IndexError):
        a.member_layers(1)
    with pytest.raises(ValueError, match="widths"):
        FlatNetwork((3,), "gelu", np.random.default_rng(0))


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_matches_torch(weight_decay):
    """The same iterates as torch.optim.Adam on the same gradients, with a changing learning rate."""
    rng = np.random.default_rng(2)
    flat = rng.standard_normal(50)
    reference = torch.tensor(flat.copy(), requires_grad=True)
    torch_adam = torch.optim.Adam([reference], lr=1e-2, weight_decay=weight_decay)
    adam = Adam(flat, weight_decay=weight_decay)
    for step in range(30):
        gradient = rng.standard_normal(50) * 10.0 ** (step % 3 - 1)
        lr = 1e-2 * 0.9**step
        torch_adam.param_groups[0]["lr"] = lr
        reference.grad = torch.from_numpy(gradient.copy())
        torch_adam.step()
        adam.step(gradient, lr)
    np.testing.assert_allclose(flat, reference.detach().numpy(), rtol=1e-12, atol=1e-14)


class _Recorder:
    """An objective that records the points it was evaluated at."""

    def __init__(self, function):
        self.function, self.points = function, []

    def __call__(self, x):
        self.points.append(x.copy())
        return self.function(x)


def _rosenbrock(x):
    a, b = x[:-1], x[1:]
    value = np.sum(100.0 * (b - a**2) ** 2 + (1.0 - a) ** 2)
    gradient = np.zeros_like(x)
    gradient[:-1] = -400.0 * a * (b - a**2) - 2.0 * (1.0 - a)
    gradient[1:] += 200.0 * (b - a**2)
    return float(value), gradient


def test_lbfgs_minimizes_rosenbrock_with_strong_wolfe_steps():
    """From the classic start, L-BFGS reaches the minimizer (1, ..., 1); every accepted step is a strong Wolfe step."""
    x = np.tile([-1.2, 1.0], 5)
    objective = _Recorder(_rosenbrock)
    lbfgs = LBFGS(x, objective, history=10)
    iterates = [x.copy()]
    for _ in range(200):
        if lbfgs.run(1) == 0:
            break
        iterates.append(x.copy())
    np.testing.assert_allclose(x, 1.0, atol=1e-8)
    assert lbfgs.converged is not None and lbfgs.iterations < 200 and lbfgs.evaluations < 3 * lbfgs.iterations
    # Each accepted step: sufficient decrease (c1 = 1e-4), and the curvature condition (c2 = 0.9) along the step.
    for old, new in itertools.pairwise(iterates):
        step = new - old
        if not step.any():
            continue
        f0, g0 = _rosenbrock(old)
        f1, g1 = _rosenbrock(new)
        assert f1 <= f0 + 1e-4 * float(g0 @ step) + 1e-15
        assert abs(float(g1 @ step)) <= 0.9 * abs(float(g0 @ step)) + 1e-15


def test_lbfgs_on_an_ill_conditioned_quadratic_keeps_its_history_across_runs():
    """A quadratic of condition 1e3 in 100 unknowns: its minimizer, whether run at once or in chunks.

    The minimum value is 0, so that the loss keeps its relative precision down to the minimizer (the line search
    compares losses: with a minimum value far from 0 it could not place x closer than about sqrt(eps cond)).
    """
    rng = np.random.default_rng(5)
    Q, _ = np.linalg.qr(rng.standard_normal((100, 100)))
    A = (Q * np.logspace(0, 3, 100)) @ Q.T
    solution = rng.standard_normal(100)

    def quadratic(x):
        error = x - solution
        return 0.5 * float(error @ A @ error), A @ error

    at_once, chunked = np.zeros(100), np.zeros(100)
    whole = LBFGS(at_once, quadratic, history=20)
    whole.run(3000)
    pieces = LBFGS(chunked, quadratic, history=20)
    while pieces.run(10) == 10:
        pass
    for x, run in ((at_once, whole), (chunked, pieces)):
        # torch.optim.LBFGS (strong Wolfe, 20 pairs) measured on the same problem: 837 iterations, 2.3e-8.
        assert np.linalg.norm(x - solution) <= 1e-7 * np.linalg.norm(solution), run.converged
        assert run.converged is not None and run.iterations < 1500
        assert run.n_pairs <= 20
    assert pieces.iterations == whole.iterations  # the chunks continue one run
    np.testing.assert_array_equal(at_once, chunked)
