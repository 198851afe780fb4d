# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Sphinx configuration of the fem_ml documentation (built by ``docs/build.sh``)."""

import sys
from pathlib import Path

# The fem_ml of this source tree, whatever is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpi4py import MPI  # noqa: F401  isort: skip  (before dolfinx, which autodoc imports through fem_ml)

import fem_ml

project = "fem_ml"
author = "fem_ml developers"
copyright = "2026, fem_ml developers"
release = fem_ml.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

# MyST: $...$ and $$...$$ math as in the demo scripts; ::: fences; heading anchors for links between pages.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc + napoleon: the docstrings are Google style with reStructuredText markup.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True, "special-members": "__call__"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"fem_ml {release}"

# Every cross-reference must resolve (-n), except to the packages fem_ml builds on: the build runs offline, so
# there is no intersphinx. Names are ignored by their first component, as annotations and docstrings spell them.
nitpicky = True
_EXTERNAL = (
    "numpy", "np", "npt", "scipy", "sparse", "dolfinx", "fem", "mesh", "basix", "ufl", "mpi4py", "MPI", "petsc4py",
    "PETSc", "torch", "h5py", "collections", "os", "pathlib", "typing", "logging", "abc",
)  # fmt: skip
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(_EXTERNAL)})(\..+)?"),
    (r"py:.*", r"fem_ml(\.\w+)*\._\w+(\.\w+)*"),  # private helpers and modules (leading underscore)
    (r"py:.*", r"(fem_ml\._stacked\.)?Array"),  # the type variable of fem_ml._stacked.StackedMLP (NumPy or torch)
    (r"py:class", r"Path|re\.Match|Integrator"),  # annotations: pathlib.Path, re.Match, dynamics' integrator names
    (r"py:class", r"Tree"),  # fem_ml._h5.Tree, the type alias of a file's entries (internals)
    # names imported only for type checkers (fem_ml._mlp.MLP, fem_ml._stacked.StackedMLP), so torch stays lazy
    (r"py:class", r"MLP|StackedMLP"),
]
