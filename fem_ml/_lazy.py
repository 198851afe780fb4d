# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Heavy optional imports deferred to their first use, so that ``import fem_ml`` and queries stay fast.

``torch = lazy_module("torch")`` gives a stand-in module: its first attribute access (``torch.nn``) imports torch
and from then on the stand-in holds torch's names. Nothing is put in ``sys.modules`` before that, so libraries
that look there for torch (SciPy's array-API checks, for instance) do not see it. Type checkers see the real
module through ``if TYPE_CHECKING: import torch``.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

__all__ = ["lazy_module"]


class _LazyModule(types.ModuleType):
    """A module imported at the first access to one of its attributes."""

    def __getattr__(self, attribute: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update({k: v for k, v in module.__dict__.items() if not k.startswith("__")})
        return getattr(module, attribute)


def lazy_module(name: str) -> Any:
    """A stand-in for module ``name`` that imports it at its first attribute access."""
    return _LazyModule(name)
