# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Load fem_ml's ParaView plugins from ParaView's Python shell or ``pvpython``.

``python -m fem_ml paraview-plugin`` prints the lines to paste::

    import sys; sys.path.insert(0, "<this folder>"); import load_plugin   # adds fem_mlsurrogate(FileName=...)
    load_plugin.load("femml_thermal_block.py")                           # a model's own plugin, with sliders

Importing this module loads the ``.femml`` reader (:mod:`plugin` beside it). It first gives Python 3.11 back
``inspect.getargspec``, which ParaView 5.11's Python-plugin loader still imports (Debian's ParaView 5.11 runs
Python 3.11; newer ParaView releases do not need this). The functions that create the plugins' readers and sources
are added to the ``__main__`` namespace, as ``LoadPlugin(..., ns=globals())`` does in a script.
"""

import inspect
import os
from collections import namedtuple

import __main__

if not hasattr(inspect, "getargspec"):
    _ArgSpec = namedtuple("_ArgSpec", "args varargs keywords defaults")

    def _getargspec(func):  # type: ignore[no-untyped-def]
        spec = inspect.getfullargspec(func)
        return _ArgSpec(spec.args, spec.varargs, spec.varkw, spec.defaults)

    inspect.getargspec = _getargspec  # type: ignore[attr-defined]

from paraview.simple import LoadPlugin


def load(path):  # type: ignore[no-untyped-def]
    """Load the ParaView Python plugin at ``path`` and add its functions to ``__main__``."""
    LoadPlugin(os.path.abspath(path), remote=False, ns=__main__.__dict__)


load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugin.py"))
