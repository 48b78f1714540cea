"""Shared test setup.

Without CUDA, Triton kernels run under the CPU interpreter: ``TRITON_INTERPRET=1`` must be set
before any ``@triton.jit`` function is defined, i.e. before fastlift.kernels is imported, so it
is set here at collection time. On a CUDA machine the real kernels run (and CPU-tensor kernel
tests are skipped); tests marked ``gpu`` are skipped without CUDA.
"""
import os

import pytest

try:
    import torch

    HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    HAS_CUDA = False

if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

try:
    from hypothesis import settings as _hyp_settings

    # CI must be reproducible: by default hypothesis draws the same examples on every run
    # (derandomize). FASTLIFT_HYPOTHESIS=explore draws fresh random examples to hunt for bugs.
    _hyp_settings.register_profile("ci", derandomize=True, print_blob=True)
    _hyp_settings.register_profile("explore", derandomize=False, print_blob=True)
    _hyp_settings.load_profile(os.environ.get("FASTLIFT_HYPOTHESIS", "ci"))
except ImportError:  # pragma: no cover - hypothesis is in the dev extra
    pass


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    skip_interp = pytest.mark.skip(reason="CPU-interpreter kernel test: TRITON_INTERPRET is not enabled here "
                                          "(a CUDA machine runs the GPU tier instead)")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "interpreter" in item.keywords and not INTERPRETER:
            item.add_marker(skip_interp)
