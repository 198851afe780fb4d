# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Hostile input: forged and odd files, careless command lines, concurrent and failing stores.

Every case runs under a deadline: in-process cases under a watchdog thread that aborts the whole MPI job (or the
process) with a message when a case exceeds its time, command-line cases as subprocesses with ``timeout=``. A hang
therefore fails the run instead of stalling it. Each test prints its case count (``pytest -s`` shows them).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from mpi4py import MPI

import h5py
import numpy as np
import pytest
from conftest import clean_env, mpirun, on_root

import fem_ml
import fem_ml.cli
from fem_ml._formats import SURROGATE
from fem_ml._h5 import read_tree, write_tree
from fem_ml._layout import DofLayout
from fem_ml._serialize import coo_from_matrix

DATA = Path(__file__).with_name("data")
MODEL = DATA / "thermal_block_v1.femml"
ROOT = Path(__file__).resolve().parents[1]
MU = "mu0=0.3,mu1=0.45,mu2=0.8,mu3=0.2"
CASE_SECONDS = 60
ARABIC = "\u0660.\u0663"  # 0.3 in Arabic-Indic digits, which float() accepts


@contextlib.contextmanager
def deadline(label: str, seconds: float = CASE_SECONDS):
    """Abort the job with a message if the block runs longer than ``seconds`` (a hang fails instead of stalling)."""

    def expire() -> None:
        sys.stderr.write(f"\nHANG: case {label!r} exceeded {seconds} s on rank {MPI.COMM_WORLD.rank}; aborting\n")
        sys.stderr.flush()
        if MPI.COMM_WORLD.size > 1:
            MPI.COMM_WORLD.Abort(3)
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def shared(comm: MPI.Comm, path: Path) -> Path:
    return Path(comm.bcast(str(path) if comm.rank == 0 else None, root=0))


def tree_of(path: Path) -> dict:
    return read_tree(path, kind=SURROGATE.kind, version=SURROGATE.version, what="test", schema=SURROGATE.schema)


