"""Calibration charts: layout and spec (:mod:`.spec`), files (:mod:`.make`), the camera model
that maps a chart onto the sensor (:mod:`.geometry`), finding a chart in a capture
(:mod:`.locate`), and rendering synthetic captures of it (:mod:`.render`, behind
``dpcal render-chart``). Names are imported on first use (``lazy_loader``, SPEC 1)."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["geometry", "locate", "make", "render", "spec"],
    submod_attrs={
        "make": ["load_chart_image", "make_chart"],
        "spec": ["ChartSpec", "build_spec", "chart_raster", "load_chart"],
    },
)
