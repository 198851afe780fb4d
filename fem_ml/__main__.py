# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""``python -m fem_ml``: the command line (see :mod:`fem_ml.cli`)."""

import sys

from fem_ml.cli import main

sys.exit(main())
