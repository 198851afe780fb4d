# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""ParaView plugin: open a fem_ml surrogate (``.femml``) and see its prediction for the parameters you set.

Load it in ParaView (Tools > Manage Plugins > Load New, or ``LoadPlugin(path)`` in ``pvpython``); the path is
printed by ``python -m fem_ml paraview-plugin``. It adds a reader for ``.femml`` files whose property
``Parameters`` holds one value per parameter (the box's midpoint by default). For one slider per parameter, named
and bounded like the parameter, generate a plugin for a given model: ``python -m fem_ml paraview-plugin
model.femml -o DIR`` (see :func:`fem_ml.paraview.write_model_plugin`); it builds on :class:`FemmlAlgorithm`.

The output is an unstructured grid: the predicted field as point data ``prediction`` (P2 fields on quadratic
cells), the ensemble's ``deviation`` when the file holds several networks, and the parameter values as field data.
Evaluation runs in ParaView's own Python through :mod:`fem_ml.paraview.runtime` (NumPy and h5py only). A file
that is not an intact fem_ml surrogate, or a parameter outside its bounds, gives an error message in ParaView's
output window and an empty output, never a crash.

ParaView 5.11's Python-plugin loader imports ``inspect.getargspec``, which Python 3.11 removed (Debian's ParaView
5.11 runs Python 3.11): there, load the plugin with the module ``load_plugin`` beside this file, which restores
that function first.
"""

import importlib
import sys
import types
from pathlib import Path

import numpy as np
from paraview.util.vtkAlgorithm import VTKPythonAlgorithmBase, smdomain, smhint, smproperty, smproxy
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkOutputWindow, vtkStringArray
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkUnstructuredGrid

paraview_plugin_name = "fem_ml"
paraview_plugin_version = "1.0"


def _runtime():  # type: ignore[no-untyped-def]
    """:mod:`fem_ml.paraview.runtime`, imported without running ``fem_ml/__init__.py`` (which needs DOLFINx).

    In ParaView's Python, fem_ml is registered as a bare package whose modules load from their files, so the
    runtime and the DOLFINx- and torch-free modules it imports (the file reader, the stacked network) are
    fem_ml's own code.
    """
    if "fem_ml" not in sys.modules:
        package = types.ModuleType("fem_ml")
        package.__path__ = [str(Path(__file__).resolve().parents[1])]
        sys.modules["fem_ml"] = package
    return importlib.import_module("fem_ml.paraview.runtime")


class FemmlAlgorithm(VTKPythonAlgorithmBase):
    """The plugin's algorithm: a ``.femml`` file and parameter values in, an unstructured grid out.

    Not a proxy itself: :class:`FemmlReader` and the generated per-model plugins declare the properties.

    Args:
        filename: The model file, or None to set it later (:meth:`set_filename`).
    """

    def __init__(self, filename=None):  # type: ignore[no-untyped-def]
        VTKPythonAlgorithmBase.__init__(self, nInputPorts=0, nOutputPorts=1, outputType="vtkUnstructuredGrid")
        self._filename = filename
        self._values = {}
        self._model = None
        self._grid = None
        self._loaded = None

    def set_filename(self, name):  # type: ignore[no-untyped-def]
        """Use the model file ``name``."""
        if name != self._filename:
            self._filename = name
            self.Modified()

    def set_parameter(self, index, value):  # type: ignore[no-untyped-def]
        """Set parameter ``index`` (in the file's order) to ``value``."""
        if self._values.get(index) != value:
            self._values[index] = float(value)
            self.Modified()

    def clear_parameters(self):  # type: ignore[no-untyped-def]
        """Forget the values set: every parameter back to its box's midpoint."""
        if self._values:
            self._values = {}
            self.Modified()

    def _load(self):  # type: ignore[no-untyped-def]
        """The model and its grid, read again only when the file name or the file's modification time changed."""
        path = Path(self._filename)
        stamp = (str(path), path.stat().st_mtime_ns if path.exists() else None)
        if self._loaded != stamp:
            self._model, self._grid, self._loaded = None, None, None
            model = _runtime().SurrogateModel(path)
            grid = vtkUnstructuredGrid()
            points = numpy_support.numpy_to_vtk(np.ascontiguousarray(model.points), deep=True)
            grid.SetPoints(_vtk_points(points))
            cells = vtkCellArray()
            n, k = model.cells.shape
            offsets = np.arange(0, (n + 1) * k, k, dtype=np.int64)
            cells.SetData(
                numpy_support.numpy_to_vtkIdTypeArray(offsets, deep=True),
                numpy_support.numpy_to_vtkIdTypeArray(np.ascontiguousarray(model.cells.ravel()), deep=True),
            )
            grid.SetCells(model.cell_type, cells)
            self._model, self._grid, self._loaded = model, grid, stamp
        return self._model, self._grid

    def point(self):  # type: ignore[no-untyped-def]
        """The parameter point: values set, the box's midpoint elsewhere (checked against the bounds)."""
        model = self._model
        mid = 0.5 * (model.lower + model.upper)
        unknown = [i for i in self._values if not 0 <= i < len(mid)]
        if unknown:
            raise ValueError(f"parameters {unknown} set, but the model has {len(mid)} parameters {model.names}")
        return model.check([self._values.get(i, m) for i, m in enumerate(mid)])

    def RequestData(self, request, inInfo, outInfo):
        """Evaluate the surrogate and fill the output grid (VTK pipeline pass)."""
        output = vtkUnstructuredGrid.GetData(outInfo, 0)
        try:
            if not self._filename:
                raise ValueError("no file name set")
            model, grid = self._load()
            mu = self.point()
            mean, deviation = model.evaluate(mu)
        except Exception as err:  # any failure is a message in ParaView, never a crash
            vtkOutputWindow.GetInstance().DisplayErrorText(f"fem_ml: {self._filename}: {err}\n")
            output.Initialize()
            return 0
        output.ShallowCopy(grid)
        output.GetPointData().Initialize()
        output.GetPointData().AddArray(_array(model.field_name, mean))
        if deviation is not None:
            output.GetPointData().AddArray(_array("deviation", deviation))
        output.GetFieldData().Initialize()
        for name, value in zip(model.names, mu, strict=True):
            output.GetFieldData().AddArray(_array(name, np.array([[value]])))
        names = vtkStringArray()
        names.SetName("parameter_names")
        for name in model.names:
            names.InsertNextValue(name)
        output.GetFieldData().AddArray(names)
        return 1


def _vtk_points(data):  # type: ignore[no-untyped-def]
    from vtkmodules.vtkCommonCore import vtkPoints

    points = vtkPoints()
    points.SetData(data)
    return points


def _array(name, values):  # type: ignore[no-untyped-def]
    """A VTK double array named ``name`` from ``(n, components)`` values (copied)."""
    array = numpy_support.numpy_to_vtk(np.ascontiguousarray(values, dtype=np.float64), deep=True)
    if not isinstance(array, vtkDoubleArray):  # pragma: no cover - numpy_to_vtk keeps float64
        raise TypeError("expected a double array")
    array.SetName(name)
    return array


@smproxy.reader(
    name="FemmlReader",
    label="fem_ml surrogate",
    extensions="femml",
    file_description="fem_ml surrogate files",
)
class FemmlReader(FemmlAlgorithm):
    """Reader of ``.femml`` files: ``FileName`` and ``Parameters`` (one value per parameter, in the file's order)."""

    def __init__(self):  # type: ignore[no-untyped-def]
        FemmlAlgorithm.__init__(self)

    @smproperty.stringvector(name="FileName")
    @smdomain.filelist()
    @smhint.filechooser(extensions="femml", file_description="fem_ml surrogate files")
    def SetFileName(self, name):  # type: ignore[no-untyped-def]
        """Set the file to read."""
        self.set_filename(name)

    @smproperty.doublevector(
        name="Parameters",
        number_of_elements=0,
        default_values=[],
        number_of_elements_per_command=1,
        repeat_command=1,
        use_index=1,
        clean_command="ClearParameters",
    )
    def SetParameter(self, index, value):  # type: ignore[no-untyped-def]
        """Set parameter ``index`` to ``value``."""
        self.set_parameter(index, value)

    def ClearParameters(self):  # type: ignore[no-untyped-def]
        """Forget the parameter values (ParaView calls this before setting a new ``Parameters`` list)."""
        self.clear_parameters()
