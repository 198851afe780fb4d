# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Inverse thermal block: conductivities from 20 noisy temperature sensors
#
# The forward model is the thermal block of `thermal_block.py`: $-\nabla\cdot(\kappa(\mu)\nabla u) = 1$ on the
# unit square, $u = 0$ on the boundary, $\kappa = \mu_i$ on quadrant $i$, $\mu \in [0.1, 1]^4$. Here we go the
# other way: from noisy temperatures at $m = 20$ points $x_1, \dots, x_m$ we recover the four conductivities.
#
# **Data model.** $d_j = u(\mu^\dagger)(x_j) + e_j$ with independent $e_j \sim \mathcal N(0, \sigma^2)$. The truth
# $u(\mu^\dagger)$ is a full DOLFINx solve at a random $\mu^\dagger$ (not a training point), evaluated at the
# sensors by DOLFINx's point evaluation. The noise level is 1 % of the data magnitude,
# $\sigma = 0.01 \cdot \mathrm{rms}_j\, u(\mu^\dagger)(x_j)$, one $\sigma$ for all sensors of a trial.
#
# **Surrogate misfit.** The surrogate is $u(\mu) \approx \sum_k c_k(\mu) \phi_k$, so its values at the sensors
# are $B c(\mu)$ with the sensor matrix $B_{jk} = \phi_k(x_j)$, computed once (`fem_ml.Sensors`). The estimate
# minimizes
#
# $$
# J(\mu) = \frac{1}{2\sigma^2} \sum_{j=1}^m \big( (B c(\mu))_j - d_j \big)^2, \qquad \mu \in [0.1, 1]^4,
# $$
#
# at a cost of $O(rm)$ per evaluation besides the network, independent of the mesh. `fem_ml.identify` runs
# SciPy's L-BFGS-B with the exact gradient of the network (computed in NumPy), in the variable $z$ with
# $\log\mu = \log a + (\log b - \log a)\,\mathrm{sigmoid}(z)$, so that every iterate lies in the box, from
# several Latin-hypercube starts.
#
# **Uncertainty.** Near the estimate $\hat\mu$ the posterior $\pi(\mu \mid d) \propto e^{-J(\mu)}$ is approximately
# Gaussian with the Gauss-Newton (Laplace) covariance
#
# $$
# \Sigma_{\text{post}} = \big( J_\mu^T J_\mu / \sigma^2 \big)^{-1}, \qquad J_\mu = B\, \partial c / \partial \mu
# \big|_{\hat\mu}.
# $$
#
# A trial succeeds when every conductivity is recovered to 5 % and every true value lies within two reported
# standard deviations of the estimate. `fem_ml.sample_posterior` checks the Laplace approximation by random-walk
# Metropolis on the surrogate posterior, and the same identification with full solves (L-BFGS-B with
# finite-difference gradients) measures what the surrogate saves.
#
# ```bash
# mpirun -n 2 python demos/inverse_thermal_block.py                      # trains its surrogate first (~1 min)
# mpirun -n 2 python demos/inverse_thermal_block.py --model results/inverse_thermal_block/surrogate.femml
# ```
#
# It writes `results/inverse_thermal_block/summary.json`; the observed field, the prediction at the estimate and
# their difference for the first trials (`fields.xdmf` for ParaView's *Xdmf3 Reader*, with `fields.xdmf.json`);
# and the plots `estimates.png` (each trial's error with its reported uncertainty) and `posterior.png` (MCMC
# marginals against the Laplace approximation).

# %%
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from mpi4py import MPI

import numpy as np
from scipy import optimize
from scipy.stats import qmc
from thermal_block import build_problem

import fem_ml
from fem_ml import plots

SPACE = fem_ml.ParameterSpace({f"mu{i}": (0.1, 1.0) for i in range(4)})
#: The surrogate is trained on the box widened by this factor on each side in log scale: [0.08, 1.25]^4.
TRAIN_PADDING = 1.25
QUADRANTS = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [0.5, 0.5]])


