# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Memory cost of loading a forged file that claims 2 GiB: peak resident memory, measured with getrusage.

The forged file is ``tests/data/thermal_block_v1.femml`` with ``basis/modes`` replaced by a gzip-compressed dataset
of shape ``(1, 2**28)`` float64 (2 GiB declared, about 100 KB on disk: one stored chunk, the rest fill value). Each
measurement runs in a fresh subprocess and reports the growth of ``ru_maxrss`` over the load alone (after the
imports):

- ``pure``: the file modules only (``fem_ml._h5`` and ``fem_ml._formats``, imported as a ParaView plugin would,
  without DOLFINx, torch or MPI), ``read_tree`` with the surrogate schema;
- ``load``: ``fem_ml.load(path)`` with the whole package imported;
- ``valid``: ``fem_ml.load`` of the valid file, for comparison.

Target (issue 12): at most 200 MB. Run ``python benchmarks/forged_file_memory.py``; writes
``benchmarks/results/forged_file_memory.json``.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "data" / "thermal_block_v1.femml"

PURE = """
import json, resource, sys, types
pkg = types.ModuleType("fem_ml"); pkg.__path__ = [sys.argv[1]]; sys.modules["fem_ml"] = pkg
from fem_ml import _formats, _h5
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    _h5.read_tree(sys.argv[2], kind=_formats.SURROGATE.kind, version=1, what="x", schema=_formats.SURROGATE.schema)
    outcome = "loaded"
except _h5.FileFormatError as err:
    outcome = str(err)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"growth_mb": (peak - base) / 1024, "outcome": outcome}))
"""

FULL = """
import json, resource, sys
from mpi4py import MPI
import fem_ml
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    fem_ml.load(sys.argv[2]).destroy()
    outcome = "loaded"
except fem_ml.FileFormatError as err:
    outcome = str(err)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps({"growth_mb": (peak - base) / 1024, "outcome": outcome}))
"""


def measure(script: str, path: Path) -> dict:
    """Run ``script`` on ``path`` in a fresh process; its RESULT line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "fem_ml"), str(path)], capture_output=True, text=True, env=env
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(proc.stdout + proc.stderr)
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    """Forge, measure, report."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "claim.femml"
        shutil.copy(MODEL, path)
        with h5py.File(path, "a") as f:
            del f["basis/modes"]
            d = f.create_dataset("basis/modes", shape=(1, 1 << 28), dtype="f8", chunks=(1, 1 << 22), compression="gzip")
            d[0, : 1 << 22] = 0.0
        results = {
            "file_kb": path.stat().st_size / 1024,
            "declared_gib": (1 << 28) * 8 / 2**30,
            "pure": measure(PURE, path),
            "load": measure(FULL, path),
            "valid": measure(FULL, MODEL),
            "load_average": os.getloadavg()[0],
        }
    for key in ("pure", "load", "valid"):
        print(f"{key:>6}: peak RSS growth {results[key]['growth_mb']:7.1f} MB  ({results[key]['outcome'][:90]})")
    print(f"forged file: {results['file_kb']:.0f} KB declaring {results['declared_gib']:.0f} GiB; target <= 200 MB")
    out = ROOT / "benchmarks" / "results" / "forged_file_memory.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
