"""The command workflows: what each ``dpcal`` command does, as importable functions.

A workflow owns the files: it reads inputs, calls the domain packages' array-in/result-out
functions, and writes outputs atomically (profiles, manifests, journals, CSV tables, figures).
The CLI (:mod:`dpcal.cli`) is a thin click layer over these; notebooks and scripts call them
directly.

- :mod:`dpcal.workflows.fit_noise`: ``dpcal fit-noise`` (ISO grouping, ISO model, profile, CSV, plots).
- :mod:`dpcal.workflows.fit_psf`: ``dpcal fit-psf`` (field file, plots, attaching to a profile).
- :mod:`dpcal.workflows.simulate`: ``dpcal simulate`` (dataset card, manifest, journal,
  executors; :mod:`~dpcal.workflows.simulate_worker` runs in the worker processes,
  :mod:`~dpcal.workflows.simulate_preview` draws the preview grid).
- :mod:`dpcal.workflows.demo`: ``dpcal demo``.

Progress bars are an explicit ``progress=`` argument of each workflow. Names are imported on
first use (``lazy_loader``, SPEC 1).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["demo", "fit_noise", "fit_psf", "simulate", "simulate_preview", "simulate_worker"],
    submod_attrs={
        "demo": ["run_demo"],
        "fit_noise": ["run_fit_noise"],
        "fit_psf": ["run_fit_psf", "attach_to_profile"],
        "simulate": ["simulate_dataset"],
    },
)
