# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import json
import subprocess
import sys
from pathlib import Path

from mpi4py import MPI

import h5py
import numpy as np
import pytest
import ufl
from conftest import SPACE, by_coordinates, clean_env, on_root, raises_on_all_ranks
from dolfinx import fem
from problems import build_problem

import fem_ml
from fem_ml._h5 import write_tree
from fem_ml.archive import FORMAT, VERSION, describe

MU = np.array([[0.3, 0.45, 0.8, 0.2], [0.9, 0.15, 0.5, 0.6]])


def train(V, solve, *, inner_product="h1"):
    snapshots = fem_ml.collect_snapshots(solve, SPACE.sample(16, method="lhs", seed=0), V, progress=False)
    basis = fem_ml.pod(snapshots, inner_product, n_modes=6)
    rom = fem_ml.train_surrogate(
        basis, snapshots, SPACE, n_networks=2, hidden_layers=(16, 16), adam_epochs=40, lbfgs_iterations=5,
        input_transform="log", progress=False,
    )  # fmt: skip
    report = rom.errors(snapshots.parameters[:4], snapshots.values[:, :4])
    return rom, report


@pytest.fixture(scope="module")
def world_rom(problem):
    return train(*problem)


@pytest.fixture(scope="module")
def serial_rom(serial_problem):
    return train(*serial_problem)


def fields(rom) -> np.ndarray:
    """The surrogate's predictions at MU, gathered and sorted by dof coordinates (comparable across layouts)."""
    return by_coordinates(rom.V, rom.predict_values(MU))


def assert_same_field(got: np.ndarray, want: np.ndarray) -> None:
    scale = np.max(np.abs(want))
    assert np.max(np.abs(got - want)) <= 1e-12 * scale


def shared_path(comm, tmp_dir, name):
    return comm.bcast(tmp_dir / name if comm.rank == 0 else None, root=0)


def test_roundtrip_keeps_everything(comm, tmp_dir, problem, world_rom):
    V, _ = problem
    rom, report = world_rom
    path = fem_ml.save(rom, tmp_dir / "model.femml", test_errors=report, metadata={"field": "u", "units": "K"})
    loaded = fem_ml.load(path, V)
    np.testing.assert_array_equal(loaded.predict_values(MU), rom.predict_values(MU))  # same layout: exact
    np.testing.assert_array_equal(loaded.network(MU), rom.network(MU))
    np.testing.assert_array_equal(loaded.basis.singular_values, rom.basis.singular_values)
    assert loaded.basis.inner_product.name == "h1"
    assert loaded.space == rom.space and loaded.metadata == {"field": "u", "units": "K"}
    assert loaded.versions["fem_ml"] == fem_ml.__version__ and loaded.versions["dolfinx"]
    np.testing.assert_array_equal(loaded.test_errors.rel_error_h1, report.rel_error_h1)
    assert [h.best_validation_loss for h in loaded.history] == [h.best_validation_loss for h in rom.history]
    u = loaded(MU[0])
    assert isinstance(u, fem.Function) and u.function_space is V
    standalone = fem_ml.load(path, comm=comm)
    assert_same_field(fields(standalone), fields(rom))
    assert standalone.V.mesh.comm.size == comm.size
    info = describe(path)
    assert info["n_modes"] == 6 and info["parameters"]["mu0"] == [0.1, 1.0]
    norm = rom.network.norm_model  # trained with the default output_norm: the factor travels with the file
    assert norm is not None and loaded.network.norm_model is not None
    assert loaded.network.norm_model.intercept == norm.intercept
    np.testing.assert_array_equal(loaded.network.norm_model.slopes, norm.slopes)
    assert info["network"]["norm_model"] == {"intercept": norm.intercept, "slopes": norm.slopes.tolist()}
    assert info["retained_energy"] == rom.basis.retained_energy  # one formula (fem_ml._spectrum), bit for bit
    assert info["test_errors"]["rel_error_h1_mean"] == pytest.approx(np.mean(report.rel_error_h1))
    for r in (loaded, standalone):
        r.destroy()


def test_save_on_one_rank_load_on_all(comm, tmp_dir, problem, serial_rom):
    """Saved by rank 0 alone (COMM_SELF), loaded on COMM_WORLD onto the user's space and standalone."""
    V, _ = problem
    rom, _ = serial_rom
    path = shared_path(comm, tmp_dir, "serial.femml")
    if comm.rank == 0:
        fem_ml.save(rom, path)
    comm.barrier()
    reference = fields(rom)
    for loaded in (fem_ml.load(path, V), fem_ml.load(path, comm=comm)):
        assert_same_field(fields(loaded), reference)
        loaded.destroy()


def test_save_on_all_ranks_load_on_one_and_all(comm, tmp_dir, serial_problem, world_rom):
    """Saved on COMM_WORLD, loaded by every rank alone (COMM_SELF) and by all ranks together."""
    Vs, _ = serial_problem
    rom, _ = world_rom
    path = fem_ml.save(rom, tmp_dir / "world.femml")
    reference = fields(rom)
    for loaded in (fem_ml.load(path, Vs), fem_ml.load(path, comm=MPI.COMM_SELF), fem_ml.load(path, comm=comm)):
        assert_same_field(fields(loaded), reference)
        loaded.destroy()


