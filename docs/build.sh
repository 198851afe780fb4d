#!/usr/bin/env bash
# Copyright (C) 2026 fem_ml developers
# SPDX-License-Identifier: MIT
#
# Build the documentation into docs/_build/html, warnings as errors:
#   1. docs/generate.py runs the demos (small sizes, serially) and docs/wrap_your_own.py, and writes the
#      generated pages into docs/_generated/ (demo tutorials by jupytext, with their pictures and summaries);
#   2. sphinx-build -W --keep-going -b html.
#
# Needs the docs extra: pip install -e ".[docs]" (`bash run.sh docs` sets it up and calls this script).
# Environment: PYTHON=/path/to/python (default: python3 on PATH).
set -euo pipefail

DOCS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$DOCS")"
PYTHON="${PYTHON:-python3}"

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this tree's fem_ml, whatever is installed

start=$SECONDS
"$PYTHON" "$DOCS/generate.py"
"$PYTHON" -m sphinx -W --keep-going -b html "$DOCS" "$DOCS/_build/html"
printf '[docs] built %s/_build/html/index.html in %d s\n' "$DOCS" "$((SECONDS - start))" >&2
