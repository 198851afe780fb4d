# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Fast to start: what ``import fem_ml``, ``python -m fem_ml info`` and a query import, in fresh processes.

The package namespace is lazy (PEP 562), DOLFINx is left out of ``info`` and torch out of loading and querying a
surrogate. Timings are not tested here; ``benchmarks/startup.py`` measures them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from mpi4py import MPI

import numpy as np
import pytest
from conftest import SPACE, clean_env, on_root

import fem_ml

#: Modules that must not be imported by the step named in each test.
HEAVY = ("torch", "matplotlib", "scipy.stats", "dolfinx", "sklearn")

_REPORT = "import json, sys; print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))"


def imported_after(code: str, *args: str) -> list[str]:
    """The modules of :data:`HEAVY` that a fresh Python has imported after running ``code`` (with ``args``)."""
    script = code + "\n" + _REPORT.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=clean_env(), timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model(snapshots, tmp_path_factory):
    comm = MPI.COMM_WORLD
    folder = Path(comm.bcast(str(tmp_path_factory.mktemp("imports")) if comm.rank == 0 else None, root=0))
    basis = fem_ml.pod(snapshots, inner_product="h1", n_modes=5)
    rom = fem_ml.train_surrogate(
        basis, snapshots, SPACE, n_networks=2, hidden_layers=(12, 12), adam_epochs=30, lbfgs_iterations=5,
        input_transform="log", progress=False,
    )  # fmt: skip
    path = fem_ml.save(rom, folder / "model.femml")
    yield rom, path
    rom.destroy()
    comm.barrier()


def test_import_fem_ml_imports_no_heavy_module(comm):
    assert on_root(comm, imported_after, "import fem_ml") == []


def test_the_package_namespace_is_complete_and_sorted():
    names = list(fem_ml.__all__)  # its order is ruff's (RUF022)
    assert len(set(names)) == len(names)
    assert set(names) <= set(dir(fem_ml))
    for name in names:  # every public name resolves (importing its module now)
        assert getattr(fem_ml, name) is not None, name
    assert callable(fem_ml.pod) and fem_ml.dynamics.__name__ == "fem_ml.dynamics"
    # public modules are attributes, as with eager imports (the demos call fem_ml.plots.save_plot)
    assert callable(fem_ml.plots.save_plot) and fem_ml.constitutive.__name__ == "fem_ml.constitutive"
    with pytest.raises(AttributeError, match="no_such_name"):
        fem_ml.no_such_name  # noqa: B018
    with pytest.raises(AttributeError, match="_mpi"):
        fem_ml._mpi_no_such_module  # noqa: B018


def test_submodule_import_keeps_the_function_of_the_same_name():
    """``import fem_ml.pod`` binds the submodule on the package; ``fem_ml.pod`` stays the function."""
    code = "import fem_ml.pod, fem_ml\nassert callable(fem_ml.pod)\nfrom fem_ml import pod\nassert callable(pod)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=300)
    assert done.returncode == 0, done.stderr


def test_info_imports_neither_dolfinx_nor_torch(comm, model):
    _, path = model
    code = "import sys\nfrom fem_ml.cli import main\nassert main(['info', sys.argv[1]]) == 0"
    assert on_root(comm, imported_after, code, str(path)) == []


def test_default_training_imports_neither_torch_nor_dolfinx(comm):
    """Default options train a network (Adam and the Levenberg-Marquardt polish) and query it on the NumPy backend."""
    code = (
        "from mpi4py import MPI\n"
        "import numpy as np\n"
        "from fem_ml.networks import TrainingOptions, train_network\n"
        "x = np.random.default_rng(0).uniform(0.1, 1.0, (30, 2))\n"
        "y = np.stack([x[:, 0] * x[:, 1], np.sin(x[:, 0])], axis=1)\n"
        "options = TrainingOptions(adam_epochs=20, lm_iterations=2, progress=False)\n"
        "net, (history, _) = train_network(x, y, [0.1, 0.1], [1.0, 1.0], options=options, comm=MPI.COMM_SELF)\n"
        "assert np.all(np.isfinite(net(x))) and history.n_lm_iterations > 0, history\n"
        "assert np.all(np.isfinite(net(np.full((net.torch_batch_threshold + 1, 2), 0.5))))\n"  # a large batch
    )
    assert on_root(comm, imported_after, code) == []