def test_user_inner_product_travels_with_the_file(comm, tmp_dir, problem, serial_problem):
    """A UFL energy product is stored as a matrix and rebuilt in the loading layout."""
    V, solve = problem
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    energy = fem_ml.assemble_inner_product(V, (2.0 * ufl.inner(ufl.grad(u), ufl.grad(v)) + u * v) * ufl.dx)
    rom, _ = train(V, solve, inner_product=energy)
    path = fem_ml.save(rom, tmp_dir / "energy.femml")
    Vs, _ = serial_problem
    loaded = fem_ml.load(path, Vs)
    assert loaded.basis.inner_product.name == "form"
    # The basis stays orthonormal in the rebuilt product, and norms agree with the original product.
    gram = loaded.basis.inner_product.gram(loaded.basis.modes)
    np.testing.assert_allclose(gram, np.eye(6), atol=1e-10)
    values = rom.predict_values(MU)
    norms = energy.norms(values)
    np.testing.assert_allclose(loaded.basis.inner_product.norms(loaded.predict_values(MU)), norms, rtol=1e-12)
    loaded.destroy()
    energy.destroy()


def test_wrong_space_or_mesh_is_named(comm, tmp_dir, problem, world_rom):
    V, _ = problem
    rom, _ = world_rom
    path = fem_ml.save(rom, tmp_dir / "model.femml")
    W = fem.functionspace(V.mesh, ("Lagrange", 2))
    raises_on_all_ranks(
        comm, ValueError, r"trained on .*\(P, triangle, 1.*has .*\(P, triangle, 2", fem_ml.load, path, W
    )
    other, _ = build_problem(comm, 10)
    raises_on_all_ranks(comm, ValueError, "not on the surrogate's mesh", fem_ml.load, path, other)


def damage(comm, tmp_dir, source, name, how):
    target = shared_path(comm, tmp_dir, name)
    if comm.rank == 0:
        data = bytearray(source.read_bytes())
        if how == "truncate":
            data = data[: len(data) // 2]
        elif how == "flip_data":
            # Flip a byte inside the stored modes (found through h5py's dataset offset).
            with h5py.File(source, "r") as f:
                offset = f["basis/modes"].id.get_offset()
            data[offset + 100] ^= 0xFF
        elif how == "flip_header":
            data[40] ^= 0xFF
        target.write_bytes(bytes(data))
    comm.barrier()
    return target


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("truncate", "truncated or corrupted"),
        ("flip_data", "checksum does not match"),
        ("flip_header", "truncated or corrupted"),
    ],
)
def test_damaged_files_give_clear_errors(comm, tmp_dir, world_rom, how, match):
    rom, _ = world_rom
    path = fem_ml.save(rom, tmp_dir / "model.femml")
    bad = damage(comm, tmp_dir, path, f"{how}.femml", how)
    raises_on_all_ranks(comm, fem_ml.FileFormatError, f"{how}.femml.*{match}", fem_ml.load, bad, comm=comm)
    assert path.exists()  # the original is untouched


def test_foreign_and_newer_files_are_refused(comm, tmp_dir):
    text = shared_path(comm, tmp_dir, "notes.femml")
    foreign = shared_path(comm, tmp_dir, "foreign.h5")
    newer = shared_path(comm, tmp_dir, "newer.femml")
    if comm.rank == 0:
        text.write_text("just some text\n")
        with h5py.File(foreign, "w") as f:
            f["data"] = np.arange(3.0)
        write_tree(newer, {"x": np.zeros(2)}, kind=FORMAT, version=99)
    comm.barrier()
    raises_on_all_ranks(comm, fem_ml.FileFormatError, "notes.femml is not a readable", fem_ml.load, text, comm=comm)
    raises_on_all_ranks(comm, fem_ml.FileFormatError, "foreign.h5 is not a fem_ml surrogate", fem_ml.load, foreign,
                        comm=comm)  # fmt: skip
    raises_on_all_ranks(comm, fem_ml.FileFormatError, "format version 99, newer", fem_ml.load, newer, comm=comm)
    raises_on_all_ranks(comm, fem_ml.FileFormatError, "no such file", fem_ml.load, tmp_dir / "missing.femml", comm=comm)


def test_file_holds_only_numbers_and_strings(comm, tmp_dir, world_rom):
    """Nothing in the file can carry code: numeric datasets and str/number attributes only (no pickle)."""
    rom, _ = world_rom
    path = fem_ml.save(rom, tmp_dir / "model.femml")

    def inspect():
        kinds = set()

        def visit(name, node):
            if isinstance(node, h5py.Dataset):
                kinds.add(node.dtype.kind)
            for value in node.attrs.values():
                assert isinstance(value, str | bytes | np.number | np.bool_ | int | float), type(value)

        with h5py.File(path, "r") as f:
            f.visititems(visit)
            visit("/", f)
        assert kinds <= set("biuf")

    on_root(comm, inspect)


