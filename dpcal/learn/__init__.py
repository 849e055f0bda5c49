"""The learning half of dpcal: trainable models (:mod:`dpcal.learn.models`) and the trainer.

Models follow two conventions. A RAW input is a normalised single-channel mosaic ``(B, 1, H, W)``
in [0, 1] with per-CFA-plane noise parameters ``alpha, sigma`` of shape ``(B, 4)`` (planes
``R, Gr, Gb, B``); an ISP stage maps it to RGB ``(B, 3, H, W)`` in [0, 1], and a classifier maps
RGB in [0, 1] to logits ``(B, K)``.
"""
