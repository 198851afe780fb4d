# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import json
import subprocess
import sys
from pathlib import Path

from mpi4py import MPI

import numpy as np
import pytest
from conftest import clean_env, on_root, raises_on_all_ranks
from dolfinx import fem, mesh

from fem_ml import constitutive as fc

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = fc.default_library()
NAMES = [term.name for term in LIBRARY]
LAWS = {
    "neo_hookean": {"(Ĩ1-3)": 0.5, "(J-1)²": 1.5},
    "gent_thomas": {"(Ĩ1-3)": 0.5, "log(Ĩ2/3)": 1.0, "(J-1)²": 1.5},
}
STRETCH, N_STEPS = 0.4, 3


def truth(name: str) -> np.ndarray:
    return np.array([LAWS[name].get(term, 0.0) for term in NAMES])


class Plate:
    """Plate with a hole under displacement control: equibiaxial (ratio 1) or uniaxial (ratio None) paths."""

    def __init__(self, comm: MPI.Comm, n: int = 10):
        self.domain = fc.plate_with_hole(comm, n)
        self.V = V = fem.functionspace(self.domain, ("Lagrange", 1, (2,)))

        def dofs(component, where):
            facets = mesh.locate_entities_boundary(self.domain, 1, where)
            return fem.locate_dofs_topological(V.sub(component), 1, facets)

        self.left = dofs(0, lambda x: np.isclose(x[0], 0.0))
        self.bottom = dofs(1, lambda x: np.isclose(x[1], 0.0))
        self.right = dofs(0, lambda x: np.isclose(x[0], 1.0))
        self.top = dofs(1, lambda x: np.isclose(x[1], 1.0))
        self.dx, self.dy = fem.Constant(self.domain, 0.0), fem.Constant(self.domain, 0.0)
        zero = fem.Constant(self.domain, 0.0)
        self.fixed = [fem.dirichletbc(zero, self.left, V.sub(0)), fem.dirichletbc(zero, self.bottom, V.sub(1)),
                      fem.dirichletbc(self.dy, self.top, V.sub(1))]  # fmt: skip
        self.pull_right = fem.dirichletbc(self.dx, self.right, V.sub(0))

    def solve(self, law, ratio):
        def set_load(t):
            self.dy.value = STRETCH * t
            self.dx.value = 0.0 if ratio is None else ratio * STRETCH * t

        bcs = self.fixed + ([] if ratio is None else [self.pull_right])
        steps = np.linspace(1 / N_STEPS, 1, N_STEPS)
        path = fc.solve_displacement_controlled(law, fem.Function(self.V), bcs, set_load, steps, [self.right, self.top])
        if ratio is None:
            path.reactions[:, 0] = 0.0
        return path

    def system(self, paths, *, noise=0.0, bumps=None):
        systems = []
        for p, (ratio, path) in enumerate(paths.items()):
            fixed = [self.left, self.bottom, self.top] + ([] if ratio is None else [self.right])
            u = fc.add_displacement_noise(self.V, path.displacements, noise, seed=p)
            systems.append(fc.assemble_system(
                LIBRARY, self.V, u, dirichlet_dofs=np.concatenate(fixed), reaction_dofs=[self.right, self.top],
                reaction_forces=path.reactions, bumps=bumps,
            ))  # fmt: skip
        return fc.ConstitutiveSystem.concatenate(systems)


@pytest.fixture(scope="module")
def plates():
    """The plate on COMM_WORLD and on COMM_SELF (each rank the whole mesh)."""
    return {"world": Plate(MPI.COMM_WORLD), "self": Plate(MPI.COMM_SELF)}


@pytest.fixture(scope="module")
def data(plates):
    """Training paths (equibiaxial and uniaxial) of each law, on both communicators."""
    out = {}
    for key, plate in plates.items():
        for name in LAWS:
            law = fc.StrainEnergy(LIBRARY, truth(name))
            out[key, name] = {ratio: plate.solve(law, ratio) for ratio in (1.0, None)}
    return out


