# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
from petsc4py import PETSc

import numpy as np
import pytest
import ufl
from conftest import by_coordinates, raises_on_all_ranks

import fem_ml
from fem_ml.pod import assemble_inner_product


def _energy_form(V):
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    return 2.0 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + ufl.inner(u, v) * ufl.dx


@pytest.mark.parametrize("kind", ["euclidean", "l2", "h1", "h1_semi", "form", "matrix"])
def test_modes_are_orthonormal_and_optimal(snapshots, kind):
    V = snapshots.V
    if kind == "form":
        ip = _energy_form(V)
    elif kind == "matrix":
        ip = assemble_inner_product(V, "h1").matrix
    else:
        ip = kind
    basis = fem_ml.pod(snapshots, inner_product=ip, n_modes=8)
    M = basis.inner_product
    gram = M.gram(basis.modes)
    assert np.max(np.abs(gram - np.eye(8))) <= 1e-10
    assert basis.orthonormality_error <= 1e-10
    # POD optimality: the squared projection error over the snapshots is the discarded energy.
    residual = snapshots.values - basis.reconstruct(basis.project(snapshots))
    discarded = np.sum(basis.singular_values[8:] ** 2)
    assert np.sum(M.norms(residual) ** 2) == pytest.approx(
        discarded, rel=1e-6, abs=1e-12 * basis.singular_values[0] ** 2
    )
    # Coefficients are sigma times right singular vectors: their row norms are the singular values.
    np.testing.assert_allclose(np.linalg.norm(basis.project(snapshots), axis=1), basis.singular_values[:8], rtol=1e-9)


def test_euclidean_singular_values_match_svd(snapshots):
    comm = snapshots.V.mesh.comm
    basis = fem_ml.pod(snapshots, inner_product="euclidean", n_modes=5)
    full = np.vstack(comm.allgather(snapshots.values))
    sigma = np.linalg.svd(full, compute_uv=False)
    np.testing.assert_allclose(basis.singular_values[:10], sigma[:10], rtol=1e-9)


def test_tolerance_truncation(snapshots):
    for tol in (1e-3, 1e-6):
        basis = fem_ml.pod(snapshots, inner_product="h1", tol=tol)
        energy = basis.singular_values**2
        r = basis.n_modes
        assert energy[r:].sum() / energy.sum() <= tol
        assert energy[r - 1 :].sum() / energy.sum() > tol
        assert basis.retained_energy >= 1 - tol


@pytest.mark.parametrize("tol", [1e-8, 1e-13])
def test_rank_count_does_not_change_modes(snapshots, serial_problem, tol):
    """Modes and coefficients on COMM_WORLD equal those on one rank (COMM_SELF) to 1e-10 relative.

    With ``tol=1e-13`` the last kept mode has sigma_r / sigma_1 of about 5e-6: its agreement
    needs the subspace iteration of :func:`fem_ml.pod` (it moved by 5e-9 with a single Rayleigh-Ritz step).
    """
    V_serial, solve_serial = serial_problem
    serial = fem_ml.collect_snapshots(solve_serial, snapshots.parameters, V_serial, progress=False)
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=tol)
    basis_serial = fem_ml.pod(serial, inner_product="h1", tol=tol)
    assert basis.n_modes == basis_serial.n_modes
    modes = by_coordinates(basis.V, basis.modes)
    modes_serial = by_coordinates(V_serial, basis_serial.modes)
    rel = np.linalg.norm(modes - modes_serial, axis=0) / np.linalg.norm(modes_serial, axis=0)
    assert rel.max() <= 1e-10, rel
    coeffs, coeffs_serial = basis.project(snapshots), basis_serial.project(serial)
    rel_c = np.linalg.norm(coeffs - coeffs_serial, axis=1) / np.linalg.norm(coeffs_serial, axis=1)
    assert rel_c.max() <= 1e-10, rel_c
    # Kept singular values come from the Rayleigh-Ritz SVD; the rest from the Gram eigenvalues (less precise).
    r = basis.n_modes
    np.testing.assert_allclose(basis.singular_values[:r], basis_serial.singular_values[:r], rtol=1e-10)
    np.testing.assert_allclose(basis.singular_values[r:12], basis_serial.singular_values[r:12], rtol=1e-8)


def test_mode_functions(snapshots):
    basis = fem_ml.pod(snapshots, inner_product="l2", n_modes=3)
    f = basis.mode(1)
    assert f.name == "mode_1"
    n = basis.modes.shape[0]
    np.testing.assert_array_equal(f.x.array[:n], basis.modes[:, 1])
    g = basis.function(np.array([1.0, 0.0, 2.0]))
    np.testing.assert_allclose(g.x.array[:n], basis.modes[:, 0] + 2 * basis.modes[:, 2])


