"""The physics core: one image formation model that every stage calls.

- :mod:`dpcal.physics.cfa`: CFA operators on tensors (mosaic, its adjoint, masks, packing).
- :mod:`dpcal.physics.noise`: Poisson-Gaussian sampling and quantisation in torch.
- :mod:`dpcal.physics.sensor`: the same draws and DN conversion in NumPy.
- :mod:`dpcal.physics.clipped`: moments of clipped noisy observations (noise fits, tests).
- :mod:`dpcal.physics.tone`, :mod:`dpcal.physics.color`: sRGB curves, Brooks et al. (2019)
  unprocessing.
- :mod:`dpcal.physics.light`: lux -> ISO -> per-plane (alpha, sigma).
- :mod:`dpcal.physics.forward`: :class:`~dpcal.physics.forward.RawForward`, the whole model as
  an ``nn.Module`` (simulation, training and evaluation use it).

Nothing is imported here: the submodules that need torch import it, the others do not.
"""