def test_law_string_and_library():
    assert len(LIBRARY) == 11 and NAMES[:2] == ["(Ĩ1-3)", "(Ĩ2-3)"] and NAMES[-2:] == ["log(Ĩ2/3)", "(J-1)²"]
    assert "(Ĩ1-3)(Ĩ2-3)" in NAMES and "(Ĩ1-3)²(Ĩ2-3)" in NAMES and len(set(NAMES)) == len(NAMES)
    assert str(fc.StrainEnergy(LIBRARY, truth("neo_hookean"))) == "W = 0.500 (Ĩ1-3) + 1.500 (J-1)²"
    theta = np.zeros(11)
    theta[[1, 3]] = [-0.25, 2.0]
    assert str(fc.StrainEnergy(LIBRARY, theta)) == "W = -0.250 (Ĩ2-3) + 2.000 (Ĩ1-3)(Ĩ2-3)"
    assert str(fc.StrainEnergy(LIBRARY, np.zeros(11))) == "W = 0"
    assert [t.name for t in fc.default_library(2, log_i2=False, volumetric=(2, 4))] == [
        "(Ĩ1-3)", "(Ĩ2-3)", "(Ĩ1-3)²", "(Ĩ1-3)(Ĩ2-3)", "(Ĩ2-3)²", "(J-1)²", "(J-1)⁴"]  # fmt: skip
    with pytest.raises(ValueError, match="even"):
        fc.default_library(volumetric=(3,))
    with pytest.raises(ValueError, match="coefficients given"):
        fc.StrainEnergy(LIBRARY, [1.0])


@pytest.mark.parametrize("name", list(LAWS))
def test_recovers_law_without_noise(plates, data, name):
    system = plates["world"].system(data["world", name])
    law = fc.discover_law(system)
    assert set(law.support) == set(np.flatnonzero(truth(name)))
    np.testing.assert_allclose(law.coefficients, truth(name), rtol=1e-7, atol=1e-9)
    assert law.candidates[law.selected].cv_rel < 1e-12
    assert all(c.cv_rel > 1e-6 for c in law.candidates[: law.selected])  # smaller models do not fit
    thresholded = fc.discover_law(system, method="threshold")  # the sequential-thresholding path finds it too
    np.testing.assert_allclose(thresholded.coefficients, law.coefficients, rtol=1e-9, atol=1e-12)


def test_recovers_neo_hookean_with_noise(plates, data):
    """Noise 1e-4 (absolute, unit plate) with smooth test functions: the support and coefficients within 5%."""
    law = fc.discover_law(plates["world"].system(data["world", "neo_hookean"], noise=1e-4, bumps=6))
    assert set(law.support) == set(np.flatnonzero(truth("neo_hookean")))
    np.testing.assert_allclose(law.coefficients, truth("neo_hookean"), rtol=0.05, atol=0)


@pytest.mark.parametrize("bumps", [None, 5])
def test_system_and_law_agree_across_rank_counts(plates, data, bumps):
    """COMM_WORLD (distributed) against COMM_SELF (whole mesh on each rank): system and coefficients to 1e-10."""
    systems = {key: plates[key].system(data[key, "gent_thomas"], noise=1e-4, bumps=bumps) for key in plates}
    gram = {key: s.gram() for key, s in systems.items()}
    for a, b in zip(gram["world"], gram["self"], strict=True):
        assert np.linalg.norm(a - b) <= 1e-10 * np.linalg.norm(b)
    np.testing.assert_allclose(systems["world"].force_matrix, systems["self"].force_matrix, rtol=1e-10, atol=1e-14)
    laws = {key: fc.discover_law(s) for key, s in systems.items()}
    assert set(laws["world"].support) == set(laws["self"].support)
    np.testing.assert_allclose(laws["world"].coefficients, laws["self"].coefficients, rtol=1e-10, atol=0)
    world = MPI.COMM_WORLD
    assert np.array_equal(world.bcast(laws["world"].coefficients, root=0), laws["world"].coefficients)