def test_pod_bad_inputs(comm, snapshots):
    V = snapshots.V
    raises_on_all_ranks(comm, ValueError, "Unknown inner product", fem_ml.pod, snapshots, inner_product="h2")
    raises_on_all_ranks(comm, ValueError, "needs V", fem_ml.pod, snapshots.values)
    raises_on_all_ranks(comm, ValueError, "must have shape", fem_ml.pod, snapshots.values[:-1], V=V)
    bad = snapshots.values.copy()
    if comm.rank == comm.size - 1:
        bad[0, 0] = np.nan
    raises_on_all_ranks(comm, ValueError, "NaN", fem_ml.pod, bad, V=V)
    raises_on_all_ranks(comm, ValueError, "tol", fem_ml.pod, snapshots, tol=1.5)
    raises_on_all_ranks(comm, ValueError, "n_modes", fem_ml.pod, snapshots, n_modes=0)
    wrong = PETSc.Mat().createAIJ(((3, PETSc.DETERMINE), (3, PETSc.DETERMINE)), comm=comm)
    wrong.setUp()
    wrong.assemble()
    raises_on_all_ranks(comm, ValueError, "Inner-product matrix has sizes", fem_ml.pod, snapshots, inner_product=wrong)
    wrong.destroy()


def test_zero_snapshots(comm, problem):
    V, _ = problem
    zeros = np.zeros((V.dofmap.index_map.size_local, 3))
    raises_on_all_ranks(comm, ValueError, "zero", fem_ml.pod, zeros, V=V, inner_product="l2")


def test_n_modes_capped_at_noise(snapshots):
    # Twice the same snapshots: rank at most 40; asking for more keeps only signal modes.
    doubled = np.hstack([snapshots.values, snapshots.values])
    basis = fem_ml.pod(doubled, V=snapshots.V, inner_product="h1", n_modes=80)
    assert basis.n_modes <= 40
    assert basis.orthonormality_error <= 1e-10


def test_inner_product_apply_matches_matvec(snapshots):
    ip = assemble_inner_product(snapshots.V, "h1")
    block = ip.apply(snapshots.values[:, :3])
    x = ip.matrix.createVecRight()
    y = ip.matrix.createVecLeft()
    x.array[:] = snapshots.values[:, 1]
    ip.matrix.mult(x, y)
    np.testing.assert_allclose(block[:, 1], y.array, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(ip.apply(snapshots.values[:, 1]), y.array, rtol=1e-14, atol=1e-14)
    ip.destroy()
    # A destroyed product is an error to use, never silently the Euclidean one.
    assert ip.destroyed
    for use in (lambda: ip.matrix, lambda: ip.apply(snapshots.values[:, :1]), lambda: ip.norms(snapshots.values)):
        with pytest.raises(RuntimeError, match="was destroyed"):
            use()


@pytest.mark.parametrize("element", [("Lagrange", 1), ("Lagrange", 2, (2,)), ("DG", 1)])
def test_local_block_product_matches_petsc(problem, element):
    """The SciPy block product with halo exchange equals PETSc's mult, for scalar, blocked and DG spaces."""
    from dolfinx import fem

    V = fem.functionspace(problem[0].mesh, element)
    ip = assemble_inner_product(V, "h1")
    n = V.dofmap.index_map.size_local * V.dofmap.index_map_bs
    X = np.random.default_rng(V.mesh.comm.rank).standard_normal((n, 3))
    block = ip.apply(X)
    for j in range(3):
        x, y = ip.matrix.createVecRight(), ip.matrix.createVecLeft()
        x.array[:] = X[:, j]
        ip.matrix.mult(x, y)
        np.testing.assert_allclose(block[:, j], y.array, rtol=1e-13, atol=1e-13)
    ip.destroy()


def _assert_same_basis(a, b, tol):
    assert a.n_modes == b.n_modes
    np.testing.assert_allclose(a.singular_values[: a.n_modes], b.singular_values[: b.n_modes], rtol=tol)
    diff = a.inner_product.norms(a.modes - b.modes)
    assert diff.max() <= tol, diff


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_chunked_gram_matches_one_block(snapshots, chunk_size):
    reference = fem_ml.pod(snapshots, "h1", tol=1e-8, chunk_size=snapshots.values.shape[1])
    _assert_same_basis(fem_ml.pod(snapshots, "h1", tol=1e-8, chunk_size=chunk_size), reference, 1e-10)


def test_streaming_pod_from_store_equals_in_memory(tmp_dir, problem, snapshots):
    """The store's columns stream chunk by chunk; the basis equals the in-memory one to 1e-10."""
    V, solve = problem
    store = fem_ml.SnapshotStore(tmp_dir / "store", V)
    stored = fem_ml.collect_snapshots(solve, snapshots.parameters, V, store=store, progress=False)
    in_memory = fem_ml.pod(stored, "h1", tol=1e-8)
    streamed = fem_ml.pod(store, "h1", tol=1e-8, chunk_size=6)
    _assert_same_basis(streamed, in_memory, 1e-10)
    assert streamed.retained_energy == pytest.approx(in_memory.retained_energy, rel=1e-12)


def test_randomized_pod_matches_exact(snapshots):
    exact = fem_ml.pod(snapshots, "h1", n_modes=8)
    fast = fem_ml.pod(snapshots, "h1", n_modes=8, method="randomized", oversampling=10, power_iterations=1)
    np.testing.assert_allclose(fast.singular_values[:8], exact.singular_values[:8], rtol=1e-8)
    assert fast.retained_energy == pytest.approx(exact.retained_energy, rel=1e-10)
    # Same subspace: projecting the exact modes onto the randomized ones loses (almost) nothing.
    P = fast.project(exact.modes)
    np.testing.assert_allclose(np.linalg.svd(P, compute_uv=False), np.ones(8), atol=1e-6)
    assert fast.orthonormality_error <= 1e-10


def test_randomized_needs_rank(comm, snapshots):
    raises_on_all_ranks(comm, ValueError, "needs n_modes", fem_ml.pod, snapshots, "h1", method="randomized")
    raises_on_all_ranks(comm, ValueError, "method must be", fem_ml.pod, snapshots, "h1", method="svd")


def test_pod_errors_name_the_problem(comm, snapshots):
    V = snapshots.V
    raises_on_all_ranks(comm, ValueError, "must have shape", fem_ml.pod, snapshots.values[:, 0], "h1", V=V)
    zeros = np.zeros_like(snapshots.values)
    raises_on_all_ranks(comm, ValueError, "All snapshots are zero", fem_ml.pod, zeros, "h1", V=V, n_modes=2,
                        method="randomized")  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "All snapshots are zero", fem_ml.pod, zeros, "h1", V=V, n_modes=2)


