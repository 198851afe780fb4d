# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Generate the pages of the documentation that come from running code (``docs/build.sh`` calls this first).

1. Runs each demo's ``main`` serially, with the small sizes of its test, into
   ``docs/_generated/<demo>/``, then turns the demo script into ``docs/_generated/demos/<demo>.md`` with
   jupytext and appends a "Results" section: the pictures the demo wrote and its ``summary.json`` as a table.
   Every picture of :data:`FIGURES` must exist (for the demos that write them), or the build fails.
2. Runs ``docs/wrap_your_own.py`` and the command lines its page shows, and writes their results and output
   as Markdown fragments that the page includes.

Before that it checks that every public module of fem_ml has its API page, ``docs/api/<module>.md``, and that
every script of ``demos/`` is in :data:`DEMOS`.

Everything under ``docs/_generated/`` is deleted first, so a picture left over from an earlier build can never
stand in for one that a demo no longer writes.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from mpi4py import MPI

import jupytext

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"

#: The standard pictures of a surrogate (:func:`fem_ml.plots.write_report_plots`) that a demo writes into its
#: ``out_dir``, with their captions: the one list the build checks.
FIGURES: dict[str, str] = {
    "pod_spectrum.png": "POD spectrum: singular-value decay and retained energy against the number of modes.",
    "training_loss.png": "Training and validation loss of the network.",
    "test_errors.png": "Histogram of the relative errors on the test set.",
    "qoi.png": "Quantity of interest: surrogate prediction against the full model on the test set.",
}


class FromDemo:
    """An argument built from the demo's own module: ``FromDemo("Recipe", (12,), 100)`` is ``Recipe((12,), 100)``."""

    def __init__(self, name: str, *args: Any):
        self.name = name
        self.args = args

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(map(repr, self.args))})"

    def build(self, module: ModuleType) -> Any:
        """The object, from ``module``."""
        return getattr(module, self.name)(*self.args)


@dataclass(frozen=True)
class Demo:
    """A demo of ``demos/`` as the documentation runs it.

    Attributes:
        arguments: Arguments of its ``main``: the small, fast set of its test.
        figures: The pictures it writes into its ``out_dir``, with their captions (each one must exist).
    """

    arguments: dict[str, Any]
    figures: dict[str, str] = field(default_factory=lambda: dict(FIGURES))


