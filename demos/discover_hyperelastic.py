# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Discovering a hyperelastic law from displacements and reaction forces
#
# A quarter plate with a hole, $[0, 1]^2$ minus the disc $|x| < 0.3$ (plane strain), has symmetry conditions on
# $x = 0$ ($u_x = 0$) and $y = 0$ ($u_y = 0$) and is pulled by prescribed displacements $u_x = \delta_x$ on $x = 1$
# and $u_y = \delta_y$ on $y = 1$. A *hidden* law generates the data with DOLFINx: full-field displacements at
# several load steps and the total reaction forces on the two loaded edges. No stress is measured. The law is one
# of the EUCLID benchmark set (Flaschel, Kumar and De Lorenzis, CMAME 381, 2021), with
# $K_1 = \tilde I_1 - 3$, $K_2 = \tilde I_2 - 3$:
#
# | law | $W$ |
# | --- | --- |
# | Neo-Hookean | $0.5 K_1 + 1.5 (J-1)^2$ |
# | Isihara | $0.5 K_1 + 1.0 K_2 + 1.0 K_1^2 + 1.5 (J-1)^2$ |
# | Haines-Wilson | $0.5 K_1 + 1.0 K_2 + 0.7 K_1 K_2 + 0.2 K_1^3 + 1.5 (J-1)^2$ |
# | Gent-Thomas | $0.5 K_1 + 1.0 \log(\tilde I_2/3) + 1.5 (J-1)^2$ |
#
# `fem_ml.constitutive` discovers it from a library of 11 terms ($K_1^i K_2^j$, $1 \le i + j \le 3$,
# $\log(\tilde I_2/3)$, $(J-1)^2$): the internal forces $\int P_k(u) : \nabla v$ of each term are assembled by
# DOLFINx; equilibrium of the free dofs and the balance of the reaction forces give a linear system in the
# coefficients; non-negative least squares over all supports of up to 6 terms, with the model size chosen by
# leave-one-load-step-out cross-validation, gives the law.
#
# **Noise.** Gaussian noise of standard deviation $10^{-4}$ times the plate's size (EUCLID's level on its unit
# plate) is added to every displacement dof. Differentiating noisy displacements makes noisy strains, so the
# equilibrium is tested against smooth bump functions $v = \varphi_c e_i$ (radius 1.5 grid spacings of a
# $6 \times 6$ grid of centres) and the force balance against a smooth function that is 1 on the loaded edge
# and decays to 0 over the same radius: integration against smooth weights averages the noise over many
# cells. The data are not otherwise smoothed.
#
# **Load paths.** Training: an equibiaxial path ($\delta_x = \delta_y$) and a uniaxial one ($x = 1$ traction
# free), each in `n_steps` steps up to $\delta_y = $ `stretch`. In plane strain an isochoric deformation has
# $\tilde I_1 = \tilde I_2$, so $K_1$ and $K_2$ differ only through the volume change, which the equibiaxial path
# provokes most. Held out: a biaxial path with $\delta_x = \delta_y / 2$, solved by DOLFINx with the discovered
# law and compared with the hidden law's reaction forces.
#
# ```bash
# mpirun -n 2 python demos/discover_hyperelastic.py
# ```
#
# It writes `results/discover_hyperelastic/summary.json`, one plot per law and noise level (Pareto front and
# coefficients), the reaction forces on the held-out path, and per law the data (clean and noisy displacements)
# and the held-out displacements (hidden and discovered law) as XDMF for ParaView.

# %%
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from mpi4py import MPI

import numpy as np
from dolfinx import fem, mesh

import fem_ml
from fem_ml import constitutive as fc

#: The hidden laws: coefficients by term name of :func:`fem_ml.constitutive.default_library`.
LAWS: dict[str, dict[str, float]] = {
    "neo_hookean": {"(Ĩ1-3)": 0.5, "(J-1)²": 1.5},
    "isihara": {"(Ĩ1-3)": 0.5, "(Ĩ2-3)": 1.0, "(Ĩ1-3)²": 1.0, "(J-1)²": 1.5},
    "haines_wilson": {"(Ĩ1-3)": 0.5, "(Ĩ2-3)": 1.0, "(Ĩ1-3)(Ĩ2-3)": 0.7, "(Ĩ1-3)³": 0.2, "(J-1)²": 1.5},
    "gent_thomas": {"(Ĩ1-3)": 0.5, "log(Ĩ2/3)": 1.0, "(J-1)²": 1.5},
}
TRAINING_RATIOS: tuple[float | None, ...] = (1.0, None)  # delta_x / delta_y; None: x = 1 traction free
HELDOUT_RATIO = 0.5