def test_cli_info_and_predict(comm, tmp_dir, world_rom):
    rom, report = world_rom
    path = fem_ml.save(rom, tmp_dir / "model.femml", test_errors=report, metadata={"field": "temperature"})
    from fem_ml.cli import main

    assert main(["predict", str(path), "--mu", "mu0=0.3,mu1=0.45,mu2=0.8,mu3=0.2", "-o",
                 str(tmp_dir / "out.xdmf")], comm=comm) == 0  # fmt: skip
    with h5py.File(tmp_dir / "out.h5", "r") as f:
        assert "temperature" in f["Function"]
    meta = json.loads((tmp_dir / "out.xdmf.json").read_text())
    assert meta["steps"][0]["parameters"]["mu1"] == 0.45
    assert main(["predict", str(path), "--mu", "mu0=0.3,mu1=7", "-o", str(tmp_dir / "x.xdmf")], comm=comm) == 2
    assert main(["predict", str(path), "--mu", "mu0", "-o", str(tmp_dir / "x.xdmf")], comm=comm) == 2
    assert not (tmp_dir / "x.xdmf").exists()

    def command_line():
        out = subprocess.run(
            [sys.executable, "-m", "fem_ml", "info", str(path)], capture_output=True, text=True, check=True,
            env=clean_env(),
        ).stdout  # fmt: skip
        assert "6 modes of 289 dofs" in out and "mu3" in out and "relative H1 mean" in out
        bad = subprocess.run([sys.executable, "-m", "fem_ml", "info", str(tmp_dir / "none.femml")],
                             capture_output=True, text=True, env=clean_env())  # fmt: skip
        assert bad.returncode == 2 and "no such file" in bad.stderr

    on_root(comm, command_line)


def test_valid_checksum_but_missing_entry_is_refused(comm, tmp_dir, world_rom):
    """A file that passes its checksum but lacks an entry fails on every rank (no rank left waiting)."""
    from fem_ml._h5 import read_tree

    rom, _ = world_rom
    path = fem_ml.save(rom, tmp_dir / "model.femml")
    partial = shared_path(comm, tmp_dir, "partial.femml")
    if comm.rank == 0:
        tree = read_tree(path, kind=FORMAT, version=VERSION, what="test")
        del tree["basis/modes"]
        write_tree(partial, tree, kind=FORMAT, version=VERSION)
    comm.barrier()
    raises_on_all_ranks(comm, fem_ml.FileFormatError, "'basis/modes': missing entry", fem_ml.load, partial,
                        comm=comm)  # fmt: skip


@pytest.mark.parametrize(
    ("forge", "match"),
    [
        (lambda t: t.pop("network/norm_model/slopes"), "needs both its intercept and its slopes"),
        (lambda t: t.update({"network/norm_model/intercept": 400.0}), "beyond 300"),
        (lambda t: t.update({"network/norm_model/slopes": np.full(4, np.nan)}), "norm_model/slopes"),
        (lambda t: t.update({"network/norm_model/slopes": np.zeros(3)}), "norm_model/slopes"),
    ],
)
def test_forged_norm_model_is_refused(comm, tmp_dir, world_rom, forge, match):
    """A network's norm model that is incomplete, too large, not finite or of the wrong size fails on every rank."""
    from fem_ml._h5 import read_tree

    rom, _ = world_rom
    path = fem_ml.save(rom, tmp_dir / "norm.femml")
    forged = shared_path(comm, tmp_dir, "forged_norm.femml")
    if comm.rank == 0:
        tree = read_tree(path, kind=FORMAT, version=VERSION, what="test")
        forge(tree)
        write_tree(forged, tree, kind=FORMAT, version=VERSION)
    comm.barrier()
    raises_on_all_ranks(comm, fem_ml.FileFormatError, match, fem_ml.load, forged, comm=comm)


def test_saved_file_is_readable_by_others(comm, tmp_dir, world_rom):
    import os
    import stat

    rom, _ = world_rom
    path = fem_ml.save(rom, tmp_dir / "model.femml")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_loads_file_saved_before_the_redesign(comm):
    """A file saved by an earlier fem_ml (format version 1, tests/data) loads and predicts the same field."""
    data = Path(__file__).with_name("data")
    reference = np.load(data / "thermal_block_v1_prediction.npz", allow_pickle=False)
    rom = fem_ml.load(data / "thermal_block_v1.femml", comm=comm)
    got = by_coordinates(rom.V, rom.predict_values(reference["parameters"]))
    x = reference["coordinates"]
    order = np.lexsort((np.round(x[:, 1], 10), np.round(x[:, 0], 10)))
    want = reference["values"][order]
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-12 * np.max(np.abs(want))
    assert rom.metadata["field"] == "temperature"
    rom.destroy()
