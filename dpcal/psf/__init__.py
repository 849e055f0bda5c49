"""Lens PSFs: spatially varying PSF fields (:mod:`dpcal.psf.field`)."""

from dpcal.psf.field import PSFField, apply_psf_field, blur_rgb_to_planes, gaussian_kernel, hat_weights

__all__ = ["PSFField", "apply_psf_field", "blur_rgb_to_planes", "gaussian_kernel", "hat_weights"]