def test_load_and_query_do_not_import_torch(comm, model):
    """A loaded surrogate evaluates in NumPy; its values are the trained surrogate's."""
    rom, path = model
    mu = np.array([0.3, 0.45, 0.8, 0.2])
    code = (
        "import sys, json\nimport numpy as np\nimport fem_ml\nrom = fem_ml.load(sys.argv[1])\n"
        "mu = np.array(json.loads(sys.argv[2]))\nu = rom(mu)\nprint(json.dumps(rom.coefficients(mu).tolist()))"
    )

    def run() -> tuple[list[str], list[float]]:
        done = subprocess.run(
            [sys.executable, "-c", code + "\n" + _REPORT.format(heavy=("torch",)), str(path), json.dumps(mu.tolist())],
            capture_output=True, text=True, env=clean_env(), timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = done.stdout.strip().splitlines()
        return json.loads(lines[-1]), json.loads(lines[-2])

    heavy, coefficients = on_root(comm, run)
    assert heavy == []
    np.testing.assert_allclose(coefficients, rom.coefficients(mu), rtol=1e-13, atol=1e-13)


def test_a_loaded_network_builds_its_torch_models_on_demand(comm, model, tmp_dir):
    """The torch models of a loaded network equal the NumPy pass; saving it again writes the same network."""
    rom, path = model
    loaded = fem_ml.load(path, rom.V)
    try:
        network = loaded.network
        mu = SPACE.sample(5, method="uniform", seed=3)
        np.testing.assert_allclose(network(mu), rom.network(mu), rtol=1e-13, atol=1e-13)
        again = fem_ml.load(fem_ml.save(loaded, tmp_dir / "again.femml"), rom.V)  # never built in torch
        np.testing.assert_allclose(again.network(mu), network(mu), rtol=0, atol=0)
        again.destroy()
        assert len(network.models) == 2  # built now, from the file's weights
        np.testing.assert_allclose(network.torch_forward(mu), network(mu), rtol=1e-13, atol=1e-13)
    finally:
        loaded.destroy()


_THREADS = (
    "import os{first}; import fem_ml, scipy.linalg; from threadpoolctl import threadpool_info; "
    "print(os.environ.get('OPENBLAS_NUM_THREADS'), sorted({{i['num_threads'] for i in threadpool_info() "
    "if i['user_api'] == 'blas'}}))"
)


def blas_threads(env: dict[str, str], first: str) -> tuple[str, list[int]]:
    """``OPENBLAS_NUM_THREADS`` and the BLAS libraries' thread counts in a fresh Python that imports fem_ml."""
    script = _THREADS.format(first=first)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    variable, counts = done.stdout.split(maxsplit=1)
    return variable, json.loads(counts)


@pytest.mark.parametrize("first", ["", ", numpy, scipy.linalg"])  # BLAS loaded after fem_ml, or before it
@pytest.mark.parametrize(
    "launcher, user, expected",
    [
        ({"MPI_LOCALNRANKS": "2"}, {}, "limited"),
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, {}, "limited"),
        ({"MPI_LOCALNRANKS": "2"}, {"MKL_NUM_THREADS": "5"}, "the user's"),
        ({"MPI_LOCALNRANKS": "1"}, {}, "untouched"),
        ({}, {}, "untouched"),
    ],
)
def test_blas_threads_are_shared_among_the_ranks_of_a_node(comm, first, launcher, user, expected):
    # A fresh process that sees the launcher's environment (MPI_LOCALNRANKS of MPICH's Hydra, Open MPI's
    # OMPI_COMM_WORLD_LOCAL_SIZE) but no thread count of its own, unless the user set one.
    env = {k: v for k, v in clean_env().items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                               "MKL_NUM_THREADS")} | launcher | user  # fmt: skip
    variable, counts = on_root(comm, blas_threads, env, first)
    if expected == "limited":
        share = max(1, len(os.sched_getaffinity(0)) // 2)
        assert variable == str(share) and counts == [share]
    else:  # the user's count, or no launcher: OpenBLAS' own setting stays
        assert variable == "None"


def test_one_blas_thread_runs_a_block_on_one_thread_and_restores_the_pools():
    import scipy.linalg  # noqa: F401  (SciPy's OpenBLAS too)
    from threadpoolctl import threadpool_info, threadpool_limits

    from fem_ml._threads import one_blas_thread

    def counts() -> list[int]:
        return sorted({info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"})

    with threadpool_limits(limits=2, user_api="blas"):
        before = counts()
        with one_blas_thread():
            assert counts() == [1]
        assert counts() == before
        # Also when the block raises.
        with pytest.raises(ZeroDivisionError), one_blas_thread():
            assert counts() == [1]
            _ = 1 / 0
        assert counts() == before
    with threadpool_limits(limits=1, user_api="blas"), one_blas_thread():
        assert counts() == [1]