class Specimen:
    """The plate with a hole, its function space, dof sets and displacement-controlled boundary conditions."""

    def __init__(self, comm: MPI.Comm, n: int):
        self.domain = fc.plate_with_hole(comm, n, radius=0.3)
        self.V = fem.functionspace(self.domain, ("Lagrange", 1, (2,)))
        V, fdim = self.V, 1

        def dofs(component: int, where) -> np.ndarray:
            facets = mesh.locate_entities_boundary(self.domain, fdim, where)
            return fem.locate_dofs_topological(V.sub(component), fdim, facets)

        self.left = dofs(0, lambda x: np.isclose(x[0], 0.0))
        self.bottom = dofs(1, lambda x: np.isclose(x[1], 0.0))
        self.right = dofs(0, lambda x: np.isclose(x[0], 1.0))
        self.top = dofs(1, lambda x: np.isclose(x[1], 1.0))
        self.delta_x = fem.Constant(self.domain, 0.0)
        self.delta_y = fem.Constant(self.domain, 0.0)
        zero = fem.Constant(self.domain, 0.0)
        self._fixed = [fem.dirichletbc(zero, self.left, V.sub(0)), fem.dirichletbc(zero, self.bottom, V.sub(1))]
        self._top = fem.dirichletbc(self.delta_y, self.top, V.sub(1))
        self._right = fem.dirichletbc(self.delta_x, self.right, V.sub(0))

    def bcs(self, ratio: float | None) -> list[fem.DirichletBC]:
        """Dirichlet conditions of a load path (``ratio`` None: the right edge is free)."""
        return [*self._fixed, self._top] + ([] if ratio is None else [self._right])

    def dirichlet_dofs(self, ratio: float | None) -> np.ndarray:
        """Every constrained dof of a load path."""
        sets = [self.left, self.bottom, self.top] + ([] if ratio is None else [self.right])
        return np.concatenate(sets)

    def solve(self, law: fc.StrainEnergy, ratio: float | None, stretch: float, n_steps: int) -> fc.LoadPath:
        """Solve a load path with ``law``; reactions on (right, top); the free right edge's is exactly 0."""
        u = fem.Function(self.V)

        def set_load(t: float) -> None:
            self.delta_y.value = stretch * t
            self.delta_x.value = 0.0 if ratio is None else ratio * stretch * t

        steps = np.linspace(1.0 / n_steps, 1.0, n_steps)
        path = fc.solve_displacement_controlled(law, u, self.bcs(ratio), set_load, steps, [self.right, self.top])
        if ratio is None:
            path.reactions[:, 0] = 0.0  # traction free: the measured force is zero
        return path


# %% [markdown]
# ## Data, discovery and the held-out check


# %%
def rel_error(found: np.ndarray, truth: np.ndarray) -> float:
    """Largest relative error of the true active coefficients (inf if one is missing)."""
    active = truth != 0
    return float(np.max(np.abs(found[active] - truth[active]) / np.abs(truth[active])))