def mutations(tree: dict):
    """Every entry mutated in shape, dtype, value, NaN and type; each yields (label, forged tree)."""
    for name in sorted(tree):
        value = tree[name]

        def forged(new, name=name):
            out = dict(tree)
            if new is None:
                del out[name]
            else:
                out[name] = new
            return out

        yield f"{name}: removed", forged(None)
        if isinstance(value, np.ndarray):
            grown = np.concatenate([value, value[:1]]) if value.shape[0] else np.zeros((1, *value.shape[1:]))
            yield f"{name}: one more row", forged(grown.astype(value.dtype))
            yield f"{name}: other dtype", forged(value.astype(np.float32 if value.dtype.kind in "iu" else np.int32))
            if value.size and value.dtype.kind == "f":
                for bad in (np.nan, np.inf):
                    v = value.copy()
                    v.flat[v.size // 2] = bad
                    yield f"{name}: {bad}", forged(v)
            if value.size and value.dtype.kind in "iu":
                for bad in (-1, 2**40):
                    v = value.copy()
                    v.flat[v.size // 2] = bad
                    yield f"{name}: {bad}", forged(v)
        elif isinstance(value, bool):
            yield f"{name}: int", forged(3)
        elif isinstance(value, int):
            for bad in (-1, 200_000, "x"):
                yield f"{name}: {bad!r}", forged(bad)
        elif isinstance(value, float):
            for bad in (float("nan"), "x"):
                yield f"{name}: {bad!r}", forged(bad)
        else:
            for bad in ("bogus", 7):
                yield f"{name}: {bad!r}", forged(bad)
    yield "unknown entry", {**tree, "network/extra": np.zeros(3)}


def test_every_entry_forged(comm, tmp_dir):
    """Each mutation of each entry, with a recomputed (valid) checksum, is refused or loads a working surrogate."""
    cases: list[tuple[str, Path]] = []
    if comm.rank == 0:
        for k, (label, tree) in enumerate(mutations(tree_of(MODEL))):
            path = tmp_dir / f"forged_{k:04d}.femml"
            write_tree(path, tree, kind=SURROGATE.kind, version=SURROGATE.version)
            cases.append((label, path))
    cases = comm.bcast(cases, root=0)
    refused, loaded, wrong = 0, 0, []
    point = np.array([[0.3, 0.45, 0.8, 0.2]])
    for label, path in cases:
        with deadline(label):
            try:
                rom = fem_ml.load(path, comm=comm)
            except fem_ml.FileFormatError as err:
                refused += 1
                assert str(path) in str(err), (label, str(err))
                continue
            except Exception as err:  # counted, reported below
                wrong.append(f"{label}: {type(err).__name__}: {err}")
                continue
            values = rom.predict_values(point)
            if not comm.allreduce(bool(np.all(np.isfinite(values))), op=MPI.LAND):
                wrong.append(f"{label}: loaded and predicts non-finite values")
            loaded += 1
            rom.destroy()
    if comm.rank == 0:
        print(f"\nforged files: {len(cases)} cases, {refused} refused (FileFormatError), {loaded} harmless and "
              f"loaded, {len(wrong)} other outcomes")  # fmt: skip
    assert not wrong, "\n".join(wrong)
    assert refused > 0.6 * len(cases)


def with_matrix(tree: dict, rows, columns, values) -> dict:
    """``tree`` with a user-given inner product stored as the COO triplets ``rows``, ``columns``, ``values``."""
    matrix = {"basis/matrix/rows": rows, "basis/matrix/columns": columns, "basis/matrix/values": values}
    return {**tree, "basis/inner_product": "form", **{k: v for k, v in matrix.items() if v is not None}}


def test_forged_inner_product_matrix(comm, tmp_dir):
    """A user inner product's COO triplets: indices out of range or negative, arrays of other lengths, NaN values.

    Before the validating loader an out-of-range row index on 2 ranks hung (rank 0 failed alone) and a short value
    array loaded without a word. The model's own H1 matrix under the name of a user product is the valid control:
    it loads and predicts finite values.
    """

    def at(array, k, value):
        array = array.copy()
        array[k] = value
        return array

    def forge() -> list[str]:
        tree = tree_of(MODEL)
        n = tree["layout/keys"].shape[0]
        rom = fem_ml.load(MODEL, comm=MPI.COMM_SELF)
        coo = coo_from_matrix(rom.basis.inner_product.matrix, DofLayout(rom.V))
        rom.destroy()
        assert coo is not None
        rows, columns, values = coo["rows"], coo["columns"], coo["values"]
        cases = {
            "valid H1 matrix": (rows, columns, values),
            "row index = n_dofs": (at(rows, 7, n), columns, values),
            "row index -1": (at(rows, 0, -1), columns, values),
            "row index 2**40": (at(rows, -1, 2**40), columns, values),
            "column index = n_dofs": (rows, at(columns, 3, n), values),
            "column index -1": (rows, at(columns, 3, -1), values),
            "values one shorter": (rows, columns, values[:-1]),
            "values one longer": (rows, columns, np.append(values, 1.0)),
            "columns one shorter": (rows, columns[:-1], values),
            "values NaN": (rows, columns, at(values, 5, np.nan)),
            "values inf": (rows, columns, at(values, 5, np.inf)),
            "rows as floats": (rows.astype(np.float64), columns, values),
            "rows missing": (None, columns, values),
        }
        for k, triplets in enumerate(cases.values()):
            write_tree(tmp_dir / f"coo_{k}.femml", with_matrix(tree, *triplets), kind=SURROGATE.kind,
                       version=SURROGATE.version)  # fmt: skip
        return list(cases)

    labels = on_root(comm, forge)
    refused = 0
    for k, label in enumerate(labels):
        path = shared(comm, tmp_dir / f"coo_{k}.femml")
        with deadline(label):
            if label == "valid H1 matrix":
                rom = fem_ml.load(path, comm=comm)
                assert rom.basis.inner_product.name == "form"
                assert comm.allreduce(bool(np.all(np.isfinite(rom.predict_values([0.3, 0.45, 0.8, 0.2])))), MPI.LAND)
                rom.destroy()
                continue
            with pytest.raises(fem_ml.FileFormatError, match=r"coo_\d+\.femml.*basis/matrix"):
                fem_ml.load(path, comm=comm)
            refused += 1
        assert comm.allreduce(1) == comm.size  # every rank got past the case
    if comm.rank == 0:
        print(f"\nforged inner-product matrix: {len(labels)} cases, {refused} refused, 1 valid control loaded")
    assert refused == len(labels) - 1


def test_refused_before_reading(comm, tmp_dir):
    """External raw storage (a file, a FIFO), virtual datasets, soft and external links, filters, sparse claims."""
    labels = ["external file", "external FIFO", "virtual", "soft link", "external link", "compressed", "unallocated"]
    if comm.rank == 0:
        secret = tmp_dir / "secret.bin"
        secret.write_bytes(np.arange(5 * 289, dtype=np.float64).tobytes())
        fifo = tmp_dir / "fifo"
        os.mkfifo(fifo)
        for k, label in enumerate(labels):
            path = tmp_dir / f"odd_{k}.femml"
            shutil.copy(MODEL, path)
            with h5py.File(path, "a") as f:
                del f["basis/modes"]
                if label.startswith("external") and "link" not in label:
                    source = secret if label == "external file" else fifo
                    f.create_dataset(
                        "basis/modes", shape=(5, 289), dtype="f8", external=[(str(source), 0, 5 * 289 * 8)]
                    )
                elif label == "virtual":
                    layout = h5py.VirtualLayout(shape=(5, 289), dtype="f8")
                    layout[:] = h5py.VirtualSource(str(secret), "data", shape=(5, 289))
                    f.create_virtual_dataset("basis/modes", layout)
                elif label == "soft link":
                    f["basis/modes"] = h5py.SoftLink("/layout/coordinates")
                elif label == "external link":
                    f["basis/modes"] = h5py.ExternalLink(str(secret), "/data")
                elif label == "compressed":
                    f.create_dataset("basis/modes", data=np.zeros((5, 289)), compression="gzip")
                else:
                    f.create_dataset("basis/modes", shape=(5, 1 << 26), dtype="f8", chunks=(1, 1 << 16))
    messages = {
        "external file": "external raw storage",
        "external FIFO": "external raw storage",
        "virtual": "virtual dataset",
        "soft link": "SoftLink",
        "external link": "ExternalLink",
        "compressed": "filtered",
        "unallocated": "declares",
    }
    for k, label in enumerate(labels):
        path = shared(comm, tmp_dir / f"odd_{k}.femml")
        with deadline(label), pytest.raises(fem_ml.FileFormatError, match=messages[label]):
            fem_ml.load(path, comm=comm)
    with deadline("the model path is a FIFO"), pytest.raises(fem_ml.FileFormatError, match="no such file"):
        fem_ml.load(shared(comm, tmp_dir / "fifo"), comm=comm)
    if comm.rank == 0:
        print(f"\nrefused before reading: {len(labels) + 1} cases")


def test_keyed_checksum_detects_forgery(comm, tmp_dir):
    """A file signed with a key loads with it; a forged copy (valid unkeyed checksum) and an unsigned file do not."""
    signed, forged = shared(comm, tmp_dir / "signed.femml"), shared(comm, tmp_dir / "forged.femml")
    rom = fem_ml.load(MODEL, comm=comm)
    fem_ml.save(rom, signed, key="team secret")
    rom.destroy()
    if comm.rank == 0:
        tree = tree_of(signed)
        tree["network/output_scaler/shift"] = tree["network/output_scaler/shift"] + 1.0
        write_tree(forged, tree, kind=SURROGATE.kind, version=SURROGATE.version, key=b"attacker's key")
    comm.barrier()
    with deadline("signed"):
        fem_ml.load(signed, comm=comm, key="team secret").destroy()
        fem_ml.load(signed, comm=comm).destroy()  # without a key: the unkeyed checksum still protects it
    with deadline("forged"), pytest.raises(fem_ml.FileFormatError, match="signature does not match"):
        fem_ml.load(forged, comm=comm, key="team secret")
    with deadline("unsigned"), pytest.raises(fem_ml.FileFormatError, match="not signed"):
        fem_ml.load(MODEL, comm=comm, key="team secret")


PURE = """
import json, resource, sys, types
pkg = types.ModuleType("fem_ml"); pkg.__path__ = [sys.argv[1]]; sys.modules["fem_ml"] = pkg
from fem_ml import _formats, _h5
heavy = sorted(m for m in ("dolfinx", "torch", "mpi4py", "petsc4py", "ufl", "basix") if m in sys.modules)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    surrogate = _formats.SURROGATE
    _h5.read_tree(sys.argv[2], kind=surrogate.kind, version=surrogate.version, what="x", schema=surrogate.schema)
    outcome = "loaded"
except _h5.FileFormatError as err:
    outcome = str(err)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"heavy": heavy, "base_kb": base, "peak_kb": peak, "outcome": outcome}))
"""


def test_two_gigabyte_claim_costs_no_memory(comm, tmp_dir):
    """A small file whose compressed dataset claims 2 GB is refused; loading it raises peak RSS by < 200 MB.

    The reader runs in a subprocess that imports only the file modules (as a ParaView plugin would: no DOLFINx,
    torch or MPI), so its peak resident memory measures the load alone.
    """

    def run() -> dict:
        path = tmp_dir / "claim.femml"
        shutil.copy(MODEL, path)
        with h5py.File(path, "a") as f:
            del f["basis/modes"]
            d = f.create_dataset("basis/modes", shape=(1, 1 << 28), dtype="f8", chunks=(1, 1 << 22), compression="gzip")
            d[0, : 1 << 22] = 0.0  # one stored chunk: the rest reads as zeros, 2 GiB in all
        proc = subprocess.run(
            [sys.executable, "-c", PURE, str(ROOT / "fem_ml"), str(path)], capture_output=True, text=True,
            timeout=120, env=clean_env(),
        )  # fmt: skip
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
        return {**json.loads(lines[-1].removeprefix("RESULT ")), "file_kb": path.stat().st_size // 1024}

    with deadline("2 GB claim", 150):
        result = on_root(comm, run)
    growth_mb = (result["peak_kb"] - result["base_kb"]) / 1024
    if comm.rank == 0:
        print(f"\n2 GB claim: file {result['file_kb']} KB, peak RSS growth {growth_mb:.1f} MB: {result['outcome']}")
    assert result["heavy"] == []
    assert "basis/modes" in result["outcome"] and "filtered" in result["outcome"]
    assert growth_mb <= 200


def test_pure_modules_keep_python_311_syntax():
    import ast

    for name in ("_h5.py", "_formats.py"):
        ast.parse((ROOT / "fem_ml" / name).read_text(), feature_version=(3, 11))


# --- command line -------------------------------------------------------------------------------------------------


def forged_best_index(path: Path) -> None:
    tree = tree_of(MODEL)
    tree["training/member_0/best_index"] = 10_000
    write_tree(path, tree, kind=SURROGATE.kind, version=SURROGATE.version)


def test_cli_cases_in_process(comm, tmp_dir, capsys):
    """Every careless command line exits 2 on every rank with ``error: ...`` and no traceback."""
    if comm.rank == 0:
        forged_best_index(tmp_dir / "forged.femml")
        shutil.copy(MODEL, tmp_dir / "thermal.h5")  # a model whose name is another output's heavy-data file
        for name in ("dir.xdmf", "dirh.h5", "dirj.xdmf.json"):
            (tmp_dir / name).mkdir()
        (tmp_dir / "user.h5").write_bytes(b"user data")
        (tmp_dir / "user.vtu").write_text("<VTKFile/>")
    d = shared(comm, tmp_dir)
    before = on_root(comm, lambda: [p.name for p in d.iterdir()])
    model = str(MODEL)
    cases = {
        "info: best_index out of range": ["info", str(d / "forged.femml")],
        "info: missing file": ["info", str(d / "missing.femml")],
        "info: a folder": ["info", str(d / "dir.xdmf")],
        "predict: forged model": ["predict", str(d / "forged.femml"), "--mu", MU, "-o", str(d / "f.xdmf")],
        "predict: out.xdmf is a folder": ["predict", model, "--mu", MU, "-o", str(d / "dir.xdmf")],
        "predict: out.h5 is a folder": ["predict", model, "--mu", MU, "-o", str(d / "dirh.xdmf")],
        "predict: out.xdmf.json is a folder": ["predict", model, "--mu", MU, "-o", str(d / "dirj.xdmf")],
        "predict: heavy data is the model": ["predict", f"{d}/thermal.h5", "--mu", MU, "-o", f"{d}/thermal.xdmf"],
        "predict: output is the model": ["predict", model, "--mu", MU, "-o", model],
        "predict: user's h5 file": ["predict", model, "--mu", MU, "-o", str(d / "user.xdmf")],
        "predict: user's vtu file": ["predict", model, "--mu", MU, "-o", str(d / "user.vtu")],
        "predict: 0.5_5": ["predict", model, "--mu", MU.replace("0.3", "0.5_5"), "-o", str(d / "a.xdmf")],
        "predict: Arabic-Indic digits": ["predict", model, "--mu", MU.replace("0.3", ARABIC), "-o", str(d / "a.xdmf")],
        "predict: nan": ["predict", model, "--mu", MU.replace("0.3", "nan"), "-o", str(d / "a.xdmf")],
        "predict: unknown parameter": ["predict", model, "--mu", "k0=0.5", "-o", str(d / "a.xdmf")],
        "predict: out of bounds": ["predict", model, "--mu", MU.replace("0.3", "7"), "-o", str(d / "a.xdmf")],
        "predict: unknown suffix": ["predict", model, "--mu", MU, "-o", str(d / "a.txt")],
    }  # fmt: skip
    for label, argv in cases.items():
        with deadline(label):
            status = fem_ml.cli.main(argv, comm=comm)
        captured = capsys.readouterr()
        assert status == 2, (label, captured.out, captured.err)
        assert "Traceback" not in captured.err + captured.out, label
        if comm.rank == 0:
            assert captured.err.startswith("error: "), (label, captured.err)
    # Nothing was replaced or left behind: no partial output, no temporary file.
    assert (d / "user.h5").read_bytes() == b"user data" and (d / "dir.xdmf").is_dir()
    assert sorted(p.name for p in d.iterdir()) == sorted(before), sorted(p.name for p in d.iterdir())
    # --force replaces the user's files; a .vtu output works.
    with deadline("predict --force"):
        assert fem_ml.cli.main(["predict", model, "--mu", MU, "-o", str(d / "user.xdmf"), "--force"], comm=comm) == 0
        assert fem_ml.cli.main(["predict", model, "--mu", MU, "-o", str(d / "user.vtu"), "--force"], comm=comm) == 0
    capsys.readouterr()
    if comm.rank == 0:
        print(f"\ncommand line in process: {len(cases) + 2} cases, 0 tracebacks")


@pytest.mark.processes
def test_cli_cases_as_processes(comm, tmp_dir):
    """The cases of issue 12 as real ``mpirun -n 2`` runs, each with a timeout: exit 2, ``error:``, no traceback."""

    def run() -> int:
        forged_best_index(tmp_dir / "forged.femml")
        (tmp_dir / "out.xdmf").mkdir()
        python = [sys.executable, "-m", "fem_ml"]
        runs = [
            ["info", str(tmp_dir / "forged.femml")],
            ["predict", str(MODEL), "--mu", MU, "-o", str(tmp_dir / "out.xdmf")],
            ["predict", str(MODEL), "--mu", MU.replace("0.3", "0.5_5"), "-o", str(tmp_dir / "b.xdmf")],
        ]
        for argv in runs:
            proc = subprocess.run(
                [*mpirun(2), *python, *argv], capture_output=True, text=True, timeout=120, env=clean_env(),
                cwd=ROOT,
            )  # fmt: skip
            assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
            assert "error: " in proc.stderr and "Traceback" not in proc.stderr + proc.stdout, (argv, proc.stderr)
        return len(runs)

    with deadline("CLI processes", 400):
        n = on_root(comm, run)
    if comm.rank == 0:
        print(f"\ncommand line under mpirun -n 2: {n} cases, 0 hangs, 0 tracebacks")


# --- outputs and stores -------------------------------------------------------------------------------------------


def test_divergent_input_fails_on_every_rank(comm, tmp_dir):
    """Bad input on one rank only is an error on every rank, not a hang."""
    rom = fem_ml.load(MODEL, comm=comm)
    n = rom.basis.modes.shape[0]
    last = comm.rank == comm.size - 1
    cases = {
        "write_fields: one rank's shape": lambda: fem_ml.write_fields(
            tmp_dir / "d.xdmf", rom.V, [{"u": np.zeros(n + (1 if last else 0))}]
        ),
        "write_sweep: one rank's parameter": lambda: fem_ml.write_sweep(
            tmp_dir / "s.xdmf", rom, "mu9" if last else "mu0", [0.2, 0.4]
        ),
        "save: one rank's metadata": lambda: fem_ml.save(
            rom, tmp_dir / "m.femml", metadata={"x": object()} if last else {}
        ),
        "assemble_inner_product: unknown name on one rank": lambda: fem_ml.assemble_inner_product(
            rom.V, "h2" if last else "l2"
        ),
    }
    for label, call in cases.items():
        with deadline(label), pytest.raises((ValueError, TypeError)):
            call()
        assert comm.allreduce(1) == comm.size  # every rank got past the case
    rom.destroy()
    assert not [p for p in tmp_dir.iterdir()]


def test_divergent_outputs_and_products(comm, tmp_dir):
    """Arguments valid on each rank but different between them: the same ValueError on every rank under MPI.

    Before the agreement checks, these reached HDF5's collectives with other files or sizes (an ``MPI_Abort``, or a
    raw ``RuntimeError``), or assembled a matrix whose rows came from different products without a word. Serially
    the same calls are valid and succeed.
    """
    rom = fem_ml.load(MODEL, comm=comm)
    n = rom.basis.modes.shape[0]
    last = comm.rank == comm.size - 1
    cases = {
        "write_modes: one rank's n_modes": lambda: fem_ml.write_modes(tmp_dir / "m.xdmf", rom.basis,
                                                                      n_modes=2 if last else 3),
        "write_fields: one rank's path": lambda: fem_ml.write_fields(tmp_dir / ("e.xdmf" if last else "f.xdmf"),
                                                                     rom.V, [{"u": np.zeros(n)}]),
        "write_fields: one rank's steps": lambda: fem_ml.write_fields(tmp_dir / "g.xdmf", rom.V,
                                                                      [{"u": np.zeros(n)}] * (2 if last else 1)),
        "write_fields: one rank's field name": lambda: fem_ml.write_fields(tmp_dir / "h.xdmf", rom.V,
                                                                           [{"v" if last else "u": np.zeros(n)}]),
        "assemble_inner_product: one rank's name": lambda: fem_ml.assemble_inner_product(
            rom.V, "h1" if last else "l2"
        ),
        "save: one rank's path": lambda: fem_ml.save(rom, tmp_dir / ("a.femml" if last else "b.femml")),
        "load: one rank's path": lambda: fem_ml.load(MODEL if last else tmp_dir / "missing.femml", comm=comm),
        "write_json: one rank's path": lambda: fem_ml.write_json(tmp_dir / ("a.json" if last else "b.json"), {},
                                                                 comm=comm),
        "SnapshotStore: one rank's path": lambda: fem_ml.SnapshotStore(tmp_dir / ("s" if last else "t"), rom.V),
        "SnapshotStore.write: one rank's index": lambda: fem_ml.SnapshotStore(tmp_dir / "store", rom.V).write(
            1 if last else 0, np.array([0.5, 0.5, 0.5, 0.5]), np.zeros(n), solve_time=0.0),
    }  # fmt: skip
    for label, call in cases.items():
        with deadline(label):
            if comm.size > 1:
                with pytest.raises(ValueError, match="differ between ranks"):
                    call()
            else:
                result = call()
                if isinstance(result, fem_ml.InnerProduct | fem_ml.Surrogate):
                    result.destroy()
        assert comm.allreduce(1) == comm.size  # every rank got past the case
    rom.destroy()
    if comm.size > 1:  # nothing written but the empty store of the last case, which every rank agreed on
        assert on_root(comm, lambda: sorted(p.name for p in tmp_dir.iterdir())) == ["store"]


@pytest.mark.processes
def test_two_processes_write_one_store(comm, tmp_dir):
    """Two processes create and fill one store at the same time: every entry once, intact, none lost."""

    def run() -> dict:
        store = tmp_dir / "store"
        script = str(Path(__file__).with_name("store_writer.py"))
        procs = [
            subprocess.Popen([sys.executable, script, str(store), a, b], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=clean_env(), start_new_session=True)
            for a, b in (("0", "30"), ("15", "45"))
        ]  # fmt: skip
        outputs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        names = sorted(p.name for p in (store / "samples").iterdir())
        return {"names": names, "leftovers": [n for n in os.listdir(store) if n.startswith(".")]}

    with deadline("concurrent store", 320):
        result = on_root(comm, run)
    assert result["names"] == [f"{i:06d}.h5" for i in range(45)]
    assert result["leftovers"] == []
    from dolfinx import fem, mesh

    V = fem.functionspace(mesh.create_unit_square(comm, 4, 4), ("Lagrange", 1))
    store = fem_ml.SnapshotStore(shared(comm, tmp_dir / "store"), V)
    records = store.records()
    assert sorted(records) == list(range(45))
    x = V.tabulate_dof_coordinates()[: V.dofmap.index_map.size_local, 0]
    values = store.read_values(range(45))
    assert np.allclose(values, np.arange(45)[None, :] + x[:, None])


@contextlib.contextmanager
def small_filesystem(comm: MPI.Comm, tmp_dir: Path, size: str):
    """A size-limited tmpfs mounted on rank 0 (yields its path, or None where mounting is not allowed)."""
    point = tmp_dir / "fs"

    def mount() -> bool:
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True)
        return proc.returncode == 0

    mounted = on_root(comm, mount)
    try:
        yield point if mounted else None
    finally:
        comm.barrier()
        if mounted and comm.rank == 0:
            subprocess.run(["umount", "-l", str(point)], check=False)


def fill_store(comm, store, V, x, start: int, limit: int) -> tuple[int, str]:
    """Write entries from ``start`` until one fails; returns (entries written, error message)."""
    for k in range(start, limit):
        try:
            store.write(k, np.array([0.5]), k + x, solve_time=0.0)
        except OSError as err:
            return k - start, str(err)
    return limit - start, ""


def test_full_and_read_only_store(comm, tmp_dir, monkeypatch):
    """A full filesystem and a read-only store fail clearly on every rank; nothing on disk is lost or left half."""
    from dolfinx import fem, mesh

    V = fem.functionspace(mesh.create_unit_square(comm, 8, 8), ("Lagrange", 1))
    x = V.tabulate_dof_coordinates()[: V.dofmap.index_map.size_local, 0]
    with small_filesystem(comm, tmp_dir, "192k") as fs:
        if fs is None:  # no mount allowed: simulate a full disk in the writer
            fs = tmp_dir

            def full(*args, **kwargs):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        store = fem_ml.SnapshotStore(fs / "store", V)
        with deadline("full filesystem"):
            if fs is tmp_dir:
                written, _ = fill_store(comm, store, V, x, 0, 5)
                monkeypatch.setattr("fem_ml.store.write_tree", full)
                more, message = fill_store(comm, store, V, x, 5, 10)
                written += more
                monkeypatch.undo()
            else:
                written, message = fill_store(comm, store, V, x, 0, 400)
            assert 0 < written < 400 and "No space left" in message, (written, message)
            records = store.records()
            assert sorted(records) == list(range(written))
            assert np.allclose(store.read_values(range(written)), np.arange(written)[None, :] + x[:, None])
            leftovers = on_root(comm, lambda: [p.name for p in (fs / "store").rglob(".*")])
            assert leftovers == []
        with deadline("read-only store"):
            if fs is not tmp_dir:
                on_root(comm, lambda: subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True))
            else:  # no mount allowed (and root ignores permissions): simulate a read-only filesystem in the writer

                def read_only(*args, **kwargs):
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS))

                monkeypatch.setattr("fem_ml.store.write_tree", read_only)
            store = fem_ml.SnapshotStore(fs / "store", V)
            assert sorted(store.records()) == list(range(written))
            with pytest.raises(OSError, match="Read-only file system"):
                store.write(written, np.array([0.5]), x, solve_time=0.0)
            assert sorted(store.records()) == list(range(written))
            monkeypatch.undo()
    if comm.rank == 0:
        print(f"\nstore on a full filesystem: {written} entries kept; read-only store refused writes")
