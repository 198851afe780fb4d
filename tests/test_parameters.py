# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
from mpi4py import MPI

import numpy as np
import pytest

import fem_ml


@pytest.fixture
def space():
    return fem_ml.ParameterSpace({"k0": (0.1, 1.0), "k1": (-2.0, 3.0), "k2": (5.0, 6.0)})


@pytest.mark.parametrize("method", ["uniform", "lhs", "sobol"])
def test_sample_shape_bounds_and_seed(space, method):
    a = space.sample(16, method=method, seed=3)
    b = space.sample(16, method=method, seed=3)
    c = space.sample(16, method=method, seed=4)
    assert a.shape == (16, 3) and a.dtype == np.float64
    assert np.all(a >= space.lower) and np.all(a <= space.upper)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_lhs_is_stratified(space):
    n = 20
    points = space.sample(n, method="lhs", seed=0)
    unit = (points - space.lower) / (space.upper - space.lower)
    for j in range(space.dim):
        bins = np.floor(unit[:, j] * n).astype(int)
        assert sorted(bins) == list(range(n))


def test_grid(space):
    grid = space.sample([2, 3, 1], method="grid")
    assert grid.shape == (6, 3)
    np.testing.assert_allclose(np.unique(grid[:, 1]), [-2.0, 0.5, 3.0])
    np.testing.assert_allclose(grid[:, 2], 5.5)
    assert space.sample(3, method="grid").shape == (27, 3)
    with pytest.raises(ValueError, match="3 point counts"):
        space.sample([2, 2], method="grid")


def test_sample_with_comm_is_identical_on_all_ranks(space):
    comm = MPI.COMM_WORLD
    points = space.sample(5, method="uniform", seed=None, comm=comm)
    gathered = comm.allgather(points)
    for other in gathered:
        np.testing.assert_array_equal(other, points)


def test_validate_accepts_forms(space):
    one = space.validate([0.5, 0.0, 5.5])
    assert one.shape == (1, 3)
    np.testing.assert_array_equal(space.validate({"k2": 5.5, "k0": 0.5, "k1": 0.0}), one)
    np.testing.assert_array_equal(space.validate([{"k0": 0.5, "k1": 0.0, "k2": 5.5}] * 2), np.vstack([one, one]))
    assert space.to_dict(one[0]) == {"k0": 0.5, "k1": 0.0, "k2": 5.5}


@pytest.mark.parametrize(
    ("points", "match"),
    [
        ([0.5, 0.0], r"shape \(n, 3\)"),
        (np.zeros((2, 4)), r"shape \(n, 3\)"),
        ([0.5, np.nan, 5.5], "'k1' of point 0 is nan"),
        ([[0.5, 0.0, 5.5], [0.5, 0.0, np.inf]], "'k2' of point 1 is inf"),
        ([0.5, 0.0, 6.5], "'k2' of point 0 is 6.5, outside its bounds"),
        ([0.05, 0.0, 5.5], "'k0' of point 0 is 0.05, outside"),
        ({"k0": 0.5, "k1": 0.0}, "missing \\['k2'\\]"),
        ({"k0": 0.5, "k1": 0.0, "k2": 5.5, "kx": 1.0}, "unknown \\['kx'\\]"),
        ("abc", "must be numbers"),
        (np.zeros((0, 3)), "No parameter points"),
    ],
)
def test_validate_rejects(space, points, match):
    with pytest.raises(ValueError, match=match):
        space.validate(points)


def test_validate_count(space):
    with pytest.raises(ValueError, match="Expected 1 parameter points, got 2"):
        space.validate(np.full((2, 3), 0.5) + np.array([0, 0, 5]), expected=1)


@pytest.mark.parametrize(
    ("bounds", "match"),
    [
        ({}, "non-empty"),
        ({"a": (1.0, 0.0)}, "lower < upper"),
        ({"a": (0.0, np.inf)}, "finite"),
        ({"a": 3.0}, "pair"),
        ({"not valid": (0.0, 1.0)}, "identifier"),
    ],
)
def test_bad_space(bounds, match):
    with pytest.raises(ValueError, match=match):
        fem_ml.ParameterSpace(bounds)


def test_bad_sampling(space):
    with pytest.raises(ValueError, match="Unknown sampling method"):
        space.sample(4, method="halton")
    with pytest.raises(ValueError, match="positive int"):
        space.sample(0, method="lhs")


def test_space_equality(space):
    assert space == fem_ml.ParameterSpace(space.bounds)
    assert space != fem_ml.ParameterSpace({"k0": (0.1, 1.0)})
    assert "k0" in repr(space)