#: Every script of ``demos/``, in the order of the documentation (the build checks that none is missing).
DEMOS: dict[str, Demo] = {
    "thermal_block": Demo({  # tests/test_demo.py
        "n_cells": 12, "n_train": 24, "n_test": 6, "n_networks": 2, "hidden_layers": (16, 16),
        "adam_epochs": 200, "lm_iterations": 10,
    }),
    "elasticity": Demo({  # tests/test_demo.py
        "n_cells": (6, 2, 2), "n_train": 16, "n_test": 3, "n_networks": 1, "hidden_layers": (16, 16),
        "adam_epochs": 100, "lbfgs_iterations": 10, "n_output": 2,
    }),
    "hyperelasticity": Demo({  # tests/test_demo.py
        "n_cells": (6, 2, 2), "n_train": 10, "n_test": 3, "n_networks": 1, "hidden_layers": (16,),
        "adam_epochs": 50, "lbfgs_iterations": 5, "n_output": 1,
    }),
    "heat": Demo({  # tests/test_demo.py
        "n_cells": 8, "n_train": 8, "n_test": 2, "train_every": 15, "n_networks": 1, "hidden_layers": (16,),
        "adam_epochs": 50, "lbfgs_iterations": 5,
    }),
    "trust_thermal_block": Demo({  # tests/test_trust.py
        "n_cells": 12, "n_small": 12, "n_large": 20, "n_test": 6, "n_physics": 100, "n_ensemble": 3,
        "n_initial": 6, "batch_size": 4, "max_solves": 14, "n_folds": 2, "recipe": FromDemo("Recipe", (12,), 100, 10),
    }, figures={
        "physics_vs_data.png": "20 snapshots: test errors of data-only and physics-reinforced training, and of the "
                               "POD-Galerkin model of the same basis.",
        "deviation_vs_error.png": "The ensemble's deviation against the true test error, with their Spearman "
                                  "correlation.",
        "adaptive.png": "Adaptive sampling: test error against the number of full solves, and the Latin-hypercube "
                        "reference trained the same way.",
    }),
    "inverse_thermal_block": Demo({  # tests/test_inverse.py
        "n_cells": 12, "n_train": 24, "n_test": 4, "n_trials": 2, "n_sensors": 8, "n_starts": 2, "mcmc_samples": 500,
        "n_networks": 1, "hidden_layers": (16, 16), "adam_epochs": 100, "lbfgs_iterations": 10, "n_output": 2,
    }, figures={
        "estimates.png": "Relative error of the estimated conductivities in each trial, with two reported standard "
                         "deviations.",
        "posterior.png": "Posterior of the first trial: MCMC marginals against the Laplace approximation.",
    }),
    "discover_hyperelastic": Demo({  # tests/test_constitutive.py
        "n": 10, "n_steps": 3, "laws": ("neo_hookean",),
    }, figures={
        "neo_hookean_noise0.0001.png": "Neo-Hookean data with noise 1e-4: the best model of each size (training "
                                       "and cross-validated cost) and the discovered coefficients against the "
                                       "true ones.",
        "heldout_forces.png": "Reaction forces on the held-out biaxial path: the hidden law against the discovered "
                              "laws, solved by DOLFINx.",
    }),
    "dynamics_beam": Demo({  # tests/test_dynamics_beam.py (its --small sizes)
        "n_cells": (8, 2, 2), "degree": 1, "dt": 1e-4, "t_train": 0.02, "n_modes": 6, "free_periods": 5.0,
    }, figures={
        "tip_displacement.png": "Tip displacement of the full Newmark model and of the second-order reduced model "
                                "learned from the step alone, for the step and the two unseen load histories.",
        "free_energy.png": "Reduced energy in free vibration from the final state of each history, for the model and "
                           "for a model fitted to noisy coefficients: it never grows.",
    }),
    "dynamics_burgers": Demo({  # tests/test_dynamics.py
        "n_cells": 6, "n_train": 3, "n_test": 2, "n_modes": 5, "t_end": 0.05, "adam_epochs": 10,
        "lbfgs_iterations": 2,
    }, figures={
        "errors.png": "Mean relative L2 error over time at the test viscosities: fem_ml's operator inference, the "
                      "opinf package and the time-as-input network; training window to the dotted line.",
    }),
    "discover_reaction_diffusion": Demo({  # tests/test_discovery.py
        "n_cells": 8, "t_end": 1.0, "grid": (16, 8), "pysindy_subdomains": 100, "n_models": 5,
    }, figures={
        "pareto_noise_0.05.png": "Pareto curve at 5 % noise: cross-validation residual against the number of terms, "
                                 "the chosen model starred.",
        "coefficients.png": "Discovered over true coefficients at each noise level, with two bootstrap standard "
                            "deviations.",
    }),
    "discover_burgers": Demo({  # tests/test_discovery.py
        "n_cells": 10, "t_end": 0.3, "grid": (16, 16), "pysindy_subdomains": 100, "n_models": 5,
    }, figures={
        "pareto_noise_0.05.png": "Pareto curves of both velocity components at 5 % noise, the chosen models starred.",
        "coefficients.png": "Discovered over true coefficients at each noise level, with two bootstrap standard "
                            "deviations.",
    }),
}  # fmt: skip

#: ``docs/wrap_your_own.py``'s ``main`` arguments in the build: a small mesh, a short training.
WRAP_ARGS: dict[str, Any] = {
    "n_cells": 16, "n_train": 20, "n_test": 5, "adam_epochs": 500, "lbfgs_iterations": 50,
}  # fmt: skip

log = logging.getLogger("docs")


class BuildError(RuntimeError):
    """Something the documentation needs is missing or failed."""


def uncomment(source: str) -> str:
    """Markdown of a cell written as indented comments (a ``# %% [markdown]`` cell inside a function).

    jupytext reads cell markers at any indentation, but keeps such a cell's lines as they are; a line
    ``    # text`` becomes ``text``, and ``    #`` an empty line.
    """
    lines = textwrap.dedent(source).splitlines()
    if not all(line.startswith("#") or not line.strip() for line in lines):
        return source
    return "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines)


