# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Start-up times: ``import fem_ml``, ``python -m fem_ml info`` and a first query, each in a fresh Python.

Three commands, each run ``--repeat`` times (default 5) in a new process, wall time from the parent:

* ``python -c "import fem_ml"``;
* ``python -m fem_ml info MODEL``;
* a first query: ``fem_ml.load(MODEL)`` and ``rom(mu)``, with the time of the load and of the query inside the
  process too, and whether torch got imported (it must not: queries run in NumPy).

The model defaults to the thermal-block demo's (``python demos/thermal_block.py`` writes
``results/thermal_block/thermal_block.femml``). Serial, one OpenMP thread. Prints a table and writes
``benchmarks/results/startup.json`` with the medians, every run and the load average of the machine (timings
move with the load). Run: ``OMP_NUM_THREADS=1 python benchmarks/startup.py [--model FILE]``.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

QUERY = """
import json, sys, time
start = time.perf_counter()
import fem_ml
rom = fem_ml.load(sys.argv[1])
loaded = time.perf_counter()
mu = 0.5 * (rom.space.lower + rom.space.upper)
u = rom(mu)
done = time.perf_counter()
print(json.dumps({"load_s": loaded - start, "query_s": done - loaded, "torch_imported": "torch" in sys.modules}))
"""


def environment() -> dict[str, str]:
    """This checkout's fem_ml first on the path, one OpenMP thread, no MPI launcher variables."""
    prefixes = ("PMI_", "PMIX_", "HYDRA_", "MPIR_", "MPICH_", "OMPI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def timed(command: list[str]) -> tuple[float, str]:
    """Wall seconds of ``command`` in a fresh process (from the repository root) and its standard output."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=environment(), cwd=ROOT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return seconds, done.stdout


def main(model: Path, repeat: int, out: Path) -> dict:
    """Measure the three start-ups ``repeat`` times each; write and return the record."""
    python = sys.executable
    commands = {
        "import_fem_ml": [python, "-c", "import fem_ml"],
        "info": [python, "-m", "fem_ml", "info", str(model)],
        "first_query": [python, "-c", QUERY, str(model)],
    }
    runs: dict[str, list[float]] = {name: [] for name in commands}
    inside: list[dict] = []
    for _ in range(repeat):  # interleaved, so that a change of the machine's load touches every command alike
        for name, command in commands.items():
            seconds, stdout = timed(command)
            runs[name].append(seconds)
            if name == "first_query":
                inside.append(json.loads(stdout.strip().splitlines()[-1]))
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average": list(os.getloadavg()),
        "model": str(model),
        "repeat": repeat,
        "median_s": {name: float(np.median(times)) for name, times in runs.items()},
        "runs_s": runs,
        "first_query_load_median_s": float(np.median([r["load_s"] for r in inside])),
        "first_query_query_median_s": float(np.median([r["query_s"] for r in inside])),
        "first_query_imported_torch": any(r["torch_imported"] for r in inside),
        "targets_s": {"import_fem_ml": 1.5, "info": 1.0},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"load average {record['load_average']}; median of {repeat} fresh processes:")
    for name, seconds in record["median_s"].items():
        print(f"  {name:<14} {seconds:6.2f} s")
    print(
        f"  first query inside the process: load {record['first_query_load_median_s']:.2f} s, query "
        f"{record['first_query_query_median_s'] * 1e3:.1f} ms; torch imported: {record['first_query_imported_torch']}"
    )
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Start-up times of fem_ml in fresh processes.")
    parser.add_argument("--model", type=Path, default=ROOT / "results" / "thermal_block" / "thermal_block.femml")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args()
    if not args.model.exists():
        sys.exit(f"{args.model} does not exist: run `python demos/thermal_block.py` first, or give --model.")
    main(args.model, args.repeat, args.out)
