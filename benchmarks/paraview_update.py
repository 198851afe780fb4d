# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Time one slider update of the ParaView plugin at about 10k dofs, and render the docs' screenshots.

Builds (or takes with ``--model``) a surrogate of the thermal block on a 100 x 100 mesh (P1, 10,201 dofs, the
demo's network: 2 members of 3 x 128), writes its ParaView plugin (one slider per parameter), then in ``pvpython``
under ``xvfb-run``: moves the first slider ``--updates`` times and measures the time from the property change to
the data being ready (``UpdatePipeline``) and to the rendered view (``Render``). Writes
``benchmarks/results/paraview_update.json`` and the screenshots ``docs/images/paraview_mu0_{low,high}.png``.

    OMP_NUM_THREADS=1 python benchmarks/paraview_update.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from mpi4py import MPI

import fem_ml
from fem_ml.archive import describe
from fem_ml.paraview import plugin_path, write_model_plugin
from fem_ml.paraview.runtime import SurrogateModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "demos"))

from thermal_block import build_problem


def build_model(path: Path, n: int) -> None:
    """Train a thermal-block surrogate on an ``n`` x ``n`` mesh (short training: timing, not accuracy) and save it."""
    V, solve = build_problem(MPI.COMM_SELF, n)
    space = fem_ml.ParameterSpace({f"mu{i}": (0.1, 1.0) for i in range(4)})
    train = space.sample(40, method="lhs", seed=0)
    snapshots = fem_ml.collect_snapshots(solve, train, V, space=space, progress=False)
    basis = fem_ml.pod(snapshots, inner_product="h1", tol=1e-7)
    rom = fem_ml.train_surrogate(
        basis, snapshots, space, seed=0, hidden_layers=(128, 128, 128), n_networks=2, adam_epochs=300,
        lbfgs_iterations=50, progress=False,
    )  # fmt: skip
    fem_ml.save(rom, path)
    rom.destroy()


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="a .femml file (default: build one)")
    parser.add_argument("--n", type=int, default=100, help="mesh cells per side when building (default 100)")
    parser.add_argument("--updates", type=int, default=50, help="slider updates to time (default 50)")
    parser.add_argument("--screenshots", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "paraview_update.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or Path(tmp) / "thermal_block.femml"
        if args.model is None:
            build_model(model, args.n)
        info = describe(model)
        plugin = write_model_plugin(model, tmp)
        names = json.dumps(SurrogateModel(model).names)
        args.screenshots.mkdir(parents=True, exist_ok=True)
        out = Path(tmp) / "timing.json"
        script = Path(__file__).with_name("paraview_update_pv.py")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "HYDRA_", "MPIR_"))}
        proc = subprocess.run(
            ["xvfb-run", "-a", "pvpython", str(script), str(plugin_path().parent), str(plugin), names,
             str(args.updates), str(args.screenshots), str(out)],
            capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"pvpython failed:\n{proc.stdout}\n{proc.stderr}")
        timing = json.loads(out.read_text())
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
        "cores": os.cpu_count(),
        "n_dofs": info.get("n_dofs"),
        "n_modes": info.get("n_modes"),
        **timing,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
