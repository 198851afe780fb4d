# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Open an XDMF file with ParaView's Xdmf3 reader and print, as JSON, its time steps and array ranges.

Run with ``xvfb-run -a pvpython paraview_check.py FILE.xdmf``.
"""

import json
import sys

from paraview.simple import Xdmf3ReaderT

reader = Xdmf3ReaderT(FileName=[sys.argv[1]])
reader.UpdatePipelineInformation()
steps = reader.TimestepValues
times = list(steps) if hasattr(steps, "__len__") else [steps]
result = {"times": [float(t) for t in times], "arrays": {}}
for t in times:
    reader.UpdatePipeline(t)
    for name in reader.PointData.keys():
        result["arrays"].setdefault(name, []).append([float(v) for v in reader.PointData[name].GetRange()])
print("PARAVIEW_RESULT " + json.dumps(result))