def demo_markdown(script: Path) -> str:
    """The demo script as MyST Markdown: markdown cells as prose, code cells as ``python`` blocks."""
    notebook = jupytext.read(script)
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = uncomment(cell.source)
    notebook.metadata["jupytext"] = {"notebook_metadata_filter": "-all", "cell_metadata_filter": "-all"}
    return jupytext.writes(notebook, fmt="md")


def format_value(value: object, out_dir: Path) -> str:
    """A summary value for a Markdown table cell; paths under ``out_dir`` relative to it."""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    text = str(value)
    if Path(text).is_absolute() and Path(text).is_relative_to(out_dir):
        text = str(Path(text).relative_to(out_dir))
    return f"`{text}`"


def summary_table(summary: dict[str, object], out_dir: Path) -> str:
    """``summary.json`` as a two-column Markdown table."""
    rows = [f"| `{key}` | {format_value(value, out_dir)} |" for key, value in summary.items()]
    return "\n".join(["| quantity | value |", "| --- | --- |", *rows])


def call_text(function: str, arguments: dict[str, Any]) -> str:
    """``function(a=1, b=2)`` as Python source."""
    return f"{function}(" + ", ".join(f"{name}={value!r}" for name, value in arguments.items()) + ")"


def figures(out_dir: Path, pictures: dict[str, str]) -> list[str]:
    """MyST figures of ``pictures`` (name: caption) in ``out_dir``.

    The paths start at the documentation's root (``/_generated/...``), so that they hold in a page and in a
    fragment that a page includes alike.

    Raises:
        BuildError: if ``out_dir`` lacks any of them.
    """
    missing = [name for name in pictures if not (out_dir / name).is_file()]
    if missing:
        raise BuildError(f"{out_dir} lacks the picture(s) {', '.join(missing)}")
    blocks = []
    for name, caption in pictures.items():
        path = "/" + (out_dir / name).relative_to(DOCS).as_posix()
        blocks.append(f":::{{figure}} {path}\n:alt: {caption}\n:width: 80%\n\n{caption}\n:::")
    return blocks


def results_section(demo: Demo, out_dir: Path, seconds: float) -> str:
    """The "Results" section of a demo page: figures and summary of the run in ``out_dir``."""
    summary = json.loads((out_dir / "summary.json").read_text())
    arguments = demo.arguments
    return "\n\n".join(
        [
            "## Results",
            f"This page was built with a run of the demo at the small sizes of the test suite, on one rank, in "
            f"{seconds:.0f} s:",
            f"```python\n{call_text('main', arguments)}\n```",
            "Its numbers show that the pipeline works, not what the demo reaches at full size (the README "
            "gives those).",
            *figures(out_dir, demo.figures),
            "The summary (`summary.json`):",
            summary_table(summary, out_dir),
        ]
    )


def run_demo(name: str, demo: Demo) -> float:
    """Run a demo's ``main`` into ``docs/_generated/<demo>/``; returns its wall time in seconds."""
    out_dir = GENERATED / name
    module = importlib.import_module(name)
    arguments = {k: v.build(module) if isinstance(v, FromDemo) else v for k, v in demo.arguments.items()}
    log.info("running demo %s", name)
    start = time.perf_counter()
    quiet = {"progress": False} if "progress" in inspect.signature(module.main).parameters else {}
    module.main(MPI.COMM_WORLD, **arguments, out_dir=out_dir, **quiet)
    seconds = time.perf_counter() - start
    log.info("demo %s: %.1f s", name, seconds)
    return seconds


def demo_page(demo: str, settings: Demo, seconds: float) -> None:
    """Write ``docs/_generated/demos/<demo>.md``."""
    out_dir = GENERATED / demo
    pages = GENERATED / "demos"
    pages.mkdir(parents=True, exist_ok=True)
    script = ROOT / "demos" / f"{demo}.py"
    shutil.copy2(script, pages / script.name)
    text = demo_markdown(script).rstrip()
    source_note = (
        f"This page is generated from {{download}}`demos/{demo}.py <{script.name}>`, a jupytext script: run it "
        f"as it is (`mpirun -n 2 python demos/{demo}.py`) or open it as a notebook."
    )
    results = results_section(settings, out_dir, seconds)
    (pages / f"{demo}.md").write_text(f"{text}\n\n{source_note}\n\n{results}\n")