# %% [markdown]
# ## A surrogate accurate enough for inversion
# With 1 % noise at 20 sensors the posterior standard deviations are about 1 % of the conductivities, and a
# surrogate error at the sensors that is coherent over the sensors shifts the estimate as a bias. That error must
# stay well below $\sigma/\sqrt{m}$, about 0.2 % of the data, over the whole box, not only on average. The thermal
# block demo's surrogate (100 Latin-hypercube samples of $[0.1, 1]^4$) has a mean error of 0.1 % at the sensors but
# up to 2.6 % near the box's edges at small conductivities, where $u \sim 1/\kappa$ changes fastest and a
# network is least constrained. So this surrogate is trained on 200 samples, Latin hypercube in $\log\mu$
# (denser at small conductivities), on a box 25 % wider on each side in log scale; the search stays in
# $[0.1, 1]^4$ (`identify(..., bounds=...)`), away from the edges of the training box.


# %%
def train_inverse_surrogate(
    comm: MPI.Comm,
    V: Any,
    solve: Any,
    *,
    n_train: int,
    n_test: int,
    seed: int,
    n_networks: int,
    hidden_layers: tuple[int, ...],
    adam_epochs: int,
    lbfgs_iterations: int,
    path: Path,
    progress: bool,
) -> tuple[fem_ml.Surrogate, dict[str, Any]]:
    """Train on a log-uniform Latin hypercube of the widened box; test on ``SPACE``; save to ``path``."""
    lower, upper = SPACE.lower / TRAIN_PADDING, SPACE.upper * TRAIN_PADDING
    train_space = fem_ml.ParameterSpace({n: (a, b) for n, a, b in zip(SPACE.names, lower, upper, strict=True)})
    unit = qmc.LatinHypercube(d=SPACE.dim, rng=np.random.default_rng(seed)).random(n_train)
    train = np.clip(np.exp(np.log(lower) + unit * np.log(upper / lower)), lower, upper)
    start = time.perf_counter()
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=train_space, progress=progress)
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=1e-7)
    rom = fem_ml.train_surrogate(
        basis, snapshots, train_space, seed=seed, input_transform="log", hidden_layers=hidden_layers,
        n_networks=n_networks, adam_epochs=adam_epochs, lbfgs_iterations=lbfgs_iterations, progress=progress,
    )  # fmt: skip
    t_build = float(comm.allreduce(time.perf_counter() - start, op=MPI.MAX))
    test = SPACE.sample(n_test, method="uniform", seed=seed + 1)
    report = rom.errors(test, fem_ml.collect_snapshots(solve, test, V, space=SPACE, progress=progress))
    fem_ml.save(rom, path, test_errors=report, metadata={"demo": "inverse_thermal_block", "seed": seed})
    summary = report.summary()
    info = {
        "n_train": n_train, "n_modes": rom.n_modes, "t_surrogate_build_s": t_build,
        "rel_error_h1_mean": summary["rel_error_h1_mean"], "rel_error_h1_max": summary["rel_error_h1_max"],
        "train_points": train,
    }  # fmt: skip
    return rom, info


# %% [markdown]
# ## Sensors
# The same number of sensors in each quadrant, at seeded random points at least 0.05 away from the quadrant's
# edges, so that each conductivity is seen by its own sensors. `fem_ml.Sensors` finds, for each point, the lowest
# rank that owns a cell containing it; that rank evaluates the POD modes there and an allreduce gives every rank
# the same matrix $B$. On two ranks the sensors fall on both ranks' parts of the mesh.


# %%
def sensor_points(n_sensors: int, seed: int) -> np.ndarray:
    """``n_sensors`` points, spread evenly over the four quadrants (a multiple of 4), seeded."""
    if n_sensors < 4 or n_sensors % 4:
        raise ValueError(f"n_sensors must be a positive multiple of 4, got {n_sensors}.")
    rng = np.random.default_rng(seed)
    per_quadrant = n_sensors // 4
    return np.vstack([corner + 0.05 + 0.4 * rng.random((per_quadrant, 2)) for corner in QUADRANTS])


# %% [markdown]
# ## Identification with full solves, for comparison
# The same misfit, minimized by SciPy's L-BFGS-B on the unit coordinates $s = (\log\mu - \log a)/(\log b -
# \log a) \in [0, 1]^4$ with forward finite-difference gradients: each gradient costs four extra solves. All ranks
# take the same steps because the misfit is allreduced, so every solve is a collective call on all ranks.


