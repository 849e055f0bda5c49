"""Calibration charts: layout and spec (:mod:`.spec`), files (:mod:`.make`), the camera model
that maps a chart onto the sensor (:mod:`.geometry`), finding a chart in a capture
(:mod:`.locate`), and rendering synthetic captures of it (:mod:`.render`)."""

from dpcal.chart.make import load_chart_image, make_chart
from dpcal.chart.spec import ChartSpec, build_spec, chart_raster, load_chart

__all__ = ["ChartSpec", "build_spec", "chart_raster", "load_chart", "load_chart_image", "make_chart"]
