# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The ``pvpython`` half of ``paraview_update.py``: time slider updates of a model's plugin; take screenshots.

Run by ``paraview_update.py`` as ``xvfb-run -a pvpython paraview_update_pv.py PLUGIN_DIR MODEL_PLUGIN NAMES_JSON
N_UPDATES SCREENSHOT_DIR OUT_JSON``; it writes the timings to ``OUT_JSON``.
"""

import json
import statistics
import sys
import time

sys.path.insert(0, sys.argv[1])
import load_plugin
from paraview import simple

plugin, names, n_updates, shots, out = sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
t0 = time.perf_counter()
load_plugin.load(plugin)
source = getattr(sys.modules["__main__"], plugin.rsplit("/", 1)[-1][: -len(".py")])()
source.UpdatePipeline()
t_open = time.perf_counter() - t0
view = simple.CreateView("RenderView")
view.ViewSize = [900, 700]
view.OrientationAxesVisibility = 0
display = simple.Show(source, view)
simple.ColorBy(display, ("POINTS", "prediction"))
lut = simple.GetColorTransferFunction("prediction")
display.SetScalarBarVisibility(view, True)
simple.ResetCamera(view)
simple.Render(view)

first = names[0]
domain = source.GetProperty(first).SMProperty.GetDomain("range")
lo, hi = domain.GetMinimum(0), domain.GetMaximum(0)
data_ms, render_ms = [], []
for k in range(n_updates):
    value = lo + (hi - lo) * ((k % 10) + 0.5) / 10
    start = time.perf_counter()
    setattr(source, first, value)
    source.UpdatePipeline()
    ready = time.perf_counter()
    simple.Render(view)
    done = time.perf_counter()
    data_ms.append(1e3 * (ready - start))
    render_ms.append(1e3 * (done - start))

top = 0.0
for value in (lo, hi):  # one colour scale for both pictures
    setattr(source, first, value)
    source.UpdatePipeline()
    top = max(top, source.PointData["prediction"].GetRange()[1])
for value, tag in ((lo, "low"), (hi, "high")):
    setattr(source, first, value)
    source.UpdatePipeline()
    lut.RescaleTransferFunction(0.0, top)
    text = simple.Text(Text=f"{first} = {value:g}, other parameters at their midpoints")
    text_display = simple.Show(text, view)
    text_display.FontSize = 14
    simple.Render(view)
    simple.SaveScreenshot(f"{shots}/paraview_{first}_{tag}.png", view, ImageResolution=[900, 700])
    simple.Hide(text, view)
    simple.Delete(text)

with open(out, "w") as handle:
    json.dump(
        {
            "t_open_s": t_open,
            "n_updates": n_updates,
            "update_data_ms_median": statistics.median(data_ms),
            "update_data_ms_max": max(data_ms),
            "update_render_ms_median": statistics.median(render_ms),
            "update_render_ms_max": max(render_ms),
            "slider": first,
            "slider_range": [lo, hi],
        },
        handle,
    )
print("PARAVIEW_UPDATE_DONE")
