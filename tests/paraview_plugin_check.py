# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""Drive fem_ml's ParaView plugins in ``pvpython`` and print what they produced, as JSON.

Run with ``xvfb-run -a pvpython paraview_plugin_check.py PLUGIN_DIR CASES.json OUT.json``. ``CASES.json`` lists
``{"model": path, "parameters": [...], "plugin": model plugin path or null}``; for each case the reader (or the
model's own plugin, through its sliders) is evaluated and ``OUT.json`` gets the points, the point arrays, the field
data, the sliders' names and ranges, or ``null`` when the output is empty (an error was reported).
"""

import json
import sys

sys.path.insert(0, sys.argv[1])
import load_plugin
from paraview import servermanager
from vtkmodules.util.numpy_support import vtk_to_numpy

cases = json.loads(open(sys.argv[2]).read())
results = []
for case in cases:
    sliders = None
    if case.get("plugin"):
        load_plugin.load(case["plugin"])
        name = case["plugin"].rsplit("/", 1)[-1][: -len(".py")]
        source = getattr(sys.modules["__main__"], name)()
        sliders = {}
        for i, value in enumerate(case["parameters"]):
            prop_name = case["names"][i]
            prop = source.GetProperty(prop_name)
            domain = prop.SMProperty.GetDomain("range")
            sliders[prop_name] = [domain.GetMinimum(0), domain.GetMaximum(0)]
            setattr(source, prop_name, value)
    else:
        source = load_plugin.__main__.fem_mlsurrogate(FileName=case["model"])
        source.Parameters = case["parameters"]
    source.UpdatePipeline()
    data = servermanager.Fetch(source)
    if data is None or data.GetNumberOfPoints() == 0:
        results.append(None)
        continue
    point_data = data.GetPointData()
    field_data = data.GetFieldData()
    results.append(
        {
            "points": vtk_to_numpy(data.GetPoints().GetData()).tolist(),
            "cell_types": sorted({data.GetCellType(i) for i in range(data.GetNumberOfCells())}),
            "n_cells": data.GetNumberOfCells(),
            "arrays": {
                point_data.GetArrayName(i): vtk_to_numpy(point_data.GetArray(i)).tolist()
                for i in range(point_data.GetNumberOfArrays())
            },
            "field": {
                field_data.GetArrayName(i): field_data.GetArray(i).GetValue(0)
                for i in range(field_data.GetNumberOfArrays())
                if field_data.GetAbstractArray(i).IsNumeric()
            },
            "sliders": sliders,
        }
    )
with open(sys.argv[3], "w") as out:
    json.dump(results, out)
print("PLUGIN_CHECK_DONE")
