"""Numpy-in/numpy-out building blocks of :mod:`lisentry.datasets.pipeline`: Bruker-convention
FFT and digital-filter removal, phase correction and estimation, baseline correction and
resampling onto a fixed ppm grid."""
from lisentry.datasets.processing.baseline import als_baseline, poly_baseline
from lisentry.datasets.processing.fourier import bruker_spectrum, native_ppm_axis, phase_spectrum
from lisentry.datasets.processing.phase import estimate_phase
from lisentry.datasets.processing.resample import resample_to_grid

__all__ = ["als_baseline", "poly_baseline", "bruker_spectrum", "native_ppm_axis", "phase_spectrum",
           "estimate_phase", "resample_to_grid"]