def test_discovered_law_reproduces_reaction_forces(plates, data):
    """The discovered law, solved by DOLFINx (SNES), reproduces the data's reaction forces."""
    plate = plates["world"]
    law = fc.discover_law(plate.system(data["world", "gent_thomas"]))
    path = plate.solve(law, 1.0)
    expected = data["world", "gent_thomas"][1.0].reactions
    assert np.all(np.abs(expected) > 0)
    np.testing.assert_allclose(path.reactions, expected, rtol=1e-8)
    u = fem.Function(plate.V)
    u.x.array[: len(path.displacements[-1])] = path.displacements[-1]
    u.x.scatter_forward()
    np.testing.assert_allclose(fc.reaction_forces(law, u, [plate.right, plate.top]), expected[-1], rtol=1e-10)


def test_invalid_input_raises_on_every_rank(plates, data):
    plate, comm = plates["world"], MPI.COMM_WORLD
    path = data["world", "neo_hookean"][1.0]
    good = dict(dirichlet_dofs=np.concatenate([plate.left, plate.bottom, plate.top, plate.right]),
                reaction_dofs=[plate.right, plate.top])  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "reaction_forces has shape", fc.assemble_system, LIBRARY, plate.V,
                        path.displacements, reaction_forces=path.reactions[:, :1], **good)  # fmt: skip
    broken = [d.copy() for d in path.displacements]
    if comm.rank == comm.size - 1:  # one rank only
        broken[1] = broken[1][:-1] if broken[1].size else np.zeros(3)
    raises_on_all_ranks(comm, ValueError, "Displacement 1 has shape", fc.assemble_system, LIBRARY, plate.V,
                        broken, reaction_forces=path.reactions, **good)  # fmt: skip
    nan = [d.copy() for d in path.displacements]
    if comm.rank == 0:  # one rank only
        nan[0][0] = np.nan
    raises_on_all_ranks(comm, ValueError, "NaN", fc.assemble_system, LIBRARY, plate.V, nan,
                        reaction_forces=path.reactions, **good)  # fmt: skip
    raises_on_all_ranks(comm, ValueError, "bumps", fc.assemble_system, LIBRARY, plate.V, path.displacements,
                        reaction_forces=path.reactions, bumps=0, **good)  # fmt: skip
    one_step = fc.assemble_system(LIBRARY, plate.V, path.displacements[:1], reaction_forces=path.reactions[:1], **good)
    raises_on_all_ranks(comm, ValueError, "at least 2 load steps", fc.discover_law, one_step)
    system = plate.system(data["world", "neo_hookean"])
    raises_on_all_ranks(comm, ValueError, "Unknown method", fc.discover_law, system, method="lasso")
    raises_on_all_ranks(comm, ValueError, "Noise level", fc.add_displacement_noise, plate.V, path.displacements, -1.0)


@pytest.mark.processes
def test_demo_runs_as_script(tmp_dir):
    """The demo at tiny sizes, as a subprocess (tests do not import demos): summary keys and recovered laws."""
    comm = MPI.COMM_WORLD
    out = tmp_dir / "demo"

    def run():
        env = clean_env() | {"PYTHONPATH": str(ROOT)}
        command = [sys.executable, str(ROOT / "demos" / "discover_hyperelastic.py"), "--n", "10", "--n-steps", "3",
                   "--laws", "neo_hookean", "--out-dir", str(out)]  # fmt: skip
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((out / "summary.json").read_text())

    summary = on_root(comm, run)
    assert summary["laws"] == ["neo_hookean"] and summary["noise_levels"] == [0.0, 1e-4]
    assert summary["support_recovered"] == [[True, True]]
    assert np.max(summary["coef_rel_error_max"]) < 0.05
    assert np.max(summary["heldout_force_rel_error_max"]) < 0.02
    assert summary["discovered"][0][0] == "W = 0.500 (Ĩ1-3) + 1.500 (J-1)²"
    for name in ("neo_hookean_noise0.0001.png", "heldout_forces.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "neo_hookean_data.xdmf").exists() and (out / "neo_hookean_heldout.xdmf").exists()
