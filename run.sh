#!/usr/bin/env bash
# Copyright (C) 2026 fem_ml developers
# SPDX-License-Identifier: MIT
#
# Set up fem_ml in its own virtual environment (.venv) and run something in it.
#
#   bash run.sh demo    set up, then run the thermal-block demo under `mpirun -n 2`
#   bash run.sh test    set up, then run the test suite serially and under `mpirun -n 2`
#   bash run.sh lint    set up, then run ruff, mypy and hadolint
#   bash run.sh docs    set up, then build the documentation (docs/build.sh) into docs/_build/html
#   bash run.sh setup   set up only
#
# Environment:
#   FEM_ML_PYTHON=/path/to/python3.12   use this interpreter (must be >= 3.12)
#   FEM_ML_VENV=path                    virtual environment folder (default: .venv next to this script)
#   FEM_ML_SYSTEM_DOLFINX=1             use the DOLFINx already installed for that Python (conda, Docker):
#                                       the venv sees system site-packages and the dolfinx-solver-real wheel is
#                                       not installed
#   FEM_ML_REQUIRE_PARAVIEW=1           fail (instead of saying so) when pvpython/xvfb-run are missing
#   FEM_ML_NP=2                         number of MPI ranks for `demo` and the parallel tests
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${FEM_ML_VENV:-$ROOT/.venv}"
NP="${FEM_ML_NP:-2}"

log() { printf '[fem_ml] %s\n' "$*" >&2; }
die() { printf '[fem_ml] error: %s\n' "$*" >&2; exit 1; }

is_recent_python() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    if [ -n "${FEM_ML_PYTHON:-}" ]; then
        is_recent_python "$FEM_ML_PYTHON" || die "FEM_ML_PYTHON=$FEM_ML_PYTHON is not a working Python >= 3.12"
        echo "$FEM_ML_PYTHON"
        return
    fi
    local candidate
    for candidate in python3.12 python3.13 python3.14 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && is_recent_python "$candidate"; then
            command -v "$candidate"
            return
        fi
    done
    # pyenv installs that are not the active version (their shims fail without PYENV_VERSION).
    local root="${PYENV_ROOT:-$HOME/.pyenv}"
    for candidate in $(ls -d "$root"/versions/3.1[2-9]* 2>/dev/null | sort -V); do
        if is_recent_python "$candidate/bin/python3"; then
            echo "$candidate/bin/python3"
            return
        fi
    done
    die "no Python >= 3.12 found (tried python3.12, python3.13, python3.14, python3 and $root/versions/3.1[2-9]*).
DOLFINx 0.11 wheels need Python >= 3.12: install one, or point FEM_ML_PYTHON at it."
}

setup() {
    local extras="test,lint,docs"
    [ "${FEM_ML_SYSTEM_DOLFINX:-0}" = 1 ] || extras="dolfinx,$extras"
    local stamp="$VENV/.fem_ml-installed"
    local want
    want="$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)-$extras"
    if [ -x "$VENV/bin/python" ] && is_recent_python "$VENV/bin/python" && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    local python
    python="$(find_python)"
    log "using $python ($("$python" --version 2>&1))"
    if ! { [ -x "$VENV/bin/python" ] && is_recent_python "$VENV/bin/python"; }; then
        rm -rf "$VENV"
        local venv_flags=()
        [ "${FEM_ML_SYSTEM_DOLFINX:-0}" = 1 ] && venv_flags+=(--system-site-packages)
        log "creating virtual environment $VENV"
        "$python" -m venv "${venv_flags[@]}" "$VENV"
    fi
    log "installing fem_ml[$extras] (first time: a few minutes, torch is large)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$extras]"
    "$VENV/bin/python" -c 'from mpi4py import MPI; import dolfinx, torch, fem_ml; print(f"[fem_ml] DOLFINx {dolfinx.__version__}, torch {torch.__version__}, fem_ml {fem_ml.__version__}")' >&2 \
        || die "the environment in $VENV does not import DOLFINx, torch and fem_ml"
    echo "$want" > "$stamp"
}

mpirun_cmd() {
    if [ -x "$VENV/bin/mpirun" ]; then echo "$VENV/bin/mpirun"; else command -v mpirun || die "mpirun not found"; fi
}

run_tests() {
    local py="$VENV/bin/python" mpirun
    mpirun="$(mpirun_cmd)"
    cd "$ROOT"
    log "tests, 1 rank"
    "$py" -m pytest -m "not paraview" --durations=10 "$@"
    # Tests marked `processes` start their own (serial and 2-rank) processes: the serial pass has run them.
    log "tests, $NP ranks"
    OMP_NUM_THREADS=1 "$mpirun" -n "$NP" "$py" -m mpi4py -m pytest -m "not paraview and not processes" -q \
        --durations=10 "$@"
    if command -v pvpython >/dev/null 2>&1 && command -v xvfb-run >/dev/null 2>&1; then
        log "ParaView checks (pvpython, Xdmf3 reader)"
        "$py" -m pytest -m paraview "$@"
    elif [ "${FEM_ML_REQUIRE_PARAVIEW:-0}" = 1 ]; then
        die "pvpython or xvfb-run missing and FEM_ML_REQUIRE_PARAVIEW=1 (Debian: apt-get install paraview xvfb)"
    else
        log "ParaView checks NOT run: pvpython or xvfb-run missing (Debian: apt-get install paraview xvfb)"
    fi
}

run_lint() {
    cd "$ROOT"
    "$VENV/bin/ruff" check fem_ml tests demos benchmarks docs/*.py
    "$VENV/bin/ruff" format --check fem_ml tests demos benchmarks docs/*.py
    "$VENV/bin/mypy"
    "$VENV/bin/hadolint" docker/Dockerfile
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
    setup) setup ;;
    demo)
        setup
        cd "$ROOT"
        OMP_NUM_THREADS=1 "$(mpirun_cmd)" -n "$NP" "$VENV/bin/python" demos/thermal_block.py "$@"
        ;;
    test) setup; run_tests "$@" ;;
    lint) setup; run_lint ;;
    docs) setup; PYTHON="$VENV/bin/python" PATH="$VENV/bin:$PATH" bash "$ROOT/docs/build.sh" ;;
    *) die "usage: bash run.sh {demo|test|lint|docs|setup} [args]" ;;
esac