def main(
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    n: int = 48,
    n_steps: int = 8,
    stretch: float = 0.5,
    bumps: int = 6,
    laws: tuple[str, ...] = tuple(LAWS),
    noise_levels: tuple[float, ...] = (0.0, 1e-4),
    max_terms: int = 6,
    seed: int = 0,
    out_dir: str | Path = "results/discover_hyperelastic",
    progress: bool = True,
) -> dict[str, object]:
    """Run the demo; returns the summary written to ``out_dir/summary.json`` (``progress``: log each stage)."""
    log = logging.getLogger("discover_hyperelastic")
    log.setLevel(logging.INFO if progress and comm.rank == 0 else logging.WARNING)
    start, cpu_start = time.perf_counter(), time.process_time()
    out = Path(out_dir)
    specimen = Specimen(comm, n)
    V = specimen.V
    library = fc.default_library()
    names = [term.name for term in library]
    summary: dict[str, object] = {
        "n_ranks": comm.size, "n_dofs": V.dofmap.index_map.size_global * 2, "n_terms": len(library),
        "n_steps": n_steps, "stretch": stretch, "bumps": bumps, "laws": list(laws),
        "noise_levels": list(noise_levels), "support_recovered": [], "coef_rel_error_max": [],
        "heldout_force_rel_error_max": [], "discovered": [], "coefficients": [],
    }  # fmt: skip
    forces_plot: dict[str, tuple[np.ndarray, np.ndarray, list[np.ndarray]]] = {}
    timings = dict.fromkeys(("data", "assemble", "discover", "heldout"), 0.0)
    for name in laws:
        truth = np.array([LAWS[name].get(term, 0.0) for term in names])
        hidden = fc.StrainEnergy(library, truth)
        tic = time.perf_counter()
        paths = [specimen.solve(hidden, ratio, stretch, n_steps) for ratio in TRAINING_RATIOS]
        heldout = specimen.solve(hidden, HELDOUT_RATIO, stretch, n_steps)
        timings["data"] += time.perf_counter() - tic
        log.info("%s: data generated (%.1f s)", name, time.perf_counter() - start)
        supports, errors, heldout_errors, found_laws, coefficients, heldout_forces = [], [], [], [], [], []
        noisy_first: list[np.ndarray] = []
        for level in noise_levels:
            tic = time.perf_counter()
            systems = []
            for p, (ratio, path) in enumerate(zip(TRAINING_RATIOS, paths, strict=True)):
                noisy = fc.add_displacement_noise(V, path.displacements, level, scale=1.0, seed=seed + p)
                if p == 0 and level == max(noise_levels):
                    noisy_first = noisy
                systems.append(
                    fc.assemble_system(
                        library, V, noisy, dirichlet_dofs=specimen.dirichlet_dofs(ratio),
                        reaction_dofs=[specimen.right, specimen.top], reaction_forces=path.reactions, bumps=bumps,
                    )
                )  # fmt: skip
            timings["assemble"] += time.perf_counter() - tic
            tic = time.perf_counter()
            law = fc.discover_law(fc.ConstitutiveSystem.concatenate(systems), max_terms=max_terms)
            timings["discover"] += time.perf_counter() - tic
            tic = time.perf_counter()
            check = specimen.solve(law, HELDOUT_RATIO, stretch, n_steps)
            timings["heldout"] += time.perf_counter() - tic
            force_error = float(np.max(np.abs(check.reactions - heldout.reactions) / np.abs(heldout.reactions)))
            supports.append(bool(set(law.support) == set(np.flatnonzero(truth))))
            errors.append(rel_error(law.coefficients, truth))
            heldout_errors.append(force_error)
            found_laws.append(str(law))
            coefficients.append([float(c) for c in law.coefficients])
            heldout_forces.append(check.reactions)
            fc.plot_discovery(law, out / f"{name}_noise{level:g}.png", truth=truth, comm=comm)
            log.info(
                "%s, noise %g: %s (coefficient error %.2e, held-out force error %.2e)",
                name,
                level,
                law,
                errors[-1],
                force_error,
            )
        for key, value in (("support_recovered", supports), ("coef_rel_error_max", errors),
                           ("heldout_force_rel_error_max", heldout_errors), ("discovered", found_laws),
                           ("coefficients", coefficients)):  # fmt: skip
            summary[key].append(value)  # type: ignore[attr-defined]
        forces_plot[name] = (heldout.load_factors * stretch, heldout.reactions, heldout_forces)
        fem_ml.write_fields(
            out / f"{name}_data.xdmf", V,
            [{"displacement": clean, "displacement_noisy": noisy}
             for clean, noisy in zip(paths[0].displacements, noisy_first, strict=True)],
            times=list(paths[0].load_factors * stretch), units={"displacement": "m", "displacement_noisy": "m"},
        )  # fmt: skip
        fem_ml.write_fields(
            out / f"{name}_heldout.xdmf", V,
            [{"displacement_hidden_law": a, "displacement_discovered_law": b}
             for a, b in zip(heldout.displacements, check.displacements, strict=True)],
            times=list(heldout.load_factors * stretch),
        )  # fmt: skip
    plot_forces(comm, out / "heldout_forces.png", forces_plot, noise_levels)
    for key, seconds in timings.items():
        summary[f"t_{key}_s"] = float(comm.allreduce(seconds, op=MPI.MAX))
    summary["t_cpu_s"] = float(comm.allreduce(time.process_time() - cpu_start, op=MPI.MAX))  # load independent
    summary["t_total_s"] = float(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    fem_ml.write_json(out / "summary.json", summary, comm=comm)
    if comm.rank == 0:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return summary


def plot_forces(
    comm: MPI.Comm,
    path: Path,
    forces: dict[str, tuple[np.ndarray, np.ndarray, list[np.ndarray]]],
    noise_levels: tuple[float, ...],
) -> None:
    """Reaction forces on the held-out path: hidden law against the discovered ones (rank 0 draws; collective)."""

    def draw(axes) -> None:
        axes = np.atleast_1d(axes)
        for ax, (name, (delta, truth, found)) in zip(axes, forces.items(), strict=True):
            for b, label in enumerate(("$R_x$ (x = 1)", "$R_y$ (y = 1)")):
                ax.plot(delta, truth[:, b], "k-", lw=1.5, label=f"{label}, hidden law")
                for level, reactions in zip(noise_levels, found, strict=True):
                    ax.plot(delta, reactions[:, b], "o--", ms=3, label=f"discovered, noise {level:g}")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel(r"$\delta_y$")
        axes[0].set_ylabel("reaction force")
        axes[0].legend(fontsize=6)

    fem_ml.plots.save_plot(comm, path, draw, ncols=len(forces), figsize=(3.6 * len(forces), 3.4))


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Discover hyperelastic laws from displacements and forces.")
    parser.add_argument("--n", type=int, default=48, help="cells along each edge of the plate")
    parser.add_argument("--n-steps", type=int, default=8, help="load steps per load path")
    parser.add_argument("--laws", default=",".join(LAWS), help="comma-separated laws")
    parser.add_argument("--out-dir", default="results/discover_hyperelastic")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if MPI.COMM_WORLD.rank == 0 else logging.WARNING)
    main(n=args.n, n_steps=args.n_steps, laws=tuple(args.laws.split(",")), out_dir=args.out_dir)
