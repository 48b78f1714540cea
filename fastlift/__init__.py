"""fastlift: fast, dependable VideoPose3D-class 2D-to-3D human pose lifting.

Public API (imported lazily so ``import fastlift`` stays cheap):

* :class:`TemporalModel`, :class:`TemporalModelOptimized1f` — drop-in fused lifters with the
  reference's constructor and state_dict keys (``fastlift.model``).
* :func:`fuse` — BN-folded inference module (``fastlift.model``).
* :class:`StreamingLifter` — incremental multi-stream inference (``fastlift.streaming``).
* :mod:`fastlift.reference` — the pure-PyTorch oracle; :mod:`fastlift.metrics`,
  :mod:`fastlift.camera`, :mod:`fastlift.skeleton`, :mod:`fastlift.data`.
* :func:`pretrained` — the lifters shipped with the package (``"symmetric"``, ``"causal"``;
  ``fastlift.hub``).
"""
from __future__ import annotations

import importlib
import os as _os

__version__ = "0.1.0"

# Running from a source checkout that is not installed (e.g. PYTHONPATH=<repo> on a machine where
# pip cannot install): the repository's top-level kernels/, train/ and bench/ folders are this
# package's fastlift.kernels / .train / .bench (pyproject maps them the same way when installing).
_here = _os.path.dirname(_os.path.abspath(__file__))
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "kernels")) and all(
        _os.path.isfile(_os.path.join(_root, d, "__init__.py")) for d in ("kernels", "train", "bench")) \
        and _os.path.isfile(_os.path.join(_root, "pyproject.toml")):
    __path__.append(_root)  # noqa: F821 (package __path__)

_LAZY = {
    "TemporalModel": "fastlift.model",
    "TemporalModelOptimized1f": "fastlift.model",
    "FusedInferenceLifter": "fastlift.model",
    "fuse": "fastlift.model",
    "lift_sequence": "fastlift.model",
    "StreamingLifter": "fastlift.streaming",
    "reference": "fastlift.reference",
    "metrics": "fastlift.metrics",
    "camera": "fastlift.camera",
    "skeleton": "fastlift.skeleton",
    "data": "fastlift.data",
    "pretrained": "fastlift.hub",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'fastlift' has no attribute {name!r}")
    module = importlib.import_module(target)
    value = module if target.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