def child_environment() -> dict[str, str]:
    """The environment without MPI launcher variables, so that a child process starts an MPI job of its own."""
    prefixes = ("PMI_", "PMIX_", "HYDRA_", "MPIR_", "MPICH_", "OMPI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["OMP_NUM_THREADS"] = "1"
    return env


def mpirun() -> str:
    """The ``mpirun`` that belongs to this Python's MPI (the DOLFINx wheel puts one next to ``python``)."""
    beside = Path(sys.executable).with_name("mpirun")
    found = str(beside) if beside.exists() else shutil.which("mpirun")
    if found is None:
        raise BuildError("mpirun not found (needed to run the parallel command of 'Wrap your own DOLFINx problem')")
    return found


def run_command(shown: str, command: list[str], cwd: Path) -> str:
    """Run ``command`` in ``cwd``; returns the Markdown block of ``shown`` and its output."""
    log.info("running %s", shown)
    done = subprocess.run(command, cwd=cwd, env=child_environment(), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise BuildError(f"{shown} failed with status {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return f"```console\n$ {shown}\n{done.stdout.rstrip()}\n```"


def wrap_your_own() -> None:
    """Run ``docs/wrap_your_own.py`` and the command lines of its page into ``docs/_generated/wrap_your_own/``."""
    out_dir = GENERATED / "wrap_your_own"
    module = importlib.import_module("wrap_your_own")
    log.info("running wrap_your_own")
    start = time.perf_counter()
    summary = module.main(MPI.COMM_WORLD, **WRAP_ARGS, out_dir=out_dir, progress=False)
    seconds = time.perf_counter() - start
    (out_dir / "results.md").write_text(
        f"The documentation build ran `{call_text('main', WRAP_ARGS)}` on one rank in {seconds:.0f} s; it "
        f"returned:\n\n{summary_table(summary, out_dir)}\n"
    )
    (out_dir / "figures.md").write_text("\n\n".join(figures(out_dir, FIGURES)) + "\n")

    python = sys.executable
    info = ["python", "-m", "fem_ml", "info", "poisson.femml"]
    predict = ["python", "-m", "fem_ml", "predict", "poisson.femml", "--mu", "kappa=5,source=1", "--mu",
               "kappa=0.2,source=2", "-o", "sweep.xdmf"]  # fmt: skip
    blocks = [
        run_command(shlex.join(info), [python, *info[1:]], out_dir),
        run_command(f"mpirun -n 2 {shlex.join(predict)}", [mpirun(), "-n", "2", python, *predict[1:]], out_dir),
    ]
    (out_dir / "cli.md").write_text("\n\n".join(blocks) + "\n")


def check_demos() -> None:
    """Every script of ``demos/`` is in :data:`DEMOS`."""
    missing = sorted({path.stem for path in (ROOT / "demos").glob("*.py")} - set(DEMOS))
    if missing:
        raise BuildError(f"demos/{'.py, demos/'.join(missing)}.py not in DEMOS of docs/generate.py (and docs/index.md)")


def check_api_pages() -> None:
    """Every public module or package of fem_ml (not starting with ``_``) has its page ``docs/api/<module>.md``."""
    package = ROOT / "fem_ml"
    files = [path.stem for path in package.glob("*.py")]
    packages = [path.parent.name for path in package.glob("*/__init__.py")]
    modules = sorted(name for name in files + packages if not name.startswith("_"))
    missing = [name for name in modules if not (DOCS / "api" / f"{name}.md").is_file()]
    if missing:
        raise BuildError(f"no API page for fem_ml.{', fem_ml.'.join(missing)}: add docs/api/<module>.md and list it")


def main() -> None:
    """Generate everything; raises :class:`BuildError` for anything missing."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    if MPI.COMM_WORLD.size != 1:
        raise BuildError("run docs/generate.py serially: it runs every demo on one rank")
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    check_api_pages()
    check_demos()
    shutil.rmtree(GENERATED, ignore_errors=True)
    GENERATED.mkdir()
    sys.path[:0] = [str(ROOT / "demos"), str(DOCS)]
    for name, demo in DEMOS.items():
        demo_page(name, demo, run_demo(name, demo))
    wrap_your_own()


if __name__ == "__main__":
    main()