# %%
def identify_with_full_solves(
    solve: Any, observations: fem_ml.Observations, start: np.ndarray
) -> tuple[np.ndarray, float, int]:
    """L-BFGS-B on the data misfit of full solves from ``start``; returns (estimate, misfit, number of solves)."""
    lo, width = np.log(SPACE.lower), np.log(SPACE.upper) - np.log(SPACE.lower)
    n_solves = 0

    def misfit(s: np.ndarray) -> float:
        nonlocal n_solves
        n_solves += 1
        return observations.field_misfit(solve(np.exp(lo + width * np.clip(s, 0.0, 1.0))))

    s0 = (np.log(start) - lo) / width
    result = optimize.minimize(misfit, s0, method="L-BFGS-B", bounds=[(0.0, 1.0)] * SPACE.dim)
    return np.exp(lo + width * np.clip(result.x, 0.0, 1.0)), float(result.fun), n_solves


# %% [markdown]
# ## The experiment
# Train the surrogate (or load one), place the sensors, then for each trial: solve at the truth, add noise,
# identify with the surrogate (one verification solve at the estimate), and record the error, the coverage of
# the reported standard deviations and the time.


# %%
def main(
    comm: MPI.Comm = MPI.COMM_WORLD,
    *,
    n_cells: int = 100,
    n_train: int = 200,
    n_test: int = 50,
    model: str | Path | None = None,
    n_trials: int = 10,
    n_sensors: int = 20,
    noise_level: float = 0.01,
    n_starts: int = 8,
    n_fe_trials: int = 10,
    n_fe_same_starts: int = 1,
    mcmc_samples: int = 20000,
    seed: int = 0,
    n_networks: int = 2,
    hidden_layers: tuple[int, ...] = (128, 128, 128),
    adam_epochs: int = 3000,
    lbfgs_iterations: int = 1000,
    out_dir: str | Path = "results/inverse_thermal_block",
    n_output: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the inverse thermal-block demo; returns the summary written to ``out_dir/summary.json``.

    Without ``model`` the surrogate is trained first and saved to ``out_dir/surrogate.femml``; with ``model`` that
    ``.femml`` file of a thermal-block surrogate is loaded (its mesh must be the ``n_cells`` one and its box must
    contain :data:`SPACE`).
    """
    out = Path(out_dir)
    say = print if progress and comm.rank == 0 else (lambda *args, **kwargs: None)
    V, solve = build_problem(comm, n_cells)
    surrogate_info: dict[str, Any] = {}
    if model is None:
        model = out / "surrogate.femml"
        rom, surrogate_info = train_inverse_surrogate(
            comm, V, solve, n_train=n_train, n_test=n_test, seed=seed, n_networks=n_networks,
            hidden_layers=hidden_layers, adam_epochs=adam_epochs, lbfgs_iterations=lbfgs_iterations, path=model,
            progress=progress,
        )  # fmt: skip
    else:
        rom = fem_ml.load(model, V)
    train_points = surrogate_info.pop("train_points", None)

    points = sensor_points(n_sensors, seed + 100)
    sensors = fem_ml.Sensors(rom, points)
    sensors_per_rank = np.bincount(sensors.owners, minlength=comm.size).tolist()
    say(f"{n_sensors} sensors, evaluated per rank: {sensors_per_rank}")

    # %% [markdown]
    # ### Trials
    # The true conductivities are uniform random draws in the box (a different seed from the Latin-hypercube
    # training points). Each identification also runs one full solve at its estimate (`verify=solve`): its
    # misfit, observed by DOLFINx's own point evaluation, shows how well the estimate explains the data beyond
    # the surrogate.

    # %%
    truths = SPACE.sample(n_trials, method="uniform", seed=seed + 2)
    # The first identification in a process pays one-time imports and set-up: a warm-up identification on a
    # surrogate-made datum keeps that out of the timings and is reported on its own.
    warm_data = sensors.matrix @ rom.coefficients(SPACE.lower + 0.5 * (SPACE.upper - SPACE.lower))[0]
    t_warmup = fem_ml.identify(rom, sensors.observe(warm_data, noise_std=1.0), n_starts=n_starts).time_s
    bounds = SPACE.bounds
    rng = np.random.default_rng(seed + 3)
    n_own = V.dofmap.index_map.size_local * V.dofmap.index_map_bs
    trials: list[dict[str, Any]] = []
    observations: list[fem_ml.SensorObservations] = []
    results: list[fem_ml.IdentificationResult] = []
    fields: list[dict[str, np.ndarray]] = []
    for k, truth in enumerate(truths):
        u_true = solve(truth)
        true_values = u_true.x.array[:n_own].copy()
        clean = sensors.evaluate(u_true)
        sigma = noise_level * float(np.sqrt(np.mean(clean**2)))
        obs = sensors.observe(clean + sigma * rng.standard_normal(clean.shape), noise_std=sigma)
        result = fem_ml.identify(rom, obs, n_starts=n_starts, bounds=bounds, seed=seed + k, verify=solve)
        error = np.abs(result.estimate - truth) / truth
        within = np.abs(result.estimate - truth) <= 2 * result.std
        assert result.verification is not None
        trials.append({
            "truth": truth.tolist(), "estimate": result.estimate.tolist(), "std": result.std.tolist(),
            "rel_error": error.tolist(), "rel_error_max": float(error.max()), "within_2std": within.tolist(),
            "success": bool(error.max() <= 0.05 and within.all()), "time_s": result.time_s,
            "n_surrogate_calls": result.n_surrogate_calls, "noise_std": sigma, "misfit_surrogate": result.misfit,
            "misfit_truth_at_estimate": result.verification.misfit,
        })  # fmt: skip
        observations.append(obs)
        results.append(result)
        if k < n_output:
            predicted = rom.predict_values(result.estimate)[:, 0]
            fields.append({"observed": true_values, "prediction": predicted, "difference": predicted - true_values})
        say(
            f"trial {k}: truth {np.round(truth, 4)}  estimate {np.round(result.estimate, 4)}  "
            f"std {np.round(result.std, 4)}  max rel error {error.max():.2%}  within 2 std {within.all()}  "
            f"{result.time_s * 1e3:.0f} ms; misfit {result.misfit:.1f} (surrogate), "
            f"{result.verification.misfit:.1f} (verification solve), m/2 = {n_sensors / 2:.0f}"
        )

    # %% [markdown]
    # ### Full solves instead of the surrogate
    # For the first `n_fe_trials` trials, the same misfit minimized with full solves from the centre of the box,
    # and the surrogate identification from that one start for a like-for-like time ratio. The full-solve estimate
    # is judged by the same rule, with the surrogate's reported standard deviations: it separates what the noise
    # does to an estimate (any model would suffer it) from what the surrogate's own error adds.

    # %%
    centre = np.sqrt(SPACE.lower * SPACE.upper)  # the centre in log coordinates
    fe: list[dict[str, Any]] = []
    for k in range(min(n_fe_trials, n_trials)):
        comm.barrier()
        tic = time.perf_counter()
        estimate, misfit, n_solves = identify_with_full_solves(solve, observations[k], centre)
        seconds = float(comm.allreduce(time.perf_counter() - tic, op=MPI.MAX))
        single = fem_ml.identify(rom, observations[k], n_starts=0, initial=centre, bounds=bounds)
        fe_error = np.abs(estimate - truths[k]) / truths[k]
        fe_within = np.abs(estimate - truths[k]) <= 2 * results[k].std
        fe.append({
            "trial": k, "estimate": estimate.tolist(), "misfit": misfit, "n_solves": n_solves, "time_s": seconds,
            "surrogate_single_start_time_s": single.time_s,
            "rel_diff_to_surrogate_estimate": float(np.max(np.abs(estimate - results[k].estimate) / estimate)),
            "rel_error_max": float(fe_error.max()), "within_2std": fe_within.tolist(),
            "success": bool(fe_error.max() <= 0.05 and fe_within.all()),
        })  # fmt: skip
        say(
            f"full solves, trial {k}: estimate {np.round(estimate, 4)}, {n_solves} solves, {seconds:.2f} s; "
            f"surrogate from the same start {single.time_s * 1e3:.0f} ms, with {n_starts} starts "
            f"{results[k].time_s * 1e3:.0f} ms"
        )

    # %% [markdown]
    # ### The whole identification with full solves: the same starts
    # The surrogate's identification runs `n_starts` starts (spread over the ranks) and keeps the best. For the
    # first `n_fe_same_starts` trials the full-solve minimization runs from each of those very starts (each start
    # solved by all ranks together) and keeps the best: the same identification, only with full solves.

    # %%
    same_starts: list[dict[str, Any]] = []
    for k in range(min(n_fe_same_starts, n_trials)):
        comm.barrier()
        tic = time.perf_counter()
        runs = [identify_with_full_solves(solve, observations[k], start) for start in results[k].starts]
        seconds = float(comm.allreduce(time.perf_counter() - tic, op=MPI.MAX))
        estimate, misfit, _ = min(runs, key=lambda run: run[1])
        same_starts.append({
            "trial": k, "n_starts": len(runs), "n_solves": int(sum(run[2] for run in runs)), "time_s": seconds,
            "surrogate_time_s": results[k].time_s, "ratio": seconds / results[k].time_s,
            "rel_diff_to_surrogate_estimate": float(np.max(np.abs(estimate - results[k].estimate) / estimate)),
        })  # fmt: skip
        say(
            f"full solves from the surrogate's {len(runs)} starts, trial {k}: {seconds:.2f} s, "
            f"{same_starts[-1]['n_solves']} solves; surrogate {results[k].time_s * 1e3:.0f} ms: "
            f"{same_starts[-1]['ratio']:.0f}x"
        )

    # %% [markdown]
    # ### The Laplace approximation against MCMC
    # Random-walk Metropolis on the surrogate posterior of the first trial, with proposals from the Laplace
    # covariance; the posterior standard deviations from the chain should match the reported ones.

    # %%
    chain = fem_ml.sample_posterior(rom, observations[0], results[0], n_samples=mcmc_samples, seed=seed)
    names = list(SPACE.names)
    plots.plot_posterior(chain.samples, results[0].estimate, results[0].std, names, out / "posterior.png", comm=comm,
                         truth=truths[0])  # fmt: skip
    plots.plot_estimates(truths, np.array([r.estimate for r in results]), np.array([r.std for r in results]), names,
                         out / "estimates.png", comm=comm)  # fmt: skip
    say(
        f"MCMC, trial 0: acceptance {chain.acceptance_rate:.2f}, ESS {np.round(chain.effective_sample_size)}, "
        f"posterior std / Laplace std {np.round(chain.std / results[0].std, 3)}"
    )

    # %% [markdown]
    # ### The same estimate on any number of ranks
    # The surrogate file loaded on one rank (`COMM_SELF`, the whole mesh on each rank), new sensors at the same
    # points, the same data: the estimate agrees with the distributed one to rounding.

    # %%
    rom_self = fem_ml.load(model, comm=MPI.COMM_SELF)
    serial = fem_ml.identify(
        rom_self, fem_ml.Sensors(rom_self, points).observe(observations[0].data, noise_std=observations[0].noise_std),
        n_starts=n_starts, bounds=bounds, seed=seed,
    )  # fmt: skip
    rank_diff = float(comm.allreduce(np.max(np.abs(serial.estimate - results[0].estimate) / serial.estimate), MPI.MAX))
    say(f"estimate on one rank vs {comm.size}: max relative difference {rank_diff:.1e}")

    # %% [markdown]
    # ## Output for ParaView and the summary
    # For the first trials, the true field, the surrogate's prediction at the estimate and their difference, one
    # step per trial.

    # %%
    if fields:
        fem_ml.write_fields(
            out / "fields.xdmf", V, fields,
            metadata={"steps": [{"time": float(k), "truth": trials[k]["truth"], "estimate": trials[k]["estimate"]}
                                for k in range(len(fields))]},
        )  # fmt: skip
    errors = np.array([t["rel_error_max"] for t in trials])
    times = np.array([t["time_s"] for t in trials])
    within = np.array([t["within_2std"] for t in trials])

    # Time ratios per trial (each pair measured back to back, under the same load of the machine), then medians.
    def median(values: list[float]) -> float:
        return float(np.median(values)) if values else float("nan")

    t_fe = median([f["time_s"] for f in fe])
    t_single = median([f["surrogate_single_start_time_s"] for f in fe])
    ratio = median([f["time_s"] / f["surrogate_single_start_time_s"] for f in fe])
    ratio_multistart = median([f["time_s"] / trials[f["trial"]]["time_s"] for f in fe])
    summary: dict[str, Any] = {
        "n_trials": n_trials,
        "n_success": int(sum(t["success"] for t in trials)),
        "rel_param_error_median": float(np.median(errors)),
        "rel_param_error_max": float(errors.max()),
        "t_identify_median_s": float(np.median(times)),
        "fe_over_surrogate_time_ratio": ratio,
        "fe_over_surrogate_multistart_time_ratio": ratio_multistart,
        "fe_over_surrogate_same_starts_time_ratio": median([f["ratio"] for f in same_starts]),
        "fe_same_starts_identification": same_starts,
        "n_ranks": comm.size,
        "n_dofs": int(V.dofmap.index_map.size_global),
        "n_modes": rom.n_modes,
        "n_sensors": n_sensors,
        "sensors_per_rank": sensors_per_rank,
        "noise_level": noise_level,
        "n_starts": n_starts,
        "n_error_below_5pct": int(np.sum(errors <= 0.05)),
        "n_all_within_2std": int(np.sum(within.all(axis=1))),
        "fraction_params_within_2std": float(within.mean()),
        "t_identify_max_s": float(times.max()),
        "t_first_identify_s": t_warmup,
        "n_surrogate_calls_median": float(np.median([t["n_surrogate_calls"] for t in trials])),
        "t_fe_identify_s": t_fe,
        "n_fe_trials": len(fe),
        "n_success_fe": int(sum(f["success"] for f in fe)),
        "t_surrogate_single_start_s": t_single,
        "fe_identification": fe,
        "mcmc_acceptance_rate": chain.acceptance_rate,
        "mcmc_ess": chain.effective_sample_size.tolist(),
        "mcmc_std_over_laplace_std": (chain.std / results[0].std).tolist(),
        "mcmc_time_s": chain.time_s,
        "estimate_one_rank_vs_n_ranks_max_rel_diff": rank_diff,
        "surrogate_file": str(model),
        **surrogate_info,
        "trials": trials,
    }
    if train_points is not None:  # the truths are random draws, not training points
        distance = np.linalg.norm(truths[:, None, :] - train_points[None, :, :], axis=2).min()
        summary["min_distance_truth_to_training"] = float(distance)
    fem_ml.write_json(out / "summary.json", summary, comm=comm)
    for key, value in summary.items():
        if key not in ("trials", "fe_identification"):
            say(f"{key:>40}: {value}")
    rom_self.destroy()
    rom.destroy()
    return summary


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Identify thermal-block conductivities from sensor data.")
    parser.add_argument("--n-cells", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--n-sensors", type=int, default=20)
    parser.add_argument("--n-starts", type=int, default=8, help="Latin-hypercube starts of each identification")
    parser.add_argument("--n-fe-trials", type=int, default=10, help="trials also identified with full solves")
    parser.add_argument("--mcmc-samples", type=int, default=20000)
    parser.add_argument("--model", default=None, help="a .femml surrogate of the thermal block (default: train one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-networks", type=int, default=2, help="ensemble size")
    parser.add_argument("--hidden-layers", type=int, nargs="+", default=[128, 128, 128], metavar="WIDTH")
    parser.add_argument("--adam-epochs", type=int, default=3000)
    parser.add_argument("--lbfgs-iterations", type=int, default=1000)
    parser.add_argument("--n-output", type=int, default=3, help="trials written for ParaView")
    parser.add_argument("--out-dir", default="results/inverse_thermal_block")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    main(
        n_cells=args.n_cells, n_train=args.n_train, n_test=args.n_test, n_trials=args.n_trials,
        n_sensors=args.n_sensors, n_starts=args.n_starts, n_fe_trials=args.n_fe_trials,
        mcmc_samples=args.mcmc_samples, model=args.model, seed=args.seed, n_networks=args.n_networks,
        hidden_layers=tuple(args.hidden_layers), adam_epochs=args.adam_epochs, lbfgs_iterations=args.lbfgs_iterations,
        out_dir=args.out_dir, n_output=args.n_output, progress=args.progress,
    )  # fmt: skip
