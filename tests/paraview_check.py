# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Open XDMF files with ParaView's Xdmf3 reader and print, as JSON, their time steps and point/cell array ranges.

Run with ``xvfb-run -a pvpython paraview_check.py FILE.xdmf [FILE.xdmf ...]``; prints one line
``PARAVIEW_RESULT {path: {"times": [...], "arrays": {...}, "cell_arrays": {...}}}``.
"""

import json
import sys

from paraview.simple import Delete, Xdmf3ReaderT

results = {}
for path in sys.argv[1:]:
    reader = Xdmf3ReaderT(FileName=[path])
    reader.UpdatePipelineInformation()
    steps = reader.TimestepValues
    times = list(steps) if hasattr(steps, "__len__") else [steps]
    result = {"times": [float(t) for t in times], "arrays": {}, "cell_arrays": {}}
    for t in times:
        reader.UpdatePipeline(t)
        for name in reader.PointData.keys():
            result["arrays"].setdefault(name, []).append([float(v) for v in reader.PointData[name].GetRange()])
        for name in reader.CellData.keys():
            result["cell_arrays"].setdefault(name, []).append([float(v) for v in reader.CellData[name].GetRange()])
    results[path] = result
    Delete(reader)
print("PARAVIEW_RESULT " + json.dumps(results))
