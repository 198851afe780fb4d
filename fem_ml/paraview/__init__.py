# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Open a saved surrogate in ParaView: its parameters as sliders, the predicted field updated as you move them.

Two plugins, both Python plugins for ParaView 5.11 and later:

- the reader ``fem_ml/paraview/plugin.py`` (its path: :func:`plugin_path`, or ``python -m fem_ml
  paraview-plugin``) opens any ``.femml`` file, with one ``Parameters`` list;
- a model's own plugin, written by :func:`write_model_plugin` (``python -m fem_ml paraview-plugin model.femml -o
  DIR``), adds a source with one slider per parameter, named like the parameter and bounded by its box.

Both evaluate the surrogate inside ParaView's Python with :mod:`fem_ml.paraview.runtime`, which needs NumPy and
h5py only. In ``pvpython``::

    exec(open(load_script).read())   # load_script = fem_ml.paraview.load_script(); applies a Python 3.11 fix
    reader = fem_mlsurrogate(FileName="model.femml")
    reader.Parameters = [0.3, 0.7, 0.5, 0.5]
"""

from __future__ import annotations

import keyword
import os
import re
from pathlib import Path

__all__ = ["load_script", "plugin_path", "write_model_plugin"]

_HERE = Path(__file__).resolve().parent


def plugin_path() -> Path:
    """The ``.femml`` reader plugin, to load in ParaView (Tools > Manage Plugins, or ``LoadPlugin``)."""
    return _HERE / "plugin.py"


def load_script() -> Path:
    """A script for ParaView's Python shell or ``pvpython`` that loads :func:`plugin_path` (with the fix it needs)."""
    return _HERE / "load_plugin.py"


def _identifier(name: str) -> str:
    """``name`` made a Python identifier and XML-safe: other characters become ``_``."""
    text = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not text or text[0].isdigit() or keyword.iskeyword(text):
        text = "p_" + text
    return text


def write_model_plugin(model: str | os.PathLike[str], directory: str | os.PathLike[str] = ".") -> Path:
    """Write a ParaView plugin for one saved surrogate: a source with one slider per parameter (local).

    The plugin is a short Python file ``<directory>/femml_<stem>.py``. It refers to ``model`` by its absolute path
    and to the reader plugin's algorithm (:func:`plugin_path`), so it stays valid while both stay where they are.
    Each slider is named like its parameter (characters other than letters, digits and ``_`` become ``_``), ranges
    over the parameter's bounds and starts at the midpoint. In ``pvpython`` the source is created by the function
    ``femml_<stem>()``. The model is read and checked first, so a damaged file is refused here already. The file
    is written atomically, with the permissions of every file fem_ml writes (see :mod:`fem_ml._atomic`); an
    existing file of that name is replaced.

    Args:
        model: A ``.femml`` file.
        directory: Where the plugin goes (created if needed).

    Returns:
        The plugin's path.

    Raises:
        FileFormatError: If ``model`` is not an intact fem_ml surrogate.
        ValueError: If its field cannot be shown by the plugin (see :class:`~fem_ml.paraview.runtime.SurrogateModel`).
    """
    from fem_ml.paraview.runtime import SurrogateModel

    source = Path(model).resolve()
    surrogate = SurrogateModel(source)
    stem = _identifier(source.stem)
    slots = []
    for k, (name, lo, hi) in enumerate(zip(surrogate.names, surrogate.lower, surrogate.upper, strict=True)):
        slots.append(
            f"    @smproperty.doublevector(name={_identifier(name)!r}, default_values=[{float(0.5 * (lo + hi))!r}])\n"
            f"    @smdomain.doublerange(min={float(lo)!r}, max={float(hi)!r})\n"
            f"    def SetParameter{k}(self, value):\n"
            f"        self.set_parameter({k}, value)\n"
        )
    text = _TEMPLATE.format(
        model=str(source),
        plugin=str(plugin_path()),
        stem=stem,
        names=", ".join(surrogate.names),
        slots="\n".join(slots),
    )
    # fem_ml's one atomic writer and permission rule; imported here, as ParaView's Python (which imports this
    # package to reach the runtime) may lack mpi4py.
    from fem_ml._atomic import write_file

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    return write_file(Path(directory) / f"femml_{stem}.py", write)


_TEMPLATE = '''"""ParaView plugin for the fem_ml surrogate {model}: one slider per parameter ({names}).

Written by ``python -m fem_ml paraview-plugin``; load it in ParaView like the reader plugin {plugin}.
"""

import importlib.util
import sys

_spec = importlib.util.spec_from_file_location("_fem_ml_paraview.plugin", {plugin!r})
_core = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("_fem_ml_paraview.plugin", _core)
_spec.loader.exec_module(_core)

from paraview.util.vtkAlgorithm import smdomain, smproperty, smproxy  # noqa: E402

paraview_plugin_name = "femml_{stem}"
paraview_plugin_version = "1.0"


@smproxy.source(name="femml_{stem}", label="femml_{stem}")
class Surrogate(_core.FemmlAlgorithm):
    """The surrogate {model}, evaluated at the sliders' values."""

    def __init__(self):
        _core.FemmlAlgorithm.__init__(self, {model!r})

{slots}'''