def test_degenerate_snapshots(comm, snapshots):
    """One snapshot or identical ones give one exact mode; no snapshot is a clear error (exact and randomized)."""
    V = snapshots.V
    u = snapshots.values[:, :1]
    for method, extra in (("snapshots", {}), ("randomized", {"n_modes": 3})):
        for columns in (u, np.repeat(u, 5, axis=1)):
            basis = fem_ml.pod(columns, "h1", V=V, method=method, **extra)
            assert basis.n_modes == 1 and basis.orthonormality_error <= 1e-10
            norm = basis.inner_product.norms(u)[0]
            assert basis.singular_values[0] == pytest.approx(norm * np.sqrt(columns.shape[1]), rel=1e-10)
            error = basis.inner_product.norms(u - basis.reconstruct(basis.project(u)))[0]
            assert error <= 1e-10 * norm
            basis.destroy()
    raises_on_all_ranks(comm, ValueError, "must have shape", fem_ml.pod, np.zeros((u.shape[0], 0)), V=V)
    empty = fem_ml.SnapshotSet(V, np.zeros((0, 4)), np.zeros((u.shape[0], 0)), np.zeros(0))
    raises_on_all_ranks(comm, ValueError, "No snapshots", fem_ml.pod, empty)


def test_options_that_would_be_ignored_are_errors(comm, tmp_dir, snapshots):
    V = snapshots.V
    raises_on_all_ranks(comm, ValueError, "V would be ignored", fem_ml.pod, snapshots, V=V)
    store = fem_ml.SnapshotStore(tmp_dir / "store", V)
    raises_on_all_ranks(comm, ValueError, "V would be ignored", fem_ml.pod, store, V=V)
    raises_on_all_ranks(comm, ValueError, "No snapshots", fem_ml.pod, store)  # an empty store


def test_basis_destroys_only_what_pod_assembled(snapshots):
    with fem_ml.pod(snapshots, "h1", n_modes=3) as basis:
        assert basis.project(snapshots).shape == (3, len(snapshots))
    assert basis.inner_product.destroyed
    with pytest.raises(RuntimeError, match="was destroyed"):
        basis.project(snapshots)
    mine = assemble_inner_product(snapshots.V, "h1")
    with fem_ml.pod(snapshots, mine, n_modes=3) as basis:
        pass
    assert not mine.destroyed and mine.norms(snapshots.values[:, :1])[0] > 0  # still the caller's, still usable
    mine.destroy()
